"""bench/RESULTS.md and its plots (bench/plots/) from benchmark JSON: one section per machine, never mixed.

    python3 bench/report.py [CPU.json] [--gpu-run DIR ...] [--plots bench/plots] [--results bench/RESULTS.md]
                            [--load-before "..."] [--load-after "..."] [--notes bench/cpu/profile_notes.md]

CPU section: talkconv_bench_cpu's JSON (default bench/plots/bench_cpu.json; --no-cpu leaves it out). The
machine is the one recorded beside the JSON (<json>.machine.json, written by scripts/bench.sh), else
this one's lscpu. Names: <family>/<dtype>/T:../B:../C:../H:../L:..[/off:full], decoder_step/<dtype>/B:/C:/L:/H:,
kv_attn_step/f32/B:/C:/H:/context:; times are wall-clock (UseRealTime).

GPU sections: one per run directory (bench_cuda.json, peers.json, run.json: what scripts/gpu-bench.sh
writes), --gpu-run DIR or every directory under bench/cuda/results/ that has a bench_cuda.json; until
one exists, the hand-kept profiles (PROFILES, or --profile) stand as the GPU sections.
Without matplotlib the tables are written and the plots are not.
"""
import argparse
import json
import math
import os
import re
import subprocess
import sys
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402
import report_gpu  # noqa: E402

try:  # plots where matplotlib is installed; the tables without it
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: E402
except ImportError:
    plt = None

# ---- reading ---------------------------------------------------------------------------------------------

NAME_RE = re.compile(r"^(?P<fam>[a-z_]+)/(?P<dtype>[a-z0-9]+)/T:(?P<T>\d+)/B:(?P<B>\d+)/C:(?P<C>\d+)/H:(?P<H>\d+)"
                     r"/L:(?P<L>\d+)(?P<full>/off:full)?")
UNIT_NS = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}


def load(path):
    with open(path) as f:
        data = json.load(f)
    runs = defaultdict(list)
    for b in data["benchmarks"]:
        m = NAME_RE.match(b.get("run_name", b["name"]))
        if not m:
            continue
        key = (m["fam"], m["dtype"], int(m["T"]), int(m["B"]), int(m["C"]), int(m["H"]), int(m["L"]), bool(m["full"]))
        if b.get("run_type") == "aggregate":
            continue
        runs[key].append(b)
    rows = {}
    for key, bs in runs.items():
        b = bs[0]
        # Best of repetitions (--benchmark_repetitions): other processes only ever slow a run down.
        t_ns = min(x["real_time"] * UNIT_NS[x["time_unit"]] for x in bs)
        rows[key] = {
            "time_ns": t_ns,
            "bytes": b["bytes"],
            "tokens": b["tokens"],
            "copy_bw": b.get("copy_bw", float("nan")),
            "reps": len(bs),
        }
    return data.get("context", {}), rows


class Results:
    def __init__(self, rows):
        self.rows = rows

    def get(self, fam, dtype="f32", T=65536, B=1, C=256, H=8, L=31, full=False):
        return self.rows.get((fam, dtype, T, B, C, H, L, full))

    def ns_per_token(self, *a, **k):
        r = self.get(*a, **k)
        return r["time_ns"] / r["tokens"] if r else float("nan")

    def gbps(self, *a, **k):
        r = self.get(*a, **k)
        return r["bytes"] / r["time_ns"] if r else float("nan")

    def copy_frac(self, fam, **k):
        """Bandwidth over that of a copy of the same bytes run before each timed call (counter copy_bw:
        same moments, same threads, a mean over the same iterations)."""
        r = self.get(fam, **k)
        if not r or not r["copy_bw"] or math.isnan(r["copy_bw"]):
            return float("nan")
        return (r["bytes"] / (r["time_ns"] * 1e-9)) / r["copy_bw"]

    def copy_frac_family(self, fam, **k):
        """Bandwidth over the bandwidth of the memcpy benchmark of the same configuration (same run, other moments)."""
        r, m = self.get(fam, **k), self.get("memcpy", **k)
        if not r or not m:
            return float("nan")
        return (r["bytes"] / r["time_ns"]) / (m["bytes"] / m["time_ns"])

    def values(self, fam, dtype, vary, **fixed):
        """Sorted (value, row) pairs of `fam` along parameter `vary` with the others fixed."""
        idx = {"T": 2, "B": 3, "C": 4, "H": 5, "L": 6}
        base = dict(T=65536, B=1, C=256, H=8, L=31, full=False)
        base.update(fixed)
        out = []
        for key, r in self.rows.items():
            if key[0] != fam or key[1] != dtype or key[7] != base["full"]:
                continue
            if all(key[i] == base[p] for p, i in idx.items() if p != vary):
                out.append((key[idx[vary]], r))
        return sorted(out, key=lambda x: x[0])


# ---- machine -----------------------------------------------------------------------------------------------

def machine():
    info = {"model": "unknown", "cores": "?"}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            k, _, v = line.partition(":")
            v = v.strip()
            if k.strip() == "Model name":
                info["model"] = v
            elif k.strip() == "CPU(s)":
                info["cores"] = v
            elif k.strip() == "L3 cache":
                info["l3"] = v
            elif k.strip() == "Hypervisor vendor":
                info["hypervisor"] = v
    except (OSError, subprocess.CalledProcessError):
        pass
    return info


