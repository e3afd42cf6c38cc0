"""Monitors, Brian2 style: attach to a Simulator, record while it runs, read results as attributes.

- `StateMonitor(sim, variables=("X", "Y"), record=True, when="token")`: `mon.X` has shape
  (len(record), samples); `mon.token`, `mon.round` give the time of each sample. Edge variables
  (`sigma_0`) record synapse numbers (source-major edge order of their group).
- `SpikeMonitor(sim, variable="Y", record=True, when="token")`: which neurons were active (non-zero) when:
  flat `.i`, `.t`, `.raster()`, `.spike_trains()`, and always `.count` (per neuron), even with record=False.
- `EventMonitor(sim, record=False)`: synaptic events, one per edge whose message is sent (its source is
  active; for a Hebbian write, both ends): `.count[key]` with key = the group of a send (`Gx_e`) or
  `sigma_0.read` / `sigma_0.write`; with record=True also flat `.i`, `.j`, `.round`, `.key` per event.

`when` is "token" (after a token's last round), "round" (after each round) or "subround". Bad indices raise
MonitorIndexError naming the valid range.

Sharded (docs/distributed.md): a monitor records on every rank what that rank holds; indices of a split
population's variable are positions in this rank's block (`sim.lo` + k is the neuron), EventMonitor's `i`, `j`
are global. `StateMonitor.gather(root)` and `SpikeMonitor.gather(root)` bring the whole population's record
(record=True) to rank `root`.
"""

import numpy as np

from .errors import GraphError, MonitorIndexError

WHEN = ("token", "round", "subround")


def _indices(record, size, what):
    if record is True:
        return np.arange(size)
    if record is False or record is None:
        return np.zeros(0, dtype=np.int64)
    idx = np.atleast_1d(np.asarray(record))
    if idx.dtype.kind not in "iu":
        raise MonitorIndexError(f"record for {what}: expected True, False or integer indices, got {record!r}")
    if idx.size and (idx.min() < 0 or idx.max() >= size):
        raise MonitorIndexError(f"record for {what}: indices must lie in [0, {size - 1}], got {idx.min()}..{idx.max()}")
    return idx.astype(np.int64)


class _Monitor:
    def __init__(self, sim, when):
        if when not in WHEN:
            raise GraphError(f"when: expected one of {WHEN}, got {when!r}")
        self.when = when
        sim.monitors.append(self)

    def _time(self, sim):
        return (sim.token - 1) if self.when == "token" else (sim.round - (self.when == "round"))

    def _before_communication(self, sim, rules):
        pass

    def _record(self, sim):
        pass


class StateMonitor(_Monitor):
    def __init__(self, sim, variables=("X", "Y"), record=True, when="token"):
        super().__init__(sim, when)
        self.variables = (variables,) if isinstance(variables, str) else tuple(variables)
        self._sim = sim
        net = sim.net
        self._rec, self._data = {}, {}
        for v in self.variables:
            if v in net.node_variables:
                size = net.size_of(v)
            elif v in net.edge_vars:
                size = net.groups[net.edge_vars[v].group].nnz
            else:
                raise GraphError(
                    f"StateMonitor: unknown variable {v!r}; known: {sorted(net.node_variables) + sorted(net.edge_vars)}"
                )
            self._rec[v] = _indices(record, size, v)
            self._data[v] = []
        self._t_token, self._t_round = [], []

    def _record(self, sim):
        edges = None
        for v in self.variables:
            if v in sim.net.edge_vars:
                edges = sim.state.edges if edges is None else edges
                vals = edges[v]
            else:
                vals = sim.node(v)
            self._data[v].append(np.array(vals[self._rec[v]]))
        self._t_token.append(sim.token - 1 if self.when == "token" else sim.token)
        self._t_round.append(sim.round)

    def __getattr__(self, name):
        data = self.__dict__.get("_data", {})
        if name in data:
            rows = data[name]
            return np.stack(rows, axis=1) if rows else np.zeros((len(self._rec[name]), 0))
        raise AttributeError(f"StateMonitor records {list(data)}, not {name!r}")

    def clear(self):
        """Forget the samples recorded so far (a long run that reads them as it goes keeps constant memory and a
        constant cost per read, e.g. equivalence.GraphRunner after every token)."""
        for rows in self._data.values():
            rows.clear()
        self._t_token.clear()
        self._t_round.clear()

    def gather(self, root=0):
        """{variable: (size, samples)} over the whole population on rank `root` (None elsewhere); node
        variables recorded with record=True. At P = 1 the record itself."""
        out = {}
        for v in self.variables:
            if v in self._sim.net.edge_vars or len(self._rec[v]) != self._sim.net.size_of(v):
                raise GraphError(f"StateMonitor.gather: {v!r} must be a node variable recorded with record=True")
            split = self._sim.net.populations[self._sim.net.node_variables[v]].split
            out[v] = self._sim.comm.gather_blocks(getattr(self, v), root) if split else getattr(self, v)
        return out if self._sim.comm.rank == root else None

    token = property(lambda self: np.asarray(self._t_token), doc="token index of each sample")
    round = property(lambda self: np.asarray(self._t_round), doc="rounds completed at each sample")

    def __repr__(self):
        return f"StateMonitor(variables={self.variables}, when={self.when!r}, samples={len(self._t_round)})"


