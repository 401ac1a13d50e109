#!/usr/bin/env python3
"""Tests of bench/benchlib.py and bench/peer_torch.py's matching (no PyTorch, no GPU): ctest bench_peer_match.

    python3 bench/test_benchlib.py [-v]
    TALKCONV_CUDA_BENCH=build/ci/bench/cuda/talkconv_cuda_bench python3 bench/test_benchlib.py   (bench_cuda_names)

With TALKCONV_CUDA_BENCH set, the names talkconv_cuda_bench registers (--benchmark_list_tests, which
runs without a GPU) are checked too: every name the peer tables expect, quick and full set.
"""
import copy
import io
import json
import os
import subprocess
import sys
import tempfile
import unittest
from contextlib import redirect_stderr, redirect_stdout

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
import benchlib as bl  # noqa: E402
import peer_torch  # noqa: E402

FIXTURE = os.path.join(here, "fixtures", "bench_cuda.json")
PEERS = os.path.join(here, "fixtures", "peers.json")


def run_peer(argv):
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = peer_torch.main(argv)
    return rc, out.getvalue(), err.getvalue()


class Names(unittest.TestCase):
    def test_parse_drops_google_benchmark_segments(self):
        fam, p = bl.parse_name("layer_fwd/dtype:bf16/T:4096/B:16/C:1024/H:16/L:16/M:16/causal:0/min_time:0.050/"
                               "repeats:3/manual_time")
        self.assertEqual(fam, "layer_fwd")
        self.assertEqual(p, dict(dtype="bf16", T=4096, B=16, C=1024, H=16, L=16, M=16, causal=0))
        self.assertEqual(bl.canonical("copy/dtype:f32/T:8/B:2/C:4/manual_time"), "copy/dtype:f32/T:8/B:2/C:4")

    def test_cpu_names_have_a_bare_dtype(self):
        fam, p = bl.parse_name("window_fwd/f32/T:65536/B:1/C:256/H:8/L:31/off:full/min_time:0.200/real_time")
        self.assertEqual((fam, p["dtype"], p["T"], p["off"]), ("window_fwd", "f32", 65536, "full"))

    def test_a_segment_that_is_not_a_parameter_is_an_error(self):
        with self.assertRaises(ValueError):
            bl.parse_name("layer_fwd/bf16x/T:1")

    def test_shape_names_round_trip(self):
        for s in bl.peer_shapes("full"):
            fam, p = bl.parse_name("layer_bwd" + bl.shape_suffix(s))
            self.assertEqual(bl.shape_of(p), s)

    def test_decoder_names(self):
        names = bl.expected_decoder_names()
        self.assertIn("decoder_step/dtype:bf16/B:1/C:1024/L:63/H:16", names)
        self.assertIn("decoder_step/dtype:bf16/B:64/C:1024/L:63/H:16/graph:1", names)
        self.assertEqual(len(names), 6)


