"""`bdh verify` and the graph engines of `bdh logits` on models trained for a few steps with `bdh train`."""

import json

import numpy as np
import pytest

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
