"""One vocabulary in every tool (bdh/teach/names.py): a sample of layer, synapse-state, synapse and hub names agrees
across the terminal (the demo's lines), the report, the viewer's page data and `bdh analyze`, and the same name
means the same number in each (σ_ℓ of the graph = σ_ℓ of the tensor model's analysis)."""

import io
import re
from contextlib import redirect_stdout

import numpy as np
import pytest
import torch
from small_models import small_model

from bdh.teach import names
from bdh.teach.analyze import find_synapses
from bdh.teach.demo import graph_walk, synapse_name
from bdh.teach.html import write_html
from bdh.teach.lesson import _walk_blocks, _walk_row
from bdh.teach.view import ViewSession
from bdh_gpu.analysis import sigma_synapses
from equivalence import GraphRunner, TensorRunner, compile_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SYN = re.compile(r"(σ_(\d+))\((neuron (\d+)) → (neuron (\d+)|att\[h\d+,\d+\])\)")


def test_the_scheme():
    assert names.layer(1) == "layer 1" and names.state(2) == "σ_2"
    assert names.state_of("sigma_0") == "σ_1" and names.layer_of("sigma_1") == 2 and names.state_of("sigma") == "σ"
    assert names.node("neurons", 12) == "neuron 12" and names.node("att", 12, d=8) == "att[h1,4]"
    assert names.node("res", 3, d=8) == "res[3]" and names.synapse("σ_1", "neuron 3", "neuron 7") == (
        "σ_1(neuron 3 → neuron 7)"
    )
    with pytest.raises(ValueError, match="not a synapse-state key"):
        names.layer_of("Gx_e")


@pytest.mark.parametrize("variant,how", [("normfree", "dense"), ("official", "official")])
def test_names_agree_across_terminal_report_and_page(tmp_path, variant, how):
    """The demo's terminal row names the synapse that changed most as σ_ℓ(pre → post); the report prints the same
    string; the page data names σ_ℓ for the network's key sigma_{ℓ-1}, and its pre and post nodes the same way."""
    model = small_model(variant, seed=1)
    compiled = compile_model(TensorRunner(model).model, how)
    ids = list(b"abcab")
    walk = graph_walk(model, ids, compiled)
    labels = [chr(b) for b in ids]
    out = io.StringIO()
    with redirect_stdout(out):
        rows = [_walk_row(walk, t, labels, ids, ids) for t in range(len(ids))]
    found = [m for m in (SYN.search(line) for line in out.getvalue().splitlines()) if m]
    assert found, out.getvalue()
    html = write_html(
        str(tmp_path / "r.html"), "r", _walk_blocks(dict(rows=[r[:-1] for r in rows], right=0, asked=0, L=2))
    )
    report = open(html, encoding="utf-8").read()
    s = ViewSession(compiled)
    s.load(ids)
    data = s.data()
    page_states = {ev["name"]: ev["label"] for ev in data["edge_vars"]}
    for m in found:
        assert m.group(0) in report  # the report says what the terminal said
        state, l = m.group(1), int(m.group(2))
        assert page_states[compiled.network.sigma_names[l - 1]] == state  # the page calls that state the same
        t = next(t for t in range(len(ids)) if walk.sigma_delta[t] and m.group(0) in rows[t][-2])
        _, e, pre, post, *_ = walk.sigma_delta[t][0]
        assert (pre, post) == synapse_name(compiled, compiled.network.sigma_names[l - 1], e)
        g = compiled.network.groups[compiled.network.edge_vars[compiled.network.sigma_names[l - 1]].group]
        j = int(g.indices[e])
        assert names.node(g.post, j, compiled.weights.d) == post
        if j in s.shown[g.post]:  # the page's name of the same node
            assert data["names"][g.post][list(s.shown[g.post]).index(j)] == post


def test_sigma_l_means_the_same_number_in_the_graph_and_in_analyze():
    """σ_2 of the graph (network key sigma_1) on the synapse key neuron b → value neuron a equals bdh analyze's σ_2
    (bdh_gpu.analysis.sigma_synapses, layer 2) after the same text, and find_synapses names it σ_2(neuron b →
    neuron a)."""
    model = small_model("normfree", seed=1).double()
    compiled = compile_model(TensorRunner(model).model, "dense")
    ids = list(b"abcab")
    with torch.no_grad():
        tr = model.trace(torch.tensor(ids))
    net, l = compiled.network, 2
    key = net.sigma_names[l - 1]
    g = net.groups[net.edge_vars[key].group]
    assert names.state_of(key) == names.state(l)
    S = sigma_synapses(model, tr, l, np.arange(net.n), np.arange(net.n))  # [value a, key b]
    r = GraphRunner(compiled, "numba")
    r.logits(ids)
    got = np.asarray(r.sim.state.edges[key])
    want = S[g.indices, g.source]  # edge e: from key neuron source[e] to value neuron indices[e]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)
    res = find_synapses(model, ["abcab", "abcab"], ["zzzz", "yyyy"], layer=l, candidates=4, top=1)
    assert re.fullmatch(r"σ_2\(neuron \d+ → neuron \d+\)", res["top"][0]["synapse"])


def test_summary_under_mpi_says_it_is_this_ranks_share():
    """Under MPI (P > 1) a rank's edge counts are its block: the compile summary (a report header) says so; with
    P = 1 it says nothing extra."""
    from types import SimpleNamespace

    from equivalence import Compiled

    stub = lambda rank, size: SimpleNamespace(network=SimpleNamespace(comm=SimpleNamespace(rank=rank, size=size)))
    assert Compiled._share(stub(0, 4)) == " (edges and synapses: rank 0's share of 4 ranks)"
    assert Compiled._share(stub(0, 1)) == ""
    c = compile_model(TensorRunner(small_model("official")).model)
    assert c.summary().startswith("official compile of an official model") and "share" not in c.summary()
