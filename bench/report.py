#!/usr/bin/env python3
"""Turns talkconv_bench_cpu's Google Benchmark JSON into PNG plots (bench/plots/) and bench/RESULTS.md.

    python3 bench/report.py RUN.json [--plots bench/plots] [--results bench/RESULTS.md]
                            [--load-before "..."] [--load-after "..."] [--notes bench/cpu/profile_notes.md]

Every number is the machine's that ran the JSON: the header of RESULTS.md names it (lscpu model, cores),
the date, compiler, flags, threads and the load average around the run. Benchmark names are
<family>/<dtype>/T:../B:../C:../H:../L:..[/off:full]; times are wall-clock (UseRealTime).
"""
import argparse
import json
import math
import os
import re
import subprocess
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

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
        """Bandwidth over the bandwidth of the memcpy benchmark of the same configuration (same run)."""
        r, m = self.get(fam, **k), self.get("memcpy", **k)
        if not r or not m:
            return float("nan")
        return (r["bytes"] / r["time_ns"]) / (m["bytes"] / m["time_ns"])

    def copy_frac_startup(self, fam, **k):
        """Bandwidth over the best-of memcpy of the same byte count measured by the program (counter copy_bw)."""
        r = self.get(fam, **k)
        return (r["bytes"] / (r["time_ns"] * 1e-9)) / r["copy_bw"] if r else float("nan")

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
                         fmt(res.copy_frac_startup("window_fwd", dtype=dtype, C=C))])
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
                 "once), T = 65536, H = 8, L = M = 31. `vs memcpy` divides by the memcpy benchmark of the same "
                 "configuration in the same run; `vs best memcpy` by the best of repeated copies of the same byte "
                 "count timed by the program (counter `copy_bw`).\n")
    lines.append(table(["kernel", "GB/s", "memcpy GB/s", "vs memcpy", "vs best memcpy"], rows))
    return "\n".join(lines)


