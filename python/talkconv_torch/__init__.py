"""talkconv from PyTorch: the TaLK convolution as a differentiable function and a drop-in module.

    talk_conv(x, weight, bias, heads, max_left, max_right, ...)   the layer (autograd Function)
    TaLKConv(hid_dim, offsets_dropout, decode, num_heads, min_len_left, min_len_right)
                                                                 the original fairseq module's twin
    TalkConvError, Status                                        talkconv's named errors

CPU and CUDA tensors, float32 / float64 / float16 / bfloat16, [T, B, C] or [B, T, C].
"""
from ._errors import Status, TalkConvError
from ._function import has_cuda, talk_conv
from .module import TaLKConv

__all__ = ["talk_conv", "TaLKConv", "TalkConvError", "Status", "has_cuda"]
__version__ = "0.1.0"
