#!/usr/bin/env python3
"""Writes the seed corpus of the talkconv fuzz target (tests/fuzz/corpus/seed-*).

Each seed is the byte format fuzz_talkconv.cpp decodes (decode_problem, make_lengths, then the
entry's styles and overrides); the names say what a seed covers. Every entry point, every dtype,
both layouts, causal and bidirectional, inference and training, the refusals (bad sizes, overflowing
products, bad layout, lengths, dropout p, null pointers) and special data (NaN, Inf, subnormal, huge).
Regression inputs found by fuzzing (corpus/regress-*) are committed as found, not written here.

  python3 tests/fuzz/make_seeds.py [corpus dir]     (default: tests/fuzz/corpus next to this file)
"""
import os
import struct
import sys

ENTRIES = ["prefix_sum", "head_sum", "offsets_forward", "offsets_backward", "window_forward",
           "window_backward", "layer", "decoder"]
DTYPES = ["float", "double", "half", "bfloat16"]

# decode_size special codes (216 + k)
SPECIAL = {"0": 0, "-1": 1, "-u16": 2, "max": 3, "min": 4, "2^31": 5, "2^32": 6, "2^40": 7, "2^62": 8,
           "max/2+1": 9, "max/4": 10, "u64": 11, "2^k": 12, "u16": 13, "sqrtmax": 14, "2^21+1": 15,
           "max/3": 16, "2^61-1": 17}


def size(v, lo):
    """Bytes of decode_size for a small value v (>= lo) or a special code name."""
    if isinstance(v, str):
        return bytes([216 + SPECIAL[v]])
    assert lo <= v < lo + 200
    return bytes([v - lo])


def p_bytes(p):
    codes = {0.0: 0, 0.1: 3, 0.5: 4, 0.999: 5, "below1": 6, 1.0: 7, 1.5: 8, -0.1: 9, "-0": 10, "nan": 11,
             "inf": 12, "denorm": 13}
    return bytes([codes[p]])


def style(kind=0, special=0, scale_exp=0, mu=0, mu_exp=6):
    """read_style: kind, special rate (>= 192 turns specials on), 10^(scale byte - 40), mu."""
    sp = 0 if special == 0 else 191 + special
    return bytes([kind, sp, scale_exp + 40, mu & 0xFF, mu_exp])


def overrides(items):
    """items: (array index, element index, float value)."""
    out = bytes([len(items)])
    for a, i, v in items:
        out += bytes([a]) + struct.pack("<H", i) + struct.pack("<f", v)
    return out


