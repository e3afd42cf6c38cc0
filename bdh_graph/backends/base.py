"""What every backend shares: a sub-round runs its rules through the backend's dispatch table.

A backend builds `self._rules` once ({"send", "read", "hebbian", "damp"} -> its method, each taking
`(rule, state, remote, nodes, edges)` and updating the working dicts), and `self.ops` (bdh_graph.ops). Node-local
rules go through `kernels.apply_rule`, the one implementation of Table 1's computation column.
"""

from __future__ import annotations

from .. import kernels as K


class Backend:
    def _remote(self, remote):
        """The exchanged vectors in the backend's own array type (numpy here; PyG converts to torch once)."""
        return remote

    def communicate(self, rules, state, remote=None):
        """remote: {variable: full vector} exchanged for the gathered groups (bdh_graph.simulator)."""
        nodes, edges = dict(state.nodes), dict(state.edges)
        remote = self._remote(remote)
        for r in rules:  # validated: no rule of this sub-round reads what another writes
            self._rules[r.kind](r, state, remote, nodes, edges)
        return state.replace(nodes=nodes, edges=edges)

    def compute(self, rules, state):
        nodes, edges = dict(state.nodes), dict(state.edges)
        for r in rules:
            if r.kind in self._rules:  # damp: on the synapses
                self._rules[r.kind](r, state, None, nodes, edges)
            else:  # node-local: the rule functions every backend shares
                nodes.update(K.apply_rule(r, nodes, self.ops))
        return state.replace(nodes=nodes, edges=edges)
