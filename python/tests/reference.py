"""A pure-PyTorch float64 reference of the TaLK convolution, written from talkconv's SPEC (docs/spec.md):
the original algorithm, a prefix sum over the whole sequence (cumsum) read at the window edges (gather).
Differentiable by autograd, which gives SPEC's gradients (zero at clamped and integer bounds)."""
import torch


def offsets(x, weight, bias, mask=None, p=0.0):
    """sigmoid(x W^T + bias), [T, B, P]; inverted dropout with a given 0/1 mask."""
    o = torch.sigmoid(x @ weight.t() + (0 if bias is None else bias))
    if mask is not None:
        o = o * mask / (1.0 - p)
    return o


def window(x, o, heads, max_left, max_right, causal=False, lengths=None):
    """y[t, b, c] = I(a_r) - I(a_l - 1), I(a) = (1 - frac a) S[floor a] + frac(a) S[ceil a],
    S[i] = sum_{tau <= i} x[tau] / K, S[-1] = 0; a_l = clamp(t - o_l L, 0, n - 1),
    a_r = clamp(t + o_r M, 0, n - 1) (causal: t). x [T, B, C], o [T, B, P]."""
    T, B, C = x.shape
    H, R = heads, C // heads
    K = max_left + max_right + 1
    rows = []
    for b in range(B):
        n = T if lengths is None else int(lengths[b])
        yb = x.new_zeros(T, C)
        if n > 0:
            S = torch.cat([x.new_zeros(1, C), torch.cumsum(x[:n, b] / K, 0)])  # S[i] at row i + 1
            t = torch.arange(n, dtype=x.dtype, device=x.device)
            cols = []
            for h in range(H):
                a_l = torch.clamp(t - o[:n, b, h] * max_left, 0, n - 1)
                a_r = t if causal else torch.clamp(t + o[:n, b, H + h] * max_right, 0, n - 1)
                Sh = S[:, h * R:(h + 1) * R]

                def integral(a):
                    lo, hi = torch.floor(a), torch.ceil(a)
                    fr = (a - lo).unsqueeze(1)
                    return (1 - fr) * Sh.index_select(0, lo.long() + 1) + fr * Sh.index_select(0, hi.long() + 1)

                cols.append(integral(a_r) - integral(a_l - 1))
            yb = torch.cat([torch.cat(cols, 1), x.new_zeros(T - n, C)])
        rows.append(yb)
    return torch.stack(rows, 1)


def talk_conv(x, weight, bias, heads, max_left, max_right, causal=False, lengths=None, mask=None, p=0.0):
    return window(x, offsets(x, weight, bias, mask, p), heads, max_left, max_right, causal, lengths)


class OriginalTaLKConv(torch.nn.Module):
    """The original fairseq module's structure and parameter names (offsets: nn.Linear, do: nn.Dropout),
    computing with the reference above, in eval mode. Stands in for a trained original checkpoint."""

    def __init__(self, hid_dim, offsets_dropout=0.0, decode=False, num_heads=1, min_len_left=1, min_len_right=1):
        super().__init__()
        self.hid_dim, self.decode, self.num_heads = hid_dim, decode, num_heads
        self.min_len_left, self.min_len_right = min_len_left, min_len_right
        self.offsets = torch.nn.Linear(hid_dim, num_heads * (1 if decode else 2), bias=True)
        self.do = torch.nn.Dropout(offsets_dropout)

    def forward(self, x):
        # The original divides by K = min_len_left + min_len_right + 1 in both modes.
        K = self.min_len_left + self.min_len_right + 1
        o = offsets(x, self.offsets.weight, self.offsets.bias)
        M = 0 if self.decode else self.min_len_right
        y = window(x, o, self.num_heads, self.min_len_left, M, self.decode)
        return y * (self.min_len_left + M + 1) / K
