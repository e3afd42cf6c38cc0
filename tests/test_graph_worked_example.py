"""The worked 3-neuron example of docs/bdh_graph.md, computed there by hand, reproduced round by round.

Pins Table 1(b) (our round order) and Eq. 6, including inhibition, the X gate, and the damping position.
"""

import numpy as np
import pytest

from bdh_graph import Network, StateMonitor


def example_network(**kw):
    Z = np.zeros((3, 3))
    Gx_e, Gx_i, Gy_e, Gy_i = Z.copy(), Z.copy(), Z.copy(), Z.copy()
    Gx_e[1, 0] = 1.0  # edge 0 -> 1, weight 1
    Gx_i[1, 2] = 0.5  # edge 2 -> 1, inhibitory, weight 0.5
    Gy_e[1, 0] = 2.0  # edge 0 -> 1, weight 2
    Gy_e[0, 2] = 1.0  # edge 2 -> 0, weight 1
    Gy_i[1, 2] = 1.0  # edge 2 -> 1, inhibitory, weight 1
    return Network.from_dense(
        Gx_e=Gx_e, Gx_i=Gx_i, Gy_e=Gy_e, Gy_i=Gy_i, Gs=np.ones((3, 3)), u=np.array([1.0, 0.5, 1.0]), layers=1, **kw
    )


X0 = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
Y0 = np.array([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])


@pytest.mark.parametrize("backend", ["numpy", "numba", "pyg"])
def test_worked_example_round_by_round(backend):
    """docs/bdh_graph.md, "Worked example": every value after every round of both tokens (Table 1(b), Eq. 6)."""
    net = example_network()
    sim = net.simulator(backend=backend)
    mon = StateMonitor(sim, variables=("X", "Y", "A", "Xe", "Xi", "Ye", "Yi"), when="round")
    res = sim.run(X0, Y0)
    expect = {  # columns: rounds 1..4 of token 1, then of token 2
        "Xe": [[0, 1, 0], [0, 1, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0]],
        "Xi": [[0, 0.5, 0], [0, 0.5, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0]],
        "X": [[1, 0.5, 0]] * 4 + [[0, 1, 0]] * 4,
        "A": [[0, 0, 0]] * 4 + [[0, 0, 0], [0.25, 0, 0.25], [0.25, 0, 0.25], [0, 0, 0]],
        "Y": [[1, 0, 1], [1, 0, 1], [0, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0.25, 0]],
        "Ye": [[0, 0, 0]] * 8,
        "Yi": [[0, 0, 0]] * 8,
    }
    for var, cols in expect.items():
        np.testing.assert_allclose(getattr(mon, var), np.array(cols, dtype=float).T, atol=1e-15, err_msg=var)
    np.testing.assert_allclose(res.x[:, 1], [[1, 0.5, 0], [0, 1, 0]], atol=1e-15)
    np.testing.assert_allclose(res.y[:, 1], [[0, 0, 0], [0, 0.25, 0]], atol=1e-15)
    np.testing.assert_allclose(res.sigma[0], [[1, 0.125, 0], [0, 0, 0], [1, 0.125, 0]], atol=1e-15)


def test_worked_example_round_3_of_token_2_sees_ye_yi():
    """The communication sub-round of token 2's last round: Ye = (.25, .5, 0), Yi = (0, .25, 0) (docs)."""
    sim = example_network().simulator(backend="numba")
    sim.feed(X0[0], Y0[0])
    sim.ingest(X0[1], Y0[1])
    for _ in range(7):  # 3 rounds and the communication half of the 4th
        sim.step()
    np.testing.assert_allclose(sim.state.Ye, [0.25, 0.5, 0], atol=1e-15)
    np.testing.assert_allclose(sim.state.Yi, [0, 0.25, 0], atol=1e-15)
    assert sim.phase == "computation"


def test_worked_example_literal_damping_order():
    """The same example with Table 1's printed order (read, damp, write): y_{2,1} = (0, .5, 0), one factor of
    u_1 = 0.5 more than Eq. 6's (0, .25, 0) (docs, reference 2b)."""
    res = example_network(damping="table1").run(X0, Y0, backend="numba")
    np.testing.assert_allclose(res.y[1, 1], [0, 0.5, 0], atol=1e-15)
    np.testing.assert_allclose(res.sigma[0], [[1, 0.25, 0], [0, 0, 0], [1, 0.25, 0]], atol=1e-15)