class Matching(unittest.TestCase):
    def setUp(self):
        with open(FIXTURE) as f:
            self.data = json.load(f)

    def test_every_expected_entry_of_the_fixture_matches(self):
        ctx, entries = bl.load_gbench(self.data)
        expected = bl.expected_layer_names(bl.peer_shapes("quick")) + bl.expected_decoder_names()
        found = bl.match(entries, expected, FIXTURE)
        self.assertEqual(len(found), len(expected))
        self.assertTrue(all(e["time_ms"] > 0 for e in found.values()))
        # Every talkconv cell of the summary has a number (the bug this replaces: every cell "no entry").
        text = bl.summary_table(entries, [], bl.peer_shapes("quick"))
        for line in text.splitlines()[2:]:
            cells = [c.strip() for c in line.split("|")[1:-1]]
            self.assertNotEqual(cells[1], "-", line)
            self.assertNotEqual(cells[2], "-", line)

    def test_the_median_of_repetitions_counts(self):
        _, entries = bl.load_gbench(self.data)
        reps = [b for b in self.data["benchmarks"] if b.get("aggregate_name") == "median"]
        self.assertEqual(len(reps), 1)
        key = bl.canonical(reps[0]["run_name"])
        self.assertAlmostEqual(entries[key]["time_ms"], reps[0]["real_time"] * 1e-3)

    def test_a_missing_entry_is_named(self):
        victim = "layer_bwd/dtype:bf16/T:65536/B:4/C:1024/H:16/L:16/M:16/causal:0"
        self.data["benchmarks"] = [b for b in self.data["benchmarks"] if bl.canonical(b["name"]) != victim]
        _, entries = bl.load_gbench(self.data)
        with self.assertRaises(bl.MissingEntries) as cm:
            bl.match(entries, bl.expected_layer_names(bl.peer_shapes("quick")), "x.json")
        self.assertEqual(cm.exception.missing, [victim])
        self.assertIn(victim, str(cm.exception))

    def test_peer_torch_fails_loudly_on_a_missing_entry(self):
        for victim in ["layer_fwd/dtype:f16/T:4096/B:16/C:1024/H:16/L:16/M:0/causal:1",
                       "decoder_step/dtype:bf16/B:8/C:1024/L:63/H:16/graph:1"]:
            data = copy.deepcopy(self.data)
            data["benchmarks"] = [b for b in data["benchmarks"] if bl.canonical(b["name"]) != victim]
            with tempfile.TemporaryDirectory() as d:
                path = os.path.join(d, "bench.json")
                with open(path, "w") as f:
                    json.dump(data, f)
                rc, out, err = run_peer(["--talkconv-json", path, "--check-only", "--out", os.path.join(d, "p.md")])
                self.assertEqual(rc, 2)
                self.assertIn("FAILED", err)
                self.assertIn(victim, err)
                with open(os.path.join(d, "p.md")) as f:
                    self.assertIn(victim, f.read())  # the table says so too
                # The same through the command line: a non-zero exit status.
                p = subprocess.run([sys.executable, os.path.join(here, "peer_torch.py"), "--talkconv-json", path,
                                    "--check-only"], capture_output=True, text=True)
                self.assertEqual(p.returncode, 2, p.stderr)
                self.assertIn(victim, p.stderr)

    def test_peer_torch_passes_on_the_fixture(self):
        with tempfile.TemporaryDirectory() as d:
            rc, out, err = run_peer(["--talkconv-json", FIXTURE, "--check-only", "--out", os.path.join(d, "p.md"),
                                     "--json-out", os.path.join(d, "p.json")])
            self.assertEqual(rc, 0, err)
            self.assertIn("88 of 88", out)
            with open(os.path.join(d, "p.json")) as f:
                self.assertEqual(json.load(f)["missing"], [])


class Tables(unittest.TestCase):
    def test_ratio_tables_from_peer_rows(self):
        _, entries = bl.load_gbench(FIXTURE)
        with open(PEERS) as f:
            peers = json.load(f)
        shapes = bl.peer_shapes("quick")
        per_shape = bl.shape_tables(entries, peers["peers"], shapes)
        self.assertEqual(per_shape.count("### "), len(shapes))
        summary = bl.summary_table(entries, peers["peers"], shapes)
        self.assertEqual(len(summary.splitlines()), len(shapes) + 2)
        self.assertNotIn("| - |", summary.splitlines()[2])
        dec = bl.decode_table(entries, peers["decode"])
        self.assertEqual(len(dec.splitlines()), 2 + len(bl.DECODE_BATCHES))


def _torch():
    try:
        import torch
        return torch
    except ImportError:
        return None