# ---- plots -------------------------------------------------------------------------------------------------

STYLE = {
    "memcpy": ("black", "memcpy (same bytes)"),
    "prefix_sum": ("tab:gray", "cpu::prefix_sum"),
    "offsets_fwd": ("tab:olive", "cpu::offsets_forward"),
    "window_fwd": ("tab:blue", "cpu::window_forward"),
    "window_bwd": ("tab:cyan", "cpu::window_backward"),
    "talk_fwd": ("tab:green", "talk_conv forward"),
    "talk_bwd": ("darkgreen", "talk_conv backward"),
    "naive_fwd": ("tab:red", "naive windowed sum fwd"),
    "naive_bwd": ("tab:pink", "naive windowed sum bwd"),
    "orig_fwd": ("tab:orange", "original TaLK fwd"),
    "orig_bwd": ("tab:brown", "original TaLK bwd"),
    "lightconv_fwd": ("tab:purple", "LightConv fwd (K=2L+1)"),
    "dynconv_fwd": ("indigo", "DynamicConv fwd (K=2L+1)"),
}


def tag(ctx, mach):
    return (f"{mach['model']}, {mach['cores']} cores, {ctx.get('talkconv_threads', '?')} threads | "
            f"{ctx.get('date', '')[:16]} | {ctx.get('talkconv_compiler', '')} {ctx.get('talkconv_flags', '')}")


def finish(fig, ax, ctx, mach, path):
    fig.text(0.01, 0.005, tag(ctx, mach), fontsize=7, color="dimgray")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_vs_T(res, ctx, mach, path):
    fig, axes = plt.subplots(1, 2, figsize=(13, 6.6), sharey=True)
    groups = [("forward", ["memcpy", "prefix_sum", "offsets_fwd", "window_fwd", "talk_fwd", "naive_fwd", "orig_fwd",
                           "lightconv_fwd"]),
              ("backward", ["memcpy", "window_bwd", "talk_bwd", "naive_bwd", "orig_bwd"])]
    for ax, (title, fams) in zip(axes, groups):
        for fam in fams:
            pts = res.values(fam, "f32", "T", C=256, H=8, L=31)
            if pts:
                c, lab = STYLE[fam]
                ax.plot([p[0] for p in pts], [p[1]["time_ns"] / p[1]["tokens"] for p in pts], "o-", color=c, label=lab)
            if title == "forward" and fam in ("window_fwd", "talk_fwd", "naive_fwd", "memcpy"):
                pts = res.values(fam, "bf16", "T", C=256, H=8, L=31)
                if pts:
                    c, lab = STYLE[fam]
                    ax.plot([p[0] for p in pts], [p[1]["time_ns"] / p[1]["tokens"] for p in pts], "s--", color=c,
                            alpha=0.6, label=lab + " (bf16)")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ts = [1024, 4096, 16384, 65536, 262144, 1048576]
        ax.set_xticks(ts)
        ax.set_xticklabels(["1k", "4k", "16k", "64k", "256k", "1M"])
        ax.set_xlabel("sequence length T (tokens, B = 1)")
        ax.set_title(f"{title}: C = 256, H = 8, L = M = 31, float32 (bf16 dashed)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3)
    axes[0].set_ylabel("wall time per token (ns)")
    finish(fig, axes, ctx, mach, path)


def plot_vs_window(res, ctx, mach, path):
    fig, axes = plt.subplots(1, 2, figsize=(13, 6.4), sharey=True)
    groups = [("forward", ["memcpy", "window_fwd", "talk_fwd", "naive_fwd", "orig_fwd", "lightconv_fwd", "dynconv_fwd"]),
              ("backward", ["memcpy", "window_bwd", "talk_bwd", "naive_bwd", "orig_bwd"])]
    for ax, (title, fams) in zip(axes, groups):
        for fam in fams:
            pts = res.values(fam, "f32", "L", T=65536, C=256, H=8)
            if pts:
                c, lab = STYLE[fam]
                ax.plot([2 * p[0] + 1 for p in pts], [p[1]["time_ns"] / p[1]["tokens"] for p in pts], "o-", color=c,
                        label=lab)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ks = [3, 7, 15, 31, 63, 127, 255, 511, 1025]
        ax.set_xticks(ks)
        ax.set_xticklabels([str(k) for k in ks])
        ax.set_xlabel("largest window K = L + M + 1 (L = M)")
        ax.set_title(f"{title}: T = 65536, C = 256, H = 8, float32, offsets ~ U(0, 1)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3)
    axes[0].set_ylabel("wall time per token (ns)")
    finish(fig, axes, ctx, mach, path)


def plot_copy_fraction(res, ctx, mach, path):
    fams = ["prefix_sum", "offsets_fwd", "window_fwd", "window_bwd", "talk_fwd", "talk_bwd", "naive_fwd", "naive_bwd",
            "orig_fwd", "orig_bwd", "lightconv_fwd", "dynconv_fwd"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2), sharey=True)
    for ax, dtype in zip(axes, ["f32", "bf16"]):
        width = 0.27
        for i, C in enumerate([256, 512, 1024]):
            vals = [res.copy_frac(f, dtype=dtype, C=C) for f in fams]
            xs = [j + (i - 1) * width for j in range(len(fams))]
            ax.bar(xs, [0 if math.isnan(v) else v for v in vals], width, label=f"C = {C}")
        ax.axhline(0.5, color="red", ls="--", lw=1, label="target for window_fwd f32 (0.5)")
        ax.axhline(1.0, color="black", lw=0.8)
        ax.set_xticks(range(len(fams)))
        ax.set_xticklabels(fams, rotation=45, ha="right", fontsize=8)
        ax.set_title({"f32": "float32", "bf16": "bfloat16"}[dtype])
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("bytes/s / memcpy bytes/s (same configuration, same run)")
    fig.suptitle("fraction of memcpy bandwidth (minimum bytes moved), T = 65536, B = 1, H = 8, L = M = 31")
    finish(fig, axes, ctx, mach, path)


def plot_vs_heads(res, ctx, mach, path):
    fig, ax = plt.subplots(figsize=(7.5, 6))
    for fam in ["memcpy", "window_fwd", "window_bwd", "talk_fwd", "talk_bwd", "naive_fwd", "lightconv_fwd"]:
        pts = res.values(fam, "f32", "H", T=65536, C=512, L=31)
        if pts:
            c, lab = STYLE[fam]
            ax.plot([p[0] for p in pts], [p[1]["time_ns"] / p[1]["tokens"] for p in pts], "o-", color=c, label=lab)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks([1, 4, 8, 16, 64])
    ax.set_xticklabels(["1", "4", "8", "16", "64"])
    ax.set_xlabel("heads H (C = 512)")
    ax.set_ylabel("wall time per token (ns)")
    ax.set_title("heads: T = 65536, C = 512, L = M = 31, float32")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3)
    finish(fig, ax, ctx, mach, path)


