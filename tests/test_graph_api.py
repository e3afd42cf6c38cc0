"""bdh_graph's interface: one-line errors, token policies, stepping, monitors, export, user kernels."""

import networkx as nx
import numpy as np
import pytest

from bdh_graph import (
    EventMonitor,
    GraphError,
    MonitorIndexError,
    Network,
    SpikeMonitor,
    StateMonitor,
    eq6,
)
from bdh_graph import (
    kernels as K,
)

rng = np.random.default_rng(0)
N = 4
G = dict(
    Gx_e=rng.random((N, N)) / N, Gx_i=rng.random((N, N)) / N, Gy_e=rng.random((N, N)) / N, Gy_i=rng.random((N, N)) / N
)
X0, Y0 = rng.random((3, N)), rng.random((3, N))


def one_line(excinfo, *words):
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    for w in words:
        assert w in msg, msg


# ---- errors ----------------------------------------------------------------------------------------------------


def test_negative_weight_names_group_and_edge():
    bad = dict(G, Gy_i=G["Gy_i"].copy())
    bad["Gy_i"][2, 1] = -0.5
    with pytest.raises(GraphError) as e:
        Network.from_dense(**bad)
    one_line(e, "Gy_i", "non-negative", "-0.5", "1->2")


def test_shape_mismatch_names_group():
    with pytest.raises(GraphError) as e:
        Network.from_dense(**dict(G, Gs=np.ones((N, N + 1))))
    one_line(e, "Gs", f"({N}, {N})", f"({N}, {N + 1})")


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nan_inf_rejected(value):
    bad = dict(G, Gx_e=G["Gx_e"].copy())
    bad["Gx_e"][0, 3] = value
    with pytest.raises(GraphError) as e:
        Network.from_dense(**bad)
    one_line(e, "Gx_e", "finite")
    with pytest.raises(GraphError) as e:
        Network.from_dense(**G).run(np.where(X0 > 0.5, value, X0), Y0)
    one_line(e, "x0", "finite")


@pytest.mark.parametrize("u", [np.full(N, 1.5), np.full(N, -0.1), np.full((N, N), 2.0)])
def test_u_outside_unit_interval(u):
    with pytest.raises(GraphError) as e:
        Network.from_dense(**G, u=u)
    one_line(e, "u", "[0, 1]")


def test_u_and_theta_shapes():
    with pytest.raises(GraphError) as e:
        Network.from_dense(**G, u=np.ones(N + 1))
    one_line(e, "u", f"({N},)", f"({N + 1},)")
    with pytest.raises(GraphError) as e:
        Network.from_dense(**G, theta=np.ones(N))
    one_line(e, "theta", f"({N // 2},)")
    with pytest.raises(GraphError) as e:
        Network.from_dense(Gx_e=np.zeros((3, 3)), theta=np.ones(1))
    one_line(e, "theta", "even")


def test_inputs_wrong_shape():
    net = Network.from_dense(**G)
    with pytest.raises(GraphError) as e:
        net.run(X0[:, :-1], Y0)
    one_line(e, "x0", f"(3, {N})", f"(3, {N - 1})")
    with pytest.raises(GraphError) as e:
        net.run(X0, Y0[:2])
    one_line(e, "y0", f"(3, {N})")
    with pytest.raises(GraphError) as e:
        net.simulator().feed(X0[0], Y0)
    one_line(e, "y0_t", f"({N},)")


