"""The exchange overlapped with computation (bdh_graph.simulator: `plan`, `lookahead`, `_communicate`).

A communication sub-round posts its collectives (the exchange of gathered sources, the Allreduce of partial sums)
before the work that needs neither, and `feed` hoists the token's later edge rules (Hebbian write, damping of
sigma_l) into that window. The claim pinned: the reordering changes nothing in Eq. 6 / Eq. 8: every rule sees the
values it would see in kernel order, every node variable is the same after every sub-round, and the token ends
in the same state (here on random programs, with a symbolic executor; the compiled models' bits with overlap on
and off, on 1-3 MPI ranks, in tests/test_graph_distributed.py).
"""

from types import SimpleNamespace

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from bdh_graph import kernels as K
from bdh_graph.comm import Done, SelfComm
from bdh_graph.simulator import lookahead, plan

NODES = ("a", "b", "c", "h")  # node variables (observed after every sub-round)
EDGES = ("s0", "s1")  # edge variables (sigma_l: observed at the token's end)


@st.composite
def programs(draw):
    """A random token: rounds of communication rules (send, read, hebbian; partial or not) and computation rules
    (node rules, damp), valid as the validator requires: no communication rule reads what a rule of its
    sub-round writes (several may write the same target: a partial and a local send into one hub, two Hebbian
    writes into one sigma)."""
    rounds, groups, k = [], {}, 0
    for _ in range(draw(st.integers(1, 6))):
        comm, written, read = [], set(), set()
        for _ in range(draw(st.integers(0, 3))):
            kind = draw(st.sampled_from(["send", "read", "hebbian"]))
            if kind == "send":
                r = K.Rule("send", (draw(st.sampled_from(NODES)),), draw(st.sampled_from(NODES)), group=f"g{k}")
            elif kind == "read":
                src = (draw(st.sampled_from(NODES)), draw(st.sampled_from(EDGES)))
                r = K.Rule("read", src, draw(st.sampled_from(NODES)), group=f"g{k}")
            else:
                src = tuple(draw(st.lists(st.sampled_from(NODES), min_size=2, max_size=2)))
                r = K.Rule("hebbian", src, draw(st.sampled_from(EDGES)), group=f"g{k}")
            if set(r.src) & (written | {r.dst}) or r.dst in read:
                continue  # what the validator refuses: a rule of the sub-round reads what one of them writes
            comm.append(r)
            written.add(r.dst)
            read |= set(r.src)
            groups[r.group] = SimpleNamespace(gathered=False, partial=r.kind != "hebbian" and draw(st.booleans()))
            k += 1
        comp = []
        for _ in range(draw(st.integers(0, 3))):
            if draw(st.booleans()):
                comp.append(K.Rule("damp", (), draw(st.sampled_from(EDGES)), group=f"g{k}"))
            else:
                src = tuple(draw(st.lists(st.sampled_from(NODES), max_size=2)))
                comp.append(K.Rule("linear", src, draw(st.sampled_from(NODES)), group=f"g{k}"))
            groups[f"g{k}"] = SimpleNamespace(gathered=False, partial=False)
            k += 1
        rounds.append(K.Round(tuple(comm), tuple(comp)))
    return rounds, SimpleNamespace(group_of=lambda r: groups[r.group])


def _apply(r, st_):
    """A rule as a pure function of what it reads (its sources and its target): a new symbol for its target."""
    st_[r.dst] = hash((r.group, tuple(st_[v] for v in r.src + (r.dst,))))


def run_kernel_order(rounds, net):
    """The reference: each sub-round's rules where the kernel lists them (the exchange before the rules, the
    partial rules into zeroed targets and their sums added after every other rule of the sub-round)."""
    st_, seen = {v: hash(v) for v in NODES + EDGES}, []
    for rnd in rounds:
        part = [r for r in rnd.communication if r.kind != "hebbian" and net.group_of(r).partial]
        for r in rnd.communication:
            if r not in part:
                _apply(r, st_)
        _sums(part, st_, lambda: None)
        seen.append({v: st_[v] for v in NODES})
        for r in rnd.computation:
            _apply(r, st_)
        seen.append({v: st_[v] for v in NODES})
    return st_, seen


def _sums(part, st_, window):
    """Partial rules into zeroed targets, the buffer taken (posted), `window()` run, then the sums added."""
    dsts = sorted({r.dst for r in part})
    old = {d: st_[d] for d in dsts}
    for d in dsts:
        st_[d] = 0
    for r in part:
        _apply(r, st_)
    posted = {d: st_[d] for d in dsts}
    window()
    for d in dsts:
        st_[d] = hash(("allreduce", old[d], posted[d]))


def run_schedule(plans, comps):
    """What `Simulator._communicate` and `step` run for a schedule: pre, partial (posted), free, ahead, gathered,
    the sums; then the round's computation rules that were not hoisted."""
    st_, seen = {v: hash(v) for v in NODES + EDGES}, []
    for p, comp in zip(plans, comps):
        for r in p.pre:
            _apply(r, st_)

        def window(p=p):
            for r in p.free + tuple(r for _, rules in p.ahead for r in rules) + p.gathered:
                _apply(r, st_)

        if p.partial:
            _sums(p.partial, st_, window)
        else:
            window()
        seen.append({v: st_[v] for v in NODES})
        for r in comp:
            _apply(r, st_)
        seen.append({v: st_[v] for v in NODES})
    return st_, seen


