"""What a compiled neuron graph will allocate, from the config alone (before compiling), for the memory budget
of the graph commands (`bdh.budget`). Edge counts, measured on `compile_model(...).network.groups[*].nnz`
(tests/test_budget.py checks them), with n = h N neurons, d, L layers, V = vocab_size:

    dense    3 n^2 + n V synapses (the n x n circuits of Obs. 4, the read-in and read-out); sigma L n^2
    circuit  7 n d + 2 d V synapses (neurons <-> the d-dimensional hubs, Claims 3-4); sigma 2 L n d
    official at most 7 n d + 2 d V + 64 n (the LayerNorm populations and their hubs); sigma L n d

Each synapse costs EDGE_BYTES (its two end points, its weight, the backends' own layout and the compile's
intermediate arrays); each sigma entry SIGMA_BYTES (float64, with the copies the backends keep). Under P ranks
every rank holds 1/P of them, and each rank its own interpreter (FIXED). The float32 graph (`dtype="float32"`,
bdh_graph.backends) counts 4 bytes per edge weight and per synapse: the backend's float32 copy of every weight
(the network keeps its float64 weights) and its float32 sigma in place of the float64 one (the copies it hands
out stay float64): the same total per synapse with state, 4 bytes more per synapse without.
"""

from __future__ import annotations

from bdh_gpu.budget import FIXED, Estimate, forward_bytes
from bdh_gpu.config import BDHConfig

EDGE_BYTES = 64
SIGMA_BYTES = 48
FLOAT32_WEIGHT_BYTES = 4  # the float32 graph: its copy of each weight, and the 4 bytes its sigma saves per entry


def edges(config: BDHConfig, how: str) -> tuple[int, int]:
    """(synapses, sigma entries) of the compile `how` (an upper estimate)."""
    n, d, L, V = config.n, config.d, config.n_layer, config.vocab_size
    if how == "dense":
        return 3 * n * n + n * V, L * n * n
    if how == "circuit":
        return 7 * n * d + 2 * d * V, 2 * L * n * d
    return 7 * n * d + 2 * d * V + 64 * n, L * n * d


def graph_bytes(config: BDHConfig, how: str, ranks: int = 1, tokens: int = 1, dtype: str = "float64") -> Estimate:
    """The graph of compile `how` over `ranks` processes (the sum over them), in `dtype` (module docstring), and the
    tensor model's float64 forward over `tokens` that the graph commands compare with or compile from (on rank 0)."""
    e, s = edges(config, how)
    w = FLOAT32_WEIGHT_BYTES if dtype == "float32" else 0
    graph = Estimate(
        f"{how} graph{' (float32)' if w else ''}, {ranks} rank{'s' if ranks > 1 else ''}",
        {"synapses": (EDGE_BYTES + w) * e, "sigma": (SIGMA_BYTES - w) * s, "fixed": FIXED * ranks},
    )
    tensor = forward_bytes(config, 1, tokens, None, s=8)
    tensor.parts.pop("fixed")
    tensor.parts["parameters"] *= 3  # the model, its float64 copy, the effective weights read by the compile
    return graph.add(tensor)