def test_unknown_variable_in_kernel_rule():
    net = Network.from_dense(**G)
    bad = K.Kernel(((K.Round(communication=(K.send("Y", "Z", "Gx_e"),)),),))
    with pytest.raises(GraphError) as e:
        net.with_kernel(bad)
    one_line(e, "unknown node variable 'Z'", "Y(i) -> Z(j)")
    bad = K.Kernel(((K.Round(computation=(K.threshold("Xe", "Q", "X"),)),),))
    with pytest.raises(GraphError) as e:
        net.with_kernel(bad)
    one_line(e, "'Q'")
    bad = K.Kernel(((K.Round(communication=(K.send("Y", "X", "Gz"),)),),))
    with pytest.raises(GraphError) as e:
        net.with_kernel(bad)
    one_line(e, "unknown synapse group 'Gz'")
    bad = K.Kernel(((K.Round(computation=(K.Rule("frobnicate", ("X",), "Y"),)),),))
    with pytest.raises(GraphError) as e:
        net.with_kernel(bad)
    one_line(e, "frobnicate", "register_rule")
    bad = K.Kernel(((K.Round(communication=(K.send("Y", "X", "Gx_e"), K.send("X", "A", "Gy_e"))),),))
    with pytest.raises(GraphError) as e:
        net.with_kernel(bad)
    one_line(e, "both read and write", "'X'")


def test_option_errors():
    for kw, word in [
        (dict(damping="later"), "damping"),
        (dict(hebbian_orientation="sideways"), "hebbian_orientation"),
        (dict(kernel="1c"), "kernel"),
        (dict(layers=0), "layers"),
    ]:
        with pytest.raises(GraphError) as e:
            Network.from_dense(**G, **kw)
        one_line(e, word)
    net = Network.from_dense(**G)
    for kw, word in [
        (dict(backend="jax"), "backend"),
        (dict(x_policy="keep"), "x_policy"),
        (dict(backend="numba", spiking=True), "spiking"),
    ]:
        with pytest.raises(GraphError) as e:
            net.simulator(**kw)
        one_line(e, word)
    with pytest.raises(GraphError) as e:
        net.simulator(backend="numpy").step()
    one_line(e, "ingest")
    with pytest.raises(GraphError) as e:
        net.run(X0, Y0, sigma0=np.ones((2, N, N)))
    one_line(e, "sigma0")


def test_sigma0_off_graph_rejected():
    Gs = np.eye(N)
    net = Network.from_dense(**G, Gs=Gs)
    s = np.zeros((1, N, N))
    s[0, 0, 1] = 1.0
    with pytest.raises(GraphError) as e:
        net.run(X0, Y0, sigma0=s)
    one_line(e, "sigma0[sigma_0]", "1->0", "not an edge of Gs")


def test_monitor_bad_indices_name_range():
    sim = Network.from_dense(**G).simulator()
    with pytest.raises(MonitorIndexError) as e:
        StateMonitor(sim, variables="X", record=[0, N])
    one_line(e, f"[0, {N - 1}]")
    assert isinstance(e.value, IndexError) and isinstance(e.value, ValueError)
    with pytest.raises(GraphError) as e:
        StateMonitor(sim, variables="W")
    one_line(e, "unknown variable 'W'")
    with pytest.raises(GraphError) as e:
        StateMonitor(sim, when="later")
    one_line(e, "when")


# ---- semantics of the scheduler ---------------------------------------------------------------------------------


def test_step_by_step_equals_feed():
    """2 * 4L sub-rounds per token; stepping by hand gives the same state as feed."""
    net = Network.from_dense(**G, u=np.full(N, 0.8), layers=2)
    a, b = net.simulator(), net.simulator()
    for t in range(3):
        a.feed(X0[t], Y0[t])
        b.ingest(X0[t], Y0[t])
        phases = [b.step() for _ in range(16)]
        assert phases == ["communication", "computation"] * 8
        with pytest.raises(GraphError):
            b.step()
    assert a.state.round == b.state.round == 24 and a.state.token == 3
    np.testing.assert_array_equal(a.state.X, b.state.X)
    np.testing.assert_array_equal(a.state.sigma_1, b.state.sigma_1)


