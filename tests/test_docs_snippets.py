"""Every ```python snippet of README.md and docs/*.md runs as written (in a fresh namespace, in a scratch
directory), and says what it prints: a `print(...)` line whose comment states the value (`# True`, `# False`,
`# -> 42`, each may be followed by `:` and words) must print exactly that (its last call, for a loop). The
documentation cannot drift from the code."""

import builtins
import os
import re
import sys

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


EXPECT = re.compile(r"#\s*(?:->\s*(?P<value>[^:#]+?)\s*(?::.*)?$|(?P<bool>True|False)\b)")


def expectations(code: str) -> dict:
    """{line number: the printed text its comment promises} for the print lines of a snippet."""
    out = {}
    for k, line in enumerate(code.splitlines(), 1):
        m = EXPECT.search(line) if "print(" in line else None
        if m:
            out[k] = m.group("value") or m.group("bool")
    return out


def run_snippet(code: str) -> None:
    """exec the snippet; assert each promised print printed its value."""
    printed = {}

    def snippet_print(*args, **kw):
        frame = sys._getframe(1)
        if frame.f_code.co_filename == "<snippet>":
            printed[frame.f_lineno] = kw.get("sep", " ").join(str(a) for a in args)
        builtins.print(*args, **kw)

    exec(compile(code, "<snippet>", "exec"), {"__name__": "__snippet__", "print": snippet_print})
    for line, want in expectations(code).items():
        assert line in printed, f"snippet line {line} promises {want!r} but never printed"
        assert printed[line] == want, f"snippet line {line} printed {printed[line]!r}, its comment says {want!r}"


@pytest.mark.parametrize("code", snippets())
def test_snippet_runs(code, tmp_path, monkeypatch, one_torch_thread):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    run_snippet(code)


def test_a_snippet_that_prints_other_than_its_comment_fails():
    run_snippet("print(1 + 1)  # -> 2\nprint(2 > 1)  # True: two is more\nprint(0)  # no promise here\n")
    for bad in ("print(1 == 2)  # True: graph == tensor model", "print(3)  # -> 4", "if 0:\n    print(1)  # -> 1"):
        with pytest.raises(AssertionError):
            run_snippet(bad)
    assert sum(len(expectations(c.values[0])) for c in snippets()) >= 1  # the docs do promise values


def test_every_page_was_searched():
    assert len(snippets()) >= 6