# ---- markdown ----------------------------------------------------------------------------------------------

def fmt(v, nd=2):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.{nd}f}"


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def spread(vals):
    vals = [v for v in vals if not math.isnan(v)]
    return max(vals) / min(vals) if vals else float("nan")


def targets(res):
    lines = []
    # 1. window forward bandwidth
    rows = []
    for dtype in ["f32", "bf16"]:
        for C in [256, 512, 1024]:
            rows.append([f"window_fwd {dtype} C={C}", fmt(res.gbps("window_fwd", dtype=dtype, C=C)),
                         fmt(res.gbps("memcpy", dtype=dtype, C=C)), fmt(res.copy_frac("window_fwd", dtype=dtype, C=C)),
                         fmt(res.copy_frac_family("window_fwd", dtype=dtype, C=C))])
    f32_fracs = [res.copy_frac("window_fwd", C=C) for C in [256, 512, 1024]]
    t1 = min(f32_fracs)
    # 2. layer forward vs window alone
    layer = [res.get("talk_fwd", C=C)["time_ns"] / res.get("window_fwd", C=C)["time_ns"]
             if res.get("talk_fwd", C=C) and res.get("window_fwd", C=C) else float("nan") for C in [256, 512, 1024]]
    t2 = max(layer)
    # 3. flat in T
    fl_T = {f: spread([r["time_ns"] / r["tokens"] for _, r in res.values(f, "f32", "T", C=256, H=8, L=31)])
            for f in ["window_fwd", "talk_fwd", "window_bwd", "talk_bwd", "naive_fwd", "orig_fwd", "memcpy"]}
    # 4. flat in window
    fl_K = {f: spread([r["time_ns"] / r["tokens"] for _, r in res.values(f, "f32", "L", T=65536, C=256, H=8)])
            for f in ["window_fwd", "talk_fwd", "window_bwd", "talk_bwd", "naive_fwd", "naive_bwd", "orig_fwd", "memcpy"]}
    # 5. naive / talkconv at L = M = 31
    sp = {}
    for full in [False, True]:
        for a, b in [("naive_fwd", "window_fwd"), ("naive_bwd", "window_bwd")]:
            ra, rb = res.get(a, full=full), res.get(b, full=full)
            sp[(a, full)] = ra["time_ns"] / rb["time_ns"] if ra and rb else float("nan")
    ra, rb = res.get("naive_fwd"), res.get("talk_fwd")
    sp_layer = ra["time_ns"] / rb["time_ns"] if ra and rb else float("nan")

    def verdict(ok):
        return "met" if ok else "**missed**"

    lines.append(table(
        ["target (issue, CPU)", "measured", "verdict"],
        [["window aggregation forward, float32, >= 0.50 of memcpy bandwidth (same run)",
          f"{fmt(t1)} (worst of C = 256/512/1024: " + ", ".join(fmt(v) for v in f32_fracs) + ")", verdict(t1 >= 0.5)],
         ["full layer forward within 2x of window aggregation alone (talk_fwd / window_fwd)",
          f"{fmt(t2)}x (worst; C = 256/512/1024: " + ", ".join(fmt(v) for v in layer) + ")", verdict(t2 <= 2.0)],
         ["cost per token flat in T, 1k..1M, within 1.3x (window_fwd / talk_fwd)",
          f"{fmt(fl_T['window_fwd'])}x / {fmt(fl_T['talk_fwd'])}x (bwd: {fmt(fl_T['window_bwd'])}x / "
          f"{fmt(fl_T['talk_bwd'])}x)", verdict(max(fl_T["window_fwd"], fl_T["talk_fwd"]) <= 1.3)],
         ["cost per token flat in window K = 3..1025, within 1.3x (window_fwd / talk_fwd), naive grows",
          f"{fmt(fl_K['window_fwd'])}x / {fmt(fl_K['talk_fwd'])}x (bwd {fmt(fl_K['window_bwd'])}x / "
          f"{fmt(fl_K['talk_bwd'])}x); naive fwd grows {fmt(fl_K['naive_fwd'], 1)}x, bwd "
          f"{fmt(fl_K['naive_bwd'], 1)}x", verdict(max(fl_K["window_fwd"], fl_K["talk_fwd"]) <= 1.3)],
         ["L = M = 31: talkconv >= 10x faster than naive (naive_fwd / window_fwd)",
          f"{fmt(sp[('naive_fwd', False)], 1)}x with offsets ~ U(0, 1); {fmt(sp[('naive_fwd', True)], 1)}x with "
          f"offsets ~ U(0.97, 1); backward {fmt(sp[('naive_bwd', False)], 1)}x / {fmt(sp[('naive_bwd', True)], 1)}x;"
          f" naive_fwd / talk_fwd (whole layer) {fmt(sp_layer, 1)}x",
          verdict(sp[("naive_fwd", False)] >= 10) + " (U(0, 1)), " + verdict(sp[("naive_fwd", True)] >= 10)
          + " (near-full windows)"]]))
    lines.append("")
    lines.append("Window forward bandwidth (GB/s = 1e9 bytes/s of minimum traffic: x and offsets read once, y written "
                 "once), T = 65536, H = 8, L = M = 31. `vs copy` divides by a copy of the same bytes the program runs (untimed) before every "
                 "timed call, by the same threads (counter `copy_bw`): the verdicts use it. `vs memcpy benchmark` "
                 "divides by the memcpy benchmark of the same configuration, timed at other moments of the run.\n")
    lines.append(table(["kernel", "GB/s", "memcpy GB/s", "vs copy", "vs memcpy benchmark"], rows))
    return "\n".join(lines)