def test_x_policy_add_equals_set_with_carried_input():
    """x_policy="add": X <- x_{t-1,L} + x0_t, the same as "set" fed with that sum (Eq. 6 with carried X)."""
    net = Network.from_dense(**G, layers=2)
    add = net.simulator(x_policy="add", y_policy="add")
    ref = net.simulator()
    xp = yp = np.zeros(N)
    for t in range(3):
        xa, ya = add.feed(X0[t], Y0[t])
        xr, yr = ref.feed(X0[t] + xp, Y0[t] + yp)
        np.testing.assert_allclose(xa, xr, rtol=1e-12), np.testing.assert_allclose(ya, yr, rtol=1e-12)
        xp, yp = xr[-1], yr[-1]
    assert np.max(np.abs(xp)) > 0


def test_shared_sigma_one_state_for_all_layers():
    """Reference 2e: shared_sigma=True keeps one sigma that every layer reads, writes and damps in turn."""
    net = Network.from_dense(**G, layers=3, shared_sigma=True, u=np.full(N, 0.9))
    assert net.sigma_names == ["sigma"]
    r = net.run(X0, Y0, backend="numba")
    xr, yr, sr = eq6(X0, Y0, **G, layers=3, shared_sigma=True, u=np.full(N, 0.9))
    assert r.sigma.shape == (1, N, N)
    np.testing.assert_allclose(r.y, yr, rtol=1e-10, atol=1e-12)
    _, yper, _ = eq6(X0, Y0, **G, layers=3, u=np.full(N, 0.9))
    assert np.max(np.abs(yper - yr)) > 1e-6


def test_sigma0_and_sparse_accessor():
    """A given sigma0 (dense or per edge) is the sigma_{0,l} of Eq. 6; sigma_sparse(l) is the same matrix."""
    s0 = rng.random((2, N, N))
    net = Network.from_dense(**G, layers=2)
    r = net.run(X0, Y0, sigma0=s0)
    _, yr, sr = eq6(X0, Y0, **G, layers=2, sigma0=s0)
    np.testing.assert_allclose(r.y, yr, rtol=1e-10)
    np.testing.assert_allclose(r.sigma_sparse(1).toarray(), sr[1], rtol=1e-10)
    gs = net.groups["Gs"]
    r2 = net.run(X0, Y0, sigma0=s0[:, gs.indices, gs.source])  # per edge, source-major order
    np.testing.assert_allclose(r2.y, r.y, rtol=1e-12)


# ---- monitors ---------------------------------------------------------------------------------------------------


def test_state_monitor_shapes_and_times():
    net = Network.from_dense(**G, layers=2)
    sim = net.simulator()
    tok = StateMonitor(sim, variables=("X", "Y"), record=[1, 3])
    rnd = StateMonitor(sim, variables=("sigma_1",), record=True, when="round")
    r = sim.run(X0, Y0)
    assert tok.X.shape == (2, 3) and list(tok.token) == [0, 1, 2]
    np.testing.assert_array_equal(tok.X, r.x[:, 2, [1, 3]].T)
    np.testing.assert_array_equal(tok.Y, r.y[:, 2, [1, 3]].T)
    assert rnd.sigma_1.shape == (N * N, 24) and list(rnd.round) == list(range(1, 25))
    np.testing.assert_allclose(rnd.sigma_1[:, -1], r.sigma_edges["sigma_1"])


def test_spike_monitor_raster_and_counts():
    """Activity raster: which neurons had y != 0 after each token; record=False keeps counts only."""
    net = Network.from_dense(**G, layers=1)
    sim = net.simulator()
    spk = SpikeMonitor(sim, variable="Y", record=True)
    quiet = SpikeMonitor(sim, variable="Y", record=False)
    r = sim.run(X0, Y0)
    active = r.y[:, 1] != 0
    np.testing.assert_array_equal(spk.raster(), active.T)
    np.testing.assert_array_equal(spk.count, active.sum(0))
    np.testing.assert_array_equal(quiet.count, active.sum(0))
    assert len(quiet.i) == 0 and spk.num_spikes == active.sum() > 0