def sweep_table(res, dtype, vary, values_fams, fixed, label):
    pts = defaultdict(dict)
    for fam in values_fams:
        for v, r in res.values(fam, dtype, vary, **fixed):
            pts[v][fam] = r["time_ns"] / r["tokens"]
    header = [label] + values_fams
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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("json")
    ap.add_argument("--plots", default=os.path.join(os.path.dirname(__file__), "plots"))
    ap.add_argument("--results", default=os.path.join(os.path.dirname(__file__), "RESULTS.md"))
    ap.add_argument("--load-before", default="")
    ap.add_argument("--load-after", default="")
    ap.add_argument("--load-during", default="")
    ap.add_argument("--run-command", default="", help="how the JSON was produced")
    ap.add_argument("--source", default="", help="the talkconv revision measured (git commit)")
    ap.add_argument("--notes", default=os.path.join(os.path.dirname(__file__), "cpu", "profile_notes.md"))
    args = ap.parse_args()

    ctx, rows = load(args.json)
    if not rows:
        sys.exit(f"report.py: no talkconv benchmarks in {args.json}")
    res = Results(rows)
    mach = machine()
    os.makedirs(args.plots, exist_ok=True)
    plots = [("time_per_token_vs_T.png", plot_vs_T), ("time_vs_window.png", plot_vs_window),
             ("copy_fraction.png", plot_copy_fraction), ("time_vs_heads.png", plot_vs_heads)]
    for name, fn in plots:
        fn(res, ctx, mach, os.path.join(args.plots, name))
    rel = os.path.relpath(args.plots, os.path.dirname(os.path.abspath(args.results)))

    la = ctx.get("load_avg", [])
    md = [
        "# talkconv CPU benchmarks",
        "",
        "Generated by `bench/report.py` from the JSON of `talkconv_bench_cpu` (run by `scripts/bench.sh`). "
        "Every number below is a CPU number of this one machine; wall-clock times, OpenMP threads of one process.",
        "",
        table(["", ""], [
            ["machine", f"{mach['model']} ({mach.get('hypervisor', 'bare metal') and 'VM, ' + mach.get('hypervisor', '') if mach.get('hypervisor') else 'bare metal'}), "
                        f"{mach['cores']} cores, L3 {mach.get('l3', '?')}"],
            ["date", ctx.get("date", "?")],
            ["talkconv revision", args.source or "?"],
            ["compiler / flags", f"{ctx.get('talkconv_compiler', '?')} / `{ctx.get('talkconv_flags', '?')}` "
                                 f"({ctx.get('talkconv_build_type', '?')}; "
                                 + ("code for this CPU's vector units (AVX2 + FMA here)"
                                    if "-march=native" in ctx.get("talkconv_flags", "") else "baseline x86-64: SSE2 code")
                                 + ")"],
            ["threads", ctx.get("talkconv_threads", "?")],
            ["command", f"`{args.run_command}`" if args.run_command else "?"],
            ["Eigen / Google Benchmark", f"{ctx.get('talkconv_eigen', '?')} / Debian 1.7.1 "
                                         f"(library_build_type {ctx.get('library_build_type', '?')})"],
            ["load average at start (1/5/15 min)", ", ".join(f"{v:.2f}" for v in la) if la else "?"],
            ["load average (1/5/15 min) before / after the run", f"{args.load_before or '?'} / {args.load_after or '?'}"],
            ["1-min load during the run (includes the benchmark's own 2 threads)", args.load_during or "?"],
        ]),
        "",
        "## Targets",
        "",
        "Configuration unless stated: float32, T = 65536 tokens, B = 1, C = 256, H = 8, L = M = 31 (K = 63), "
        "offsets ~ U(0, 1) (the naive sum's cost follows the actual window: about half of K on average).",
        "",
        targets(res),
        "",
        "## Plots",
        "",
        f"![time per token vs T]({rel}/time_per_token_vs_T.png)",
        "",
        f"![time per token vs window]({rel}/time_vs_window.png)",
        "",
        f"![fraction of memcpy bandwidth]({rel}/copy_fraction.png)",
        "",
        f"![time per token vs heads]({rel}/time_vs_heads.png)",
        "",
        "## Time per token (ns) vs T (float32, B = 1, C = 256, H = 8, L = M = 31)",
        "",
        sweep_table(res, "f32", "T", ["memcpy", "prefix_sum", "offsets_fwd", "window_fwd", "talk_fwd", "naive_fwd",
                                      "orig_fwd", "lightconv_fwd", "window_bwd", "talk_bwd", "naive_bwd", "orig_bwd"],
                    dict(C=256, H=8, L=31), "T"),
        "",
        "bfloat16:",
        "",
        sweep_table(res, "bf16", "T", ["memcpy", "window_fwd", "talk_fwd", "naive_fwd"], dict(C=256, H=8, L=31), "T"),
        "",
        "## Time per token (ns) vs window K = 2L + 1 (float32, T = 65536, C = 256, H = 8)",
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
        "## Time per token (ns) vs C (T = 65536, H = 8, L = M = 31)",
        "",
        "float32:",
        "",
        sweep_table(res, "f32", "C", ["memcpy", "prefix_sum", "offsets_fwd", "window_fwd", "window_bwd", "talk_fwd",
                                      "talk_bwd", "naive_fwd", "naive_bwd", "orig_fwd", "orig_bwd", "lightconv_fwd",
                                      "dynconv_fwd"], dict(T=65536, H=8, L=31), "C"),
        "",
        "bfloat16:",
        "",
        sweep_table(res, "bf16", "C", ["memcpy", "prefix_sum", "offsets_fwd", "window_fwd", "window_bwd", "talk_fwd",
                                       "talk_bwd", "naive_fwd", "naive_bwd", "orig_fwd", "orig_bwd", "lightconv_fwd",
                                       "dynconv_fwd"], dict(T=65536, H=8, L=31), "C"),
        "",
        "## Fraction of memcpy bandwidth (same configuration, same run; T = 65536, H = 8, L = M = 31)",
        "",
        "float32:",
        "",
        frac_table(res, "f32"),
        "",
        "bfloat16:",
        "",
        frac_table(res, "bf16"),
        "",
        "## Time per token (ns) vs heads (float32, T = 65536, C = 512, L = M = 31)",
        "",
        sweep_table(res, "f32", "H", ["memcpy", "window_fwd", "window_bwd", "talk_fwd", "talk_bwd", "naive_fwd",
                                      "lightconv_fwd"], dict(T=65536, C=512, L=31), "H"),
        "",
        "## Batch (float32, B = 8, T = 8192, C = 512, H = 8, L = M = 31), time per token (ns)",
        "",
        table(["memcpy", "window_fwd", "window_bwd", "talk_fwd", "talk_bwd", "naive_fwd"],
              [[fmt(res.ns_per_token(f, T=8192, B=8, C=512), 1)
                for f in ["memcpy", "window_fwd", "window_bwd", "talk_fwd", "talk_bwd", "naive_fwd"]]]),
        "",
    ]
    if args.notes and os.path.exists(args.notes):
        with open(args.notes) as f:
            md += [f.read().rstrip(), ""]
    md += [
        "## Reproduce",
        "",
        "    scripts/bench.sh                       # configure (release preset), build, run, report",
        "    build/release/bench/cpu/talkconv_bench_cpu --benchmark_filter='^window_fwd/f32/.*/L:31$'",
        "",
        "Names: `<family>/<dtype>/T:<T>/B:<B>/C:<C>/H:<H>/L:<L>[/off:full]` (then Google Benchmark's "
        "`/min_time:.../real_time`). Families: memcpy, prefix_sum, offsets_fwd, window_fwd, window_bwd, talk_fwd, "
        "talk_bwd, naive_fwd, naive_bwd, orig_fwd, orig_bwd, lightconv_fwd, dynconv_fwd. "
        "`TALKCONV_BENCH_SMOKE=1` runs each once on tiny sizes (ctest `bench_cpu_smoke`).",
        "",
    ]
    with open(args.results, "w") as f:
        f.write("\n".join(md))
    print(f"report.py: wrote {args.results} and {len(plots)} plots in {args.plots}")


if __name__ == "__main__":
    main()