@unittest.skipUnless(_torch(), "PyTorch not installed")
class PeersOnTheCpu(unittest.TestCase):
    """The peers' arithmetic against direct sums (float64, tiny shapes, on the CPU: no GPU needed)."""

    T, B, C, H, L, M = 40, 2, 8, 2, 5, 3

    def test_original_talk(self):
        import math
        torch = _torch()
        F = torch.nn.functional
        torch.manual_seed(0)
        T, B, C, H, L = self.T, self.B, self.C, self.H, self.L
        R = C // H
        for causal in (False, True):
            M = 0 if causal else self.M
            P = H if causal else 2 * H
            x = torch.randn(T, B, C, dtype=torch.float64)
            w = torch.randn(P, C, dtype=torch.float64) * 0.5
            b = torch.zeros(P, dtype=torch.float64)
            y = peer_torch.torch_talk(torch, x, w, b, H, L, M, causal).double()
            o = torch.sigmoid(F.linear(x, w, b))
            want = torch.zeros_like(x)
            for t in range(T):
                for bb in range(B):
                    for h in range(H):
                        al = min(max(t - o[t, bb, h].item() * L, 0), T - 1)
                        ar = t if causal else min(max(t + o[t, bb, H + h].item() * M, 0), T - 1)
                        lo, hi, ch = math.ceil(al), math.floor(ar), slice(h * R, (h + 1) * R)
                        acc = x[lo:hi + 1, bb, ch].sum(0)
                        if ar > hi:
                            acc = acc + (ar - hi) * x[hi + 1, bb, ch]
                        if lo > al:
                            acc = acc + (lo - al) * x[lo - 1, bb, ch]
                        want[t, bb, ch] = acc / (L + M + 1)
            self.assertLess((y - want).abs().max().item(), 1e-5)

    def test_lightconv_and_dynconv(self):
        torch = _torch()
        F = torch.nn.functional
        torch.manual_seed(1)
        T, B, C, H, L = self.T, self.B, self.C, self.H, self.L
        R = C // H
        for causal in (False, True):
            M = 0 if causal else self.M
            K = L + M + 1
            x = torch.randn(B, C, T, dtype=torch.float64)
            wt = torch.randn(H, 1, K, dtype=torch.float64)
            y = peer_torch.lightconv(torch, x, wt, H, L, M, causal)
            ws = torch.softmax(wt, -1)
            want = torch.zeros_like(x)
            for c in range(C):
                for t in range(T):
                    for k in range(K):
                        if 0 <= t - L + k < T:
                            want[:, c, t] += ws[c % H, 0, k] * x[:, c, t - L + k]
            self.assertLess((y - want).abs().max().item(), 1e-6)  # softmax in float32
            xt = torch.randn(T, B, C, dtype=torch.float64)
            wl = torch.randn(H * K, C, dtype=torch.float64) * 0.3
            bd = torch.zeros(H * K, dtype=torch.float64)
            pad_l = K - 1 if causal else L
            y = peer_torch.dynconv(torch, xt, wl, bd, H, K, pad_l)
            wgt = torch.softmax(F.linear(xt, wl, bd).view(T, B, H, K), -1)
            want = torch.zeros_like(xt)
            for t in range(T):
                for k in range(K):
                    if 0 <= t - pad_l + k < T:
                        for h in range(H):
                            ch = slice(h * R, (h + 1) * R)
                            want[t, :, ch] += wgt[t, :, h, k:k + 1] * xt[t - pad_l + k, :, ch]
            self.assertLess((y - want).abs().max().item(), 1e-6)  # softmax in float32


@unittest.skipUnless(os.environ.get("TALKCONV_CUDA_BENCH"), "TALKCONV_CUDA_BENCH not set")
class Registered(unittest.TestCase):
    """talkconv_cuda_bench registers every name the peer tables expect (it lists them without a GPU)."""

    def check(self, which):
        exe = os.environ["TALKCONV_CUDA_BENCH"]
        p = subprocess.run([exe, "--benchmark_list_tests=true", f"--set={which}"], capture_output=True, text=True)
        self.assertEqual(p.returncode, 0, p.stderr)
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
            f.write(p.stdout)
        try:
            rc, out, err = run_peer(["--names-from", f.name, "--set", which, "--out", os.devnull])
        finally:
            os.unlink(f.name)
        self.assertEqual(rc, 0, err)
        names = bl.listed_names(p.stdout)
        bl.match(names, bl.expected_layer_names(bl.peer_shapes(which)), exe)

    def test_quick(self):
        self.check("quick")

    def test_full(self):
        self.check("full")


if __name__ == "__main__":
    unittest.main()