def test_event_monitor_counts_active_fanout():
    """Synaptic events: per send, the out-degree summed over active sources; per write, edges with both ends active."""
    net = Network.from_dense(**dict(G, Gx_e=G["Gx_e"] * (rng.random((N, N)) < 0.5)), layers=1)
    sim = net.simulator()
    ev = EventMonitor(sim, record=True)
    x0, y0 = np.array([[1.0, 0, 0, 0]]), np.array([[0, 1.0, 0, 1.0]])
    sim.run(x0, y0)
    deg = lambda g: np.count_nonzero(net.groups[g].dense(), axis=0)  # out-degree of each source (column)
    assert ev.count["Gx_e"] == deg("Gx_e")[[1, 3]].sum()
    assert ev.count["sigma_0.write"] == np.count_nonzero(np.outer(y0[0], sim.state.X))
    assert ev.count["sigma_0.read"] == N * np.count_nonzero(sim.state.X)  # Gs complete, sigma_0 starts at 0
    assert len(ev.i) == ev.total and set(ev.key) <= set(ev.count)


# ---- export -----------------------------------------------------------------------------------------------------


def test_export_networkx_and_pyg():
    """networkx: one edge per synapse (key = group, weight, sigma on Gs edges); PyG: edge_index row 0 = source."""
    net = Network.from_dense(**G, layers=2)
    r = net.run(X0, Y0)
    g = net.to_networkx(r)
    assert isinstance(g, nx.MultiDiGraph) and g.number_of_nodes() == N
    assert g.number_of_edges() == sum(gr.nnz for gr in net.groups.values())
    for i, j in [(0, 1), (3, 2)]:
        assert g.edges[i, j, "Gx_e"]["weight"] == pytest.approx(G["Gx_e"][j, i])
        assert g.edges[i, j, "Gs"]["sigma_1"] == pytest.approx(r.sigma[1][j, i])
    d = net.to_pyg(r)
    ei = d["neurons", "Gy_i", "neurons"].edge_index.numpy()
    w = d["neurons", "Gy_i", "neurons"].edge_weight.numpy()
    np.testing.assert_allclose(w, G["Gy_i"][ei[1], ei[0]])
    s = d["neurons", "Gs", "neurons"].sigma_0.numpy()
    eg = d["neurons", "Gs", "neurons"].edge_index.numpy()
    np.testing.assert_allclose(s, r.sigma[0][eg[1], eg[0]])


# ---- extending the kernel ---------------------------------------------------------------------------------------


def test_user_kernel_with_hub_population_and_registered_rule():
    """A second population (hubs) with its own variables, a group neurons -> hubs, and a registered local rule
    (a divisive normalisation of each hub by its own second variable) run identically on all backends."""

    def divide(rule, v, ops):
        h, s = rule.src
        return {rule.dst: v[h] / (v[s] + rule.param("eps", 1e-9))}

    K.register_rule("divide", divide, local=True)
    E = rng.random((3, N))
    net = Network().add_population("neurons", N).add_population("hub", 3, variables=("H", "S", "V"))
    net.add_group("E", "neurons", "hub", E).add_group("D", "hub", "neurons", rng.random((N, 3)))
    net.add_group("E2", "neurons", "hub", 2 * E)
    kern = K.Kernel(
        (
            (
                K.Round(
                    communication=(K.send("Y", "hub.H", "E"), K.send("X", "hub.S", "E2")),
                    computation=(K.Rule("divide", ("hub.H", "hub.S"), "hub.V", params=(("eps", 1e-12),)),),
                ),
                K.Round(
                    communication=(K.send("hub.V", "X", "D"),),
                    computation=(K.reset("hub.H"), K.reset("hub.S"), K.reset("hub.V")),
                ),
            ),
        ),
        name="hub demo",
    )
    net.with_kernel(kern)
    outs = [net.run(X0, Y0, backend=b).x for b in ("numpy", "numba", "pyg")]
    expect = X0 + (net.groups["D"].dense() @ ((E @ Y0.T) / (2 * E @ X0.T))).T
    for o in outs:
        np.testing.assert_allclose(o[:, 1], expect, rtol=1e-12)
    with pytest.raises(GraphError):
        K.register_rule("send", divide, local=True)


