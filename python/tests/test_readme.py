"""The README's "From PyTorch" section: every ```python block in it runs, in order, in one namespace."""
import contextlib
import io
import os
import re

README = os.path.join(os.path.dirname(__file__), "..", "..", "README.md")


def section_blocks():
    text = open(README, encoding="utf-8").read()
    start = text.index("\n## From PyTorch\n")
    end = text.find("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start:end if end != -1 else None], re.S)


def test_readme_python_blocks_run():
    blocks = section_blocks()
    assert len(blocks) >= 3
    scope = {}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for code in blocks:
            exec(compile(code, "README.md (From PyTorch)", "exec"), scope)
    # the error example prints what its comment says
    assert "invalid_shape C talkconv: invalid_shape: C = 10 is not divisible by H = 3" in out.getvalue()