@settings(max_examples=400)  # pure Python, milliseconds each
@given(programs())
def test_lookahead_changes_no_value(prog):
    """Random tokens (Eq. 6's shape: rounds of communication then computation rules): the lookahead schedule
    (edge rules hoisted into the windows of earlier collectives) gives every node variable the same value after
    every sub-round as kernel order, and every variable (sigma included) the same value at the token's end; so
    does the exact schedule with overlap on (partial sums posted before the sub-round's other rules)."""
    rounds, net = prog
    ref_state, ref_seen = run_kernel_order(rounds, net)
    exact = [plan(net, rnd.communication) for rnd in rounds]
    got = run_schedule(exact, [rnd.computation for rnd in rounds])
    assert got == (ref_state, ref_seen)
    plans, comps = lookahead(net, rounds, exact, lambda r: r.kind in ("hebbian", "damp"))
    got_state, got_seen = run_schedule(plans, comps)
    assert got_seen == ref_seen and got_state == ref_state
    moved = sum(len(rules) for p in plans for _, rules in p.ahead)
    kept = sum(len(p.pre + p.free + p.gathered + p.partial) for p in plans) + sum(map(len, comps))
    assert moved + kept == sum(len(r.communication) + len(r.computation) for r in rounds)  # each rule runs once


def test_lookahead_hoists_past_what_it_may_and_no_further():
    """By hand: after a window (a partial read of sigma_0), the Hebbian write of sigma_0 and its damping move
    into the window (reading X and Q, which nothing between writes); a damping of sigma_1 after a rule that
    reads sigma_1 stays; a Hebbian write whose source a rule between rewrites stays; nothing crosses the next
    window."""
    read0 = K.Rule("read", ("X", "s0"), "A", group="read0")
    between = K.Rule("read", ("X", "s1"), "B", group="between")  # reads sigma_1, not partial
    rewrite = K.Rule("linear", ("A",), "Q2", group="rewrite")
    hebb0 = K.Rule("hebbian", ("X", "Q"), "s0", group="hebb0")
    hebb1 = K.Rule("hebbian", ("X", "Q2"), "s1", group="hebb1")
    damp0, damp1 = K.Rule("damp", (), "s0", group="damp0"), K.Rule("damp", (), "s1", group="damp1")
    read1 = K.Rule("read", ("X", "s1"), "A", group="read1")  # the next window
    damp_late = K.Rule("damp", (), "s0", group="late")
    rounds = [
        K.Round((read0,), ()),
        K.Round((between,), (rewrite,)),
        K.Round((hebb0, hebb1), (damp0, damp1)),
        K.Round((read1,), (damp_late,)),
    ]
    part = {"read0", "read1"}
    net = SimpleNamespace(group_of=lambda r: SimpleNamespace(gathered=False, partial=r.group in part))
    edge_rules = lambda r: r.kind in ("hebbian", "damp")  # noqa: E731 (the Simulator's choice)
    plans, comps = lookahead(net, rounds, [plan(net, r.communication) for r in rounds], edge_rules)
    assert plans[0].ahead == ((0, (hebb0,)), (1, (damp0,)))
    assert plans[2].free == (hebb1,) and comps[2] == (damp1,)  # stayed where the kernel has them
    assert plans[3].ahead == ((1, (damp_late,)),) and comps[3] == ()  # into its own window, not the first one


class RecordingComm(SelfComm):
    """SelfComm that logs when an Allreduce is posted and when it is waited for."""

    def __init__(self, log):
        super().__init__()
        self.log = log

    def iallreduce_sum(self, buf):
        self.log.append("post")
        log = self.log

        class Request(Done):
            def wait(self):
                log.append("wait")
                return super().wait()

        return Request(buf)


def test_the_allreduce_is_posted_before_the_work_that_does_not_need_it():
    """The official compile (Eq. 8 with LN, released model) on one process: each layer's read of sigma_l into
    the attention hubs is followed at once by the layer's Hebbian write of sigma_l (`fuse_reads`: one backend
    call, one pass over the synapses), then posts its Allreduce, then the damping of sigma_l runs, then it
    waits; with overlap off, the same token waits before them (and gives the same bits)."""
    import torch

    import bdh_gpu
    import equivalence as EQ

    torch.manual_seed(0)
    cfg = bdh_gpu.BDHConfig(n_head=2, d=4, N=6, n_layer=2, variant="official", U="rope", dropout=0.0)
    model = bdh_gpu.BDH(cfg).eval()
    out = {}
    for overlap in (True, False):
        log = []
        c = EQ.compile_model(model, "official", comm=RecordingComm(log))
        runner = EQ.GraphRunner(c, "numba")
        runner.sim.overlap = overlap
        be = runner.sim.backend
        for name in ("communicate", "compute"):
            f = getattr(be, name)
            setattr(be, name, lambda rules, *a, f=f: (log.extend(r.kind for r in rules), f(rules, *a))[1])
        out[overlap] = np.stack([o["logits"] for o in runner.feed([3, 70, 9])])
        trace = " ".join(log)
        windows = trace.count("read hebbian post damp wait")
        assert windows == (2 * 3 if overlap else 0), trace[:600]
        assert trace.count("post") == trace.count("wait") == 3 * 2 * 2, trace[:600]  # read + E y per layer and token
    assert np.array_equal(out[True], out[False])
