#!/usr/bin/env python3
"""Peers of talkconv on a GPU, in the same run and on the same shapes, timed with CUDA events by PyTorch:

  sdpa        the flash-attention core: scaled_dot_product_attention(q, q, q), q = x split into H heads
              (bidirectional, or is_causal=True); its Q/K/V/O projections are not counted, which
              flatters attention;
  lightconv   LightConv's operation: cuDNN's depthwise conv1d with K = L + M + 1 taps, softmax-normalized
              weights shared by the R = C / H channels of a head (input prepared as [B, C, T]);
  dynconv     DynamicConv in its unfolded form: per-token weights from a linear layer (softmax over K),
              the input unfolded as a strided view and reduced with bmm;
  torch_talk  the original TaLK algorithm in PyTorch: offsets = sigmoid(x W^T + b), a global cumsum over
              time, then a gather at the interpolated window bounds;

forward and forward + backward (torch.autograd.grad of every input), and, for decoding, one SDPA
step with a query of length 1 against a KV cache of 1k .. 64k tokens. talkconv's numbers come from
the Google Benchmark JSON of talkconv_cuda_bench (--talkconv-json); names carry every parameter
(bench/benchlib.py). Every talkconv entry the tables need must be there: a missing one makes this
program exit 2 naming it (after writing what it has).

  python3 bench/peer_torch.py --talkconv-json out/bench_cuda.json --out out/peers.md --json-out out/peers.json
  python3 bench/peer_torch.py --talkconv-json fixture.json --check-only   # matching only, no PyTorch

Without PyTorch or a GPU it checks the matching and says so (exit 0 when nothing is missing).
"""

import argparse
import datetime
import json
import math
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402

TORCH_DTYPES = {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}
DEVICE = "cuda"  # a test may point the peers at the CPU (with CUDA events and syncs stubbed)
ELEM_BYTES = {"f32": 4, "f16": 2, "bf16": 2}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--talkconv-json", help="talkconv_cuda_bench's --benchmark_out JSON")
    p.add_argument("--names-from", help="instead of a JSON: talkconv_cuda_bench --benchmark_list_tests output")
    p.add_argument("--set", choices=["quick", "full"], default=None,
                   help="the shape set (default: the JSON's talkconv_bench_set, else quick)")
    p.add_argument("--no-decoder", action="store_true", help="do not expect or time decoder steps")
    p.add_argument("--check-only", action="store_true", help="match the names, time nothing (no PyTorch needed)")
    p.add_argument("--target-s", type=float, default=0.2, help="about this much timed work per measurement")
    p.add_argument("--max-gb", type=float, default=40.0, help="skip a peer whose tensors would pass this many GB")
    p.add_argument("--shapes", type=int, default=0, help="time only the first N shapes (0: all)")
    p.add_argument("--budget-s", type=float, default=0.0,
                   help="stop timing further shapes after this many seconds (0: no limit); the decoding steps "
                        "still run; the shapes left out are listed")
    p.add_argument("--out", help="write the markdown tables here")
    p.add_argument("--json-out", help="write the peers' times (and the machine) here as JSON")
    return p.parse_args(argv)


# ---- timing ---------------------------------------------------------------------------------------------

