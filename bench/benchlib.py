"""talkconv benchmark names, Google Benchmark JSON, the peer shapes and the ratio tables (no PyTorch).

Shared by bench/peer_torch.py (which adds the PyTorch timing), bench/report.py and the test
bench/test_benchlib.py. Names carry every parameter as key:value segments after the family:

    layer_fwd/dtype:bf16/T:4096/B:16/C:1024/H:16/L:16/M:16/causal:0     (talkconv_cuda_bench)
    copy/dtype:bf16/T:4096/B:16/C:1024
    decoder_step/dtype:bf16/B:1/C:1024/L:63/H:16[/graph:1]
    window_fwd/f32/T:65536/B:1/C:256/H:8/L:31[/off:full]               (talkconv_bench_cpu: a bare dtype)

Google Benchmark appends its own segments (min_time:0.050, manual_time, real_time, repeats:3, ...);
canonical() drops them, so a name matches whatever options the run used.
"""
import json
import re
from collections import namedtuple

# Segments Google Benchmark adds to a registered name.
GB_KEYS = {"min_time", "min_warmup_time", "iterations", "repeats", "threads"}
GB_FLAGS = {"manual_time", "real_time", "process_time"}
DTYPES = ("f32", "f16", "bf16", "f64")
AGGREGATE_RE = re.compile(r"_(mean|median|stddev|cv)$")  # the names of --benchmark_repetitions' aggregates
UNIT_MS = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}


class MissingEntries(Exception):
    """Expected talkconv benchmark entries that a JSON file does not have."""

    def __init__(self, source, missing):
        self.source, self.missing = source, list(missing)
        super().__init__(f"{len(self.missing)} expected talkconv entr{'y' if len(self.missing) == 1 else 'ies'} "
                         f"missing from {source}:\n  " + "\n  ".join(self.missing))


def parse_name(name):
    """(family, {key: value}) of a benchmark name; ints where the value is one, Google Benchmark's own
    segments dropped; a bare dtype segment (the CPU benchmarks') becomes dtype:<it>."""
    parts = AGGREGATE_RE.sub("", name).split("/")
    fam, params = parts[0], {}
    for seg in parts[1:]:
        if seg in GB_FLAGS:
            continue
        key, sep, val = seg.partition(":")
        if not sep:
            if seg in DTYPES:
                params["dtype"] = seg
                continue
            raise ValueError(f"benchmark name {name!r}: segment {seg!r} is neither key:value nor a dtype")
        if key in GB_KEYS:
            continue
        params[key] = int(val) if val.lstrip("-").isdigit() else val
    return fam, params


def canonical(name):
    """The name without Google Benchmark's segments: the key entries are matched by."""
    fam, params = parse_name(name)
    return format_name(fam, params)


def format_name(fam, params):
    return "/".join([fam] + [f"{k}:{v}" for k, v in params.items()])


# ---- shapes ------------------------------------------------------------------------------------------------

Shape = namedtuple("Shape", "dtype T B C H L M causal")


def shape_suffix(s):
    return (f"/dtype:{s.dtype}/T:{s.T}/B:{s.B}/C:{s.C}/H:{s.H}/L:{s.L}/M:{s.M}/causal:{int(bool(s.causal))}")


def make_shape(T, B, C, H, L, causal, dtype="bf16"):
    return Shape(dtype, T, B, C, H, L, 0 if causal else L, int(bool(causal)))


def shape_of(params):
    return Shape(params["dtype"], params["T"], params["B"], params["C"], params["H"], params["L"], params["M"],
                 params["causal"])


def shape_label(s):
    k = s.L + s.M + 1
    return (f"{s.dtype} T={s.T} B={s.B} C={s.C} H={s.H} " +
            (f"causal L={s.L}" if s.causal else f"L=M={s.L}" if s.L == s.M else f"L={s.L} M={s.M}") + f" (K={k})")


T_SWEEP = (1024, 4096, 16384, 65536, 262144)
FIXED_TOKENS = 262144
WINDOWS = (1, 3, 7, 15, 31, 63, 127, 255, 511)
CHANNELS = (256, 512, 1024, 2048, 4096)
HEADS = (1, 4, 16, 64)
BASE = dict(T=4096, B=16, C=1024, H=16, L=16)


