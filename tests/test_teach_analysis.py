"""The analyses behind `bdh analyze` and `bdh merge` (paper Sec. 5-7, reference section 6), on cases whose answer
is known: hand counts, planted structure, and the graph simulator as an independent computation of sigma."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import bdh_gpu
from bdh_gpu.analysis import merge, neuron_graph, sigma_synapses, sparsity
from bdh_graph import stats as GS


def tiny(variant="official", U="rope", h=2, N=8, d=4, L=2, seed=0):
    torch.manual_seed(seed)
    m = bdh_gpu.BDH(bdh_gpu.BDHConfig(n_head=h, d=d, N=N, n_layer=L, dropout=0.0, variant=variant, U=U))
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.5)
    return m.double().eval()


# ---- graphs ------------------------------------------------------------------------------------------------------


def test_threshold_graph_and_degrees_by_hand():
    """G[j, i] is the edge i -> j (reference 1); entries >= beta off the diagonal are edges; degrees count them."""
    G = np.array([[9.0, 1.0, 0.2], [1.5, 0.0, 2.0], [-3.0, 1.2, 0.0]])
    A = GS.threshold_graph(G, 1.0)
    assert sorted(zip(*A.nonzero())) == [(0, 1), (1, 0), (1, 2), (2, 1)]  # (j, i): 1->0, 0->1, 2->1, 1->2
    k_in, k_out = GS.degrees(A)
    assert k_in.tolist() == [1, 2, 1] and k_out.tolist() == [1, 2, 1]
    k_in, k_out = GS.degrees(GS.threshold_graph(G, 1.3))  # 0->1 (1.5), 2->1 (2.0)
    assert k_in.tolist() == [0, 2, 0] and k_out.tolist() == [1, 0, 1]
    assert GS.threshold_graph(G, 1.0, self_loops=True).nnz == 5  # + the 9.0 self-loop


def test_neuron_graph_is_head_block_of_Dx_E():
    """G_x = D_x E restricted to one head's neurons (Obs. 4, Eq. 9: Gx_e - Gx_i = D_x E)."""
    m = tiny(h=3, N=6, d=4)
    E = m.E.detach().numpy()
    for h in range(3):
        full = m.D_x.detach().reshape(-1, 4).numpy() @ E
        np.testing.assert_allclose(neuron_graph(m, "x", h), full[h * 6 : (h + 1) * 6, h * 6 : (h + 1) * 6], atol=1e-14)
    with pytest.raises(ValueError, match="head must lie in"):
        neuron_graph(m, "x", 3)


def test_modularity_planted_high_random_low():
    """Louvain modularity (best of 5) finds 4 planted communities (Q about 0.7); G(n, m) with the same edge count
    scores far lower (Q < 0.25: sparse random graphs have some modularity by chance, which is why the paper
    compares against baselines, Sec. 5.5), and a dense G(n, m) is near 0 (Q < 0.08)."""
    A = GS.planted_partition([25] * 4, p_in=0.5, p_out=0.01, seed=1)
    q, parts = GS.louvain_modularity(A)
    assert q > 0.6 and len(parts) == 4
    R = GS.gnm_like(A, seed=2)
    assert R.nnz == A.nnz and R.diagonal().sum() == 0
    assert GS.louvain_modularity(R)[0] < 0.25
    dense = GS.gnm_like(GS.planted_partition([100], p_in=0.5, p_out=0.0, seed=3), seed=4)
    assert abs(GS.louvain_modularity(dense)[0]) < 0.08


def test_modularity_vs_beta_rows_and_baselines():
    """Rows per beta with the edge count, G(n,m) and a baseline at the same beta and at the same edge count."""
    rng = np.random.default_rng(0)
    G = rng.normal(size=(40, 40))
    rows = GS.modularity_vs_beta(G, [1.0, 2.0], baselines={"low-rank": GS.random_low_rank(40, 3, 1, 1)}, seeds=1)
    assert [r["edges"] for r in rows] == [GS.threshold_graph(G, b).nnz for b in (1.0, 2.0)]
    assert all(k in rows[0] for k in ("modularity", "G(n,m)", "low-rank", "low-rank (same m)", "low-rank_edges"))
    assert GS.top_edges(G, 17).nnz == 17


def test_tail_exponent_recovers_zipf():
    """The discrete power-law MLE with a KS-chosen k_min recovers the exponent of a Zipf sample (2.5 +- 0.1)."""
    k = np.random.default_rng(3).zipf(2.5, 4000)
    fit = GS.tail_exponent(k)
    assert abs(fit.alpha - 2.5) < 0.1 and fit.ks < 0.05
    assert GS.tail_exponent([1, 2, 3]) is None


def test_mann_whitney_finder_recovers_planted_synapse():
    """One synapse separates 50 concept from 50 contrast sentences (paper Sec. 6.3: U = 2368 of 2500); among 300
    noise synapses the finder ranks it first, with U near 2500 and a tiny one-sided p."""
    rng = np.random.default_rng(5)
    concept, contrast = rng.normal(size=(50, 300)), rng.normal(size=(50, 300))
    concept[:, 123] += 3.0
    top = GS.mann_whitney_rank(concept, contrast, top=3)
    assert top[0].index == 123 and top[0].U > 2300 and top[0].p < 1e-14
    assert top[1].U < top[0].U
    # U by definition: the number of (concept, contrast) pairs where concept is larger
    U = sum((concept[:, 123][:, None] > contrast[:, 123][None, :]).ravel())
    assert top[0].U == U
    with pytest.raises(ValueError, match="same S"):
        GS.mann_whitney_rank(concept, contrast[:, :5])


# ---- activations -------------------------------------------------------------------------------------------------


