"""bdh_graph: the three backends running Table 1(b) equal a dense NumPy evaluation of Eq. 6 (float64, 1e-10).

Differential testing in the Hypothesis style: none of the four implementations is trusted alone; the dense
Eq. 6 (bdh_graph.reference.eq6) has no rounds and no graph, the backends have no dense algebra.
"""

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, note
from hypothesis import strategies as st

from bdh_graph import Network, eq6
from bdh_graph.reference import apply_U, rotation_matrix

BACKENDS = ("numpy", "numba", "pyg")
U_KINDS = ("identity", "diagonal", "per_synapse", "rotation", "rotation_diagonal", "rotation_per_synapse")


def close(a, b, what="", rtol=1e-10):
    """|a - b| <= rtol * scale per slice (all axes but the last: one token, one layer), scale = max(|a|, |b|)
    over that slice: relative to the operands' own size, never to a floor set by the largest element elsewhere."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, f"{what}: shapes {a.shape} vs {b.shape}"
    a2, b2 = a.reshape(-1, a.shape[-1] if a.ndim else 1), b.reshape(-1, b.shape[-1] if b.ndim else 1)
    scale = np.maximum(np.abs(a2).max(-1, initial=0.0), np.abs(b2).max(-1, initial=0.0))[:, None]
    err = np.abs(a2 - b2)
    bad = err > rtol * scale
    assert not bad.any(), (
        f"{what}: slice {np.argwhere(bad)[0][0]}: |diff| {err[bad].max():.3e} > {rtol:g} x "
        f"slice scale {scale[np.argwhere(bad)[0][0], 0]:.3e}"
    )


@st.composite
def cases(draw, u_kind=None, inhibition=None, density=None):
    """A random network, inputs and options. Arrays come from a NumPy generator seeded by Hypothesis."""
    u_kind = draw(st.sampled_from(U_KINDS)) if u_kind is None else u_kind
    rot = u_kind.startswith("rotation")
    n = draw(st.sampled_from([2, 4, 6]) if rot else st.integers(1, 7))
    layers, T = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    density = draw(st.sampled_from([0.25, 0.6, 1.0])) if density is None else density
    inhibition = draw(st.booleans()) if inhibition is None else inhibition
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)

    def graph():
        return rng.random((n, n)) * (rng.random((n, n)) < density) * (2.0 / n)

    G = dict(Gx_e=graph(), Gy_e=graph(), Gs=(rng.random((n, n)) < max(density, 0.5)) * rng.uniform(0.5, 1.5, (n, n)))
    G["Gx_i"] = graph() if inhibition else np.zeros((n, n))
    G["Gy_i"] = graph() if inhibition else np.zeros((n, n))
    u = {
        "identity": None,
        "diagonal": rng.uniform(0.3, 1.0, n),
        "per_synapse": rng.uniform(0.3, 1.0, (n, n)),
        "rotation": None,
        "rotation_diagonal": rng.uniform(0.3, 1.0, n),
        "rotation_per_synapse": rng.uniform(0.3, 1.0, (n, n)),
    }[u_kind]
    theta = rng.uniform(-np.pi, np.pi, n // 2) if rot else None
    x0 = rng.random((T, n)) * (rng.random((T, n)) < 0.6)  # silent neurons: exercises the event-driven skip
    y0 = rng.random((T, n)) * (rng.random((T, n)) < 0.6)
    opts = dict(
        shared_sigma=draw(st.booleans()),
        damping=draw(st.sampled_from(["eq6", "table1"])),
        hebbian_orientation=draw(st.sampled_from(["eq6", "printed"])),
    )
    note(f"n={n} L={layers} T={T} density={density} inhibition={inhibition} u={u_kind} seed={seed} {opts}")
    return G, u, theta, layers, x0, y0, opts


def check_backends(G, u, theta, layers, x0, y0, opts, backends=BACKENDS):
    xr, yr, sr = eq6(x0, y0, **G, u=u, theta=theta, layers=layers, **opts)
    net = Network.from_dense(**G, u=u, theta=theta, layers=layers, **opts)
    for b in backends:
        r = net.run(x0, y0, backend=b)
        close(r.x, xr, f"{b}: x"), close(r.y, yr, f"{b}: y"), close(r.sigma, sr, f"{b}: sigma")


@pytest.mark.parametrize("u_kind", U_KINDS)
@given(data=st.data())
def test_equivalent_table1b_backends_eq6(u_kind, data):
    """Eq. 6 (with every option of reference 2a, 2b, 2e): numba == pyg == numpy(kernel) == dense Eq. 6."""
    check_backends(*data.draw(cases(u_kind=u_kind)))


@given(case=cases(density=1.0, inhibition=False))
def test_equivalent_dense_graphs_no_inhibition(case):
    """Eq. 6 on complete graphs without inhibition (the Obs. 4 shape: Gs all ones)."""
    check_backends(*case)


def test_order_matters_only_through_U():
    """Reference 2b: at U = I the literal order (read, damp, write) equals Eq. 6's (read, write, damp); with
    damping the literal order reads sigma_{t-1} U^{-1}, i.e. one factor of U less; pinned on a dense Eq. 6."""
    rng = np.random.default_rng(1)
    n, T = 5, 4
    G = dict(Gx_e=rng.random((n, n)) / n, Gy_e=rng.random((n, n)) / n)
    x0, y0 = rng.random((T, n)), rng.random((T, n))
    a = Network.from_dense(**G, layers=2, damping="eq6").run(x0, y0, backend="numba")
    b = Network.from_dense(**G, layers=2, damping="table1").run(x0, y0, backend="numba")
    close(a.y, b.y), close(a.sigma, b.sigma)
    u = rng.uniform(0.2, 0.9, n)
    a = Network.from_dense(**G, u=u, layers=1, damping="eq6").run(x0, y0, backend="numba")
    b = Network.from_dense(**G, u=u, layers=1, damping="table1").run(x0, y0, backend="numba")
    assert np.max(np.abs(a.y - b.y)) > 1e-3
    # the state after token t is sum_{tau<=t} w_tau U^{t-tau+1} (Eq. 6) against U^{t-tau} (literal)
    W = [np.outer(y0[t], a.x[t, 1]) for t in range(T)]
    s_eq6 = sum(apply_U(W[t], u ** (T - t)) for t in range(T))
    s_lit = sum(apply_U(W[t], u ** (T - 1 - t)) for t in range(T))
    close(a.sigma[0], s_eq6), close(b.sigma[0], s_lit)


def test_hebbian_orientation_choice():
    """Reference 2a: Eq. 6 writes sigma[a, b] += y_{l-1}[a] x_l[b] (edge naming: X(i), Y(j) -> sigma(i,j));
    Table 1 as printed writes the transpose. One token from sigma = 0, pinned as an outer product."""
    rng = np.random.default_rng(2)
    n = 4
    G = dict(Gx_e=rng.random((n, n)) / n, Gy_e=rng.random((n, n)) / n)
    x0, y0 = rng.random((1, n)), rng.random((1, n))
    for b in BACKENDS:
        r = Network.from_dense(**G, layers=1).run(x0, y0, backend=b)
        close(r.sigma[0], np.outer(y0[0], r.x[0, 1]))
        p = Network.from_dense(**G, layers=1, hebbian_orientation="printed").run(x0, y0, backend=b)
        close(p.sigma[0], np.outer(r.x[0, 1], y0[0]))
        assert np.max(np.abs(p.sigma[0] - r.sigma[0])) > 1e-3


def test_rotation_convention():
    """U = diag(u) R(theta), sigma <- sigma U: column 2m gets u cos * sigma[:,2m] + u sin * sigma[:,2m+1].
    Pinned on one synapse pair against the formula written out, and against the dense product."""
    n = 2
    u, theta = np.array([0.9, 0.5]), np.array([0.3])
    s = np.array([[1.0, 2.0], [0.0, -1.0]])
    c, si = np.cos(0.3), np.sin(0.3)
    expect = np.array([[0.9 * c * 1 + 0.5 * si * 2, -0.9 * si * 1 + 0.5 * c * 2], [0.5 * si * -1, 0.5 * c * -1]])
    close(apply_U(s, u, theta), expect)
    close(rotation_matrix(2, theta), [[c, -si], [si, c]])
    net = Network.from_dense(Gx_e=np.zeros((n, n)), u=u, theta=theta, layers=1)
    ev = net.edge_vars["sigma_0"]
    g = net.groups["Gs"]
    vals = s[g.indices, g.source]
    out = ev.coef_self * vals + ev.coef_mate * vals[ev.mate]
    close(g.dense(out), expect)


def test_rotation_closes_sparse_gs_under_pairing():
    """A rotation moves state between synapses (2m -> a) and (2m+1 -> a): a sparse Gs gains zero-weight partners,
    so the graph run still equals the dense Eq. 6 (whose sigma U leaves Gs's support)."""
    n = 4
    Gs = np.zeros((n, n))
    Gs[1, 0] = Gs[3, 2] = 1.0  # edges 0->1 and 2->3 only
    rng = np.random.default_rng(3)
    G = dict(Gx_e=rng.random((n, n)) / n, Gy_e=rng.random((n, n)) / n, Gs=Gs)
    net = Network.from_dense(**G, theta=np.array([0.4, -1.1]), layers=2)
    assert net.groups["Gs"].nnz == 4
    x0, y0 = rng.random((3, n)), rng.random((3, n))
    xr, yr, sr = eq6(x0, y0, **G, theta=np.array([0.4, -1.1]), layers=2)
    assert np.min(sr) < 0  # a rotation makes sigma signed
    for b in BACKENDS:
        r = net.run(x0, y0, backend=b)
        close(r.y, yr), close(r.sigma, sr)


@given(case=cases(inhibition=False, u_kind="diagonal"))
def test_table_1a_equals_1b_without_inhibition(case):
    """Table 1(a) (no inhibitory graphs, no thresholds) computes the same as Table 1(b) when Gx_i = Gy_i = 0
    and sigma >= 0 (no rotation): every (.)^+ of 1(b) then acts on a non-negative number."""
    G, u, theta, layers, x0, y0, opts = case
    a = Network.from_dense(**G, u=u, layers=layers, kernel="1a", **opts).run(x0, y0, backend="numba")
    b = Network.from_dense(**G, u=u, layers=layers, kernel="1b", **opts).run(x0, y0, backend="numba")
    close(a.x, b.x), close(a.y, b.y), close(a.sigma, b.sigma)


def test_table_1a_differs_with_inhibition():
    """The converse: with inhibition Table 1(a) (which ignores Gx_i, Gy_i) is not Eq. 6, Table 1(b) is."""
    rng = np.random.default_rng(4)
    n = 5
    G = dict(
        Gx_e=rng.random((n, n)) / n,
        Gx_i=rng.random((n, n)) / n,
        Gy_e=rng.random((n, n)) / n,
        Gy_i=rng.random((n, n)) / n,
    )
    x0, y0 = rng.random((3, n)), rng.random((3, n))
    _, yr, _ = eq6(x0, y0, **G, layers=2)
    close(Network.from_dense(**G, layers=2).run(x0, y0, backend="numba").y, yr)
    assert np.max(np.abs(Network.from_dense(**G, layers=2, kernel="1a").run(x0, y0, backend="numba").y - yr)) > 1e-4


def test_numba_threads_agree(monkeypatch):
    """Owner-computes Hebbian write and pairwise rotation: the serial build, the parallel build on 1 thread and
    on all threads give bit-identical results."""
    import numba

    from bdh_graph import config

    rng = np.random.default_rng(5)
    n = 40
    G = dict(Gx_e=rng.random((n, n)) / n, Gy_e=rng.random((n, n)) / n, Gs=(rng.random((n, n)) < 0.3) * 1.0)
    x0, y0 = rng.random((4, n)), rng.random((4, n))
    net = Network.from_dense(**G, u=rng.uniform(0.5, 1, n), theta=rng.uniform(-3, 3, n // 2), layers=2)
    serial = net.run(x0, y0, backend="numba")
    monkeypatch.setattr(config, "PARALLEL_MIN_EDGES", 0)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = net.run(x0, y0, backend="numba")
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        many = net.run(x0, y0, backend="numba")
    finally:
        numba.set_num_threads(before)
    for r in (one, many):
        assert np.array_equal(serial.sigma, r.sigma) and np.array_equal(serial.y, r.y)


@pytest.mark.parametrize("u_kind", ["identity", "diagonal", "per_synapse", "rotation_diagonal"])
def test_numba_complete_group_fast_paths_are_bit_identical(monkeypatch, u_kind):
    """Eq. 6 on a complete Gs (the Obs. 4 shape): the numba run kernels on a complete group (read parallel over
    targets with the per-key catch-up fused in; Hebbian write over active pre x active post only) give the same
    bits as the general source-major kernels, serial and parallel, over sparse activity with silent gaps."""
    import bdh_graph.backends.numba_backend as nb
    from bdh_graph import config

    rng = np.random.default_rng(11)
    n, T = 24, 10
    G = dict(Gx_e=rng.random((n, n)) / n, Gy_e=rng.random((n, n)) / n, Gs=rng.uniform(0.5, 1.5, (n, n)))
    x0 = rng.random((T, n)) * (rng.random((T, n)) < 0.3)
    y0 = rng.random((T, n)) * (rng.random((T, n)) < 0.3)
    x0[3:6] = 0.0  # silent tokens: the lazy clocks fall behind, then catch up
    u = {
        "identity": None,
        "diagonal": rng.uniform(0.5, 0.99, n),
        "per_synapse": rng.uniform(0.5, 0.99, (n, n)),
        "rotation_diagonal": rng.uniform(0.5, 0.99, n),
    }[u_kind]
    theta = rng.uniform(-3, 3, n // 2) if u_kind.startswith("rotation") else None
    net = Network.from_dense(**G, u=u, theta=theta, layers=2)
    sim = net.simulator(backend="numba")
    assert sim.backend._rows(net.groups["Gs"], exact_only=True).exact  # the run kernels are the ones taken
    fast = net.run(x0, y0, backend="numba")
    monkeypatch.setattr(config, "PARALLEL_MIN_EDGES", 0)
    fast_par = net.run(x0, y0, backend="numba")
    monkeypatch.setattr(nb, "FAST", False)
    general = net.run(x0, y0, backend="numba")
    for r in (fast, fast_par):
        assert (
            np.array_equal(r.sigma, general.sigma) and np.array_equal(r.y, general.y) and np.array_equal(r.x, general.x)
        )
    xr, yr, sr = eq6(x0, y0, **G, u=u, theta=theta, layers=2)
    close(fast.y, yr), close(fast.sigma, sr)
    assert np.abs(sr).max() > 0 and np.abs(yr[-1]).max() > 0


def test_lazy_damping_matches_eager_over_sparse_activity():
    """The numba backend damps lazily (a synapse catches up with u**k when touched); neurons silent for many
    tokens then waking up must see exactly the state the eager backends hold: sigma_t = sum w_tau U^{t-tau}."""
    rng = np.random.default_rng(6)
    n, T = 8, 12
    G = dict(Gx_e=rng.random((n, n)) / n, Gy_e=rng.random((n, n)) / n, Gs=(rng.random((n, n)) < 0.7) * 1.0)
    x0 = np.zeros((T, n))
    y0 = np.zeros((T, n))
    x0[0, :3], y0[0, 4:] = 1.0, 0.7  # write once ...
    x0[T - 1, :2] = 1.0  # ... read eleven tokens later
    u = rng.uniform(0.5, 0.99, (n, n))
    xr, yr, sr = eq6(x0, y0, **G, u=u, layers=2)
    net = Network.from_dense(**G, u=u, layers=2)
    for b in BACKENDS:
        r = net.run(x0, y0, backend=b)
        close(r.y, yr), close(r.sigma, sr)
    assert np.max(yr[-1]) > 0


def test_constructors_agree():
    """from_dense, from_scipy, from_edges (paper edge naming i -> j) and a PyG round trip build the same network."""
    rng = np.random.default_rng(7)
    n = 6
    G = {k: rng.random((n, n)) * (rng.random((n, n)) < 0.5) for k in ("Gx_e", "Gx_i", "Gy_e", "Gy_i", "Gs")}
    x0, y0 = rng.random((3, n)), rng.random((3, n))
    u = rng.uniform(0.5, 1, n)
    ref = Network.from_dense(**G, u=u, layers=2).run(x0, y0, backend="numba")
    nets = [Network.from_scipy(**{k: sp.csr_matrix(v) for k, v in G.items()}, u=u, layers=2)]
    edges = {}
    for k, v in G.items():
        j, i = np.nonzero(v)
        edges[k] = (i, j, v[j, i])
    nets.append(Network.from_edges(n, edges, u=u, layers=2))
    nets.append(Network.from_pyg(nets[0].to_pyg(), layers=2, u=u))
    for net in nets:
        r = net.run(x0, y0, backend="numba")
        close(r.y, ref.y), close(r.sigma, ref.sigma)


def test_edge_convention_against_dense_matmul():
    """Edge i -> j carries G[j, i]: one send round `Y(i) -> Xe(j) [Gx_e]` equals Gx_e @ y on every backend."""
    rng = np.random.default_rng(8)
    n = 5
    Gx_e = rng.random((n, n)) * (rng.random((n, n)) < 0.5)
    net = Network.from_dense(Gx_e=Gx_e, layers=1)
    y = rng.random(n)
    for b in BACKENDS:
        sim = net.simulator(backend=b)
        sim.ingest(np.zeros(n), y)
        sim.step()  # communication sub-round of the first round
        close(sim.state.Xe, Gx_e @ y)
        j, i = np.nonzero(Gx_e)
        g = net.groups["Gx_e"]
        assert set(zip(g.source.tolist(), g.indices.tolist())) == set(zip(i.tolist(), j.tolist()))


@st.composite
def _fixed_groups(draw):
    """A fixed synapse group (rows possibly unsorted, parallel edges), a source vector with silent neurons and
    signed zeros, a non-zero initial target vector, and a number of target blocks."""
    n_pre, n_post = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    deg = draw(st.lists(st.integers(0, 8), min_size=n_pre, max_size=n_pre))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    indptr = np.concatenate(([0], np.cumsum(deg))).astype(np.int64)
    indices = rng.integers(0, n_post, indptr[-1]).astype(np.int64)
    weight = rng.standard_normal(indptr[-1]) * 10.0 ** rng.integers(-8, 8, indptr[-1])
    src = rng.standard_normal(n_pre) * (rng.random(n_pre) < 0.6)
    src[rng.random(n_pre) < 0.2] = -0.0
    out = rng.standard_normal(n_post) * 1e3
    return indptr, indices, weight, src, out, draw(st.integers(1, 5))


def _sends(case, mutate=None):
    """The send of a fixed group by the serial reference `scatter` and by `scatter_blocks` (serial build,
    parallel build) over `target_blocks`; `mutate(split, active)` edits the fast path's inputs."""
    from types import SimpleNamespace

    import bdh_graph.backends.numba_kernels as nb

    indptr, indices, weight, src, out, nblk = case
    g = SimpleNamespace(indptr=indptr, indices=indices, weight=weight, n_pre=len(src), n_post=len(out))
    g.nnz = len(indices)
    active = np.flatnonzero(src)
    ref = out.copy()
    nb.scatter(indptr, indices, weight, src, active, ref, np.zeros(1), np.zeros(1, dtype=np.int64), -1)
    t_idx, t_w, split = nb.target_blocks(g, nblk)
    if mutate is not None:
        split, active = mutate(split.copy(), active.copy())
    fast = [out.copy(), out.copy()]
    for par in (False, True):
        nb.scatter_blocks[par](t_idx, t_w, src, active, fast[par], split)
    return ref, fast


@given(_fixed_groups())
def test_numba_parallel_send_is_bit_identical_to_the_serial_scatter(case):
    """A fixed group's send parallel over target blocks (`scatter_blocks`) adds, for every target, the same
    products in the same order (sources ascending) as the serial `_scatter`: the same bits, float64."""
    ref, fast = _sends(case)
    for f in fast:
        assert np.array_equal(f.view(np.int64), ref.view(np.int64))


def test_numba_parallel_send_mutants_fail_the_comparison():
    """The comparison above sees a fast path that skips each source's last edge or sums sources descending."""
    rng = np.random.default_rng(20)
    n, deg = 10, 6
    indptr = np.arange(0, n * deg + 1, deg, dtype=np.int64)
    case = (indptr, rng.integers(0, 3, n * deg), rng.standard_normal(n * deg), rng.random(n) + 0.1, rng.random(3), 2)

    def skip_last(split, active):
        split[:, -1] -= 1
        return split, active

    for mutant in (skip_last, lambda split, active: (split, active[::-1].copy())):
        ref, fast = _sends(case, mutant)
        assert not any(np.array_equal(f, ref) for f in fast)
