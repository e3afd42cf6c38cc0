"""`bdh verify` and the graph engines of `bdh logits` on models trained for a few steps with `bdh train`."""

import json

import numpy as np
import pytest
from cli_errors import one_line_error

from bdh.cli import main


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two tiny models trained for 3 steps on the recall task: official (default) and normfree."""
    root = tmp_path_factory.mktemp("verify")
    dirs = {}
    for variant in ("official", "normfree"):
        out = str(root / variant)
        assert (
            main(
                [
                    "train",
                    "--preset",
                    "tiny",
                    "--data",
                    "recall",
                    "--steps",
                    "3",
                    "--batch-size",
                    "2",
                    "--block-size",
                    "16",
                    "--variant",
                    variant,
                    "--out",
                    out,
                    "--quiet",
                ]
            )
            == 0
        )
        dirs[variant] = out
    return dirs


def test_verify_official_model(trained, capsys):
    """The released (LayerNorm) model, trained: its graph's next-byte logits, x, y, v and rho equal the tensor
    model's to 1e-9 (official compile, the default for the variant)."""
    assert main(["verify", trained["official"], "--text", "abcabc", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["ok"] and d["compile"] == "official"
    for name, q in d["quantities"].items():
        assert q["ok"] and q["max_rel"] <= 1e-9, (name, q)


@pytest.mark.parametrize("how", ["dense", "circuit"])
def test_verify_normfree_model(trained, how, capsys, tmp_path):
    """BDH-Normfree (Eq. 7), trained: Obs. 4's dense graph and Claims 3+4's circuit both verify."""
    f = tmp_path / "t.txt"
    f.write_bytes(b"hello, dragon")
    assert main(["verify", trained["normfree"], "--text-file", str(f), "--compile", how, "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["ok"] and d["compile"] == how and d["tokens"] == 13


def test_verify_refuses_inapplicable_compile(trained, capsys):
    assert main(["verify", trained["normfree"], "--compile", "official"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--compile official" in err and "normfree" in err and "use --compile dense" in err
    assert main(["verify", trained["official"], "--compile", "circuit"]) == 2


def test_verify_exit_1_beyond_tolerance_and_bad_tolerance(trained, capsys):
    """Exit 1 when a quantity is beyond tolerance (an absurd 1e-300 one, the sensitivity off): the check can fail."""
    strict = ["--tolerance", "1e-300", "--sensitivity-multiple", "0"]
    assert main(["verify", trained["official"], "--text", "ab", *strict]) == 1
    assert "MISMATCH" in capsys.readouterr().out
    assert main(["verify", trained["official"], "--tolerance", "-1"]) == 2
    assert main(["verify", trained["official"], "--sensitivity-multiple", "-1"]) == 2


@pytest.mark.parametrize(
    "variant, engine, backend",
    [
        ("official", "graph-official", "numba"),
        ("normfree", "graph-circuit", "numpy"),
        ("normfree", "graph-dense", "pyg"),
    ],
)
def test_logits_graph_engines_match_tensor(trained, variant, engine, backend, tmp_path):
    f = tmp_path / "t.txt"
    f.write_bytes(b"graph engines")
    a, b = tmp_path / "a.npy", tmp_path / "b.npy"
    assert main(["logits", trained[variant], "--text-file", str(f), "--engine", "tensor", "--out", str(a)]) == 0
    assert (
        main(
            [
                "logits",
                trained[variant],
                "--text-file",
                str(f),
                "--engine",
                engine,
                "--backend",
                backend,
                "--out",
                str(b),
            ]
        )
        == 0
    )
    ta, tb = np.load(a), np.load(b)
    assert ta.shape == tb.shape == (13, 256)
    np.testing.assert_allclose(tb, ta, rtol=1e-4, atol=1e-5 * np.abs(ta).max())


def test_verify_float32_graph(trained, capsys):
    """`bdh verify --dtype float32`: the float32 graph of the trained official model against the float64 tensor
    model, within rtol 1e-4 (exit 0), and the report says so; a float32 graph judged at 1e-9 alone exits 1."""
    assert main(["verify", trained["official"], "--text", "abcabc", "--dtype", "float32", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["ok"] and (d["dtype"], d["tensor_dtype"], d["rtol"]) == ("float32", "float64", 1e-4)
    assert all(q["max_rel"] <= 1e-4 for q in d["quantities"].values())
    assert main(["verify", trained["official"], "--text", "abc", "--dtype", "float32", "--backend", "pyg"]) == 0
    assert "pyg backend in float32" in capsys.readouterr().out
    strict = ["--tolerance", "1e-9", "--sensitivity-multiple", "0"]
    assert main(["verify", trained["official"], "--text", "abcabc", "--dtype", "float32", *strict]) == 1


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--dtype", "float16"], "argument --dtype: invalid choice: 'float16'"),
        (["--dtype", "float32", "--backend", "numpy"], "--backend numpy is the float64 reference"),
    ],
)
def test_verify_bad_dtype_is_one_line(trained, capsys, argv, match):
    one_line_error(capsys, ["verify", trained["official"], "--text", "ab", *argv], match)


def test_logits_and_trace_take_the_graph_dtype(trained, tmp_path, capsys):
    """`bdh logits --engine graph-* --dtype float32` writes the float32 graph's logits (equal to the tensor
    engine's to 1e-4 of their scale); --dtype with the tensor engine is one line, exit 2; `bdh trace --dtype
    float32` says the graph runs in float32."""
    f = tmp_path / "t.txt"
    f.write_bytes(b"graph engines")
    a, b = tmp_path / "a.npy", tmp_path / "b.npy"
    model = trained["official"]
    assert main(["logits", model, "--text-file", str(f), "--engine", "tensor", "--out", str(a)]) == 0
    argv = ["logits", model, "--text-file", str(f), "--engine", "graph-official", "--dtype", "float32"]
    assert main([*argv, "--out", str(b)]) == 0
    ta, tb = np.load(a), np.load(b)
    np.testing.assert_allclose(tb, ta, rtol=1e-4, atol=1e-4 * np.abs(ta).max())
    capsys.readouterr()
    one_line_error(capsys, ["logits", model, "--text-file", str(f), "--dtype", "float32", "--out", str(a)], "--dtype")
    assert main(["trace", model, "--prompt", "ab", "--rounds", "1", "--dtype", "float32"]) == 0
    assert "the graph in float32" in capsys.readouterr().out