@pytest.mark.parametrize("backend", ["numpy", "numba", "pyg"])
def test_ingest_inputs_at_a_hub(backend):
    """`ingest(x0, y0, inputs)` sets variables of other populations at the token's start (sensory input at hubs):
    a hub value V sent to X over D adds D @ V to x_{t,1} (X0 = Y0 = 0 otherwise); unknown names are refused."""
    D = rng.random((N, 3))
    net = Network().add_population("neurons", N).add_population("hub", 3, variables=("V",))
    net.add_group("D", "hub", "neurons", D)
    net.with_kernel(
        K.Kernel(((K.Round(communication=(K.send("hub.V", "X", "D"),), computation=(K.reset("hub.V"),)),),))
    )
    sim = net.simulator(backend=backend)
    V = np.array([1.0, 2.0, 0.5])
    x, _ = sim.feed(np.zeros(N), np.zeros(N), {"hub.V": V})
    np.testing.assert_allclose(x[1], D @ V, rtol=1e-12)
    x, _ = sim.feed(np.zeros(N), np.zeros(N))  # no inputs: V was reset, nothing flows
    assert not np.any(x[1])
    with pytest.raises(GraphError) as e:
        sim.ingest(np.zeros(N), np.zeros(N), {"hub.W": V})
    one_line(e, "hub.W", "hub.V")
    with pytest.raises(GraphError) as e:
        sim.ingest(np.zeros(N), np.zeros(N), {"hub.V": V[:2]})
    one_line(e, "hub.V", "(3,)")


def test_locality_is_enforced():
    """Locality (the paper's local rules, Def. 1): a rule reads only its own node. register_rule needs the
    declaration; the validator refuses a rule that names two populations and, by its probe, a registered rule
    that reads other nodes (here an L1 normalisation over the whole population, which sums every hub)."""

    def l1norm(rule, v, ops):
        h = v[rule.src[0]]
        return {rule.dst: h / ops.xp.sum(ops.xp.abs(h))}

    with pytest.raises(GraphError) as e:
        K.register_rule("l1norm", l1norm, local=False)
    one_line(e, "l1norm", "local=True")
    K.register_rule("l1norm_claimed_local", l1norm, local=True)  # a false claim: the probe must catch it
    net = Network().add_population("neurons", N).add_population("hub", 4, variables=("H", "V"))
    net.add_group("E", "neurons", "hub", rng.random((4, N)))
    bad = K.Kernel(
        (
            (
                K.Round(
                    communication=(K.send("Y", "hub.H", "E"),),
                    computation=(K.Rule("l1norm_claimed_local", ("hub.H",), "hub.V"),),
                ),
            ),
        )
    )
    with pytest.raises(GraphError) as e:
        net.with_kernel(bad)
    one_line(e, "not node-local", "hub.V")
    two_pops = K.Kernel(((K.Round(computation=(K.product("hub.H", "X", "hub.V"),)),),))
    with pytest.raises(GraphError) as e:
        net.with_kernel(two_pops)
    one_line(e, "not node-local", "hub", "neurons")
    with pytest.raises(GraphError) as e:
        K.check_local(K.Rule("l1norm_claimed_local", ("H",), "V"), 5)
    one_line(e, "not node-local")


def test_no_torch_import_without_pyg():
    """numpy/numba use of bdh_graph does not import torch (the PyG backend and export import it lazily)."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np; from bdh_graph import Network; "
        "net = Network.from_dense(Gx_e=np.ones((2, 2)), layers=1); net.run(np.ones((1, 2)), np.ones((1, 2)), "
        "backend='numpy'); assert 'torch' not in sys.modules, 'torch imported'; print('ok')"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=str(__import__("pathlib").Path(__file__).parents[1]),
    )
    assert out.stdout.strip() == "ok", out.stderr
