#!/usr/bin/env python3
"""Peer comparison on a GPU: PyTorch self-attention and the original TaLK algorithm, beside talkconv.

Times, for the same shapes and with CUDA events:
  * sdpa:       torch.nn.functional.scaled_dot_product_attention on q = k = v = x split into H heads
                (the attention core a TaLK layer replaces; its Q/K/V/O projections are not counted,
                which flatters attention),
  * torch_talk: the original TaLK algorithm written in PyTorch as the published implementation
                computes it: offsets = sigmoid(x W^T + b), a global cumsum over time, then a gather at
                the interpolated window bounds (forward only),
and prints them next to talkconv's CUDA numbers read from a Google Benchmark JSON file written by
`talkconv_bench_cuda --benchmark_format=json` (see scripts/gpu-check.sh), as ratios.

Needs PyTorch with CUDA and a GPU; without them it says so and exits 0 (nothing to compare).

  python3 bench/peer_torch.py --T 1024 4096 16384 --B 8 --C 512 --heads 8 --L 31 \
      --dtype bf16 --talkconv-json out/bench_cuda.json --out out/peer.md
"""

import argparse
import json
import math
import sys


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--T", type=int, nargs="+", default=[1024, 4096, 16384])
    p.add_argument("--B", type=int, default=8)
    p.add_argument("--C", type=int, default=512)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--L", type=int, default=31, help="max_left = max_right")
    p.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="bf16")
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--talkconv-json", default=None, help="talkconv_bench_cuda JSON output")
    p.add_argument("--out", default=None, help="also write the markdown table here")
    return p.parse_args()


def time_cuda(torch, fn, reps):
    """Median milliseconds of fn() over reps runs, CUDA events, after two warm-up calls."""
    fn()
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start = torch.cuda.Event(enable_timing=True)
        stop = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    times.sort()
    return times[len(times) // 2]


def torch_talk_forward(torch, x, weight, bias, H, L, M):
    """The original algorithm, time-major x [T, B, C]: global prefix sums, then a gather."""
    T, B, C = x.shape
    R = C // H
    K = L + M + 1
    offsets = torch.sigmoid(torch.nn.functional.linear(x, weight, bias)).float()  # [T, B, 2H]
    t = torch.arange(T, device=x.device, dtype=torch.float32).view(T, 1, 1)
    a_l = (t - offsets[..., :H] * L).clamp(0, T - 1)  # [T, B, H]
    a_r = (t + offsets[..., H:] * M).clamp(0, T - 1)
    S = torch.cumsum(x.float(), dim=0) / K  # [T, B, C], the full prefix-sum tensor
    S = torch.cat([torch.zeros(1, B, C, device=x.device), S], dim=0)  # S[-1] = 0 at row 0

    def interp(a):  # I(a) on rows shifted by one: I(a) = (1 - frac) S[floor a] + frac S[ceil a]
        lo = torch.floor(a)
        frac = (a - lo).repeat_interleave(R, dim=-1)
        lo_i = lo.long().repeat_interleave(R, dim=-1) + 1
        hi_i = torch.ceil(a).long().repeat_interleave(R, dim=-1) + 1
        return (1 - frac) * torch.gather(S, 0, lo_i) + frac * torch.gather(S, 0, hi_i)

    return (interp(a_r) - interp(a_l - 1)).to(x.dtype)


def talkconv_numbers(path):
    """{benchmark name: real_time in ms} from a Google Benchmark JSON file."""
    if not path:
        return {}
    with open(path) as f:
        data = json.load(f)
    scale = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}
    return {b["name"]: b["real_time"] * scale.get(b.get("time_unit", "ns"), 1e-6)
            for b in data.get("benchmarks", []) if b.get("run_type", "iteration") == "iteration"}


def find_talkconv(numbers, T, B, C, dtype):
    """The talkconv layer-forward entry for this shape, if the JSON has one (names carry T/B/C)."""
    tag = {"fp32": "float", "bf16": "bf16", "fp16": "half"}[dtype]
    for name, ms in numbers.items():
        low = name.lower()
        if "layer" in low and "fwd" in low and tag in low and f"/{T}/" in name + "/" \
                and f"/{B}/" in name + "/" and f"/{C}/" in name + "/":
            return name, ms
    return None, None


def main():
    args = parse_args()
    try:
        import torch
    except ImportError:
        print("peer_torch: PyTorch is not installed here; nothing to compare (pip install torch on a GPU machine)")
        return 0
    if not torch.cuda.is_available():
        print("peer_torch: no CUDA device visible to PyTorch; nothing to compare")
        return 0

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    dev = torch.device("cuda")
    gen = torch.Generator(device=dev).manual_seed(1234)
    H, C, B, L = args.heads, args.C, args.B, args.L
    if C % H:
        sys.exit("peer_torch: C must be divisible by heads")
    weight = (torch.randn(2 * H, C, device=dev, generator=gen) * 0.05).to(dtype)
    bias = torch.zeros(2 * H, device=dev, dtype=dtype)
    numbers = talkconv_numbers(args.talkconv_json)

    rows = []
    for T in args.T:
        x = (torch.randn(T, B, C, device=dev, generator=gen) + 1.0).to(dtype)  # random, never zeros
        q = x.permute(1, 0, 2).reshape(B, T, H, C // H).transpose(1, 2).contiguous()  # [B, H, T, R]
        with torch.no_grad():
            sdpa_ms = time_cuda(torch, lambda: torch.nn.functional.scaled_dot_product_attention(q, q, q),
                                args.reps)
            talk_ms = time_cuda(torch, lambda: torch_talk_forward(torch, x, weight, bias, H, L, L), args.reps)
        name, tc_ms = find_talkconv(numbers, T, B, C, args.dtype)
        rows.append((T, sdpa_ms, talk_ms, tc_ms, name))

    dev_name = torch.cuda.get_device_name(0)
    lines = [f"Peer comparison on {dev_name}, torch {torch.__version__}, {args.dtype}, B={B} C={C} H={H} "
             f"L=M={L} (median of {args.reps}, CUDA events)", "",
             "| T | SDPA ms | PyTorch TaLK (cumsum + gather) ms | talkconv ms | SDPA / talkconv | "
             "PyTorch TaLK / talkconv |", "|---|---|---|---|---|---|"]
    for T, sdpa_ms, talk_ms, tc_ms, _ in rows:
        if tc_ms:
            lines.append(f"| {T} | {sdpa_ms:.3f} | {talk_ms:.3f} | {tc_ms:.3f} | {sdpa_ms / tc_ms:.1f}x | "
                         f"{talk_ms / tc_ms:.1f}x |")
        else:
            lines.append(f"| {T} | {sdpa_ms:.3f} | {talk_ms:.3f} | (no talkconv entry) | - | - |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
