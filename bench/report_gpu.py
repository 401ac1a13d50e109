"""One GPU section of bench/RESULTS.md from one run directory (bench/report.py calls it):

    <run>/bench_cuda.json   talkconv_cuda_bench --benchmark_out (required)
    <run>/peers.json        bench/peer_torch.py --json-out (optional: no peer columns without it)
    <run>/run.json          what scripts/gpu-bench.sh records: commit, date, gpu, driver, nvcc (optional)

Everything in a section comes from that one run: one GPU, one date, one commit; ratios are between
numbers of the same run.
"""
import json
import math
import os

import benchlib as bl

BASE = bl.make_shape(4096, 16, 1024, 16, 16, 0)


def _load_json(path):
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return {}


class GpuRun:
    def __init__(self, run_dir):
        self.dir = run_dir
        self.ctx, self.entries = bl.load_gbench(os.path.join(run_dir, "bench_cuda.json"))
        p = _load_json(os.path.join(run_dir, "peers.json"))
        self.peer_ctx, self.peers, self.decode = p.get("context", {}), p.get("peers", []), p.get("decode", [])
        self.missing = p.get("missing", [])
        self.run = _load_json(os.path.join(run_dir, "run.json"))
        self.idx = bl.peer_index(self.peers)

    # ---- lookups ----
    def get(self, fam, s):
        return self.entries.get(fam + bl.shape_suffix(s))

    def ms(self, fam, s):
        e = self.get(fam, s)
        return e["time_ms"] if e else None

    def copy_ms(self, s):
        e = self.entries.get(f"copy/dtype:{s.dtype}/T:{s.T}/B:{s.B}/C:{s.C}")
        return e["time_ms"] if e else None

    def frac(self, fam, s):
        e = self.get(fam, s)
        return e.get("copy_fraction") if e else None

    def fb(self, s):
        return bl.talkconv_times(self.entries, s)[1]

    def peer(self, p, s, key="fwdbwd_ms"):
        r = self.idx.get((p, s))
        return r.get(key) if r else None

    def label(self):
        gpu = self.run.get("gpu") or self.peer_ctx.get("gpu") or self.ctx.get("device", "unknown GPU")
        date = (self.run.get("date") or self.ctx.get("date", "?"))[:10]
        commit = self.run.get("commit") or self.peer_ctx.get("commit", "?")
        return f"{gpu}, {date}, commit {commit}"

    def slug(self):
        return os.path.basename(os.path.normpath(self.dir))


def fnum(v, nd=3):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.{nd}f}"


def ratio(a, b):
    return a / b if a is not None and b not in (None, 0) else None


def fratio(a, b):
    r = ratio(a, b)
    return "-" if r is None else (f"**{r:.2f}x**" if r < 1 else f"{r:.2f}x")


# ---- crossover -------------------------------------------------------------------------------------------

def crossover(xs, ours, theirs):
    """The x (log-log interpolation) where theirs / ours passes 1, or None; xs ascending."""
    pts = [(x, a, b) for x, a, b in zip(xs, ours, theirs) if a and b]
    for (x0, a0, b0), (x1, a1, b1) in zip(pts, pts[1:]):
        r0, r1 = math.log(b0 / a0), math.log(b1 / a1)
        if r0 == 0:
            return x0
        if (r0 < 0) != (r1 < 0):
            f = r0 / (r0 - r1)
            return math.exp(math.log(x0) + f * (math.log(x1) - math.log(x0)))
    return None


# ---- plots -------------------------------------------------------------------------------------------------

PEER_STYLE = {"sdpa": ("tab:red", "flash-attention core (SDPA)"), "lightconv": ("tab:purple", "LightConv (cuDNN conv1d)"),
              "dynconv": ("indigo", "DynamicConv (unfold + bmm)"), "torch_talk": ("tab:orange", "original TaLK (PyTorch)")}


