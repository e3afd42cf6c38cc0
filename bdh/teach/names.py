"""One vocabulary for every tool (the terminal, the report, the viewer, `bdh analyze`, the docs).

    layers      ℓ = 1..L, the paper's numbering: `layer(1)` = "layer 1"
    state       σ_ℓ, the synapse state of layer ℓ: `state(1)` = "σ_1"; the network stores it under the key
                `sigma_{ℓ-1}` (`state_of("sigma_0")` = "σ_1", `layer_of("sigma_0")` = 1)
    nodes       indices count from 0, as arrays do: "neuron 12"; hubs `pop[k]` ("res[3]", "hub[5]"), the
                official compile's attention hubs by head and slot, "att[h1,4]" (head 1, slot 4); "out[97]"
    synapses    `synapse("σ_1", "neuron 3", "neuron 7")` = "σ_1(neuron 3 → neuron 7)"

docs/tutorial.md (Notation) names this scheme; tests/test_teach_names.py checks a sample across the tools.
"""

from __future__ import annotations


def layer(l: int) -> str:
    """The paper's name of layer l (1-based): 'layer 1'."""
    return f"layer {int(l)}"


def state(l: int) -> str:
    """The synapse state of layer l (1-based): 'σ_1'."""
    return f"σ_{int(l)}"


def layer_of(key: str) -> int:
    """The 1-based layer of a network's edge-variable key: 'sigma_0' -> 1 (the shared 'sigma' -> 1)."""
    head, _, idx = key.rpartition("_")
    if head == "sigma" and idx.isdigit():
        return int(idx) + 1
    if key == "sigma":
        return 1
    raise ValueError(f"{key!r}: not a synapse-state key (sigma_0, sigma_1, ... or sigma)")


def state_of(key: str) -> str:
    """The display name of a network's edge-variable key: 'sigma_0' -> 'σ_1', the shared 'sigma' -> 'σ'."""
    return "σ" if key == "sigma" else state(layer_of(key))


def node(pop: str, k: int, d: int | None = None) -> str:
    """A node's name: 'neuron 12'; an attention hub of the official compile, given d: 'att[h1,4]' (head 1, slot
    4); any other population: 'res[3]', 'hub[5]', 'out[97]'."""
    k = int(k)
    if pop == "neurons":
        return f"neuron {k}"
    if pop == "att" and d:
        return f"att[h{k // d},{k % d}]"
    return f"{pop}[{k}]"


def synapse(state_name: str, pre: str, post: str) -> str:
    """One synapse of a state: 'σ_1(neuron 3 → neuron 7)'."""
    return f"{state_name}({pre} → {post})"


def node_labels(pop: str, size: int, d: int | None = None) -> list[str]:
    """node(pop, k, d) for k = 0..size-1 (what the viewer shows for a population)."""
    return [node(pop, k, d) for k in range(size)]