def sweep_table(res, dtype, vary, values_fams, fixed, label):
    pts = defaultdict(dict)
    for fam in values_fams:
        for v, r in res.values(fam, dtype, vary, **fixed):
            pts[v][fam] = r["time_ns"] / r["tokens"]
    header = [label] + values_fams
    if not pts:
        return "(not in this run)"
    rows = []
    for v in sorted(pts):
        shown = 2 * v + 1 if vary == "L" else v
        rows.append([shown] + [fmt(pts[v].get(f), 1) for f in values_fams])
    return table(header, rows)


def frac_table(res, dtype):
    fams = ["prefix_sum", "offsets_fwd", "window_fwd", "window_bwd", "talk_fwd", "talk_bwd", "naive_fwd", "naive_bwd",
            "orig_fwd", "orig_bwd", "lightconv_fwd", "dynconv_fwd"]
    rows = []
    for C in [256, 512, 1024]:
        rows.append([C, fmt(res.gbps("memcpy", dtype=dtype, C=C), 1)] +
                    [fmt(res.copy_frac(f, dtype=dtype, C=C)) for f in fams])
    return table(["C", "memcpy GB/s"] + fams, rows)


# ---- decoding (CPU) ----------------------------------------------------------------------------------------

def targets_memory_speed(res, json_path):
    """The CPU-at-memory-speed targets (issue 14), from the same run: fractions of the same-run copy
    (counter copy_bw), layer / window and backward / forward time ratios, the spread over K = 3..511, and
    the decoder step over the time to read W and one ring row (counters of decoder_step)."""
    Cs = [256, 512, 1024]

    def verdict(ok):
        return "met" if ok else "**missed**"

    def ratio(a, b, **k):
        ra, rb = res.get(a, **k), res.get(b, **k)
        return ra["time_ns"] / rb["time_ns"] if ra and rb else float("nan")

    def worst(vals, hi):
        vals = [v for v in vals if not math.isnan(v)]
        return (max(vals) if hi else min(vals)) if vals else float("nan")

    f32 = [res.copy_frac("window_fwd", dtype="f32", C=C) for C in Cs]
    half = {d: [res.copy_frac("window_fwd", dtype=d, C=C) for C in Cs] for d in ["bf16", "f16"]}
    lw = {d: [ratio("talk_fwd", "window_fwd", dtype=d, C=C) for C in Cs] for d in ["f32", "bf16"]}
    bf = {d: [ratio("window_bwd", "window_fwd", dtype=d, C=C) for C in Cs] for d in ["f32", "bf16", "f16"]}
    ks = [r["time_ns"] / r["tokens"] for L, r in res.values("window_fwd", "f32", "L", T=65536, C=256, H=8) if L <= 255]
    k_spread = spread(ks)
    _, entries = bl.load_gbench(json_path)
    dec = {}
    mac_per_s = float("nan")
    for name, e in entries.items():
        fam, p = bl.parse_name(name)
        if fam == "decoder_step" and p.get("B") == 1 and p.get("C") == 1024:
            dec[p["dtype"]] = (e.get("step_per_read", float("nan")), e["time_ms"] * 1e3, e.get("read_us", float("nan")))
        if fam == "fma_peak":
            mac_per_s = e.get("mac_per_s", float("nan"))

    def layer_floor(d, C):
        """1 + (the projection's T B C P multiply-adds at the machine's fma_peak) / window forward time: the
        least layer / window can be here, whatever the projection's code (H = 8: P = 16)."""
        w = res.get("window_fwd", dtype=d, C=C)
        if not w or math.isnan(mac_per_s) or mac_per_s <= 0:
            return float("nan")
        return 1.0 + (w["tokens"] * C * 16 / mac_per_s) / (w["time_ns"] * 1e-9)

    def listing(vals):
        return "C = 256/512/1024: " + ", ".join(fmt(v) for v in vals)

    rows = [
        ["window forward f32, fraction of a same-run copy of the same bytes, >= 0.75",
         f"{fmt(worst(f32, False))} ({listing(f32)})", verdict(worst(f32, False) >= 0.75)],
    ]
    for d in ["bf16", "f16"]:
        rows.append([f"window forward {d}, fraction of the copy, >= 0.60",
                     f"{fmt(worst(half[d], False))} ({listing(half[d])})", verdict(worst(half[d], False) >= 0.60)])
    for d in ["f32", "bf16"]:
        floors = [layer_floor(d, C) for C in Cs]
        floor_txt = "" if all(math.isnan(v) for v in floors) else \
            f"; floor at this machine's fma_peak ({fmt(mac_per_s / 1e9)} G multiply-adds/s): {listing(floors)}"
        rows.append([f"layer forward / window forward, {d}, <= 1.4x",
                     f"{fmt(worst(lw[d], True))}x ({listing(lw[d])}{floor_txt})", verdict(worst(lw[d], True) <= 1.4)])
    for d in ["f32", "bf16", "f16"]:
        rows.append([f"window backward / window forward, {d}, <= 2.0x", f"{fmt(worst(bf[d], True))}x ({listing(bf[d])})",
                     verdict(worst(bf[d], True) <= 2.0)])
    rows.append(["window forward f32 over K = 3..511 (T = 65536, C = 256), within 1.3x", f"{fmt(k_spread)}x",
                 verdict(k_spread <= 1.3)])
    for d in ["f32", "bf16"]:
        if d in dec:
            spr, step_us, read_us = dec[d]
            rows.append([f"decoder step {d}, C = 1024, B = 1, L = 63: time / time to read W and one ring row, <= 2x",
                         f"{fmt(spr)}x ({fmt(step_us)} us / {fmt(read_us)} us)", verdict(spr <= 2.0)])
    return table(["target (issue 14, CPU at memory speed)", "measured", "verdict"], rows)


