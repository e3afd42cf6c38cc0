"""NetworkState: the node variables and the edge state, one immutable tuple (Norse style)."""

from typing import NamedTuple


class NetworkState(NamedTuple):
    """nodes: {variable: (size,) array}, e.g. nodes["X"]; edges: {sigma_l: (nnz,) array on the edges of Gs,
    in the group's source-major edge order}; token: tokens completed; round: sub-rounds completed.
    `state.X` is short for `state.nodes["X"]`, `state.sigma_0` for `state.edges["sigma_0"]`."""

    nodes: dict
    edges: dict
    token: int = 0
    round: int = 0

    def __getattr__(self, name):
        nodes, edges = tuple.__getitem__(self, 0), tuple.__getitem__(self, 1)
        if name in nodes:
            return nodes[name]
        if name in edges:
            return edges[name]
        raise AttributeError(f"NetworkState has no variable {name!r}; nodes: {sorted(nodes)}, edges: {sorted(edges)}")

    def replace(self, nodes=None, edges=None):
        return self._replace(nodes=self.nodes if nodes is None else nodes, edges=self.edges if edges is None else edges)
