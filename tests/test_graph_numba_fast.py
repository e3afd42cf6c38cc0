"""The numba backend's run kernels (bdh_graph/backends/numba_kernels.py over backends/layout.py) against its index
kernels: the same sums in the same order, so the same values, for every layout, thread count and dtype.

What is pinned: a send `r(j) += sum_i G(i,j) q(i)` (Table 1's communication column, Eq. 6's `G y`) computed
run by run, four sources at a time, or as one signed E/I pair, equals the serial source-major scatter; the lazy
rotation of sigma (Eq. 6's `sigma U` with U a RoPE rotation) caught up per key pair when touched equals the eager
rotation applied every token, bit for bit; a mutation of each fast path fails these comparisons.
"""

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given
from hypothesis import strategies as st

from bdh_graph import Network
from bdh_graph.backends import layout
from bdh_graph.backends import numba_kernels as nk
from bdh_graph.network import _group_from_csc
from bdh_graph.reference import eq6


def _group(M, name="G"):
    return _group_from_csc(name, "a", "b", sp.csc_matrix(M))


@st.composite
def _run_groups(draw):
    """A group in Eq. 6 orientation (n_post, n_pre) whose sources' targets form runs (blocks of a dense matrix,
    with gaps inside the runs at density >= 1/2), plus a source vector with silent entries and a non-zero target."""
    n_pre, n_post = draw(st.integers(1, 14)), draw(st.integers(1, 20))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    lo = rng.integers(0, n_post, n_pre) * (rng.random(n_pre) < 0.5)
    hi = np.minimum(n_post, lo + rng.integers(1, n_post + 1, n_pre))
    M = np.zeros((n_post, n_pre))
    for b in range(n_pre):
        run = np.arange(lo[b], hi[b])
        keep = rng.random(len(run)) < draw(st.sampled_from([1.0, 0.8]))
        keep[[0, -1]] = True
        M[run[keep], b] = rng.standard_normal(keep.sum()) * 10.0 ** rng.integers(-6, 6, keep.sum())
    src = rng.standard_normal(n_pre) * (rng.random(n_pre) < 0.7)
    out = rng.standard_normal(n_post) * 1e3
    sign = np.where(rng.random(M.shape) < 0.5, 1.0, -1.0)
    return np.abs(M), sign, src, out, draw(st.integers(1, 5))


def _scatter(g, src, out, w=None):
    ref = out.copy()
    nk.scatter(g.indptr, g.indices, g.weight if w is None else w, src, np.flatnonzero(src), ref, *_no_clock())
    return ref


def _no_clock():
    return np.zeros(1), np.zeros(1, dtype=np.int64), nk.NO_CLOCK


@given(_run_groups())
def test_run_send_equals_the_serial_scatter(case):
    """A send over runs (exact or padded with zeros), serial and parallel over 1-5 target blocks, in float64 and
    with float32 weights, gives the scatter's values exactly."""
    M, _, src, out, nblk = case
    g = _group(M)
    rows = layout.rows_of(g)
    if rows is None:
        return
    act = np.flatnonzero(src)
    for dtype in (np.float64, np.float32):
        ref = _scatter(g, src, out, g.weight.astype(dtype))
        W = layout.padded(rows, g, dtype=dtype)
        for par, k in ((False, 1), (True, nblk)):
            o = out.copy()
            nk.send_rows[par](rows.off, rows.lo, rows.ln, W, src, act, o, layout.bounds(g.n_post, k))
            assert np.array_equal(o, ref)