def decoding_rows(path):
    """{(family, dtype, B, context or None): ns} of the decoder and KV-attention steps of a CPU JSON."""
    _, entries = bl.load_gbench(path)
    out = {}
    for name, e in entries.items():
        fam, p = bl.parse_name(name)
        if fam in ("decoder_step", "kv_attn_step"):
            out[(fam, p["dtype"], p["B"], p.get("context"))] = e["time_ms"] * 1e6
    return out


def decoding_table(dec):
    batches = sorted({k[2] for k in dec})
    ctxs = sorted({k[3] for k in dec if k[3]})
    rows = []
    for b in batches:
        rows.append([b, fmt(dec.get(("decoder_step", "f32", b, None), float("nan")) / 1e3, 1),
                     fmt(dec.get(("decoder_step", "bf16", b, None), float("nan")) / 1e3, 1)] +
                    [fmt(dec.get(("kv_attn_step", "f32", b, c), float("nan")) / 1e3, 1) for c in ctxs])
    return table(["B", "talkconv step f32 (us)", "talkconv step bf16 (us)"] +
                 [f"KV-cache attention step f32, context {c // 1024 if c >= 1024 else c}{'k' if c >= 1024 else ''} (us)"
                  for c in ctxs], rows)


def plot_decoding(dec, ctx, mach, path):
    fig, ax = plt.subplots(figsize=(8, 5.5))
    ctxs = sorted({k[3] for k in dec if k[3]})
    colors = ["tab:blue", "tab:orange", "tab:red", "tab:green"]
    for i, b in enumerate(sorted({k[2] for k in dec})):
        c = colors[i % len(colors)]
        pts = [(x, dec[("kv_attn_step", "f32", b, x)]) for x in ctxs if ("kv_attn_step", "f32", b, x) in dec]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] / 1e3 for p in pts], "s-", color=c, label=f"KV-cache attention, B={b}")
        for dtype, ls in (("f32", "-"), ("bf16", "--")):
            v = dec.get(("decoder_step", dtype, b, None))
            if v and ctxs:
                ax.plot(ctxs, [v / 1e3] * len(ctxs), ls, color=c, lw=2, label=f"talkconv step {dtype}, B={b}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("context (tokens before the step)")
    ax.set_ylabel("time per decoding step (us)")
    ax.set_title("one decoding step, C = 1024, H = 16 (talkconv: causal, L = 63)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    finish(fig, ax, ctx, mach, path)


def plot_copy_fraction_vs_K(res, ctx, mach, path):
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for fam in ["window_fwd", "window_bwd", "talk_fwd", "talk_bwd", "naive_fwd", "orig_fwd"]:
        pts = [(2 * L + 1, res.copy_frac(fam, L=L)) for L, _ in res.values(fam, "f32", "L", T=65536, C=256, H=8)]
        if pts:
            c, lab = STYLE[fam]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=c, label=lab)
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("largest window K = L + M + 1 (L = M)")
    ax.set_ylabel("fraction of a memcpy of the same bytes (same run)")
    ax.set_title("T = 65536, C = 256, H = 8, float32, offsets ~ U(0, 1)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    finish(fig, ax, ctx, mach, path)


def demote(text, by=1):
    return "\n".join(("#" * by + line) if line.startswith("#") else line for line in text.splitlines())


def cpu_machine(json_path):
    """The machine that ran json_path: <json>.machine.json where scripts/bench.sh left one, else lscpu here."""
    side = os.path.splitext(json_path)[0] + ".machine.json"
    if os.path.exists(side):
        with open(side) as f:
            return json.load(f), True
    return machine(), False


def cpu_section(args):
    ctx, rows = load(args.json)
    if not rows:
        sys.exit(f"report.py: no talkconv benchmarks in {args.json}")
    res = Results(rows)
    mach, recorded = cpu_machine(args.json)
    dec = decoding_rows(args.json)
    rel = os.path.relpath(args.plots, os.path.dirname(os.path.abspath(args.results)))
    plots = [("time_per_token_vs_T.png", plot_vs_T), ("time_vs_window.png", plot_vs_window),
             ("copy_fraction.png", plot_copy_fraction), ("time_vs_heads.png", plot_vs_heads),
             ("copy_fraction_vs_K.png", plot_copy_fraction_vs_K)]
    if plt is not None:
        os.makedirs(args.plots, exist_ok=True)
        for name, fn in plots:
            fn(res, ctx, mach, os.path.join(args.plots, name))
        if dec:
            plot_decoding(dec, ctx, mach, os.path.join(args.plots, "cpu_decode_vs_context.png"))

    la = ctx.get("load_avg", [])
    run = {k: getattr(args, k) or mach.get(k, "") for k in ("source", "run_command", "load_before", "load_after",
                                                           "load_during")}
    hv = mach.get("hypervisor")
    md = [
        f"## CPU: {mach['model']}, {mach['cores']} cores, {ctx.get('date', '?')[:10]}, commit {run['source'] or '?'}",
        "",
        "From the JSON of `talkconv_bench_cpu` (run by `scripts/bench.sh`). Every number in this section is a CPU "
        "number of this one machine; wall-clock times, OpenMP threads of one process." +
        ("" if recorded else " (The machine line is the report's own machine: no record was kept beside the JSON.)"),
        "",
        table(["", ""], [
            ["machine", f"{mach['model']} ({'VM, ' + hv if hv else 'bare metal'}), "
                        f"{mach['cores']} cores, L3 {mach.get('l3', '?')}"],
            ["date", ctx.get("date", "?")],
            ["talkconv revision", run["source"] or "?"],
            ["compiler / flags", f"{ctx.get('talkconv_compiler', '?')} / `{ctx.get('talkconv_flags', '?')}` "
                                 f"({ctx.get('talkconv_build_type', '?')}; "
                                 + ("code for this CPU's vector units (AVX2 + FMA here)"
                                    if "-march=native" in ctx.get("talkconv_flags", "") else "baseline x86-64: SSE2 code")
                                 + ")"],
            ["threads", ctx.get("talkconv_threads", "?")],
            ["command", f"`{run['run_command']}`" if run["run_command"] else "?"],
            ["Eigen / Google Benchmark", f"{ctx.get('talkconv_eigen', '?')} / Debian 1.7.1 "
                                         f"(library_build_type {ctx.get('library_build_type', '?')})"],
            ["load average at start (1/5/15 min)", ", ".join(f"{v:.2f}" for v in la) if la else "?"],
            ["load average (1/5/15 min) before / after the run", f"{run['load_before'] or '?'} / {run['load_after'] or '?'}"],
            ["1-min load during the run (includes the benchmark's own 2 threads)", run["load_during"] or "?"],
        ]),
        "",
        "### Targets",
        "",
        "Configuration unless stated: float32, T = 65536 tokens, B = 1, C = 256, H = 8, L = M = 31 (K = 63), "
        "offsets ~ U(0, 1) (the naive sum's cost follows the actual window: about half of K on average).",
        "",
        targets(res),
        "",
        "Every dtype at memory speed (issue 14): the same run, worst over C where a row lists C.",
        "",
        targets_memory_speed(res, args.json),
        "",
        "### Plots",
        "",
    ]
    if plt is not None:
        md += [f"![time per token vs T]({rel}/time_per_token_vs_T.png)", "",
               f"![time per token vs window]({rel}/time_vs_window.png)", "",
               f"![fraction of memcpy bandwidth vs window]({rel}/copy_fraction_vs_K.png)", "",
               f"![fraction of memcpy bandwidth]({rel}/copy_fraction.png)", "",
               f"![time per token vs heads]({rel}/time_vs_heads.png)", ""]
        if dec:
            md += [f"![decoding step vs context]({rel}/cpu_decode_vs_context.png)", ""]
    else:
        md += ["(plots not drawn: matplotlib is not installed where the report ran)", ""]
    md += [
        "### Time per token (ns) vs T (float32, B = 1, C = 256, H = 8, L = M = 31)",
        "",
        sweep_table(res, "f32", "T", ["memcpy", "prefix_sum", "offsets_fwd", "window_fwd", "talk_fwd", "naive_fwd",
                                      "orig_fwd", "lightconv_fwd", "window_bwd", "talk_bwd", "naive_bwd", "orig_bwd"],
                    dict(C=256, H=8, L=31), "T"),
        "",
        "bfloat16:",
        "",
        sweep_table(res, "bf16", "T", ["memcpy", "window_fwd", "talk_fwd", "naive_fwd"], dict(C=256, H=8, L=31), "T"),
        "",
        "float16:",
        "",
        sweep_table(res, "f16", "T", ["memcpy", "window_fwd", "talk_fwd"], dict(C=256, H=8, L=31), "T"),
        "",
        "### Time per token (ns) vs window K = 2L + 1 (float32, T = 65536, C = 256, H = 8)",
        "",
        sweep_table(res, "f32", "L", ["memcpy", "window_fwd", "talk_fwd", "naive_fwd", "orig_fwd", "lightconv_fwd",
                                      "dynconv_fwd", "window_bwd", "talk_bwd", "naive_bwd", "orig_bwd"],
                    dict(T=65536, C=256, H=8), "K"),
        "",
        "Offsets near 1 (~ U(0.97, 1): every window near K):",
        "",
        sweep_table(res, "f32", "L", ["memcpy", "window_fwd", "naive_fwd", "orig_fwd", "window_bwd", "naive_bwd"],
                    dict(T=65536, C=256, H=8, full=True), "K"),
        "",
        "### Time per token (ns) vs C (T = 65536, H = 8, L = M = 31)",
        "",
    ]
    every = ["memcpy", "prefix_sum", "offsets_fwd", "window_fwd", "window_bwd", "talk_fwd", "talk_bwd", "naive_fwd",
             "naive_bwd", "orig_fwd", "orig_bwd", "lightconv_fwd", "dynconv_fwd"]
    for dtype, label, fams in (("f32", "float32", every), ("bf16", "bfloat16", every),
                               ("f16", "float16", ["memcpy", "window_fwd", "window_bwd", "talk_fwd", "talk_bwd"])):
        md += [f"{label}:", "", sweep_table(res, dtype, "C", fams, dict(T=65536, H=8, L=31), "C"), ""]
    md += [
        "### Fraction of memcpy bandwidth (same configuration, same run; T = 65536, H = 8, L = M = 31)",
        "",
        "float32:",
        "",
        frac_table(res, "f32"),
        "",
        "bfloat16:",
        "",
        frac_table(res, "bf16"),
        "",
        "### Time per token (ns) vs heads (float32, T = 65536, C = 512, L = M = 31)",
        "",
        sweep_table(res, "f32", "H", ["memcpy", "window_fwd", "window_bwd", "talk_fwd", "talk_bwd", "naive_fwd",
                                      "lightconv_fwd"], dict(T=65536, C=512, L=31), "H"),
        "",
        "### Batch (float32, B = 8, T = 8192, C = 512, H = 8, L = M = 31), time per token (ns)",
        "",
        table(["memcpy", "window_fwd", "window_bwd", "talk_fwd", "talk_bwd", "naive_fwd"],
              [[fmt(res.ns_per_token(f, T=8192, B=8, C=512), 1)
                for f in ["memcpy", "window_fwd", "window_bwd", "talk_fwd", "talk_bwd", "naive_fwd"]]]),
        "",
        "### Decoding: one step, C = 1024, H = 16",
        "",
    ]
    if dec:
        md += ["talkconv's `cpu::decoder::step` (causal, L = 63) costs the same whatever the context; one step of a "
               "KV-cache attention (`bench/baselines/kv_attention.hpp`: plain loops, float cache, attention core only) "
               "reads the whole cache. Microseconds per step.", "", decoding_table(dec), ""]
    else:
        md += ["(no decoder_step / kv_attn_step entries in this JSON: it predates them)", ""]
    if args.notes and os.path.exists(args.notes):
        with open(args.notes) as f:
            md += [demote(f.read().rstrip()), ""]
    md += [
        "### Reproduce",
        "",
        "    scripts/bench.sh                       # configure (release preset), build, run, report",
        "    build/release/bench/cpu/talkconv_bench_cpu --benchmark_filter='^window_fwd/f32/.*/L:31$'",
        "",
        "Names: `<family>/<dtype>/T:<T>/B:<B>/C:<C>/H:<H>/L:<L>[/off:full]` (then Google Benchmark's "
        "`/min_time:.../real_time`). Families: memcpy, prefix_sum, offsets_fwd, window_fwd, window_bwd, talk_fwd, "
        "talk_bwd, naive_fwd, naive_bwd, orig_fwd, orig_bwd, lightconv_fwd, dynconv_fwd; decoding: "
        "`decoder_step/<dtype>/B:/C:/L:/H:`, `kv_attn_step/f32/B:/C:/H:/context:`. "
        "`TALKCONV_BENCH_SMOKE=1` runs each once on tiny sizes (ctest `bench_cpu_smoke`).",
        "",
    ]
    return "\n".join(md), len(plots) + (1 if dec else 0) if plt is not None else 0


# Hand-kept GPU profiles (bench/cuda/results/), newest first, with their section titles: the GPU sections
# while no `scripts/gpu-bench.sh` run directory exists.
PROFILES = [
    ("GPU-PROFILE-2026-11-30.md", "NVIDIA H200, 2026-11-30, commits 994b0fa and 26c1457"),
    ("GPU-PROFILE-2026-11-29-aaffc58.md", "NVIDIA H200, 2026-11-29, commit aaffc58"),
]


def gpu_runs(args):
    if args.gpu_run:
        return args.gpu_run
    base = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cuda", "results")
    if not os.path.isdir(base):
        return []
    dirs = [os.path.join(base, d) for d in sorted(os.listdir(base), reverse=True)]
    return [d for d in dirs if os.path.exists(os.path.join(d, "bench_cuda.json"))]


def main(argv=None):
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("json", nargs="?", default=os.path.join(here, "plots", "bench_cpu.json"),
                    help="talkconv_bench_cpu's JSON (default bench/plots/bench_cpu.json)")
    ap.add_argument("--no-cpu", action="store_true", help="no CPU section")
    ap.add_argument("--gpu-run", action="append", default=[], help="a GPU run directory (repeatable)")
    ap.add_argument("--no-gpu", action="store_true", help="no GPU section (neither runs nor the profile)")
    ap.add_argument("--profile", action="append", default=[],
                    help="a hand-kept GPU profile, the GPU sections while no run exists (repeatable; default: "
                         "the ones in PROFILES)")
    ap.add_argument("--keep-profile", action="store_true", help="the profile section even beside measured runs")
    ap.add_argument("--plots", default=os.path.join(here, "plots"))
    ap.add_argument("--results", default=os.path.join(here, "RESULTS.md"))
    ap.add_argument("--load-before", default="")
    ap.add_argument("--load-after", default="")
    ap.add_argument("--load-during", default="")
    ap.add_argument("--run-command", default="", help="how the JSON was produced")
    ap.add_argument("--source", default="", help="the talkconv revision measured (git commit)")
    ap.add_argument("--notes", default=os.path.join(here, "cpu", "profile_notes.md"))
    args = ap.parse_args(argv)

    rel = os.path.relpath(args.plots, os.path.dirname(os.path.abspath(args.results)))
    sections, titles, nplots = [], [], 0
    if not args.no_gpu:
        for d in gpu_runs(args):
            run = report_gpu.GpuRun(d)
            sections.append(report_gpu.section(run, args.plots, rel, plt))
            titles.append(f"GPU: {run.label()}")
            nplots += 3 if plt is not None else 0
        if not sections or args.keep_profile:
            base = os.path.join(here, "cuda", "results")
            profiles = [(p, os.path.basename(p)) for p in args.profile] or [(os.path.join(base, f), t) for f, t in PROFILES]
            for path, title in profiles:
                if os.path.exists(path):
                    sections.append(report_gpu.profile_section(path, title))
                    titles.append(f"GPU: {title}")
    if not args.no_cpu:
        text, n = cpu_section(args)
        sections.append(text)
        titles.append(text.splitlines()[0][3:])
        nplots += n
    if not sections:
        sys.exit("report.py: nothing to report (no CPU JSON, no GPU run, no profile)")
    md = ["# talkconv benchmark results", "",
          "Generated by `bench/report.py`. One section per machine: the numbers of a section come from one run on "
          "one machine (its GPU or CPU, driver, date and commit are in its first table), and ratios are only ever "
          "taken inside a section. GPU runs come from `scripts/gpu-bench.sh`, the CPU one from `scripts/bench.sh`.",
          ""] + [f"- {t}" for t in titles] + [""]
    with open(args.results, "w") as f:
        f.write("\n".join(md + sections))
    print(f"report.py: wrote {args.results} ({len(sections)} section(s)) and {nplots} plots in {args.plots}"
          + ("" if plt is not None else " (matplotlib not installed: no plots)"))


if __name__ == "__main__":
    main()