def plot_time_vs_T(plt, run, path):
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.8))
    panels = [("T * B = 262144 tokens", [bl.make_shape(T, bl.FIXED_TOKENS // T, 1024, 16, 16, 0) for T in bl.T_SWEEP]),
              ("B = 1", [bl.make_shape(T, 1, 1024, 16, 16, 0) for T in bl.T_SWEEP])]
    for ax, (title, shapes) in zip(axes, panels):
        xs = [s.T for s in shapes]
        ours = [run.fb(s) for s in shapes]
        ax.plot(xs, [v if v else float("nan") for v in ours], "o-", color="tab:green", lw=2,
                label="talkconv layer fwd+bwd")
        ax.plot(xs, [run.ms("layer_fwd", s) or float("nan") for s in shapes], "o--", color="tab:green", alpha=0.6,
                label="talkconv layer fwd")
        ax.plot(xs, [2 * (run.copy_ms(s) or float("nan")) for s in shapes], ":", color="black",
                label="2 copies of x (fwd+bwd roof, about)")
        for p, (c, lab) in PEER_STYLE.items():
            vals = [run.peer(p, s) for s in shapes]
            if any(vals):
                ax.plot(xs, [v if v else float("nan") for v in vals], "s-", color=c, label=lab + " fwd+bwd")
        x = crossover(xs, ours, [run.peer("sdpa", s) for s in shapes])
        if x:
            ax.axvline(x, color="tab:red", ls="--", lw=1)
            ax.annotate(f"attention crossover\nT ~ {x:,.0f}", (x, ax.get_ylim()[0]), textcoords="offset points",
                        xytext=(4, 8), fontsize=8, color="tab:red")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(xs)
        ax.set_xticklabels([f"{t // 1024}k" for t in xs])
        ax.set_xlabel("sequence length T")
        ax.set_title(f"{title}: bf16, C = 1024, H = 16, L = M = 16")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    axes[0].set_ylabel("time per call (ms)")
    fig.text(0.01, 0.005, run.label(), fontsize=7, color="dimgray")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_copy_fraction_vs_K(plt, run, path):
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for fam, c in (("window_fwd", "tab:blue"), ("layer_fwd", "tab:green"), ("layer_bwd", "darkgreen")):
        for causal, ls in ((0, "o-"), (1, "s--")):
            shapes = [bl.make_shape(4096, 16, 1024, 16, L, causal) for L in bl.WINDOWS]
            ks = [s.L + s.M + 1 for s in shapes]
            fr = [run.frac(fam, s) for s in shapes]
            if any(v is not None for v in fr):
                ax.plot(ks, [v if v is not None else float("nan") for v in fr], ls, color=c,
                        label=f"{fam} ({'causal' if causal else 'bidirectional'})")
    ax.axhline(1.0, color="black", lw=0.8)
    for y, lab in ((0.85, "window target 0.85"), (0.6, "layer fwd target 0.60"), (0.5, "layer bwd target 0.50")):
        ax.axhline(y, color="gray", ls=":", lw=0.8)
        ax.text(2, y, lab, fontsize=7, color="gray", va="bottom")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("window K = L + M + 1")
    ax.set_ylabel("fraction of a device copy of the same bytes")
    ax.set_title("bf16, T = 4096, B = 16, C = 1024, H = 16")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.text(0.01, 0.005, run.label(), fontsize=7, color="dimgray")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_decode(plt, run, path):
    fig, ax = plt.subplots(figsize=(8, 5.5))
    ctxs = list(bl.DECODE_CONTEXTS)
    colors = {1: "tab:blue", 8: "tab:orange", 64: "tab:red"}
    by = {(r["B"], r["context"]): r.get("step_us") for r in run.decode}
    for b in bl.DECODE_BATCHES:
        vals = [by.get((b, c)) for c in ctxs]
        if any(vals):
            ax.plot(ctxs, [v if v else float("nan") for v in vals], "s-", color=colors[b], label=f"SDPA KV-cache step, B={b}")
        name = f"decoder_step/dtype:bf16/B:{b}/C:{bl.DECODE_C}/L:{bl.DECODE_L}/H:{bl.DECODE_H}"
        for suffix, ls, what in (("", "-", "talkconv step"), ("/graph:1", ":", "talkconv step (graph)")):
            e = run.entries.get(name + suffix)
            if e:
                ax.plot(ctxs, [e["time_ms"] * 1e3] * len(ctxs), ls, color=colors[b], lw=2, label=f"{what}, B={b}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(ctxs)
    ax.set_xticklabels([f"{c // 1024}k" for c in ctxs])
    ax.set_xlabel("context (tokens before the step)")
    ax.set_ylabel("time per decoding step (us)")
    ax.set_title("one decoding step, bf16, C = 1024, H = 16 (talkconv: L = 63)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.text(0.01, 0.005, run.label(), fontsize=7, color="dimgray")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---- markdown ----------------------------------------------------------------------------------------------

def targets(run):
    b32 = BASE._replace(dtype="f32")
    spread_T = [run.fb(bl.make_shape(T, bl.FIXED_TOKENS // T, 1024, 16, 16, 0)) for T in bl.T_SWEEP[:4]]
    per_tok = [v / (bl.FIXED_TOKENS) for v in spread_T if v]
    bwd_K = [run.ms("layer_bwd", bl.make_shape(4096, 16, 1024, 16, L, 0)) for L in bl.WINDOWS if L <= 255]
    bwd_K = [v for v in bwd_K if v]
    t1024 = bl.make_shape(1024, 64, 1024, 16, 16, 0)

    def dec(b):
        e = run.entries.get(f"decoder_step/dtype:bf16/B:{b}/C:1024/L:63/H:16")
        g = run.entries.get(f"decoder_step/dtype:bf16/B:{b}/C:1024/L:63/H:16/graph:1")
        return (f"{fnum(e['time_ms'] * 1e3, 1)} us" if e else "-") + (f" (graph {fnum(g['time_ms'] * 1e3, 1)})" if g else "")

    rows = [
        ["window forward, fraction of a same-run copy, bf16 / f32", f"{fnum(run.frac('window_fwd', BASE), 2)} / "
         f"{fnum(run.frac('window_fwd', b32), 2)}", ">= 0.85"],
        ["layer forward (x read + y written), bf16 / f32", f"{fnum(run.frac('layer_fwd', BASE), 2)} / "
         f"{fnum(run.frac('layer_fwd', b32), 2)}", ">= 0.60"],
        ["layer backward (x, dy read, dx written, x again), bf16 / f32", f"{fnum(run.frac('layer_bwd', BASE), 2)} / "
         f"{fnum(run.frac('layer_bwd', b32), 2)}", ">= 0.50"],
        ["layer fwd+bwd vs flash-attention core, T = 1024 x B = 64", fratio(run.peer("sdpa", t1024), run.fb(t1024)),
         ">= 5x"],
        ["layer fwd+bwd vs flash-attention core, T = 4096 x B = 16", fratio(run.peer("sdpa", BASE), run.fb(BASE)),
         ">= 15x"],
        ["layer fwd+bwd vs cuDNN depthwise conv1d K = 33 (LightConv)", fratio(run.peer("lightconv", BASE), run.fb(BASE)),
         ">= 5x"],
        ["cost per token, T 1k..64k at T * B = 262144 (max / min)",
         f"{fnum(max(per_tok) / min(per_tok), 2)}x" if per_tok else "-", "flat"],
        ["backward over K = 3 .. 511 (max / min)", f"{fnum(max(bwd_K) / min(bwd_K), 2)}x" if bwd_K else "-",
         "within 1.5x"],
        ["decoder step, C = 1024, L = 63, bf16, B = 1 / B = 64", f"{dec(1)} / {dec(64)}", "<= 8 / <= 15 us"],
    ]
    return bl.table(["measure (issue 10, this run)", "measured", "target"], rows)


def t_table(run, shapes):
    rows = []
    for s in shapes:
        fb = run.fb(s)
        rows.append([s.T, s.B, fnum(run.copy_ms(s)), fnum(run.ms("window_fwd", s)), fnum(run.ms("layer_fwd", s)),
                     fnum(run.ms("layer_bwd", s)), fnum(fb), fnum(fb * 1e6 / (s.T * s.B), 2) if fb else "-",
                     fnum(run.ms("orig_fwd", s)), fnum(run.ms("orig_bwd", s)), fnum(run.peer("sdpa", s)),
                     fratio(run.peer("sdpa", s), fb)])
    return bl.table(["T", "B", "copy ms", "window_fwd ms", "layer_fwd ms", "layer_bwd ms", "layer fwd+bwd ms",
                     "fwd+bwd ns/token", "orig_fwd ms", "orig_bwd ms", "SDPA fwd+bwd ms", "SDPA / talkconv"], rows)


def k_table(run):
    rows = []
    for causal in (0, 1):
        for L in bl.WINDOWS:
            s = bl.make_shape(4096, 16, 1024, 16, L, causal)
            fb = run.fb(s)
            rows.append([s.L + s.M + 1, "causal" if causal else "bidir", fnum(run.ms("window_fwd", s)),
                         fnum(run.frac("window_fwd", s), 2), fnum(run.ms("layer_fwd", s)), fnum(run.frac("layer_fwd", s), 2),
                         fnum(run.ms("layer_bwd", s)), fnum(run.frac("layer_bwd", s), 2), fnum(run.ms("orig_fwd", s)),
                         fnum(run.peer("lightconv", s)), fratio(run.peer("lightconv", s), fb),
                         fnum(run.peer("dynconv", s)), fratio(run.peer("dynconv", s), fb)])
    return bl.table(["K", "mode", "window_fwd ms", "copy frac", "layer_fwd ms", "copy frac", "layer_bwd ms",
                     "copy frac", "orig_fwd ms", "LightConv fwd+bwd ms", "LightConv / talkconv",
                     "DynamicConv fwd+bwd ms", "DynamicConv / talkconv"], rows)


def family_table(run, shapes, first, first_of):
    fams = ["window_fwd", "layer_fwd", "layer_bwd", "orig_fwd", "orig_bwd"]
    rows = []
    for s in shapes:
        rows.append([first_of(s), fnum(run.copy_ms(s))] + [
            (f"{fnum(run.ms(f, s))} ({fnum(run.frac(f, s), 2)})" if run.get(f, s) else "-") for f in fams])
    return bl.table([first, "copy ms"] + [f"{f} ms (copy frac)" for f in fams], rows)


def section(run, plots_dir, rel, plt, level="##"):
    """Markdown of one GPU run; draws its plots into plots_dir (referenced as rel/<file>)."""
    slug = run.slug()
    names = {"t": f"gpu_{slug}_time_vs_T.png", "k": f"gpu_{slug}_copy_fraction_vs_K.png",
             "d": f"gpu_{slug}_decode_vs_context.png"}
    if plt is not None:
        os.makedirs(plots_dir, exist_ok=True)
        plot_time_vs_T(plt, run, os.path.join(plots_dir, names["t"]))
        plot_copy_fraction_vs_K(plt, run, os.path.join(plots_dir, names["k"]))
        plot_decode(plt, run, os.path.join(plots_dir, names["d"]))
    shapes = bl.peer_shapes(run.ctx.get("talkconv_bench_set", "quick"))
    pc, r = run.peer_ctx, run.run
    info = [
        ["GPU", r.get("gpu") or pc.get("gpu") or run.ctx.get("device", "?")],
        ["driver / CUDA", f"{r.get('driver') or pc.get('driver', '?')} / runtime {run.ctx.get('cuda_runtime', '?')}, "
                          f"{r.get('nvcc', '')}"],
        ["date", r.get("date") or run.ctx.get("date", "?")],
        ["talkconv commit", r.get("commit") or pc.get("commit", "?")],
        ["benchmark set", f"{run.ctx.get('talkconv_bench_set', '?')} (talkconv_cuda_bench, CUDA events, "
                          "Google Benchmark manual time)"],
        ["peers", f"PyTorch {pc.get('torch', '-')} (CUDA {pc.get('torch_cuda', '-')}, cuDNN {pc.get('cudnn', '-')}), "
                  "CUDA events, median" if pc else "not run"],
        ["source files", f"`{os.path.join(run.dir, 'bench_cuda.json')}`" + (", `peers.json`" if pc else "")],
    ]
    if run.ctx.get("note"):
        info.append(["note", run.ctx["note"]])
    md = [f"{level} GPU: {run.label()}", "", bl.table(["", ""], info), ""]
    if run.missing:
        md += ["**Missing talkconv entries in this run:** " + ", ".join(f"`{n}`" for n in run.missing), ""]
    sub = level + "#"
    md += [f"{sub} Targets (issue 10)", "", targets(run), ""]
    if plt is not None:
        md += [f"![time vs T]({rel}/{names['t']})", "", f"![copy fraction vs K]({rel}/{names['k']})", "",
               f"![decoding step vs context]({rel}/{names['d']})", ""]
    else:
        md += ["(plots not drawn: matplotlib is not installed where the report ran)", ""]
    md += [f"{sub} Sequence length, bf16, C = 1024, H = 16, L = M = 16", "",
           "At a fixed T * B = 262144 tokens:", "",
           t_table(run, [bl.make_shape(T, bl.FIXED_TOKENS // T, 1024, 16, 16, 0) for T in bl.T_SWEEP] +
                   [bl.make_shape(1024, 64, 1024, 16, 16, 0)]), "",
           "At B = 1:", "", t_table(run, [bl.make_shape(T, 1, 1024, 16, 16, 0) for T in bl.T_SWEEP]), "",
           f"{sub} Window, bf16, T = 4096, B = 16, C = 1024, H = 16", "", k_table(run), "",
           f"{sub} Element type, T = 4096, B = 16, C = 1024, H = 16, L = M = 16 (causal: L = 16, M = 0)", "",
           family_table(run, [BASE._replace(dtype=d, M=m, causal=c) for c, m in ((0, 16), (1, 0))
                              for d in ("bf16", "f16", "f32")], "dtype / mode",
                        lambda s: f"{s.dtype} {'causal' if s.causal else 'bidir'}"), "",
           f"{sub} Channels, bf16, T = 4096, B = 16, H = 16, L = M = 16", "",
           family_table(run, [BASE._replace(C=C) for C in bl.CHANNELS], "C", lambda s: s.C), "",
           f"{sub} Heads, bf16, T = 4096, B = 16, C = 1024, L = M = 16", "",
           family_table(run, [BASE._replace(H=H) for H in bl.HEADS], "H", lambda s: s.H), ""]
    if run.peers or run.decode:
        md += [f"{sub} Peers, every shape (peer time / talkconv time; above 1 talkconv is faster)", "",
               bl.summary_table(run.entries, run.peers, shapes), "",
               f"{sub} Decoding, bf16, C = 1024, H = 16, L = 63", "",
               "talkconv's step does not depend on the context; an attention step reads the whole KV cache (SDPA "
               "core only).", "", bl.decode_table(run.entries, run.decode), ""]
    return "\n".join(md)


def profile_section(path, title, level="##"):
    """A hand-kept GPU profile (bench/cuda/results/GPU-PROFILE-*.md) as it was written, its headings under a
    GPU section of its own titled `title`."""
    with open(path) as f:
        text = f.read().strip().splitlines()
    body = []
    for line in text[1:]:  # its own title becomes the section's
        body.append(("#" * (len(level) - 1) + line) if line.startswith("#") else line)
    name = os.path.basename(path)
    return "\n".join([f"{level} GPU: {title} ({name}, kept by hand; not from bench/report.py's pipeline)", "",
                      f"Copied from bench/cuda/results/{name} as it was written; it stays until a run of "
                      "`scripts/gpu-bench.sh` replaces it.", ""] + body)
