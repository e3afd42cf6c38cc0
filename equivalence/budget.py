"""What a compiled neuron graph will allocate, from the config alone (before compiling), for the memory budget
of the graph commands (`bdh.budget`). Edge counts, measured on `compile_model(...).network.groups[*].nnz`
(tests/test_budget.py checks them), with n = h N neurons, d, L layers, V = vocab_size:

    dense    3 n^2 + n V synapses (the n x n circuits of Obs. 4, the read-in and read-out); sigma L n^2
    circuit  7 n d + 2 d V synapses (neurons <-> the d-dimensional hubs, Claims 3-4); sigma 2 L n d
    official at most 7 n d + 2 d V + 64 n (the LayerNorm populations and their hubs); sigma L n d

Each synapse costs EDGE_BYTES (its two end points, its weight, the backends' own layout and the compile's
intermediate arrays); each sigma entry SIGMA_BYTES (float64, with the copies the backends keep). Under P ranks
every rank holds 1/P of them, and each rank its own interpreter (FIXED).
"""

from __future__ import annotations

from bdh_gpu.budget import FIXED, Estimate, forward_bytes
from bdh_gpu.config import BDHConfig

EDGE_BYTES = 64
SIGMA_BYTES = 48


def edges(config: BDHConfig, how: str) -> tuple[int, int]:
    """(synapses, sigma entries) of the compile `how` (an upper estimate)."""
    n, d, L, V = config.n, config.d, config.n_layer, config.vocab_size
    if how == "dense":
        return 3 * n * n + n * V, L * n * n
    if how == "circuit":
        return 7 * n * d + 2 * d * V, 2 * L * n * d
    return 7 * n * d + 2 * d * V + 64 * n, L * n * d


def graph_bytes(config: BDHConfig, how: str, ranks: int = 1, tokens: int = 1) -> Estimate:
    """The graph of compile `how` over `ranks` processes (the sum over them), and the tensor model's float64
    forward over `tokens` that the graph commands compare with or compile from (on rank 0)."""
    e, s = edges(config, how)
    graph = Estimate(
        f"{how} graph, {ranks} rank{'s' if ranks > 1 else ''}",
        {"synapses": EDGE_BYTES * e, "sigma": SIGMA_BYTES * s, "fixed": FIXED * ranks},
    )
    tensor = forward_bytes(config, 1, tokens, None, s=8)
    tensor.parts.pop("fixed")
    tensor.parts["parameters"] *= 3  # the model, its float64 copy, the effective weights read by the compile
    return graph.add(tensor)