@given(_run_groups())
def test_signed_pair_send_equals_two_scatters(case):
    """An E/I pair (the positive and the negative part of one signed matrix, D_x^+ and D_x^-) held as one signed
    array: one pass gives both groups' sends exactly."""
    Mp, sign, src, out, nblk = case
    ge, gi = _group(np.maximum(Mp * sign, 0), "Ge"), _group(np.maximum(-Mp * sign, 0), "Gi")
    pair = layout.signed_pair(ge, gi)
    if pair is None:
        return
    rows, S = pair
    act = np.flatnonzero(src)
    re, ri = _scatter(ge, src, out), _scatter(gi, src, out * 0.5)
    for par, k in ((False, 1), (True, nblk)):
        oe, oi = out.copy(), out * 0.5
        nk.send_rows_pair[par](rows.off, rows.lo, rows.ln, S, src, act, oe, oi, layout.bounds(ge.n_post, k))
        assert np.array_equal(oe, re) and np.array_equal(oi, ri)


def test_layouts_are_classified():
    """exact runs, padded runs (>= DENSE_MIN of the slots are edges), and sparse groups left to the index kernels;
    a pair whose edge sets overlap is not one signed matrix."""
    assert layout.rows_of(_group(np.ones((5, 3)))).exact
    blocks = np.kron(np.eye(2), np.ones((4, 3)))  # per-head blocks: 3 sources -> targets 0..3, 3 -> 4..7
    r = layout.rows_of(_group(blocks))
    assert r.exact and list(r.lo) == [0, 0, 0, 4, 4, 4] and list(r.ln) == [4] * 6
    gappy = np.ones((6, 2))
    gappy[2, 0] = gappy[3, 1] = 0.0
    r = layout.rows_of(_group(gappy))
    assert not r.exact and r.size == 12
    sparse = np.zeros((40, 2))
    sparse[[0, 39], 0] = sparse[[0, 39], 1] = 1.0
    assert layout.rows_of(_group(sparse)) is None
    assert layout.signed_pair(_group(np.ones((3, 2)), "e"), _group(np.ones((3, 2)), "i")) is None


def test_run_send_mutants_fail():
    """The comparison sees a run send that drops the last slot of each run, and a pair send with E and I swapped."""
    rng = np.random.default_rng(3)
    M = rng.random((9, 8)) + 0.1
    g = _group(M)
    rows, src, out = layout.rows_of(g), rng.random(8) + 0.1, rng.random(9)
    ref = _scatter(g, src, out)
    o = out.copy()
    short = rows.ln - 1
    nk.send_rows[False](rows.off, rows.lo, short, layout.padded(rows, g), src, np.arange(8), o, layout.bounds(9, 1))
    assert not np.array_equal(o, ref)
    S = rng.standard_normal((9, 8))
    ge, gi = _group(np.maximum(S, 0), "e"), _group(np.maximum(-S, 0), "i")
    rows, P = layout.signed_pair(ge, gi)
    oe, oi = out.copy(), out.copy()
    nk.send_rows_pair[False](rows.off, rows.lo, rows.ln, -P, src, np.arange(8), oe, oi, layout.bounds(9, 1))
    assert not np.array_equal(oe, _scatter(ge, src, out))


