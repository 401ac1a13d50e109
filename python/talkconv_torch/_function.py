"""talk_conv: the TaLK layer as a torch.autograd.Function over talkconv's CPU and CUDA layers."""
import contextlib

import torch
from torch.autograd.function import once_differentiable

from . import _C
from ._errors import Status, TalkConvError

_SEED_RANGE = 1 << 62


def has_cuda():
    """True when this build has talkconv's CUDA path (PyTorch had CUDA when it was built)."""
    return bool(_C.has_cuda())


def _stream(t):
    """The current CUDA stream of t's device, as talkconv takes it (0 on the CPU)."""
    return torch.cuda.current_stream(t.device).cuda_stream if t.is_cuda else 0


def _on_device(t):
    """Makes t's device current for the call (kernels launch on the current device)."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def _physical(x, batch_first):
    """x in the caller's order -> (a tensor contiguous as [T, B, C] or [B, T, C], btc). No copy when x is
    already contiguous in either order (a transposed view of a batch-major tensor is used as it is)."""
    tbc = x.transpose(0, 1) if batch_first else x
    if tbc.is_contiguous():
        return tbc, False
    if tbc.transpose(0, 1).is_contiguous():
        return tbc.transpose(0, 1), True
    return x.contiguous(), batch_first


def _logical(buf, btc, batch_first):
    tbc = buf.transpose(0, 1) if btc else buf
    return tbc.transpose(0, 1) if batch_first else tbc


def _lengths(lengths, x, T):
    if lengths is None:
        return None
    n = torch.as_tensor(lengths, dtype=torch.int64)
    if n.dtype != torch.int64:
        n = n.to(torch.int64)
    if x.is_cuda and not n.is_cuda:
        # The CUDA layer reads device lengths and clamps them (it cannot raise without a synchronization):
        # host lengths are checked here first, as the CPU layer does.
        bad = ((n < 0) | (n > T)).nonzero().flatten()
        if bad.numel():
            b = int(bad[0])
            raise TalkConvError(
                "talkconv: invalid_length: lengths[%d] = %d is outside [0, T = %d]" % (b, int(n[b]), T),
                Status.invalid_length,
                "lengths[%d]" % b,
            )
        n = n.to(x.device, non_blocking=True)
    elif not x.is_cuda and n.is_cuda:
        n = n.cpu()
    return n.contiguous()


class _TalkConvFunction(torch.autograd.Function):
    # forward(x, weight, bias, cfg); x contiguous in the layout cfg["btc"] says.
    @staticmethod
    def forward(ctx, x, weight, bias, cfg):
        save = any(ctx.needs_input_grad[:3])
        with _on_device(x):
            y, saved = _C.forward(x, weight, bias, cfg["heads"], cfg["max_left"], cfg["max_right"], cfg["causal"],
                                  cfg["btc"], cfg["lengths"], cfg["p"], cfg["seed"], cfg["training"], save,
                                  _stream(x))
        if save:
            ctx.cfg = cfg
            ctx.has_bias = bias is not None
            ctx.save_for_backward(x, weight, bias if bias is not None else weight, saved)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        x, weight, bias, saved = ctx.saved_tensors
        cfg = ctx.cfg
        dy = dy.contiguous()
        with _on_device(x):
            dx, dw, db = _C.backward(dy, x, weight, bias if ctx.has_bias else None, saved, cfg["heads"],
                                     cfg["max_left"], cfg["max_right"], cfg["causal"], cfg["btc"], cfg["lengths"],
                                     cfg["p"], cfg["seed"], cfg["training"], _stream(x))
        return dx, dw, db, None


def talk_conv(x, weight, bias, heads, max_left, max_right, causal=False, dropout_p=0.0, training=False, seed=None,
              lengths=None, batch_first=False):
    """The TaLK convolution layer: offsets sigmoid(x W^T + bias), offset dropout, head tying and the
    interpolated window sum divided by K = max_left + max_right + 1 (talkconv's SPEC).

    x        [T, B, C] (time-major, fairseq's layout), or [B, T, C] with batch_first=True. Either memory
             order is used without a copy; y comes back in x's order.
    weight   [P, C], bias [P] or None, P = 2 * heads (left offsets of the heads, then right) or
             heads when causal (then max_right must be 0). Same dtype and device as x.
    dropout_p, training, seed
             offset dropout, active while training and dropout_p > 0. The mask is a pure function of
             (seed, t, b, offset), so the backward redraws it; seed=None draws one from torch's default
             generator (reproducible under torch.manual_seed).
    lengths  None or B valid lengths (int64; a list or a tensor on any device): windows stop at
             n_b - 1 and rows t >= n_b of y are zero.

    Differentiable in x, weight and bias (once: no double backward). float32, float64, float16 and
    bfloat16 (accumulated in float32), CPU and CUDA (the current stream; workspace from PyTorch's caching
    allocator). Bad arguments raise TalkConvError (a ValueError) with .code and .argument.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 3:
        raise TalkConvError(
            "talkconv: invalid_shape: x must be a tensor of 3 dimensions ([T, B, C] or [B, T, C])",
            Status.invalid_shape,
            "x",
        )
    buf, btc = _physical(x, batch_first)
    T = buf.shape[1] if btc else buf.shape[0]
    p = float(dropout_p)
    active = bool(training) and p > 0.0
    if active and seed is None:
        seed = int(torch.randint(0, _SEED_RANGE, (1,)).item())
    cfg = {
        "heads": int(heads),
        "max_left": int(max_left),
        "max_right": int(max_right),
        "causal": bool(causal),
        "btc": btc,
        "lengths": _lengths(lengths, x, T),
        "p": p,
        "seed": int(seed or 0) % (1 << 64),
        "training": bool(training),
    }
    y = _TalkConvFunction.apply(buf, weight.contiguous(), None if bias is None else bias.contiguous(), cfg)
    return _logical(y, btc, batch_first)
