"""Every flag validated in one place (issue 19, item 4): each numeric flag of every command has a range-checked
value type of bdh/options.py (`count`, `real`), so a bad value is one line and exit 2 before any work; a hypothesis
fuzz of flag values for a few commands (in-process, bounded) ends in exit 0, or exit 2 with one stderr line, never
a traceback."""

import argparse
import contextlib
import io

import pytest
from cli_errors import one_line_error
from hypothesis import given
from hypothesis import strategies as st
from small_models import small_model

import bdh_gpu
from bdh.cli import build_parser, main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _commands():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


def test_no_numeric_flag_is_a_bare_int_or_float():
    """`type=int` / `type=float` take -1, nan, inf and 1e309 alike; every numeric flag says its range instead."""
    bare = [
        f"bdh {name} {'/'.join(a.option_strings) or a.dest}"
        for name, p in _commands().items()
        for a in p._actions
        if a.type in (int, float)
    ]
    assert not bare, bare


@pytest.mark.parametrize("value", ["-1", "0", "nan", "inf", "-inf", "x"])
def test_dist_timeout_must_be_a_finite_positive_number(value, tmp_path, capsys):
    one_line_error(
        capsys, ["train", "--out", str(tmp_path / "r"), "--data", "recall", f"--dist-timeout={value}"], "--dist-timeout"
    )
    assert not (tmp_path / "r").exists()


def test_import_official_of_a_text_file_is_one_line(tmp_path, capsys):
    text = tmp_path / "notes.txt"
    text.write_text("hello, not a state_dict\n")
    line = one_line_error(capsys, ["import-official", str(text), "--out", str(tmp_path / "m")], str(text))
    assert "not a torch state_dict" in line
    assert not (tmp_path / "m").exists()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("flags") / "m")
    bdh_gpu.save(small_model(), d)
    return d


def _value(small=40):
    """A flag's text: a small integer or number (valid or not), a special float, or junk."""
    return st.one_of(
        st.integers(-3, small).map(str),
        st.floats(allow_nan=True, allow_infinity=True, width=32).map(repr),
        st.sampled_from(["nan", "-inf", "1e309", "-0", "0x10", "", " 3", "1_0", "٣", "2**8"]),
        st.text(max_size=4),
    )


def _ends_cleanly(argv):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    err = err.getvalue().strip()
    assert code in (0, 2), (argv, code, err)
    assert "Traceback" not in err, (argv, err)
    if code == 2:
        assert err and "\n" not in err, (argv, err)


@given(flag=st.sampled_from(["--tokens", "--temperature", "--top-k", "--seed"]), value=_value())
def test_fuzz_generate_flags(model_dir, flag, value):
    extra = [] if flag == "--tokens" else ["--tokens", "2"]
    _ends_cleanly(["generate", model_dir, "--prompt", "ab", "--device", "cpu", *extra, f"{flag}={value}"])


@given(flag=st.sampled_from(["--batch-size", "--max-batches", "--block-size", "--chunk-size"]), value=_value(12))
def test_fuzz_eval_flags(model_dir, flag, value):
    extra = [] if flag == "--max-batches" else ["--max-batches", "1"]
    argv = ["eval", model_dir, "--data", "recall:2", "--device", "cpu", "--block-size", "16", *extra]
    _ends_cleanly([*argv, f"{flag}={value}"])


@given(flag=st.sampled_from(["--rounds", "--hubs", "--max-flows"]), value=_value())
def test_fuzz_trace_flags(flag, value):
    _ends_cleanly(["trace", "--example", "--json", f"{flag}={value}"])


@given(
    flag=st.sampled_from(["--lr", "--dropout", "--grad-clip", "--warmup", "--dist-timeout", "--seed", "--eval-every"]),
    value=_value(),
)
def test_fuzz_train_flags(tmp_path_factory, flag, value):
    out = str(tmp_path_factory.mktemp("fuzz") / "run")
    argv = ["train", "--out", out, "--data", "recall:2", "--steps", "1", "--batch-size", "1", "--block-size", "16"]
    _ends_cleanly([*argv, "--quiet", "--device", "cpu", f"{flag}={value}"])
