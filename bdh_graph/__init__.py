"""bdh_graph: BDH as a graph of neurons (paper Sec. 2, Table 1, Eq. 6), simulated by local rules.

Quick start::

    net = Network.from_dense(Gx_e=..., Gx_i=..., Gy_e=..., Gy_i=..., Gs=..., u=..., layers=L)
    res = net.run(x0, y0, backend="numba")      # res.x, res.y: (T, L+1, n); res.sigma: (L, n, n)

No torch here: the PyG backend and the PyG export import torch lazily. See docs/bdh_graph.md.
"""

from . import kernels
from .errors import GraphError, MonitorIndexError
from .kernels import Kernel, Round, Rule, register_rule, table_1a, table_1b
from .monitors import EventMonitor, SpikeMonitor, StateMonitor
from .network import EdgeVariable, Network, Population, SynapseGroup
from .reference import eq6
from .simulator import RunResult, Simulator
from .state import NetworkState

__all__ = [
    "Network",
    "Population",
    "SynapseGroup",
    "EdgeVariable",
    "NetworkState",
    "Simulator",
    "RunResult",
    "Kernel",
    "Round",
    "Rule",
    "register_rule",
    "table_1a",
    "table_1b",
    "kernels",
    "eq6",
    "StateMonitor",
    "SpikeMonitor",
    "EventMonitor",
    "GraphError",
    "MonitorIndexError",
]