def _rope_net(n, heads, u, theta, L=2, seed=0):
    """Table 1(b) with Gs in per-head blocks (the official compile's shape: exact runs, lo varying by head)."""
    rng = np.random.default_rng(seed)
    Gs = np.kron(np.eye(heads), np.ones((n // heads, n // heads)))
    G = dict(Gx_e=rng.random((n, n)) / n, Gx_i=rng.random((n, n)) / (2 * n), Gy_e=rng.random((n, n)) / n, Gs=Gs)
    return G, Network.from_dense(**G, u=u, theta=theta, layers=L)


@pytest.mark.parametrize("u_kind", ["rotation", "rotation_diagonal"])
def test_lazy_rotation_is_bit_identical_to_the_eager_rotation(monkeypatch, u_kind):
    """RoPE on sigma (Eq. 6's U = diag(u) R(theta)) applied lazily per key pair, caught up when a key of the pair
    fires again after silent tokens, gives the eager rotation's bits (numba FAST off), serial and parallel, and
    Eq. 6's values."""
    import bdh_graph.backends.numba_backend as nb
    from bdh_graph import config

    rng = np.random.default_rng(12)
    n, T = 24, 12
    u = rng.uniform(0.6, 0.99, n) if u_kind == "rotation_diagonal" else None
    theta = rng.uniform(-3, 3, n // 2)
    G, net = _rope_net(n, 3, u, theta)
    x0 = rng.random((T, n)) * (rng.random((T, n)) < 0.3)
    y0 = rng.random((T, n)) * (rng.random((T, n)) < 0.4)
    x0[4:8] = 0.0  # silent tokens: the pairs' clocks fall behind, then catch up several steps at once
    assert net.simulator(backend="numba").backend.lazy["sigma_0"] == "pair"
    lazy = net.run(x0, y0, backend="numba")
    monkeypatch.setattr(config, "PARALLEL_MIN_EDGES", 0)
    lazy_par = net.run(x0, y0, backend="numba")
    monkeypatch.setattr(nb, "FAST", False)
    assert net.simulator(backend="numba").backend.lazy["sigma_0"] is None
    eager = net.run(x0, y0, backend="numba")
    for r in (lazy, lazy_par):
        assert np.array_equal(r.sigma, eager.sigma) and np.array_equal(r.y, eager.y) and np.array_equal(r.x, eager.x)
    xr, yr, sr = eq6(x0, y0, **G, u=u, theta=theta, layers=2)
    np.testing.assert_allclose(lazy.y, yr, rtol=1e-10, atol=1e-12 * np.abs(yr).max())
    assert np.abs(yr[-1]).max() > 0 and np.min(sr) < 0


def test_lazy_rotation_mutant_fails(monkeypatch):
    """A catch-up that applies one step too few (the clock's off-by-one) is seen by the comparison above."""
    rng = np.random.default_rng(13)
    n, T = 12, 8
    theta = rng.uniform(-3, 3, n // 2)
    _, net = _rope_net(n, 2, None, theta)
    x0 = rng.random((T, n)) * (rng.random((T, n)) < 0.5)
    y0 = rng.random((T, n))
    x0[2:5] = 0.0
    good = net.run(x0, y0, backend="numba")
    sim = net.simulator(backend="numba")
    real = nk.read_rows_pair

    def late(par):
        def run(off, lo, ln, sigma, src, pairs, out, bounds, coef, last, clock):
            return real[par](off, lo, ln, sigma, src, pairs, out, bounds, coef, last, clock - 1)

        return run

    monkeypatch.setattr(nk, "read_rows_pair", (late(False), late(True)))
    bad = sim.run(x0, y0)
    assert not np.allclose(bad.sigma, good.sigma)


def test_unit_gs_hebbian_is_the_weighted_one():
    """Gs all ones (Obs. 4): the Hebbian write that does not read Gs equals the one that multiplies by it."""
    rng = np.random.default_rng(14)
    n_pre, n_post = 10, 7
    rows = layout.rows_of(_group(np.ones((n_post, n_pre))))
    pre = rng.random(n_pre) * (rng.random(n_pre) < 0.6)
    post = rng.random(n_post) * (rng.random(n_post) < 0.7)
    sig0 = rng.standard_normal(n_pre * n_post)
    a, b = sig0.copy(), sig0.copy()
    ap, aq = np.flatnonzero(pre), np.flatnonzero(post)
    nk.hebbian_rows[False](rows.off, rows.lo, rows.ln, np.ones(rows.size), False, a, pre, post, ap, aq)
    nk.hebbian_rows[True](rows.off, rows.lo, rows.ln, np.zeros(1), True, b, pre, post, ap, aq)
    assert np.array_equal(a, b) and not np.array_equal(a, sig0)


def _read_and_write(net):
    """The read rule `X(i), sigma_0(i,j) -> A(j)` and the Hebbian write `X(i), Y(j) -> sigma_0(i,j)` of layer 1."""
    rules = [r for rnd in net.kernel.layers[0] for r in rnd.communication]
    read = next(r for r in rules if r.kind == "read")
    return read, next(r for r in rules if r.kind == "hebbian" and r.dst == read.src[1])


@pytest.mark.parametrize("u_kind", ["identity", "diagonal", "rotation"])
def test_fused_read_write_equals_the_read_then_the_write(u_kind):
    """A read of sigma followed by its Hebbian write (Table 1's rounds 4l and 4l+1 back to back, as the lookahead
    of Simulator.feed runs them) done in one pass over the synapses gives the read's A and the write's sigma of the
    two rules run one after the other (the same values), after tokens with silent keys."""
    rng = np.random.default_rng(15)
    n = 16
    u = rng.uniform(0.6, 0.99, n) if u_kind != "identity" else None
    theta = rng.uniform(-3, 3, n // 2) if u_kind == "rotation" else None
    _, net = _rope_net(n, 2, u, theta)
    read, write = _read_and_write(net)
    x0 = rng.random((5, n)) * (rng.random((5, n)) < 0.4)
    y_last = rng.random(n)
    sims = [net.simulator(backend="numba") for _ in range(3)]
    for sim in sims:
        for t in range(4):
            sim.feed(x0[t], x0[t])
        sim.ingest(x0[4], y_last)
        sim.step(), sim.step()  # round 4l+3: X = x_1 of the new token
    be = [sim.backend for sim in sims]
    assert be[0]._fusable(read, write)
    before = be[1].to_numpy_state(sims[1]._state).edges["sigma_0"]
    remote = [dict(sim._state.nodes) for sim in sims]  # one process: the exchanged vectors are the local ones
    both = (read, write)
    fused = be[0].communicate(both, sims[0]._state, remote[0])
    apart = be[1].communicate((write,), be[1].communicate((read,), sims[1]._state, remote[1]), remote[1])
    assert be[0]._plan(both)[0].__name__ == "read_write"
    a, b = be[0].to_numpy_state(fused), be[1].to_numpy_state(apart)
    assert np.array_equal(a.nodes["A"], b.nodes["A"]) and np.abs(a.nodes["A"]).max() > 0
    assert np.array_equal(a.edges["sigma_0"], b.edges["sigma_0"]) and not np.array_equal(b.edges["sigma_0"], before)
    swapped = be[2].communicate((read,), be[2].communicate((write,), sims[2]._state, remote[2]), remote[2])
    assert not np.allclose(be[2].to_numpy_state(swapped).nodes["A"], a.nodes["A"])  # the order is seen


# ---- every fast path on the compiled models: equal to the index kernels, and each mutation seen --------------

COMPILED = [  # (compile, variant, U): which fast kernels each exercises is listed in FAST_KERNELS below
    ("official", "official", "rope"),
    ("circuit", "normfree", "rope+alibi"),
    ("circuit", "normfree", "alibi"),
    ("dense", "normfree", "alibi"),
    ("dense", "normfree", "none"),
    ("dense", "normfree", "rope"),
    ("dense-table1", "normfree", "rope"),  # Table 1 as printed (read, damp, write): the write catches up
]


def _compiled(how, variant, U, seed):
    import torch

    import bdh_gpu
    from equivalence import TensorRunner, compile_dense, compile_model

    torch.manual_seed(seed)
    cfg = bdh_gpu.BDHConfig(n_head=2, d=6, N=8, n_layer=2, variant=variant, U=U, dropout=0.0)
    model = TensorRunner(bdh_gpu.BDH(cfg).eval()).model
    return compile_dense(model, damping="table1") if how == "dense-table1" else compile_model(model, how)


def _graph_run(compiled, ids, dtype="float64"):
    from equivalence import GraphRunner

    runner = GraphRunner(compiled, "numba", dtype=dtype)
    outs = list(runner.feed(ids))
    return (np.stack([o["logits"] for o in outs]), np.stack([o["y"] for o in outs])), runner.sim.state.edges


def _fast_vs_index(compiled, ids, dtype="float64"):
    """(fast run, run with only the index kernels and the eager rotation)."""
    import bdh_graph.backends.numba_backend as nb

    fast = _graph_run(compiled, ids, dtype)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(nb, "FAST", False)
        slow = _graph_run(compiled, ids, dtype)
    return fast, slow


def _equal(a, b):
    (la, ya), sa = a
    (lb, yb), sb = b
    return np.array_equal(la, lb) and np.array_equal(ya, yb) and all(np.array_equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("how,variant,U", COMPILED)
@given(seed=st.integers(0, 2**16), ids=st.lists(st.integers(0, 255), min_size=4, max_size=7))
def test_fast_paths_equal_the_index_kernels_on_compiled_models(how, variant, U, seed, ids):
    """The dense (Obs. 4), circuit (Claims 3-4) and official compiles of random models run with the run
    layouts, E/I pairs, lazy rotation and the fused read and write give the index kernels' (and the eager
    rotation's) logits, y and sigma exactly in float64 (T > L, non-zero logits); in float32 they agree to
    float32's rounding."""
    c = _compiled(how, variant, U, seed)
    fast, slow = _fast_vs_index(c, np.array(ids))
    assert np.abs(fast[0][0]).max() > 0
    assert _equal(fast, slow)
    f32 = _graph_run(c, np.array(ids), "float32")
    scale = np.abs(slow[0][0]).max(axis=-1, keepdims=True)
    assert np.all(np.abs(f32[0][0] - slow[0][0]) <= 1e-4 * scale)


def _late(real, arg):
    """A kernel called with its clock argument (position `arg`) one step behind: the lazy catch-up misses a step."""

    def build(par):
        def run(*a):
            a = list(a)
            a[arg] = a[arg] - 1 if a[arg] >= 0 else a[arg]
            return real[par](*a)

        return run

    return build(False), build(True)


def _swap_outputs(real):
    def build(par):
        def run(off, lo, ln, S, src, act, oe, oi, b):
            return real[par](off, lo, ln, S, src, act, oi, oe, b)

        return run

    return build(False), build(True)


def _short_runs(real, ln_arg=2):
    def build(par):
        def run(*a):
            a = list(a)
            a[ln_arg] = np.maximum(a[ln_arg] - 1, 0)
            return real[par](*a)

        return run

    return build(False), build(True)


def _drop_last_post(real):
    def build(par):
        def run(*a):
            return real[par](*a[:-1], a[-1][:-1])

        return run

    return build(False), build(True)


FAST_KERNELS = {  # kernel -> (its mutant, a compile that runs it)
    "send_rows": (_short_runs, ("official", "official", "rope")),
    "send_rows_pair": (_swap_outputs, ("official", "official", "rope")),
    "read_write_rows_pair": (lambda k: _late(k, 11), ("official", "official", "rope")),
    "read_write_rows_column": (lambda k: _late(k, 11), ("circuit", "normfree", "alibi")),
    "read_rows_column": (lambda k: _late(k, 10), ("dense", "normfree", "alibi")),
    "hebbian_rows": (_drop_last_post, ("dense", "normfree", "none")),
    "read_rows_pair": (lambda k: _late(k, 10), ("dense", "normfree", "rope")),
    "catch_up_pairs": (lambda k: _late(k, 7), ("dense-table1", "normfree", "rope")),
}


@pytest.mark.parametrize("name", sorted(FAST_KERNELS))
def test_each_fast_kernel_mutation_fails_the_comparison(monkeypatch, name):
    """A mutation of each fast kernel (a run one slot short, E and I swapped, a lazy clock one step behind, the
    last active target of a write dropped) makes the compiled model's run differ from the index kernels'."""
    mutant, case = FAST_KERNELS[name]
    c = _compiled(*case, seed=3)
    ids = np.array([5, 200, 17, 99, 42])
    fast, slow = _fast_vs_index(c, ids)
    assert _equal(fast, slow)
    monkeypatch.setattr(nk, name, mutant(getattr(nk, name)))
    bad = _graph_run(c, ids)
    assert not _equal(bad, slow)