def problem(entry, dtype, T=8, B=2, C=4, H=2, L=3, M=2, causal=False, training=False, bias=True, saved=True,
            optional=True, lay=0, len_mode=0, p=0.0, seed=12345, null=0, variant=0, extra_mode=0, extra=0,
            lengths=None, bad_len=None, rng_seed=777):
    b = bytes([ENTRIES.index(entry), DTYPES.index(dtype)])
    b += bytes([(1 if causal else 0) | (2 if training else 0) | (0 if bias else 4) | (0 if saved else 8) |
                (0 if optional else 16)])
    b += bytes([lay]) if isinstance(lay, int) and lay in (0, 1) else bytes([240]) + struct.pack("<i", lay[0])
    if isinstance(T, int) and 1 <= T <= 48:
        b += bytes([T - 1])
    elif isinstance(T, int) and 200 <= T < 700:
        b += bytes([48]) + struct.pack("<H", T - 200)
    else:
        b += bytes([64]) + (size(T, 1) if isinstance(T, str) else b"")
    b += size(B, 1) + size(H, 1)
    if isinstance(C, int) and isinstance(H, int) and C % H == 0 and 1 <= C // H <= 48 // H:
        b += bytes([C // H - 1])
    else:
        b += bytes([200]) + size(C, 1)
    b += size(L, 0)
    b += (bytes([0]) if M == 0 else bytes([240]) + size(M, 0)) if causal else size(M, 0)
    b += bytes([len_mode]) + p_bytes(p) + struct.pack("<Q", seed)
    b += bytes([0 if null == 0 else 223 + null, variant, extra_mode]) + size(extra, 0)
    if len_mode and isinstance(B, int) and 0 < B <= 64:
        lens = lengths or [T] * B
        for n in lens:
            b += bytes([255 if n == T else n])
        if len_mode == 3:
            b += bytes([bad_len[0], bad_len[1]])
    b += struct.pack("<Q", rng_seed)
    return b


def seeds():
    s = {}
    # Accepted calls, every entry point and dtype, with ordinary data.
    for d in DTYPES:
        s[f"prefix_sum-{d}"] = problem("prefix_sum", d, T=20, B=2, C=3, H=1, variant=1, extra=0) + style(0) + overrides([])
        s[f"window_forward-{d}-btc-lengths"] = (problem("window_forward", d, T=30, B=3, C=6, H=3, L=5, M=4, lay=1, len_mode=1,
                                                        lengths=[30, 7, 0]) + style(0) + style(0) + overrides([]) + overrides([]))
        s[f"layer-{d}-train"] = (problem("layer", d, T=16, B=2, C=8, H=2, L=4, M=3, training=True, p=0.1) + style(0) +
                                 style(2, scale_exp=-1) + style(0) + overrides([]))
    s["head_sum-float"] = problem("head_sum", "float", T=5, B=2, C=12, H=4) + style(0) + overrides([])
    s["head_sum-double"] = problem("head_sum", "double", T=5, B=2, C=12, H=4) + style(1) + overrides([])
    s["offsets_forward-float-dropout"] = (problem("offsets_forward", "float", T=12, B=2, C=8, H=2, training=True, p=0.5) +
                                          style(0) + style(2, scale_exp=-1) + overrides([]))
    s["offsets_forward-bf16-causal-nobias"] = (problem("offsets_forward", "bfloat16", T=9, B=3, C=4, H=4, L=6, M=0, causal=True,
                                                       bias=False, optional=False) + style(0) + style(0) + overrides([]))
    s["offsets_backward-double-lengths"] = (problem("offsets_backward", "double", T=10, B=3, C=6, H=2, len_mode=1,
                                                    lengths=[10, 4, 0], training=True, p=0.5) +
                                            style(0) + style(0) + style(0) + style(0) + style(0) + overrides([]) + overrides([]))
    s["offsets_backward-half"] = (problem("offsets_backward", "half", T=6, B=2, C=4, H=1) + style(0) + style(0) + style(0) +
                                  style(0) + style(0) + overrides([]) + overrides([]))
    s["window_backward-float-causal"] = (problem("window_backward", "float", T=40, B=2, C=4, H=2, L=9, M=0, causal=True) +
                                         style(0) + style(0) + style(3) + overrides([]) + overrides([]))
    s["window_backward-double-tiles"] = (problem("window_backward", "double", T=600, B=1, C=2, H=1, L=3, M=2) + style(0) +
                                         style(0) + style(0) + overrides([]) + overrides([]))
    s["window_forward-float-huge-L"] = (problem("window_forward", "float", T=12, B=1, C=2, H=1, L="2^40", M="2^21+1") +
                                        style(0) + style(0) + overrides([]) + overrides([]))
    s["layer-float-static-heads"] = (problem("layer", "float", T=20, B=2, C=6, H=2, L=3, M=3, variant=8 | 16 | 1) +
                                     style(0) + style(0) + style(0) + overrides([]))
    s["layer-double-huge-window"] = (problem("layer", "double", T=10, B=1, C=2, H=1, L="2^40", M=5) + style(0) + style(0) +
                                     style(0) + overrides([]))
    s["layer-float-huge-L-p-below-1"] = (problem("layer", "float", T=10, B=2, C=2, H=1, L="2^40", M="2^32", training=True,
                                                 p="below1") + style(0) + style(0) + style(0) + overrides([]))
    s["layer-float-p-below-1"] = (problem("layer", "float", T=10, B=2, C=2, H=1, L=70, M=70, training=True, p="below1") +
                                  style(0) + style(0) + style(0) + overrides([]))
    dec_steps = bytes([1, 2, 244, 0, 1, 240, 250, 248, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
    s["decoder-float"] = (problem("decoder", "float", T=1, B=2, C=4, H=2, L=3, M=0, causal=True) + style(0) + bytes([25]) +
                          style(0) + overrides([]) + dec_steps)
    s["decoder-half-reorder"] = (problem("decoder", "half", T=1, B=3, C=3, H=1, L=1, M=0, causal=True) + style(0) +
                                 bytes([12]) + style(0) + overrides([]) + bytes([0, 245, 2, 0, 1, 0, 246, 1, 1, 2, 0, 0]))
    # Special data: NaN / Inf / subnormal / huge values, NaN and negative offsets, non-finite padding.
    s["window_forward-float-nan-offset"] = (problem("window_forward", "float", T=20, B=2, C=4, H=2, L=4, M=4) + style(0) +
                                            style(0) + overrides([]) + overrides([(0, 17, float("nan")), (0, 30, float("inf"))]))
    s["window_forward-half-negative-offsets"] = (problem("window_forward", "half", T=15, B=1, C=2, H=1, L=5, M=5) + style(0) +
                                                 style(7) + overrides([]) + overrides([]))
    s["layer-float-nan-x-padding"] = (problem("layer", "float", T=10, B=2, C=2, H=1, L=3, M=2, len_mode=1, lengths=[6, 10]) +
                                      style(0) + style(0) + style(0) + overrides([(0, 19, float("nan")), (0, 3, float("inf"))]))
    s["layer-bf16-specials"] = (problem("layer", "bfloat16", T=12, B=2, C=4, H=2, L=2, M=2) + style(0, special=20) +
                                style(0) + style(0) + overrides([]))
    s["prefix_sum-float-huge-denormal"] = (problem("prefix_sum", "float", T=30, B=1, C=2, H=1, variant=5, extra=3) +
                                           style(7, special=10) + overrides([(0, 4, 3.0e38), (0, 5, 1e-45)]))
    s["window_backward-half-wide-range"] = (problem("window_backward", "half", T=25, B=2, C=2, H=1, L=6, M=1) +
                                            style(2, scale_exp=3) + style(6, scale_exp=-3) + style(5, scale_exp=0) +
                                            overrides([]) + overrides([]))
    # Refusals: raw invalid arguments.
    s["refuse-window_forward-C-not-multiple"] = problem("window_forward", "float", C=5, H=2)
    s["refuse-layer-TBC-overflow"] = problem("layer", "double", T="2^40", B="2^32", C=4, H=2)
    s["refuse-offsets_forward-dropout-nan"] = problem("offsets_forward", "half", p="nan")
    s["refuse-window_backward-bad-length"] = problem("window_backward", "bfloat16", B=3, len_mode=3, lengths=[8, 8, 8],
                                                     bad_len=(1, 0))
    s["refuse-head_sum-bad-layout"] = problem("head_sum", "float", lay=(7,))
    s["refuse-layer-causal-M"] = problem("layer", "float", causal=True, M=3)
    s["refuse-layer-huge-H"] = problem("layer", "float", C="2^62", H="2^62")
    s["refuse-layer-weight-size-overflow"] = problem("layer", "double", C="2^62", H="2^32")
    s["refuse-offsets_backward-null-d_offsets"] = problem("offsets_backward", "double", T="2^40", null=4)
    s["refuse-prefix_sum-negative-segment"] = problem("prefix_sum", "float", extra_mode=200, extra="-1")
    s["refuse-decoder-bidirectional"] = problem("decoder", "float", causal=False)
    s["refuse-decoder-state-overflow"] = problem("decoder", "float", causal=True, M=0, B="2^61-1", L="2^21+1")
    s["refuse-window_forward-negative-L"] = problem("window_forward", "double", L="-1")
    s["refuse-layer-L-overflow"] = problem("layer", "half", L="max", M=3)
    return s


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
    os.makedirs(out, exist_ok=True)
    for name, data in sorted(seeds().items()):
        with open(os.path.join(out, "seed-" + name), "wb") as f:
            f.write(data)
    print(f"wrote {len(seeds())} seeds to {out}")


if __name__ == "__main__":
    main()
