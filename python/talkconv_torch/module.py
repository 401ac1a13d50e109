"""TaLKConv: a drop-in twin of the original fairseq module (Lioutas & Guo's TaLKConvolutions), backed by
talkconv. Same constructor, same parameter names (a checkpoint's state dict loads unchanged), same
fairseq incremental-state protocol (a dict kept between decoding steps; fairseq itself is not needed)."""
import uuid

import torch
from torch import nn

from . import _C
from ._errors import Status, TalkConvError
from ._function import _on_device, _stream, talk_conv


class TaLKConv(nn.Module):
    """TaLKConv(hid_dim, offsets_dropout=0.0, decode=False, num_heads=1, min_len_left=1, min_len_right=1)

    hid_dim        C, the channels of x
    offsets_dropout  p of the offset dropout (training only)
    decode         causal (decoder) layer: windows reach only to the left; P = num_heads offsets
    num_heads      H; channels [h*C/H, (h+1)*C/H) share head h's window
    min_len_left   L, the largest reach to the left (the name is the original's)
    min_len_right  M, the largest reach to the right; ignored when decode (talkconv's causal M is 0)

    Keyword-only additions:
    original_normalization  decode=True with min_len_right != 0: the original divides a causal
                   window by min_len_left + min_len_right + 1, talkconv by min_len_left + 1. True
                   reproduces the original (for checkpoints trained with that setting); False (default)
                   follows talkconv's SPEC. Published decoders use min_len_right = 0: no difference.
    batch_first    x is [B, T, C] instead of fairseq's [T, B, C].

    Parameters: offsets.weight [P, C] and offsets.bias [P], P = 2H (H when decode), as the original.
    """

    def __init__(self, hid_dim, offsets_dropout=0.0, decode=False, num_heads=1, min_len_left=1, min_len_right=1,
                 *, original_normalization=False, batch_first=False):
        super().__init__()
        self.hid_dim = hid_dim
        self.decode = decode
        self.num_heads = num_heads
        self.R = hid_dim // num_heads
        self.min_len_left = min_len_left
        self.min_len_right = min_len_right
        self.original_normalization = original_normalization
        self.batch_first = batch_first
        self.offsets = nn.Linear(hid_dim, num_heads * (1 if decode else 2), bias=True)
        self.do = nn.Dropout(offsets_dropout)  # no parameters; holds p as the original's module does
        self._incremental_state_id = str(uuid.uuid4())
        if decode and original_normalization:
            self._scale = (min_len_left + 1) / (min_len_left + min_len_right + 1)
        else:
            self._scale = None

    @property
    def max_right(self):
        return 0 if self.decode else self.min_len_right

    def extra_repr(self):
        return "hid_dim=%d, num_heads=%d, min_len_left=%d, min_len_right=%d, decode=%s, offsets_dropout=%g" % (
            self.hid_dim, self.num_heads, self.min_len_left, self.min_len_right, self.decode, self.do.p)

    def _params(self, x):
        w, b = self.offsets.weight, self.offsets.bias
        if w.dtype != x.dtype:  # e.g. autocast or a half input to a float module
            w = w.to(x.dtype)
            b = None if b is None else b.to(x.dtype)
        return w, b

    def forward(self, x, incremental_state=None, mask=None):
        """x: [T, B, C] ([B, T, C] with batch_first). mask: None or fairseq's padding mask [B, T]
        (True at padding), whose positions of x are zeroed first (the original ignores mask and relies on
        fairseq having zeroed them). incremental_state: a dict kept between decoding steps (decode=True,
        inference); x is then the new token(s) and y their rows of the causal forward."""
        if mask is not None:
            m = mask if self.batch_first else mask.transpose(0, 1)
            x = x.masked_fill(m.unsqueeze(-1).to(torch.bool), 0)
        w, b = self._params(x)
        if incremental_state is not None:
            y = self._decode_steps(x, incremental_state, w, b)
        else:
            y = talk_conv(x, w, b, self.num_heads, self.min_len_left, self.max_right, causal=self.decode,
                          dropout_p=self.do.p, training=self.training, batch_first=self.batch_first)
        if self._scale is not None:
            y = y * self._scale
        return y

    # ---- fairseq's incremental-state protocol ----------------------------------------------------------
    # The state is a talkconv decoder (the last L + 2 prefix sums per channel, not every one as the
    # original's input_buffer) under "<this module's id>.talkconv_state", as fairseq's
    # FairseqIncrementalState keys it. It is inference only: no gradient, no offset dropout.
    def _state_key(self):
        return "%s.talkconv_state" % self._incremental_state_id

    def _decode_steps(self, x, incremental_state, w, b):
        if not self.decode:
            raise TalkConvError("talkconv: invalid_window: incremental decoding needs decode=True (a causal layer)",
                                Status.invalid_window, "causal")
        xs = x.transpose(0, 1) if self.batch_first else x  # [T, B, C]
        T, B, C = xs.shape
        key = self._state_key()
        entry = incremental_state.get(key)
        if entry is None:
            with _on_device(xs):
                entry = {"decoder": _C.Decoder(xs, C, self.num_heads, self.min_len_left, B), "batch": B}
            incremental_state[key] = entry
        dec = entry["decoder"]
        if B > dec.batch:
            raise TalkConvError("talkconv: invalid_shape: the batch grew from %d to %d during decoding" % (dec.batch, B),
                                Status.invalid_shape, "B")
        entry["batch"] = B
        w, b = w.detach().contiguous(), None if b is None else b.detach().contiguous()
        stream = _stream(xs)
        rows = []
        with torch.no_grad(), _on_device(xs):
            for t in range(T):
                xt = xs[t]
                if B < dec.batch:  # beam search dropped finished sentences: the dropped rows idle on zeros
                    xt = torch.cat([xt, xt.new_zeros(dec.batch - B, C)])
                rows.append(dec.step(xt.contiguous(), w, b, stream)[:B])
        y = torch.stack(rows)
        return y.transpose(0, 1) if self.batch_first else y

    def reorder_incremental_state(self, incremental_state, new_order):
        """Beam search: sequence i continues from the state sequence new_order[i] had (fairseq's
        protocol; new_order may be shorter than the batch as sentences finish)."""
        entry = incremental_state.get(self._state_key())
        if entry is None:
            return
        dec = entry["decoder"]
        order = torch.as_tensor(new_order).to(torch.int64).flatten()
        n = order.numel()
        if n == 0 or n > dec.batch:
            raise TalkConvError("talkconv: invalid_shape: new_order has %d entries for a decoder of %d sequences"
                                % (n, dec.batch), Status.invalid_shape, "new_order")
        if n < dec.batch:
            order = torch.cat([order, order[:1].expand(dec.batch - n)])
        dev = self.offsets.weight.device
        order = order.to(dev).contiguous()
        with _on_device(order):
            dec.reorder(order, _stream(order))
        entry["batch"] = n
