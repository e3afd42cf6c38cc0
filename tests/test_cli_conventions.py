"""The CLI's manners and the ecosystem's conventions: input errors are one line naming the flag or file (exit 2)
while bugs keep their traceback; help texts are whole sentences; `bdh --version`; a closed pipe is quiet; model
files are world-readable; `BDH.from_pretrained` / `save_pretrained`; `bdh export-graph` to GraphML and PyG."""

import os
import subprocess
import sys

import networkx as nx
import numpy as np
import pytest
import torch
from cli_errors import one_line_error as one_line

import bdh_gpu
from bdh import __version__
from bdh.cli import build_parser, main
from equivalence import GraphRunner, TensorRunner, compile_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(path=None, variant="official"):
    torch.manual_seed(0)
    m = bdh_gpu.BDH(bdh_gpu.BDHConfig(n_head=2, d=8, N=16, n_layer=2, dropout=0.0, variant=variant))
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.3)
    if path is not None:
        bdh_gpu.save(m, str(path))
    return m


def test_input_errors_name_the_flag_or_file(tmp_path, capsys):
    """Missing files are reported with the flag that named them; a compile or engine that does not apply names
    the flag and the value that would (graph-official, not official); a missing model directory names it."""
    d = str(tmp_path / "m")
    tiny(d)
    nope = str(tmp_path / "nope.txt")
    one_line(capsys, ["verify", d, "--text-file", nope], "--text-file", nope, "No such file")
    one_line(capsys, ["logits", d, "--text-file", nope, "--out", str(tmp_path / "o.npy")], "--text-file", nope)
    one_line(capsys, ["generate", d, "--prompt-file", nope], "--prompt-file", nope)
    one_line(capsys, ["analyze", d, "--text", "hello", "--concept", nope, "--contrast", nope], "--concept", nope)
    one_line(capsys, ["verify", str(tmp_path / "missing")], str(tmp_path / "missing"), "not a directory")
    one_line(capsys, ["verify", d, "--compile", "dense"], "--compile dense", "use --compile official")
    f = tmp_path / "t.txt"
    f.write_bytes(b"hi")
    one_line(
        capsys,
        ["logits", d, "--text-file", str(f), "--engine", "graph-dense", "--out", str(tmp_path / "o.npy")],
        "--engine graph-dense",
        "use --engine graph-official",
    )
    one_line(capsys, ["verify", d, "--device", "cuda"], "--device")


def test_a_bug_keeps_its_traceback(tmp_path, monkeypatch):
    """A KeyError inside a compiler or a shape bug inside compare is a bug, not bad input: it propagates out of
    main (Python prints the traceback, exit code 1) instead of becoming a one-line exit 2."""
    d = str(tmp_path / "m")
    tiny(d)
    import equivalence

    def broken(*a, **k):
        raise KeyError("a bug inside the compiler")

    monkeypatch.setattr(equivalence, "compile_model", broken)
    with pytest.raises(KeyError, match="a bug inside"):
        main(["verify", d, "--text", "hi"])
    monkeypatch.undo()

    def shape_bug(*a, **k):
        raise ValueError("operands could not be broadcast together with shapes (3,) (4,)")

    monkeypatch.setattr(equivalence, "compare", shape_bug)
    with pytest.raises(ValueError, match="broadcast"):
        main(["verify", d, "--text", "hi"])


def test_help_texts_are_whole_and_documented():
    """Every subcommand's description is whole sentences (ends with a full stop, no '%%' left over), and every
    option and argument says what it is."""
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    assert {"view", "export-graph", "verify", "analyze", "merge", "eval"} <= set(sub.choices)
    for name, p in sub.choices.items():
        desc = p.description or ""
        assert desc.rstrip().endswith((".", ")")) and "%%" not in desc, (name, desc)
        helptext = p.format_help()
        assert "%%" not in helptext, name
        for a in p._actions:
            if a.dest != "help":
                assert a.help, (name, a.dest)


def test_version_and_quiet_broken_pipe():
    """`bdh --version` prints the package version; `bdh trace --json | head -1` ends without a word on stderr."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    r = subprocess.run([sys.executable, "-m", "bdh", "--version"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == f"bdh {__version__}"
    p = subprocess.Popen(
        [sys.executable, "-m", "bdh", "trace", "--example", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    first = p.stdout.readline()
    p.stdout.close()  # the reader goes away, as head does
    err = p.stderr.read().decode()
    p.wait(timeout=120)
    assert first.strip() == b"{" and err == "", err
    assert p.returncode in (0, 141)


def test_model_files_are_world_readable(tmp_path):
    """config.json and model.safetensors get the usual 0644 (under umask 022), not mkstemp's 0600."""
    old = os.umask(0o022)
    try:
        tiny(tmp_path / "m")
    finally:
        os.umask(old)
    for f in ("config.json", "model.safetensors"):
        assert os.stat(tmp_path / "m" / f).st_mode & 0o777 == 0o644


