"""The scheduler: the only loop. Runs a kernel's rounds round-robin, one token per pass.

Per token: `ingest` puts the boundary inputs into X and Y (policy below), then every round is a communication
sub-round followed by a computation sub-round, each a function of (state, network) applied by the backend;
after the last round of layer l, X = x_{t,l} and Y = y_{t,l} are read out. With the default kernel
(Table 1(b)) and the default policies this is exactly Eq. 6.

Token policies (the paper leaves open how X is reset between tokens and what Y holds at layer 1):
- x_policy="set" (default): X <- x0_t. "add": X <- X + x0_t, X keeps what it held at the end of the previous
  token (x_{t-1,L}) and integrates the new input.
- y_policy="set" (default): Y <- y0_t. "add": Y <- Y + y0_t (Y carries y_{t-1,L} into layer 1).

Sharded (docs/distributed.md): the network lives on the ranks of `net.comm`; every rank runs this same loop on its
block. Inputs are global (T, n); node arrays, `feed`'s x, y and a RunResult hold this rank's block. A
communication sub-round posts, non-blocking, the exchange of the active values of split sources that a
`gathered` group reads (Iallgather + Iallgatherv), runs the partial rules into zeroed replicated targets and
posts their sums (Iallreduce), then runs what needs neither: the sub-round's other rules and, in `feed`, the
token's later edge rules that do not depend on them (`lookahead`: the Hebbian write and the damping of sigma_l);
it waits for the exchange only before the rules that read it, for the sums only to add them. Every rule sees
the values it would see in kernel order, so the results are the same bits. At P = 1 the communicator's requests
are complete when posted and the same code runs. `RunResult.gather()` brings the whole result to rank 0.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from . import config
from .backends import as_dtype, make_backend
from .checks import as_inputs
from .comm import Done
from .errors import GraphError
from .state import NetworkState

TOKEN_POLICIES = ("set", "add")
HOISTED_KINDS = ("hebbian", "damp")  # the rules that touch only their own edge variable (sigma_l)


def sigma0_edges(net, sigma0):
    """Normalise sigma0 to {edge variable: (nnz,) array of this rank's edges}: None (zeros), a dense global
    (L_sigma, n_post, n_pre) array, a per-edge (L_sigma, nnz) array (one process only), or a dict of either per
    edge variable."""
    names = net.sigma_names
    out = {}
    if sigma0 is None:
        return {k: np.zeros(net.groups[net.edge_vars[k].group].nnz) for k in names}
    if not isinstance(sigma0, dict):
        arr = np.asarray(sigma0, dtype=np.float64)
        if arr.shape[:1] != (len(names),):
            raise GraphError(f"sigma0: expected {len(names)} layer(s) of state first ({names}), got shape {arr.shape}")
        sigma0 = dict(zip(names, arr))
    unknown = set(sigma0) - set(names)
    if unknown:
        raise GraphError(f"sigma0: unknown edge variable(s) {sorted(unknown)}; known: {names}")
    for k in names:
        g = net.groups[net.edge_vars[k].group]
        if k not in sigma0:
            out[k] = np.zeros(g.nnz)
            continue
        a = np.asarray(sigma0[k], dtype=np.float64)
        shape = (net.populations[g.post].size, net.populations[g.pre].size)
        if a.shape == shape:
            blk = a[g.row0 : g.row0 + g.n_post, g.col0 : g.col0 + g.n_pre]
            vals = blk[g.indices, g.source]
            off = blk.copy()
            off[g.indices, g.source] = 0.0
            if np.any(off != 0):  # every rank checks its own block
                j, i = np.argwhere(off != 0)[0]
                raise GraphError(
                    f"sigma0[{k}]: non-zero state {off[j, i]:g} on {i + g.col0}->{j + g.row0}, "
                    f"which is not an edge of {g.name}"
                )
            a = vals
        elif net.comm.size > 1 and a.ndim == 1:
            raise GraphError(
                f"sigma0[{k}]: per-edge state needs one process (edge numbers are global); give "
                f"the dense {shape} array on {net.comm.size} ranks"
            )
        elif a.shape != (g.nnz,):
            raise GraphError(f"sigma0[{k}]: expected shape {shape} (dense) or ({g.nnz},) (per edge), got {a.shape}")
        if not np.all(np.isfinite(a)):
            raise GraphError(f"sigma0[{k}]: expected finite values, got NaN or inf")
        out[k] = a.copy()
    return out


def _edge_coords(net, name):
    """(rows, cols, shape): the global target, source of each local edge of `name`'s group, and the global shape."""
    g = net.groups[net.edge_vars[name].group]
    return (g.indices + g.row0, g.source + g.col0, (net.populations[g.post].size, net.populations[g.pre].size))


class RunResult:
    """x, y: (T, L+1, n), layer 0 = the boundary inputs; sigma: dense (L_sigma, n, n), sigma[l][a, b] with
    a = value (y) neuron, b = key (x) neuron; sigma_edges: {name: (nnz,)} on the edges of Gs (any n).

    Sharded, x, y hold this rank's block of neurons (`lo`, `hi`) and sigma_edges this rank's edges (global
    coordinates in `coords`); `gather(root)` returns the whole result on `root` (None elsewhere)."""

    def __init__(self, net, x, y, sigma_edges, state, coords=None, block=None):
        self.net, self.x, self.y, self.sigma_edges, self.state = net, x, y, sigma_edges, state
        self.coords = coords if coords is not None else {k: _edge_coords(net, k) for k in net.sigma_names}
        self.lo, self.hi = (
            block if block is not None else (net.populations["neurons"].lo, net.populations["neurons"].hi)
        )

    def sigma_sparse(self, l=0):
        name = self.net.sigma_names[l]
        r, c, shape = self.coords[name]
        return sp.csr_matrix((self.sigma_edges[name], (r, c)), shape=shape)

    @property
    def sigma(self):
        shapes = [self.coords[k][2] for k in self.net.sigma_names]
        if max(max(s) for s in shapes) > config.DENSE_SIGMA_MAX_N:
            raise GraphError(
                f"sigma: n above {config.DENSE_SIGMA_MAX_N} is too big to densify; use sigma_sparse(l) or sigma_edges"
            )
        return np.stack([self.sigma_sparse(l).toarray() for l in range(len(shapes))])

    def gather(self, root=0):
        """The whole run on rank `root` (x, y over all n neurons, sigma_edges in the global edge order, as one
        process would give); None on the other ranks. At P = 1 the result itself."""
        comm = self.net.comm
        if comm.size == 1:
            return self
        x = comm.gather_blocks(np.moveaxis(self.x, -1, 0), root)
        y = comm.gather_blocks(np.moveaxis(self.y, -1, 0), root)
        edges, coords = {}, {}
        for k in self.net.sigma_names:
            g = self.net.groups[self.net.edge_vars[k].group]
            r, c, shape = self.coords[k]
            mine = g.gathered or g.partial or comm.rank == root  # a replicated group: root's copy only
            take = (lambda a: a) if mine else (lambda a: a[:0])
            parts = comm.gather_blocks(np.stack([take(r), take(c), take(self.sigma_edges[k])], 1), root)
            if comm.rank == root:
                order = np.lexsort((parts[:, 0], parts[:, 1]))  # source-major, targets ascending
                p = parts[order]
                coords[k] = (p[:, 0].astype(np.int64), p[:, 1].astype(np.int64), shape)
                edges[k] = p[:, 2].copy()
        if comm.rank != root:
            return None
        n = x.shape[0]
        return RunResult(self.net, np.moveaxis(x, 0, -1), np.moveaxis(y, 0, -1), edges, None, coords, (0, n))


class _Nodes:
    """`nodes[var]`: the simulator's current values of `var` as a NumPy array (what `sim.node(var)` returns)."""

    def __init__(self, sim):
        self.sim = sim

    def __getitem__(self, var):
        return self.sim.node(var)


class Plan(NamedTuple):
    """What a communication sub-round runs, in this order (`Simulator._communicate`): post the exchange of
    `gather`; `pre`; the `partial` rules into zeroed `dsts`, post their Allreduce; `free`; the `ahead` batches;
    wait for the exchange, `gathered`; wait for the sums and add them to `dsts`."""

    gather: tuple  # split source variables to exchange (their gathered groups read them)
    pre: tuple  # rules run before the partial sums: they write a partial target (or overlap is off)
    free: tuple  # rules that need neither collective: they run while both are in flight
    gathered: tuple  # rules that read an exchanged source
    partial: tuple  # rules into replicated targets, completed by one Allreduce
    dsts: tuple  # the targets of `partial`
    ahead: tuple = ()  # ((phase, rules), ...): later rules of the token hoisted into this window (`lookahead`)


def plan(net, rules, overlap=True):
    """The Plan of a communication sub-round's `rules` (kernel order kept within each part). overlap=False: every
    rule other than the partial ones runs before them, after the exchange, as the kernel lists them."""
    gathered = {r for r in rules if net.group_of(r).gathered}
    partial = tuple(r for r in rules if r.kind != "hebbian" and net.group_of(r).partial)
    dsts = tuple(sorted({r.dst for r in partial}))
    local = [r for r in rules if r not in partial]
    pre = tuple(r for r in local if not overlap or r.dst in dsts)
    rest = [r for r in local if r not in pre]
    return Plan(
        tuple(sorted({r.src[0] for r in gathered})),
        pre,
        tuple(r for r in rest if r not in gathered),
        tuple(r for r in rest if r in gathered),
        partial,
        dsts,
    )


def _touches(r):
    """(variables a rule reads, variables it writes): its sources and its target (accumulated into: read too)."""
    return set(r.src) | {r.dst}, {r.dst}


def lookahead(net, rounds, plans, hoistable):
    """Hoist later rules of the token into the windows of the communication sub-rounds that post a collective.

    For each such sub-round k (a window: its collectives are in flight while the hoisted rules run), scan the
    token's sub-rounds after it, up to the next window: a rule `hoistable(r)` moves into k's window when it reads
    nothing that a rule staying between writes (the window's gathered rules and the Allreduce's targets
    included) and writes nothing such a rule reads or writes: it then sees the values it would see in place,
    and nobody sees its write earlier. Returns (plans with `ahead`, the computation rules left per round)."""
    comm = [list(r.communication) for r in rounds]
    comp = [list(r.computation) for r in rounds]
    ahead = [[] for _ in rounds]
    windows = [k for k, p in enumerate(plans) if p.gather or p.partial]
    for w, k in enumerate(windows):
        end = windows[w + 1] if w + 1 < len(windows) else len(rounds)
        reads, writes = set(plans[k].dsts), set(plans[k].dsts)  # the sums are added after the window
        for r in plans[k].gathered:  # these run after the window (the partial rules ran before it)
            a, b = _touches(r)
            reads, writes = reads | a, writes | b
        for j, phase in [(k, 1)] + [(j, ph) for j in range(k + 1, end) for ph in (0, 1)]:
            rules, keep, moved = (comm if phase == 0 else comp)[j], [], []
            for r in rules:  # in order (a communication sub-round's are validated: none reads what one writes)
                a, b = _touches(r)
                if hoistable(r) and not a & writes and not b & (reads | writes):
                    moved.append(r)
                    continue
                keep.append(r)
                reads, writes = reads | a, writes | b
            if moved:
                ahead[k].append((phase, tuple(moved)))
            (comm if phase == 0 else comp)[j] = keep
    plans = [plan(net, tuple(c))._replace(ahead=tuple(a)) for c, a in zip(comm, ahead)]
    return plans, [tuple(c) for c in comp]


def fuse_reads(plans):
    """A Hebbian write that `lookahead` hoisted into the window of the read of its own sigma, from the same keys,
    runs right after that read, in the same backend call (the numba backend then loads and stores each synapse
    once for both: numba_kernels.read_write_rows_*). It moves only from the window's first hoisted batch and only
    past rules that neither touch what it writes nor write what it reads, and never reads a target the
    Allreduce is still summing; so every rule still sees the values it would see in kernel order."""
    out = []
    for p in plans:
        if not p.ahead or p.ahead[0][0] != 0:
            out.append(p)
            continue
        batch, partial = list(p.ahead[0][1]), list(p.partial)
        for h in [r for r in batch if r.kind == "hebbian" and not set(r.src) & set(p.dsts)]:
            at = next((i for i, r in enumerate(partial) if r.kind == "read" and r.src == (h.src[0], h.dst)), None)
            if at is None:
                continue
            a, b = _touches(h)
            passed = partial[at + 1 :] + list(p.free) + batch[: batch.index(h)]
            if any(b & (_touches(r)[0] | _touches(r)[1]) or a & _touches(r)[1] for r in passed):
                continue
            partial.insert(at + 1, h)
            batch.remove(h)
        ahead = (((0, tuple(batch)),) if batch else ()) + p.ahead[1:]
        out.append(p._replace(partial=tuple(partial), ahead=ahead))
    return out


class Simulator:
    """Step a network token by token (`feed`) or sub-round by sub-round (`ingest` + `step`).

    backend: "numba" | "pyg" | "numpy"; sigma0: initial state (see sigma0_edges); x_policy, y_policy: token
    policies (module docstring); spiking, seed: the stochastic mode (numpy backend); device: for "pyg".
    `overlap` (default True; read at each token): post the exchanges before the work that does not need them
    and, in `feed`, hoist the token's later edge rules into their windows (module docstring); False: block at
    each exchange and run the rules in kernel order (the same bits; for measuring what the overlap hides). The
    spiking mode never overlaps (its random draws follow the rule order).
    dtype: "float64" (default, the reference) or "float32" (numba, pyg): weights and sigma stored in float32, node
    variables and their sums in float64 (bdh_graph.backends); `state`, `node` and a RunResult are float64 either way.
    """

    def __init__(
        self,
        net,
        backend="numba",
        sigma0=None,
        x_policy="set",
        y_policy="set",
        spiking=False,
        seed=None,
        device=None,
        dtype="float64",
    ):
        if net.kernel is None:
            raise GraphError("network has no kernel; call net.with_kernel(kernel) first")
        for name, v in (("x_policy", x_policy), ("y_policy", y_policy)):
            if v not in TOKEN_POLICIES:
                raise GraphError(f"{name}: expected one of {TOKEN_POLICIES}, got {v!r}")
        if spiking and net.comm.size > 1:
            raise GraphError(
                f"spiking: the stochastic mode runs in one process (each rank would draw its own "
                f"spikes for the replicated hubs), got {net.comm.size} ranks"
            )
        self.net, self.kernel, self.comm = net, net.kernel, net.comm
        self.x_policy, self.y_policy = x_policy, y_policy
        self.lo, self.hi = net.block_of("X")
        self.backend = make_backend(backend, net, spiking=spiking, seed=seed, device=device, dtype=dtype)
        self.dtype = as_dtype(dtype)
        self._state = self.backend.initial_state(sigma0_edges(net, sigma0))
        self._rounds = self.kernel.rounds
        ends = np.cumsum([len(layer) for layer in self.kernel.layers]) - 1
        self._layer_of_end = {int(r): l for l, r in enumerate(ends)}
        self._sub = 0  # next sub-round within the token, 0 .. 2 * len(rounds) - 1
        self._loaded = False
        self.token = 0  # tokens completed
        self.round = 0  # rounds completed
        self.monitors = []
        self._x = self._y = None
        self._remote = {}
        self.spiking, self.overlap = spiking, True
        self._schedules = {}  # ("exact", overlap) and ("ahead", the edge variables monitors observe) -> schedule
        self._where = {}  # split variable -> (this rank's first index, global size)
        self._schedule = self._exact()

    # -- the exchange of a communication sub-round (docs/distributed.md) --
    def _exact(self):
        """(plans, computation rules) of every round, each sub-round's rules in their own sub-round."""
        overlap = self.overlap and not self.spiking
        if ("exact", overlap) not in self._schedules:
            self._schedules["exact", overlap] = (
                [plan(self.net, rnd.communication, overlap) for rnd in self._rounds],
                [rnd.computation for rnd in self._rounds],
            )
        return self._schedules["exact", overlap]

    def _ahead(self):
        """The schedule of a token run by `feed`: `lookahead` when overlapping, over the edge rules that no
        monitor observes within the token (cached per set of observed edge variables)."""
        if not self.overlap or self.spiking:
            return self._exact()
        edges, seen = set(self.net.edge_vars), set()
        for m in self.monitors:
            if m.when != "token":
                names = getattr(m, "variables", None) or (getattr(m, "variable", None),)
                seen |= edges if type(m).__name__ not in ("StateMonitor", "SpikeMonitor", "EventMonitor") else set()
                seen |= edges & set(names)
        key = ("ahead", frozenset(seen))
        if key not in self._schedules:
            plans = self._exact()[0]
            plans, comp = lookahead(self.net, self._rounds, plans, lambda r: self._hoistable(r, key[1]))
            self._schedules[key] = (fuse_reads(plans), comp)
        return self._schedules[key]

    def _hoistable(self, r, seen):
        return r.kind in HOISTED_KINDS and r.dst not in seen and (r.kind == "damp" or not self.net.group_of(r).gathered)

    def source(self, group, var):
        """The values of `var` as `group` reads them (`SynapseGroup.read_source`), as a NumPy array."""
        return group.read_source(var, _Nodes(self), self._remote)

    def _communicate(self, k):
        p, be = self._schedule[0][k], self.backend
        exchange = self.comm.iexchange_active(self._blocks(p.gather)) if p.gather else Done({})
        received = []

        def receive():  # the exchanged vectors, waited for once; the monitors see the sub-round then
            if not received:
                received.append(exchange.wait())
                self._remote = received[0]
                for m in self.monitors:
                    m._before_communication(self, self._rounds[k].communication)
            return received[0]

        state = be.communicate(p.pre, self._state, receive()) if p.pre else self._state
        state, sums, old = self._post_partial(p, state)
        state = be.communicate(p.free, state, {}) if p.free else state
        for phase, rules in p.ahead:  # later edge rules of the token, independent of both collectives
            exchange.test(), sums.test()  # MPI moves a collective on only inside MPI calls
            state = be.communicate(rules, state, {}) if phase == 0 else be.compute(rules, state)
        remote = receive()
        state = be.communicate(p.gathered, state, remote) if p.gathered else state
        if p.partial:
            total, at = sums.wait(), 0
            for v, o in zip(p.dsts, old):
                state = be.set_node(state, v, o + total[at : at + len(o)])
                at += len(o)
        self._remote = {}
        return state

    def _blocks(self, gather):
        """{var: (this rank's block, its first index, the global size)} of the split variables to exchange."""
        be, where = self.backend, self._where
        for v in gather:
            if v not in where:  # static per network: found once
                where[v] = (self.net.block_of(v)[0], self.net.global_size_of(v))
        return {v: (np.asarray(be.node(self._state, v)), *where[v]) for v in gather}

    def _post_partial(self, p, state):
        """Run the partial rules into zeroed copies of their replicated targets and post the Allreduce of the
        partial sums: (state, the request, the targets' previous values)."""
        if not p.partial:
            return state, Done(None), []
        be = self.backend
        old = [np.array(be.node(state, v)) for v in p.dsts]
        for v, o in zip(p.dsts, old):
            state = be.set_node(state, v, np.zeros_like(o))
        state = be.communicate(p.partial, state, {})
        return state, self.comm.iallreduce_sum(np.concatenate([np.asarray(be.node(state, v)) for v in p.dsts])), old

    # -- inspection --
    @property
    def state(self) -> NetworkState:
        """A NumPy copy of the current state (edge state brought up to date)."""
        return self.backend.to_numpy_state(self._state)._replace(token=self.token, round=self.round)

    def node(self, var):
        return np.asarray(self.backend.node(self._state, var))

    @property
    def phase(self):
        return "communication" if self._sub % 2 == 0 else "computation"

    # -- the loop --
    def ingest(self, x0_t, y0_t, inputs=None):
        """Start a token: X, Y <- the boundary inputs x_{t,0}, y_{t,0} of Eq. 6 (per the token policies).

        inputs: {qualified variable: values}, set as well, for sensory input at nodes other than the neurons'
        X and Y, e.g. the official model's embedding row z = embed(i) at its residual hubs, `res.V <- z` (the
        graph then normalises it, v_0 = LN(z); docs/equivalence.md). values: this rank's nodes of the variable
        (the whole population when it is replicated); they are set, whatever the token policies."""
        if self._sub != 0:
            raise GraphError(
                f"ingest: token {self.token} is still running (sub-round {self._sub} of "
                f"{2 * len(self._rounds)}); finish it with step()"
            )
        n = self.net.n
        x = as_inputs("x0_t", x0_t, None, n)[self.lo : self.hi]
        y = as_inputs("y0_t", y0_t, None, n)[self.lo : self.hi]
        if self.x_policy == "add":
            x = self.node("X") + x
        if self.y_policy == "add":
            y = self.node("Y") + y
        self._state = self.backend.set_node(self._state, "X", x)
        self._state = self.backend.set_node(self._state, "Y", y)
        L = len(self.kernel.layers)
        self._x, self._y = np.zeros((L + 1, len(x))), np.zeros((L + 1, len(x)))
        self._x[0], self._y[0] = x, y
        for var, values in (inputs or {}).items():
            self._state = self.backend.set_node(self._state, var, self._input(var, values))
        self._schedule = self._exact()  # stepped by hand: every sub-round runs its own rules
        self._loaded = True

    def _input(self, var, values):
        if var not in self.net.node_variables:
            raise GraphError(f"inputs: unknown variable {var!r}; known: {sorted(self.net.node_variables)}")
        return as_inputs(f"inputs[{var!r}]", values, None, self.net.size_of(var))

    def step(self):
        """Run one sub-round (communication or computation); returns which one ran."""
        if not self._loaded:
            raise GraphError("step: no token loaded; call sim.ingest(x0_t, y0_t) first")
        k, phase = divmod(self._sub, 2)
        if phase == 0:
            self._state = self._communicate(k)
        else:
            rules = self._schedule[1][k]
            self._state = self.backend.compute(rules, self._state) if rules else self._state
        self._sub += 1
        self._notify("subround")
        if phase == 1:
            self.round += 1
            self._notify("round")
            if k in self._layer_of_end:
                l = self._layer_of_end[k] + 1
                self._x[l], self._y[l] = self.node("X"), self.node("Y")
        if self._sub == 2 * len(self._rounds):
            self._sub, self._loaded = 0, False
            self.token += 1
            self._notify("token")
        return "communication" if phase == 0 else "computation"

    def feed(self, x0_t, y0_t, inputs=None):
        """Run one token (all rounds; `inputs` as for `ingest`); returns x, y of shape (L+1, n), layer 0 = the
        inputs (sharded: this rank's block of the n neurons, `sim.lo:sim.hi`)."""
        self.ingest(x0_t, y0_t, inputs)
        self._schedule = self._ahead()  # kept to the token's end (the next ingest resets it)
        while self._loaded:
            self.step()
        return self._x.copy(), self._y.copy()

    def run(self, x0, y0):
        """Run T tokens; x0, y0: (T, n). Returns a RunResult."""
        x0 = np.asarray(x0, dtype=np.float64)
        T = x0.shape[0] if x0.ndim == 2 else None
        if T is None:
            raise GraphError(f"x0: expected shape (T, n) with n = {self.net.n}, got {x0.shape}")
        x0, y0 = as_inputs("x0", x0, T, self.net.n), as_inputs("y0", y0, T, self.net.n)
        L = len(self.kernel.layers)
        xs, ys = np.zeros((T, L + 1, self.hi - self.lo)), np.zeros((T, L + 1, self.hi - self.lo))
        for t in range(T):
            xs[t], ys[t] = self.feed(x0[t], y0[t])
        st = self.state
        return RunResult(self.net, xs, ys, st.edges, st)

    def _notify(self, when):
        for m in self.monitors:
            if m.when == when:
                m._record(self)
