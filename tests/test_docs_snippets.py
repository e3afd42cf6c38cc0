"""Every ```python snippet of README.md and docs/*.md runs as written (in a fresh namespace, in a scratch
directory): the documentation cannot drift from the code."""

import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ["README.md"] + sorted(
    os.path.join("docs", f) for f in os.listdir(os.path.join(ROOT, "docs")) if f.endswith(".md")
)


def snippets():
    out = []
    for page in PAGES:
        with open(os.path.join(ROOT, page), encoding="utf-8") as f:
            text = f.read()
        for m in re.finditer(r"```python\n(.*?)```", text, re.S):
            line = text[: m.start()].count("\n") + 1
            out.append(pytest.param(m.group(1), id=f"{page}:{line}"))
    return out


@pytest.mark.parametrize("code", snippets())
def test_snippet_runs(code, tmp_path, monkeypatch, one_torch_thread):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    exec(compile(code, "<snippet>", "exec"), {"__name__": "__snippet__"})


def test_every_page_was_searched():
    assert len(snippets()) >= 6