class SpikeMonitor(_Monitor):
    def __init__(self, sim, variable="Y", record=True, when="token"):
        super().__init__(sim, when)
        if variable not in sim.net.node_variables:
            raise GraphError(
                f"SpikeMonitor: unknown node variable {variable!r}; known: {sorted(sim.net.node_variables)}"
            )
        self.variable = variable
        self._sim = sim
        self.size = sim.net.size_of(variable)
        self.record = _indices(record, self.size, variable)
        self.count = np.zeros(self.size, dtype=np.int64)
        self._i, self._t, self.times = [], [], []

    def _record(self, sim):
        active = sim.node(self.variable) != 0
        self.count += active
        t = self._time(sim)
        self.times.append(t)
        hit = self.record[active[self.record]]
        self._i.append(hit)
        self._t.append(np.full(len(hit), t, dtype=np.int64))

    @property
    def i(self):
        return np.concatenate(self._i) if self._i else np.zeros(0, dtype=np.int64)

    @property
    def t(self):
        return np.concatenate(self._t) if self._t else np.zeros(0, dtype=np.int64)

    @property
    def num_spikes(self):
        return int(self.count.sum())

    def raster(self):
        """(len(record), samples) boolean: raster[k, s] = neuron record[k] active at sample s."""
        out = np.zeros((len(self.record), len(self.times)), dtype=bool)
        pos = {int(r): k for k, r in enumerate(self.record)}
        col = {t: s for s, t in enumerate(self.times)}
        for i, t in zip(self.i, self.t):
            out[pos[int(i)], col[int(t)]] = True
        return out

    def gather(self, root=0):
        """Spike counts per neuron of the whole population on rank `root` (None elsewhere)."""
        net = self._sim.net
        split = net.populations[net.node_variables[self.variable]].split
        return self._sim.comm.gather_blocks(self.count, root) if split else self.count

    def spike_trains(self):
        i, t = self.i, self.t
        return {int(r): t[i == r] for r in self.record}

    def __repr__(self):
        return f"SpikeMonitor({self.variable!r}, recording {len(self.record)} of {self.size}, {self.num_spikes} spikes)"


class EventMonitor(_Monitor):
    def __init__(self, sim, record=False):
        super().__init__(sim, "subround")
        self.record = bool(record)
        self.count = {}
        self._i, self._j, self._round, self._key = [], [], [], []

    def _before_communication(self, sim, rules):
        net = sim.net
        for r in rules:
            g = net.group_of(r)
            src = sim.source(g, r.src[0])
            if r.kind == "send":
                key, edges = r.group, _out_edges(g, np.flatnonzero(src))
            elif r.kind == "read":
                key, edges = f"{r.src[1]}.read", _out_edges(g, np.flatnonzero(src))
            else:
                cand = _out_edges(g, np.flatnonzero(src))
                key, edges = f"{r.dst}.write", cand[sim.node(r.src[1])[g.indices[cand]] != 0]
            self.count[key] = self.count.get(key, 0) + len(edges)
            if self.record:
                self._i.append(g.source[edges] + g.col0)
                self._j.append(g.indices[edges] + g.row0)
                self._round.append(np.full(len(edges), sim.round))
                self._key += [key] * len(edges)

    @property
    def total(self):
        return sum(self.count.values())

    i = property(lambda self: np.concatenate(self._i) if self._i else np.zeros(0, dtype=np.int64))
    j = property(lambda self: np.concatenate(self._j) if self._j else np.zeros(0, dtype=np.int64))
    round = property(lambda self: np.concatenate(self._round) if self._round else np.zeros(0, dtype=np.int64))
    key = property(lambda self: np.asarray(self._key))

    def __repr__(self):
        return f"EventMonitor({self.total} synaptic events: {self.count})"


def _out_edges(g, active):
    if len(active) == 0:
        return np.zeros(0, dtype=np.int64)
    starts, ends = g.indptr[active], g.indptr[active + 1]
    return np.concatenate([np.arange(s, e) for s, e in zip(starts, ends)]).astype(np.int64)