def test_from_pretrained_and_save_pretrained(tmp_path, monkeypatch):
    """PyTorchModelHubMixin's contract: save_pretrained writes config.json + model.safetensors; from_pretrained
    reads a local directory offline (equal tensors); a Hub id without huggingface_hub, or a path that is no model
    directory, is one InputError line."""
    m = tiny()
    out = m.save_pretrained(str(tmp_path / "pre"))
    assert sorted(os.listdir(out)) == ["config.json", "model.safetensors"]
    m2 = bdh_gpu.BDH.from_pretrained(out)
    assert m2.config == m.config
    for (k, a), b in zip(m.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(a, b), k
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(bdh_gpu.InputError, match="huggingface_hub"):
        bdh_gpu.BDH.from_pretrained("someone/bdh-tiny")
    with pytest.raises(bdh_gpu.InputError, match="not a model directory"):
        bdh_gpu.BDH.from_pretrained(str(tmp_path / "pre" / "config.json"))


def test_export_graph_graphml_and_pyg(tmp_path, capsys):
    """`bdh export-graph`: the GraphML file has one node per node of every population and one edge per synapse,
    with the weights of the network and, after --prompt, sigma equal to the simulator's state; the PyG file (no
    pickle) loads back as a HeteroData with the same edges and sigma; too many edges for GraphML is one line."""
    d = str(tmp_path / "m")
    model = tiny(d, variant="normfree")
    c = compile_model(TensorRunner(model).model)
    runner = GraphRunner(c, "numba")
    for _ in runner.feed(list(b"hi")):
        pass
    sigma = runner.sim.state.edges
    net = c.network
    g_path = str(tmp_path / "g.graphml")
    assert main(["export-graph", d, "--format", "graphml", "--out", g_path, "--prompt", "hi"]) == 0
    G = nx.read_graphml(g_path)
    assert G.number_of_nodes() == sum(p.size for p in net.populations.values())
    assert G.number_of_edges() == sum(g.nnz for g in net.groups.values())
    gs = net.groups["Gs"]
    e = int(np.argmax(np.abs(sigma["sigma_0"])))
    data = G.get_edge_data(f"neurons:{gs.source[e]}", f"{gs.post}:{gs.indices[e]}")["Gs"]
    assert data["sigma_0"] == pytest.approx(sigma["sigma_0"][e], rel=1e-12) and data["weight"] == gs.weight[e]
    p_path = str(tmp_path / "g.safetensors")
    assert main(["export-graph", d, "--format", "pyg", "--out", p_path, "--prompt", "hi"]) == 0
    from bdh_graph.export import load_pyg

    h = load_pyg(p_path)
    store = h["neurons", "Gs", gs.post]
    assert torch.equal(store.edge_index, torch.as_tensor(np.stack([gs.source, gs.indices])))
    assert np.allclose(store["sigma_1"].numpy(), sigma["sigma_1"], rtol=0, atol=0)
    capsys.readouterr()
    one_line(capsys, ["export-graph", d, "--format", "graphml", "--out", g_path, "--max-edges", "10"], "--max-edges")


def test_options_registries_match_the_packages():
    """The CLI's --compile choices are equivalence.COMPILES and its --backend choices bdh_graph's BACKENDS (the parser
    spells the compiles itself so that `bdh --help` does not import torch); every graph command offers the same
    choices and the same defaults (bdh/options.py)."""
    import equivalence
    from bdh.cli import build_parser
    from bdh.options import COMPILE_CHOICES, DEFAULT_BACKEND, DEFAULT_DEVICE
    from bdh_graph.backends import BACKENDS

    assert tuple(COMPILE_CHOICES) == tuple(equivalence.COMPILES)
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices
    seen = {}
    for name, p in sub.items():
        for a in p._actions:
            if a.dest in ("backend", "how", "device"):
                seen.setdefault(a.dest, set()).add((tuple(a.choices or ()), a.default, name))
    assert {c for c, _, n in seen["how"]} == {tuple(COMPILE_CHOICES)}
    assert {(c, d) for c, d, n in seen["backend"] if n != "trace" and n != "logits"} == {
        (tuple(BACKENDS), DEFAULT_BACKEND)
    }
    assert {d for _, d, _ in seen["device"]} == {DEFAULT_DEVICE}