def test_sparsity_equals_hand_count():
    """Sparsity = fraction of (token, neuron) with x > 0 / y > 0 per layer, counted by hand from the trace."""
    m = tiny()
    ids = torch.tensor(list(b"hello world"))
    tr = m.trace(ids)
    s = sparsity(m, ids)
    assert s["layers"] == [1, 2] and s["n"] == 16 and s["tokens"] == 11
    for l in range(2):
        x, y = tr["x"][l].numpy(), tr["y"][l].numpy()
        assert s["x"][l] == sum(1 for t in range(11) for i in range(16) if x[t, i] > 0) / (11 * 16)
        assert s["y"][l] == sum(1 for t in range(11) for i in range(16) if y[t, i] > 0) / (11 * 16)
    assert sparsity(tiny("paper"), ids)["layers"] == [0, 1, 2]


@settings(deadline=None)
@given(seed=st.integers(0, 2**16), U=st.sampled_from(["rope", "none", "alibi", "rope+alibi"]))
def test_sigma_synapses_equal_graph_state(seed, U):
    """sigma_{t,l} = sum_tau y_{tau,l-1} x_{tau,l}^T U^{t-tau+1} (Eq. 6/7 unrolled), from the tensor trace, equals
    the sigma the graph simulator holds on its synapses after the same tokens (Obs. 4 dense compile, float64)."""
    from equivalence import compile_model
    from equivalence.run import GraphRunner

    m = tiny("normfree", U=U, h=2, N=4, d=3, L=2, seed=seed)
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(0.6)
    ids = [3, 1, 4, 1, 5]
    c = compile_model(m, "dense")
    g = GraphRunner(c, "numpy")
    list(g.feed(ids))
    tr = m.trace(torch.tensor(ids))
    n = 8
    for l in (1, 2):
        name = c.network.sigma_names[l - 1]
        grp = c.network.groups[c.network.edge_vars[name].group]
        graph_sigma = grp.matrix(g.sim.state.edges[name]).toarray()  # [a, b]: value a, key b
        ours = sigma_synapses(m, tr, l, np.arange(n), np.arange(n))
        np.testing.assert_allclose(ours, graph_sigma, rtol=1e-9, atol=1e-12 * max(1, np.abs(graph_sigma).max()))


# ---- merging -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["official", "paper"])
def test_merge_keeps_each_parents_heads(variant):
    """Sec. 7.1: concatenating D_x, D_y, E along n (head-wise; RoPE frequencies depend only on N, so they
    concatenate too). With equal embeddings (so the average changes nothing) the merged model runs each parent's
    heads unchanged where its input is still shared: official, layer 1 (x = (D_x LN(embed))^+, attention values
    LN(embed), y per head); paper, the boundary x_0 = y_0 (layer 1 already mixes heads through E y_0). There the
    x, y of heads 0..h_a-1 equal parent A's, the rest parent B's, and the merged E y is the parents' sum."""
    a, b = tiny(variant, seed=1), tiny(variant, seed=2)
    with torch.no_grad():
        b.embed.weight.copy_(a.embed.weight)
    m = merge(a, b)
    assert m.config.n_head == 4 and m.config.n == 2 * a.config.n
    np.testing.assert_array_equal(m.D_x.detach()[2:].numpy(), b.D_x.detach().numpy())
    np.testing.assert_array_equal(m.E.detach()[:, :16].numpy(), a.E.detach().numpy())
    assert torch.equal(m._freqs, a._freqs)  # per-head frequencies, same N
    ids = torch.tensor(list(b"merge me"))
    tm, ta, tb = m.trace(ids), a.trace(ids), b.trace(ids)
    k = 0  # official: layer 1; paper: layer 0
    for key in ("x", "y"):
        np.testing.assert_allclose(tm[key][k][:, :16].numpy(), ta[key][k].numpy(), atol=1e-12)
        np.testing.assert_allclose(tm[key][k][:, 16:].numpy(), tb[key][k].numpy(), atol=1e-12)
    Ey = lambda model, tr: tr["y"][k] @ model.E.detach().T
    np.testing.assert_allclose(Ey(m, tm), Ey(a, ta) + Ey(b, tb), atol=1e-12)
    if variant == "official":  # and the attention of layer 1
        np.testing.assert_allclose(tm["a"][0][:2].numpy(), ta["a"][0].numpy(), atol=1e-12)
        np.testing.assert_allclose(tm["a"][0][2:].numpy(), tb["a"][0].numpy(), atol=1e-12)


def test_merge_rejects_incompatible():
    with pytest.raises(ValueError, match="differ in N"):
        merge(tiny(N=8), tiny(N=6))
    with pytest.raises(ValueError, match="alibi"):
        merge(tiny(U="alibi"), tiny(U="alibi"))


def test_claim3_hand_example_of_the_tutorial():
    """docs/tutorial.md section 4, by hand: D = (1, -2)^T, E = (3, -1): E' = [E^+; E^-], De, Di of Claim 3, and
    De E' - Di E' = D E exactly, every weight non-negative."""
    from equivalence.compile import hub_split

    D, E = np.array([[1.0], [-2.0]]), np.array([[3.0, -1.0]])
    Ep = np.vstack([np.maximum(E, 0), np.maximum(-E, 0)])
    De, Di = hub_split(D)
    assert Ep.tolist() == [[3, 0], [0, 1]] and De.tolist() == [[1, 0], [0, 2]] and Di.tolist() == [[0, 1], [2, 0]]
    assert (De @ Ep).tolist() == [[3, 0], [0, 2]] and (Di @ Ep).tolist() == [[0, 1], [6, 0]]
    assert (De @ Ep - Di @ Ep).tolist() == (D @ E).tolist() == [[3, -1], [-6, 2]]