def peer_shapes(which="quick"):
    """The layer shapes the peers are timed on: the layer points of talkconv_cuda_bench's set (its
    register_all; the ctest bench_cuda_names checks that the program registers every one)."""
    out = []

    def add(s):
        if s not in out:
            out.append(s)

    for causal in (0, 1):
        for dtype in ("bf16", "f32", "f16"):
            add(make_shape(4096, 16, 1024, 16, 16, causal, dtype))
    dtypes = ("bf16",) if which == "quick" else ("bf16", "f32", "f16")
    for dtype in dtypes:
        for T in T_SWEEP:
            add(make_shape(T, FIXED_TOKENS // T, 1024, 16, 16, 0, dtype))
            add(make_shape(T, 1, 1024, 16, 16, 0, dtype))
        add(make_shape(1024, 64, 1024, 16, 16, 0, dtype))
        for L in WINDOWS:
            for causal in (0, 1):
                add(make_shape(4096, 16, 1024, 16, L, causal, dtype))
        for C in CHANNELS:
            add(make_shape(4096, 16, C, 16, 16, 0, dtype))
    for H in HEADS:
        add(make_shape(4096, 16, 1024, H, 16, 0))
    return out


def expected_layer_names(shapes):
    """talkconv entries the peer tables need: layer forward and backward of every shape."""
    return [f"{fam}{shape_suffix(s)}" for s in shapes for fam in ("layer_fwd", "layer_bwd")]


DECODE_BATCHES = (1, 8, 64)
DECODE_CONTEXTS = (1024, 4096, 16384, 65536)
DECODE_C, DECODE_H, DECODE_L = 1024, 16, 63


def expected_decoder_names(dtype="bf16"):
    """talkconv's GPU decoder step (one stream launch, and CUDA graph replay) for B in 1, 8, 64."""
    base = [f"decoder_step/dtype:{dtype}/B:{b}/C:{DECODE_C}/L:{DECODE_L}/H:{DECODE_H}" for b in DECODE_BATCHES]
    return base + [n + "/graph:1" for n in base]


# ---- Google Benchmark JSON ---------------------------------------------------------------------------------

def load_gbench(path_or_data):
    """(context, {canonical name: entry}) of a Google Benchmark JSON file (or its parsed dict). entry has
    time_ms (real time; the median aggregate when the run had repetitions, else the fastest iteration
    run), the counters as numbers, and name (as written)."""
    if isinstance(path_or_data, dict):
        data = path_or_data
    else:
        with open(path_or_data) as f:
            data = json.load(f)
    runs, medians = {}, {}
    for b in data.get("benchmarks", []):
        if "error_occurred" in b and b["error_occurred"]:
            continue
        key = canonical(b.get("run_name", b["name"]))
        ms = b["real_time"] * UNIT_MS[b.get("time_unit", "ns")]
        entry = dict(b, time_ms=ms)
        if b.get("run_type") == "aggregate":
            if b.get("aggregate_name") == "median":
                medians[key] = entry
            continue
        if key not in runs or ms < runs[key]["time_ms"]:
            runs[key] = entry
    runs.update(medians)
    return data.get("context", {}), runs


def listed_names(text):
    """Canonical names from `--benchmark_list_tests` output (one name a line)."""
    return {canonical(line.strip()) for line in text.splitlines() if line.strip() and "/" in line}


def match(have, expected, source="the talkconv JSON"):
    """{name: entry} for every expected name; raises MissingEntries naming each one that is absent.
    `have` is a dict (load_gbench) or a set of canonical names."""
    missing = [n for n in expected if n not in have]
    if missing:
        raise MissingEntries(source, missing)
    return {n: have[n] for n in expected} if isinstance(have, dict) else {n: True for n in expected}


# ---- tables ---------------------------------------------------------------------------------------------

PEERS = [
    ("sdpa", "flash-attention core (SDPA, q = k = v)"),
    ("lightconv", "LightConv: cuDNN depthwise conv1d, K = L + M + 1"),
    ("dynconv", "DynamicConv unfolded (linear -> weights, unfold + bmm)"),
    ("torch_talk", "original TaLK in PyTorch (cumsum + gather)"),
]


def fmt_ms(v):
    if v is None:
        return "-"
    return f"{v:.3f}" if v < 10 else f"{v:.1f}"


def fmt_ratio(peer, ours):
    if peer is None or ours is None or ours <= 0:
        return "-"
    r = peer / ours
    return f"**{r:.2f}x**" if r < 1 else f"{r:.2f}x"


def talkconv_times(entries, s):
    """(forward ms, forward + backward ms) of talkconv's layer on shape s, None where absent."""
    f = entries.get("layer_fwd" + shape_suffix(s))
    b = entries.get("layer_bwd" + shape_suffix(s))
    fwd = f["time_ms"] if f else None
    return fwd, (fwd + b["time_ms"]) if f and b else None


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def peer_index(peer_rows):
    return {(r["peer"], Shape(*[r[k] for k in Shape._fields])): r for r in peer_rows}


def summary_table(entries, peer_rows, shapes):
    """One line per shape: talkconv's times and each peer's fwd+bwd time over talkconv's (> 1: talkconv
    is faster; bold below 1)."""
    idx = peer_index(peer_rows)
    rows = []
    for s in shapes:
        fwd, fb = talkconv_times(entries, s)
        cells = [shape_label(s), fmt_ms(fwd), fmt_ms(fb)]
        for p, _ in PEERS:
            r = idx.get((p, s))
            cells.append(fmt_ratio(r.get("fwd_ms"), fwd) + " / " + fmt_ratio(r.get("fwdbwd_ms"), fb) if r else "-")
        rows.append(cells)
    return table(["shape", "talkconv fwd ms", "talkconv fwd+bwd ms"] + [f"{p} / talkconv (fwd / fwd+bwd)"
                                                                      for p, _ in PEERS], rows)


def shape_tables(entries, peer_rows, shapes):
    """One table per shape: each peer's times and its ratio to talkconv's (peer time / talkconv time)."""
    idx = peer_index(peer_rows)
    out = []
    for s in shapes:
        fwd, fb = talkconv_times(entries, s)
        rows = [["talkconv layer", fmt_ms(fwd), fmt_ms(fb), "1", "1", ""]]
        for p, label in PEERS:
            r = idx.get((p, s))
            if not r:
                continue
            rows.append([label, fmt_ms(r.get("fwd_ms")), fmt_ms(r.get("fwdbwd_ms")), fmt_ratio(r.get("fwd_ms"), fwd),
                         fmt_ratio(r.get("fwdbwd_ms"), fb), r.get("note", "")])
        out.append(f"### {shape_label(s)}\n\n" + table(["", "fwd ms", "fwd+bwd ms", "peer / talkconv fwd",
                                                         "peer / talkconv fwd+bwd", "note"], rows))
    return "\n\n".join(out)


def decode_table(entries, decode_rows):
    """talkconv's decoder step (flat in the context) against an attention KV-cache step per context."""
    by = {(r["B"], r["context"]): r for r in decode_rows}
    rows = []
    for b in DECODE_BATCHES:
        ours = entries.get(f"decoder_step/dtype:bf16/B:{b}/C:{DECODE_C}/L:{DECODE_L}/H:{DECODE_H}")
        graph = entries.get(f"decoder_step/dtype:bf16/B:{b}/C:{DECODE_C}/L:{DECODE_L}/H:{DECODE_H}/graph:1")
        cells = [b, f"{ours['time_ms'] * 1e3:.1f}" if ours else "-", f"{graph['time_ms'] * 1e3:.1f}" if graph else "-"]
        for ctx in DECODE_CONTEXTS:
            r = by.get((b, ctx))
            cells.append(f"{r['step_us']:.1f}" if r and r.get("step_us") is not None else (r or {}).get("note", "-"))
        rows.append(cells)
    return table(["B", "talkconv step us", "talkconv step us (graph)"] +
                 [f"SDPA KV-cache step us, context {c // 1024}k" for c in DECODE_CONTEXTS], rows)
