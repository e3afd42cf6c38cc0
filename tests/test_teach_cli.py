"""`bdh demo`, `bdh trace`, `bdh analyze`, `bdh merge`: end to end through the CLI, on small models."""

import json
import os

import numpy as np
import torch
from cli_errors import one_line_error

import bdh_gpu
from bdh.cli import main
from bdh_graph import table_1b


def save_tiny(path, seed=0, **kw):
    torch.manual_seed(seed)
    cfg = dict(n_head=2, d=8, N=16, n_layer=2, dropout=0.0)
    cfg.update(kw)
    m = bdh_gpu.BDH(bdh_gpu.BDHConfig(**cfg))
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.3)
    bdh_gpu.save(m, str(path))
    return str(path)


def test_trace_example_prints_rules_and_hand_numbers(capsys):
    """`bdh trace --example` walks the worked example of docs/bdh_graph.md (Table 1(b), Eq. 6): every rule of the
    kernel appears as the paper writes it, with the numbers computed there by hand (token 2: A = sigma X =
    (.25, 0, .25); Ye = (.25, .5, 0), Yi = (0, .25, 0); y = (0, .25, 0); damping by u_1 = .5)."""
    assert main(["trace", "--example"]) == 0
    out = capsys.readouterr().out
    for rule in [str(r) for rnd in table_1b(1).rounds for r in rnd.communication + rnd.computation]:
        assert rule in out, rule
    for line in [
        "Y(0)=1 · Gx_e(0→1)=1 → Xe(1) += 1",  # token 1, round 1
        "Y(2)=1 · Gx_i(2→1)=0.5 → Xi(1) += 0.5",
        "1: 0 → 0.5   (Xe=1, Xi=0.5)",  # x_{1,1} = (1, .5, 0)
        "X(1)=0.5 · Y(0)=1 · Gs=1 → sigma_0(1,0): 0 → 0.5",  # Hebbian write
        "(1,0): 0.5 → 0.25",  # damping column 1 by u_1
        "X(1)=1 · sigma_0(1→0)=0.25 → A(0) += 0.25",  # token 2 read
        "A(0)=0.25 · Gy_e(0→1)=2 → Ye(1) += 0.5",
        "A(2)=0.25 · Gy_i(2→1)=1 → Yi(1) += 0.25",
        "1: 0 → 0.25   (Ye=0.5, Yi=0.25, X=1)",
    ]:  # y_{2,1} = (0, .25, 0)
        assert line in out, line
    assert "replay differs" not in out
    assert out.index("communication") < out.index("computation")


def test_trace_example_json_and_options(capsys):
    """--json gives the same walk as data; --rounds stops early; --neurons restricts the nodes shown."""
    assert main(["trace", "--example", "--json", "--rounds", "2", "--neurons", "1"]) == 0
    data = json.loads(capsys.readouterr().out)
    rounds = [r for tok in data["tokens"] for r in tok["rounds"]]
    assert len(rounds) == 2 and data["shown"]["neurons"] == [1]
    thr = rounds[0]["computation"][0]
    assert thr["text"] == "(Xe - Xi)^+ -> X" and thr["changes"] == [
        {"node": "1", "before": 0.0, "after": 0.5, "inputs": {"Xe": 1.0, "Xi": 0.5}}
    ]


def test_trace_model_dir(tmp_path, capsys):
    """A model directory is compiled (equivalence) and traced; n > 24 shows the most active neurons, with a note."""
    d = save_tiny(tmp_path / "m")
    assert main(["trace", d, "--prompt", "ab", "--rounds", "4"]) == 0
    out = capsys.readouterr().out
    assert "official compile" in out and "most active in y" in out and "res.Lc / sqrt(res.Ls + eps) => res.V" in out
    assert "replay differs" not in out


def test_trace_errors(tmp_path, capsys):
    one_line_error(capsys, ["trace"], "expected a model directory")
    one_line_error(capsys, ["trace", "--example", "--neurons", "0,7"], "[0, 2]")
    one_line_error(capsys, ["trace", "--example", "--neurons", "a"], "comma-separated integers")
    one_line_error(capsys, ["trace", str(tmp_path)], "--prompt")
    one_line_error(capsys, ["trace", str(tmp_path), "--prompt", "x"], "config.json")