def time_cuda(torch, fn, target_s):
    """Median milliseconds of fn() (CUDA events), after a warm-up call; as many runs (3 to 25) as fit
    in about target_s, at least 2 for a call longer than a second."""
    fn()
    torch.cuda.synchronize()
    times = []
    while True:
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
        n = len(times)
        if n >= 25 or (n >= 3 and sum(times) >= target_s * 1e3) or (n >= 2 and times[0] > 1e3):
            break
    times.sort()
    return times[len(times) // 2]


def time_steps(torch, fn, target_s):
    """Mean microseconds of fn() over back-to-back calls on one stream (launch-bound steps)."""
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    one = max(time.perf_counter() - t0, 1e-6)
    n = int(min(2000, max(20, target_s / one)))
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(n):
        fn()
    stop.record()
    stop.synchronize()
    return start.elapsed_time(stop) * 1e3 / n


# ---- the peers ------------------------------------------------------------------------------------------

def torch_talk(torch, x, weight, bias, H, L, M, causal):
    """The original algorithm, time-major x [T, B, C]: global prefix sums, then a gather."""
    T, B, C = x.shape
    R, K = C // H, L + M + 1
    o = torch.sigmoid(torch.nn.functional.linear(x, weight, bias)).float()  # [T, B, P]
    t = torch.arange(T, device=x.device, dtype=torch.float32).view(T, 1, 1)
    a_l = (t - o[..., :H] * L).clamp(0, T - 1)  # [T, B, H]
    a_r = t.expand_as(a_l) if causal else (t + o[..., H:] * M).clamp(0, T - 1)
    S = torch.cumsum(x.float(), dim=0) / K  # the full prefix-sum tensor
    S = torch.cat([torch.zeros(1, B, C, device=x.device), S], dim=0)  # row 0: S[-1] = 0

    def interp(a):  # I(a) = (1 - frac) S[floor a] + frac S[ceil a], rows shifted by one
        lo = torch.floor(a)
        frac = (a - lo).repeat_interleave(R, dim=-1)
        lo_i = lo.long().repeat_interleave(R, dim=-1) + 1
        hi_i = torch.ceil(a).long().repeat_interleave(R, dim=-1) + 1
        return (1 - frac) * torch.gather(S, 0, lo_i) + frac * torch.gather(S, 0, hi_i)

    return (interp(a_r) - interp(a_l - 1)).to(x.dtype)


def lightconv(torch, x_bct, w, H, L, M, causal):
    """Depthwise conv1d over [B, C, T], channel c in head c % H (the input viewed as [B * R, H, T])."""
    F = torch.nn.functional
    B, C, T = x_bct.shape
    ws = torch.softmax(w.float(), dim=-1).to(x_bct.dtype)  # [H, 1, K]
    xv = x_bct.view(-1, H, T)
    if causal:
        y = F.conv1d(F.pad(xv, (L, 0)), ws, groups=H)
    else:
        y = F.conv1d(F.pad(xv, (L, M)), ws, groups=H)
    return y.view(B, C, T)


def dynconv(torch, x, wl, bl_, H, K, pad_l):
    """DynamicConv unfolded, time-major x [T, B, C]: weights [T * B * H, K] from a linear layer (softmax),
    the input as a strided [T, B, C, K] view of the padded sequence, one bmm per token and head."""
    F = torch.nn.functional
    T, B, C = x.shape
    R = C // H
    w = torch.softmax(F.linear(x, wl, bl_).float().view(T * B * H, K), dim=-1).to(x.dtype)
    xp = F.pad(x, (0, 0, 0, 0, pad_l, K - 1 - pad_l))
    xu = xp.as_strided((T, B, C, K), (B * C, C, 1, B * C)).reshape(T * B * H, R, K)
    return torch.bmm(xu, w.unsqueeze(2)).view(T, B, C)


def fwd_and_fwdbwd(torch, f, inputs, target_s):
    """(forward ms, forward + backward ms) of f(*inputs); the gradient of every input that needs one."""
    with torch.no_grad():
        fwd = time_cuda(torch, lambda: f(*inputs), target_s)
    grads_of = [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]
    out = f(*inputs)
    g = torch.randn_like(out)
    del out

    def step():
        y = f(*inputs)
        torch.autograd.grad(y, grads_of, g)

    return fwd, time_cuda(torch, step, target_s)


def time_shape(torch, s, target_s, max_gb, sdpa_cache):
    """Rows {peer, shape fields, fwd_ms, fwdbwd_ms, note} for shape s."""
    dev = torch.device(DEVICE)
    dt = getattr(torch, TORCH_DTYPES[s.dtype])
    gen = torch.Generator(device=dev).manual_seed(1234)
    T, B, C, H, L, M, causal = s.T, s.B, s.C, s.H, s.L, s.M, bool(s.causal)
    R, K, P = C // H, L + M + 1, (H if causal else 2 * H)
    n_gb = T * B * C * ELEM_BYTES[s.dtype] / 1e9
    rows = []

    def row(peer, fwd=None, fb=None, note=""):
        r = dict(s._asdict(), peer=peer, fwd_ms=fwd, fwdbwd_ms=fb, note=note)
        rows.append(r)
        print(f"  {peer:10s} fwd {bl.fmt_ms(fwd):>8s} ms  fwd+bwd {bl.fmt_ms(fb):>8s} ms  {note}", flush=True)

    def guarded(peer, gb, fn):
        if gb > max_gb:
            row(peer, note=f"skipped: needs about {gb:.0f} GB")
            return
        try:
            row(peer, *fn())
        except torch.cuda.OutOfMemoryError:
            row(peer, note="out of memory")
        finally:
            torch.cuda.empty_cache()

    x = (torch.randn(T, B, C, device=dev, generator=gen, dtype=torch.float32) + 1.0).to(dt).requires_grad_()

    # Attention does not depend on the window: one measurement per (dtype, T, B, C, H, causal).
    akey = (s.dtype, T, B, C, H, causal)
    if akey not in sdpa_cache:
        def sdpa():
            q = x.detach().permute(1, 0, 2).reshape(B, T, H, R).transpose(1, 2).contiguous().requires_grad_()
            f = lambda q_: torch.nn.functional.scaled_dot_product_attention(q_, q_, q_, is_causal=causal)  # noqa
            return fwd_and_fwdbwd(torch, f, [q], target_s)
        before = len(rows)
        guarded("sdpa", 6 * n_gb, sdpa)
        sdpa_cache[akey] = rows[before]
    else:
        r = dict(sdpa_cache[akey], **s._asdict())
        rows.append(r)
        print(f"  sdpa       (same as {bl.shape_label(Shape_of(sdpa_cache[akey]))})", flush=True)

    def light():
        xb = x.detach().permute(1, 2, 0).contiguous().requires_grad_()  # [B, C, T]
        w = torch.randn(H, 1, K, device=dev, generator=gen).to(dt).requires_grad_()
        return fwd_and_fwdbwd(torch, lambda a, b: lightconv(torch, a, b, H, L, M, causal), [xb, w], target_s)
    guarded("lightconv", 6 * n_gb, light)

    def dyn():
        wl = (torch.randn(H * K, C, device=dev, generator=gen) / math.sqrt(C)).to(dt).requires_grad_()
        bd = torch.zeros(H * K, device=dev, dtype=dt).requires_grad_()
        pad_l = K - 1 if causal else L
        return fwd_and_fwdbwd(torch, lambda a, b, c: dynconv(torch, a, b, c, H, K, pad_l), [x, wl, bd], target_s)
    # The backward of the strided view writes a dense [T * B * H, R, K] gradient: K copies of x.
    guarded("dynconv", n_gb * (K + 6), dyn)

    def talk():
        w = (torch.randn(P, C, device=dev, generator=gen) * (2.0 / math.sqrt(C))).to(dt).requires_grad_()
        b = torch.zeros(P, device=dev, dtype=dt).requires_grad_()
        return fwd_and_fwdbwd(torch, lambda a, w_, b_: torch_talk(torch, a, w_, b_, H, L, M, causal), [x, w, b],
                              target_s)
    # Float prefix sums, four int64 index tensors and their float gathers.
    guarded("torch_talk", n_gb * (4 + 4 * 4 + 8) * 2 / ELEM_BYTES[s.dtype], talk)
    return rows


def Shape_of(r):
    return bl.Shape(*[r[k] for k in bl.Shape._fields])


def time_decode(torch, target_s, max_gb):
    """One SDPA step (query length 1) against a KV cache of `context` tokens, bf16, C = 1024, H = 16."""
    dev = torch.device(DEVICE)
    H, R = bl.DECODE_H, bl.DECODE_C // bl.DECODE_H
    rows = []
    for b in bl.DECODE_BATCHES:
        for ctx in bl.DECODE_CONTEXTS:
            gb = 2 * b * ctx * bl.DECODE_C * 2 / 1e9
            r = dict(peer="sdpa_decode", dtype="bf16", B=b, C=bl.DECODE_C, H=H, context=ctx, step_us=None, note="")
            if gb > max_gb:
                r["note"] = f"skipped: KV cache {gb:.0f} GB"
            else:
                try:
                    kc = torch.randn(b, H, ctx, R, device=dev, dtype=torch.bfloat16)
                    vc = torch.randn(b, H, ctx, R, device=dev, dtype=torch.bfloat16)
                    q = torch.randn(b, H, 1, R, device=dev, dtype=torch.bfloat16)
                    with torch.no_grad():
                        r["step_us"] = time_steps(
                            torch, lambda: torch.nn.functional.scaled_dot_product_attention(q, kc, vc), target_s)
                    del kc, vc, q
                except torch.cuda.OutOfMemoryError:
                    r["note"] = "out of memory"
                torch.cuda.empty_cache()
            print(f"  sdpa decode B={b} context={ctx}: "
                  f"{'-' if r['step_us'] is None else format(r['step_us'], '.1f')} us {r['note']}", flush=True)
            rows.append(r)
    return rows


def machine(torch):
    m = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    try:
        m["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                     cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip() or "unknown"
    except OSError:
        m["commit"] = "unknown"
    if torch is not None:
        m["gpu"] = torch.cuda.get_device_name(0)
        m["torch"] = torch.__version__
        m["torch_cuda"] = torch.version.cuda
        m["cudnn"] = str(torch.backends.cudnn.version())
    try:
        m["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                     capture_output=True, text=True).stdout.strip().splitlines()[0]
    except (OSError, IndexError):
        pass
    return m


# ---- main -----------------------------------------------------------------------------------------------

def main(argv=None):
    args = parse_args(argv)
    if not args.talkconv_json and not args.names_from:
        sys.exit("peer_torch: give --talkconv-json (or --names-from)")
    if args.names_from:
        with open(args.names_from) as f:
            have, ctx, source = bl.listed_names(f.read()), {}, args.names_from
        entries = {}
    else:
        ctx, entries = bl.load_gbench(args.talkconv_json)
        have, source = entries, args.talkconv_json
    which = args.set or ctx.get("talkconv_bench_set", "quick")
    shapes = bl.peer_shapes(which)
    expected = bl.expected_layer_names(shapes)
    if not args.no_decoder and not args.names_from:
        expected += bl.expected_decoder_names()
    missing = [n for n in expected if n not in have]
    if args.names_from and not args.no_decoder and any(n.startswith("decoder_step/") for n in have):
        # The program registers a decoder benchmark: then every variant the tables read must be there.
        missing += [n for n in bl.expected_decoder_names() if n not in have]
    print(f"peer_torch: {len(expected) - len(missing)} of {len(expected)} expected talkconv entries found in "
          f"{source} ({which} set, {len(shapes)} shapes)")

    torch, peer_rows, decode_rows = None, [], []
    if not args.check_only and not args.names_from:
        try:
            import torch as torch_mod
            if torch_mod.cuda.is_available():
                torch = torch_mod
            else:
                print("peer_torch: no CUDA device visible to PyTorch; no peer timed")
        except ImportError:
            print("peer_torch: PyTorch is not installed here; no peer timed")
    if torch is not None:
        torch.backends.cudnn.benchmark = True
        sdpa_cache = {}
        timed = shapes[:args.shapes] if args.shapes else shapes
        t0 = time.monotonic()
        for i, s in enumerate(timed):
            if args.budget_s and time.monotonic() - t0 > args.budget_s:
                left_out = [bl.shape_label(x) for x in timed[i:]]
                print(f"peer_torch: time budget of {args.budget_s:.0f} s spent; {len(left_out)} shapes not timed: "
                      + "; ".join(left_out), flush=True)
                break
            print(f"[{i + 1}/{len(timed)}] {bl.shape_label(s)}", flush=True)
            peer_rows += time_shape(torch, s, args.target_s, args.max_gb, sdpa_cache)
        if not args.no_decoder:
            print("decoding: SDPA with a query of length 1", flush=True)
            decode_rows = time_decode(torch, args.target_s, args.max_gb)

    m = machine(torch)
    md = [f"# talkconv and its peers on {m.get('gpu', ctx.get('device', '?'))}", "",
          f"talkconv: `{source}` ({which} set); peers: PyTorch {m.get('torch', '-')} (CUDA {m.get('torch_cuda', '-')}, "
          f"cuDNN {m.get('cudnn', '-')}), driver {m.get('driver', '?')}, {m['date']}, commit {m['commit']}. "
          "Times in ms (CUDA events; talkconv: Google Benchmark manual time; peers: median). "
          "Ratios are peer time / talkconv time: above 1 talkconv is faster, **bold** where it is slower.", ""]
    if missing:
        md += ["**MISSING talkconv entries** (the run is incomplete):", ""] + [f"- `{n}`" for n in missing] + [""]
    md += ["## Summary", "", bl.summary_table(entries, peer_rows, shapes), ""]
    if decode_rows or not args.no_decoder:
        md += ["## Decoding: one step, C = 1024, H = 16, L = 63, bf16", "",
               "talkconv's step does not depend on the context; an attention step reads the whole KV cache "
               "(SDPA core only: no projections, no cache append).", "", bl.decode_table(entries, decode_rows), ""]
    md += ["## Per shape", "", bl.shape_tables(entries, peer_rows, shapes), ""]
    text = "\n".join(md)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    else:
        print(text)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"context": m, "talkconv_json": source, "set": which, "peers": peer_rows,
                       "decode": decode_rows, "missing": missing}, f, indent=1)
    if missing:
        print(f"peer_torch: FAILED: {len(missing)} expected talkconv entr{'y' if len(missing) == 1 else 'ies'} "
              f"missing from {source}:", file=sys.stderr)
        for n in missing:
            print(f"  {n}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
