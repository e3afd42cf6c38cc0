"""bdh_graph's opt-in float32 graph (issue 20): weights and sigma stored in float32, node variables and the sums
into them in float64, everything handed out in float64; float64 stays the default, bit for bit.

The Eq. 6 networks are tests/test_graph_equivalence.py's random ones; the float32 graph is compared with the dense
float64 Eq. 6 (bdh_graph.reference.eq6) per slice at 1e-4, relative to the slice's scale.
"""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from test_graph_equivalence import U_KINDS, cases, close

from bdh_graph import GraphError, Network, Simulator, eq6
from bdh_graph.backends import DTYPES, as_dtype, make_backend

FLOAT32_RTOL = 1e-4


def _net(case):
    G, u, theta, layers, x0, y0, opts = case
    return Network.from_dense(**G, u=u, theta=theta, layers=layers, **opts), x0, y0


def _example():
    rng = np.random.default_rng(0)
    n = 6
    G = {k: rng.random((n, n)) * (rng.random((n, n)) < 0.6) for k in ("Gx_e", "Gx_i", "Gy_e", "Gy_i")}
    net = Network.from_dense(**G, Gs=np.ones((n, n)), u=rng.uniform(0.5, 1, n), theta=rng.uniform(-1, 1, n // 2))
    return net, rng.random((4, n)), rng.random((4, n))


@pytest.mark.parametrize("spelling", ["float32", np.float32, np.dtype("float32")])
def test_dtype_spellings_normalise_to_the_string(spelling):
    assert as_dtype(spelling) == "float32" and as_dtype(np.float64) == as_dtype("float64") == "float64"
    net, _, _ = _example()
    assert Simulator(net, dtype=spelling).dtype == "float32" and net.simulator().dtype == "float64"


@pytest.mark.parametrize("bad", ["float16", np.float16, "f4", "double", None, 3, np.int32])
def test_bad_dtype_is_one_line(bad):
    net, _, _ = _example()
    with pytest.raises(GraphError) as e:
        Simulator(net, dtype=bad)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("dtype: expected one of float64, float32, got")


def test_numpy_backend_is_the_float64_reference_only():
    net, _, _ = _example()
    with pytest.raises(GraphError, match="backend='numpy' is the float64 reference"):
        make_backend("numpy", net, dtype="float32")
    with pytest.raises(GraphError, match="float64 reference"):
        net.run(np.ones((1, 6)), np.ones((1, 6)), backend="numpy", dtype=np.float32)
    assert DTYPES == ("float64", "float32")


def test_numba_stores_weights_and_sigma_in_float32_and_hands_out_float64():
    """The backend's own arrays: sigma float32, the weights its kernels read a float32 copy (the network keeps its
    float64 weights); node variables float64; state, node() and a RunResult float64."""
    net, x0, y0 = _example()
    sim = Simulator(net, backend="numba", dtype="float32")
    res = sim.run(x0, y0)
    assert {a.dtype for a in sim._state.edges.values()} == {np.dtype(np.float32)}
    assert {g.weight.dtype for g in sim.backend.net.groups.values()} == {np.dtype(np.float32)}
    assert {g.weight.dtype for g in net.groups.values()} == {np.dtype(np.float64)}
    assert {a.dtype for a in sim._state.nodes.values()} == {np.dtype(np.float64)}
    assert {a.dtype for a in sim.state.edges.values()} == {np.dtype(np.float64)}
    assert res.x.dtype == res.y.dtype == sim.node("X").dtype == np.float64
    assert {a.dtype for a in res.sigma_edges.values()} == {np.dtype(np.float64)}
    for k, a in sim.state.edges.items():  # the float64 copy holds exactly the float32 values
        assert np.array_equal(a, sim._state.edges[k].astype(np.float64))


def test_pyg_stores_weights_and_sigma_in_float32_and_hands_out_float64():
    net, x0, y0 = _example()
    sim = Simulator(net, backend="pyg", dtype="float32", device="cpu")
    res = sim.run(x0, y0)
    assert {t.dtype for t in sim._state.edges.values()} == {torch.float32}
    assert {t.dtype for t in sim.backend.weight.values()} == {torch.float32}
    assert {t.dtype for t in sim._state.nodes.values()} == {torch.float64}
    assert {a.dtype for a in sim.state.edges.values()} == {np.dtype(np.float64)}
    assert res.x.dtype == res.y.dtype == np.float64


@pytest.mark.parametrize("backend", ["numba", "pyg"])
@given(case=cases())
def test_float64_default_is_unchanged(backend, case):
    """The default is float64 and the very same computation: no dtype, "float64" and np.float64 give the same
    bits (x, y, sigma), float64 arrays throughout; numba reads the network's own weights (no copy)."""
    net, x0, y0 = _net(case)
    runs = [Simulator(net, backend=backend, **kw) for kw in ({}, {"dtype": "float64"}, {"dtype": np.float64})]
    out = [s.run(x0, y0) for s in runs]
    for r in out[1:]:
        assert np.array_equal(r.x, out[0].x) and np.array_equal(r.y, out[0].y)
        assert all(np.array_equal(r.sigma_edges[k], out[0].sigma_edges[k]) for k in r.sigma_edges)
    assert all(s.dtype == "float64" for s in runs)
    if backend == "numba":
        assert runs[0].backend.net is net
        assert {a.dtype for a in runs[0]._state.edges.values()} == {np.dtype(np.float64)}


@pytest.mark.parametrize("backend", ["numba", "pyg"])
@pytest.mark.parametrize("u_kind", U_KINDS)
@given(data=st.data())
def test_float32_graph_equals_eq6_to_1e4(backend, u_kind, data):
    """Eq. 6 (Table 1(b), every option of reference 2a, 2b, 2e, every U: lazy per-key and per-synapse damping and
    rotation on float32 sigma) on the float32 graph equals the dense float64 Eq. 6 to 1e-4 per slice (x, y,
    sigma): float32 storage rounds each weight by <= 6e-8 and sigma once per update."""
    G, u, theta, layers, x0, y0, opts = data.draw(cases(u_kind=u_kind))
    xr, yr, sr = eq6(x0, y0, **G, u=u, theta=theta, layers=layers, **opts)
    net = Network.from_dense(**G, u=u, theta=theta, layers=layers, **opts)
    r = net.run(x0, y0, backend=backend, dtype="float32", **({"device": "cpu"} if backend == "pyg" else {}))
    close(r.x, xr, f"{backend}: x", FLOAT32_RTOL)
    close(r.y, yr, f"{backend}: y", FLOAT32_RTOL)
    close(r.sigma, sr, f"{backend}: sigma", FLOAT32_RTOL)


def test_float32_graph_is_not_the_float64_graph():
    """The float32 path really runs in float32: its sigma differs from the float64 graph's by float32 rounding
    (~1e-8 relative, far above float64's 1e-16 and far below 1e-4), and is exactly representable in float32."""
    net, x0, y0 = _example()
    s64 = net.run(x0, y0, backend="numba").sigma_edges["sigma_0"]
    for backend in ("numba", "pyg"):
        s32 = net.run(x0, y0, backend=backend, dtype="float32").sigma_edges["sigma_0"]
        rel = np.abs(s32 - s64).max() / np.abs(s64).max()
        assert 1e-10 < rel < 1e-6, (backend, rel)
        assert np.array_equal(s32, s32.astype(np.float32).astype(np.float64))


def test_trace_shows_the_float32_weights():
    """`trace_rounds` on a float32 simulator shows the messages with the weights the backend stores (float32)."""
    from bdh_graph.trace import trace_rounds

    net, x0, y0 = _example()
    sim = net.simulator(dtype="float32")
    tr = trace_rounds(sim, [("t0", x0[0], y0[0], None)], {"neurons": list(range(6))})
    flows = [f for rnd in tr[0]["rounds"] for rule in rnd["communication"] for f in rule["flows"]]
    sends = [f for f in flows if f["weight"] != 0]
    assert sends and all(np.float32(f["weight"]) == f["weight"] for f in sends)
    assert all(rnd["consistent"] for rnd in tr[0]["rounds"])
