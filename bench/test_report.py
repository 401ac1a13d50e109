#!/usr/bin/env python3
"""Smoke test of bench/report.py (ctest bench_report_smoke): a tiny CPU JSON (the bench_cpu_smoke run's)
plus the GPU fixture run (bench/fixtures: bench_cuda.json, peers.json) and the hand-kept profiles' sections give a
RESULTS.md with one section per machine, tables filled, and plots where matplotlib is installed.

    python3 bench/test_report.py CPU_SMOKE.json OUT_DIR
"""
import os
import subprocess
import sys

here = os.path.dirname(os.path.abspath(__file__))


def main():
    cpu_json, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    results, plots = os.path.join(out, "RESULTS.md"), os.path.join(out, "plots")
    p = subprocess.run([sys.executable, os.path.join(here, "report.py"), cpu_json, "--gpu-run",
                        os.path.join(here, "fixtures"), "--keep-profile", "--results", results, "--plots", plots],
                       capture_output=True, text=True)
    print(p.stdout + p.stderr)
    assert p.returncode == 0, f"report.py exited {p.returncode}"
    with open(results) as f:
        text = f.read()
    heads = [line for line in text.splitlines() if line.startswith("## ")]
    print("sections:", *heads, sep="\n  ")
    assert [h.split(":")[0] for h in heads] == ["## GPU", "## GPU", "## GPU", "## CPU"], heads
    assert "NVIDIA H200 (fixture)" in heads[0] and "2026-11-30" in heads[1] and "aaffc58" in heads[2], heads
    for must in ["### Targets (issue 10)", "### Window, bf16", "### Peers, every shape", "### Decoding, bf16",
                 "| 262144 | 1 |", "talkconv step f32 (us)", "### Decoding: one step"]:
        assert must in text, f"RESULTS.md lacks {must!r}"
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "matplotlib is not installed" in text
        print("matplotlib not installed: tables only (checked)")
        return 0
    want = ["gpu_fixtures_time_vs_T.png", "gpu_fixtures_copy_fraction_vs_K.png", "gpu_fixtures_decode_vs_context.png",
            "time_per_token_vs_T.png", "copy_fraction_vs_K.png", "cpu_decode_vs_context.png"]
    for w in want:
        path = os.path.join(plots, w)
        assert os.path.getsize(path) > 1000, f"plot {w} missing or empty"
        assert f"plots/{w}" in text, f"RESULTS.md does not show {w}"
    print(f"{len(want)} plots checked")
    return 0


if __name__ == "__main__":
    sys.exit(main())
