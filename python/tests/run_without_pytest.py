"""Runs python/tests where pytest is not installed (a GPU machine without network): a stand-in for the
few pytest features the suite uses (mark.parametrize with ids, mark.skipif, raises). Prints one line per
case and a pytest-style summary ("N passed, M skipped, K failed", zero counts left out); exits non-zero on a failure.

    PYTHONPATH=build/torch/lib python python/tests/run_without_pytest.py [-k substring]
"""
import importlib
import importlib.util
import os
import re
import sys
import traceback
import types


class _Mark:
    def parametrize(self, names, values, ids=None):
        names = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)

        def deco(fn):
            cases = getattr(fn, "_cases", [({}, "")])
            new = []
            for i, v in enumerate(values):
                vals = v if len(names) > 1 else (v,)
                label = ids[i] if ids else "-".join(str(x) for x in vals)
                for kw, lab in cases:
                    new.append(({**kw, **dict(zip(names, vals))}, (lab + "-" if lab else "") + label))
            fn._cases = new
            return fn

        return deco

    def skipif(self, cond, reason=""):
        def deco(fn):
            if cond:
                fn._skip = reason
            return fn

        return deco


class _Raises:
    def __init__(self, exc, match=None):
        self.exc, self.match, self.value = exc, match, None

    def __enter__(self):
        return self

    def __exit__(self, et, ev, tb):
        if et is None:
            raise AssertionError("did not raise %s" % self.exc)
        if not issubclass(et, self.exc):
            return False
        if self.match and not re.search(self.match, str(ev)):
            raise AssertionError("%r does not match %r" % (str(ev), self.match))
        self.value = ev
        return True


def main():
    if importlib.util.find_spec("pytest") is None:  # a real pytest, where there is one, is used as it is
        shim = types.ModuleType("pytest")
        shim.mark = _Mark()
        shim.raises = _Raises
        sys.modules["pytest"] = shim
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, here)
    filt = sys.argv[sys.argv.index("-k") + 1] if "-k" in sys.argv else ""
    counts = dict(passed=0, skipped=0, failed=0)
    for name in sorted(f[:-3] for f in os.listdir(here) if f.startswith("test_") and f.endswith(".py")):
        mod = importlib.import_module(name)
        for fname, fn in list(vars(mod).items()):
            if not (fname.startswith("test_") and callable(fn)):
                continue
            for kw, label in getattr(fn, "_cases", [({}, "")]):
                case = "%s.py::%s%s" % (name, fname, "[%s]" % label if label else "")
                if filt and filt not in case:
                    continue
                if getattr(fn, "_skip", None) is not None:
                    counts["skipped"] += 1
                    print("SKIPPED", case, "-", fn._skip)
                    continue
                try:
                    fn(**kw)
                    counts["passed"] += 1
                    print("PASSED ", case)
                except Exception:  # noqa: BLE001
                    counts["failed"] += 1
                    print("FAILED ", case)
                    traceback.print_exc()
    # pytest's summary: only the counts that are not zero
    print(", ".join("%d %s" % (n, k) for k, n in counts.items() if n) or "no tests ran")
    return 1 if counts["failed"] or not counts["passed"] else 0


if __name__ == "__main__":
    sys.exit(main())