def test_demo_fast_writes_report(tmp_path, capsys, monkeypatch):
    """`bdh demo --fast`: trains (4 steps), caches, compiles, steps the prompt through the graph, verifies
    graph == tensor, writes report.html with the figures embedded and the verdict; a second run reuses the cache."""
    monkeypatch.setenv("BDH_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "report"
    assert main(["demo", "--fast", "--out", str(out), "--backend", "numpy"]) == 0
    text = capsys.readouterr().out
    assert "equivalence OK" in text and "recalled" in text
    page = (out / "report.html").read_text()
    assert page.count("<img") >= 5 and "data:image/png;base64," in page
    assert "graph/tensor equivalence: OK" in page
    for name in (
        "activity_raster",
        "sigma_synapses",
        "sparsity_per_layer",
        "degree_distribution",
        "modularity_vs_beta",
    ):
        assert (out / f"{name}.png").stat().st_size > 1000, name
    assert main(["demo", "--fast", "--out", str(out), "--backend", "numpy"]) == 0
    assert "reusing the cached model" in capsys.readouterr().out


def test_analyze_cli(tmp_path, capsys):
    """`bdh analyze` writes the numbers (sparsity per layer, graphs with modularity rows, sigma graph, synapse
    finder) and the report; the JSON sparsity equals the library's."""
    d = save_tiny(tmp_path / "m", N=32)
    (tmp_path / "c.txt").write_text("the cat sat\nthe cat ran\nthe cat ate\n")
    (tmp_path / "k.txt").write_text("a dog barked\na dog slept\na dog ran\n")
    assert (
        main(
            [
                "analyze",
                d,
                "--text",
                "hello there, general kenobi",
                "--out",
                str(tmp_path / "a"),
                "--seeds",
                "1",
                "--concept",
                str(tmp_path / "c.txt"),
                "--contrast",
                str(tmp_path / "k.txt"),
                "--json",
            ]
        )
        == 0
    )
    res = json.loads(capsys.readouterr().out)
    from bdh_gpu.analysis import sparsity

    want = sparsity(bdh_gpu.load(d).float(), b"hello there, general kenobi")
    np.testing.assert_allclose(res["sparsity"]["y"], want["y"])
    g = res["graphs"][0]
    assert g["graph"] == "G_x" and len(g["modularity"]) == 5 and "G(n,m)" in g["modularity"][0]
    assert res["sigma"]["layer"] == 2 and res["synapses"]["top"][0]["U_max"] == 9
    assert (tmp_path / "a" / "report.html").exists() and (tmp_path / "a" / "analysis.json").exists()


def test_analyze_errors(tmp_path, capsys):
    d = save_tiny(tmp_path / "m")
    one_line_error(capsys, ["analyze", d, "--text", "hi", "--concept", "x"], "--concept and --contrast")
    one_line_error(capsys, ["analyze", d, "--text", "hi", "--heads", "5"], "--heads")
    one_line_error(capsys, ["analyze", d, "--text", "hi", "--betas", "a,b"], "--betas")
    one_line_error(capsys, ["analyze", d, "--text-file", str(tmp_path / "missing.txt")], "missing.txt")
    one_line_error(capsys, ["analyze", d], "--text")  # argparse: one of --text/--text-file


def test_merge_cli(tmp_path, capsys):
    """`bdh merge A B --out C` writes a loadable model with h_A + h_B heads; errors are one line."""
    a, b = save_tiny(tmp_path / "a", seed=1), save_tiny(tmp_path / "b", seed=2)
    assert main(["merge", a, b, "--out", str(tmp_path / "c")]) == 0
    m = bdh_gpu.load(str(tmp_path / "c"))
    assert m.config.n_head == 4 and torch.equal(m.E[:, 32:], bdh_gpu.load(b).E)
    one_line_error(capsys, ["merge", a, b, "--out", str(tmp_path / "c")], "already holds a model")
    c = save_tiny(tmp_path / "d", N=8)
    one_line_error(capsys, ["merge", a, c, "--out", str(tmp_path / "e")], "differ in N")
    assert not os.path.exists(tmp_path / "e" / "model.safetensors")
