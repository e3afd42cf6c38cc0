"""Changes to the code that the suite used to let pass (issue 19, item 9's audit), each closed by a test that
fails under the change named in its docstring:
- the fsync of the temporary file before its rename, and of the directory after it (bdh_gpu.io.atomic_write,
  used by bdh_gpu.save and the checkpoint);
- the de-duplication of a repeated signal (bdh_gpu.train.StopSignals: a second one within REPEAT_S is the same
  request);
- each locality probe of the validator (bdh_graph.kernels: the one-node perturbation, the sub-population) has a
  rule that only it refuses;
- the memory attribution's rule: a synapse holds a fact when the fact's write carries more there than ALL the
  other facts' writes together (bdh.teach.memory).
(The exchange's byte counter and the gather of neuron -> hub synapses: tests/test_graph_distributed.py; the
docs snippets' printed values: tests/test_docs_snippets.py; BDH_REQUIRE_MPI: tests/mpi_harness.py; the viewer
server's 413 over its body limit and its default host 127.0.0.1: tests/test_teach_serve.py.)"""

import os
import signal

import numpy as np
import pytest
import torch
from small_models import small_model

import bdh_gpu
import bdh_gpu.io
import bdh_graph.kernels as K
from bdh_graph import GraphError

# ---- fsync before the rename ----------------------------------------------------------------------------------


def _record_writes(monkeypatch, folder):
    """Record, in order, fsync (of what: the file or directory behind the fd) and os.replace calls."""
    events = []
    fsync, replace = os.fsync, os.replace

    def rec_fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return fsync(fd)

    def rec_replace(a, b):
        events.append(("replace", os.path.abspath(a), os.path.abspath(b)))
        return replace(a, b)

    monkeypatch.setattr(os, "fsync", rec_fsync)
    monkeypatch.setattr(os, "replace", rec_replace)
    return events


def _assert_fsync_rename_fsync(events, folder, names):
    """For each file: fsync(its temporary file) < replace(temporary -> file) < fsync(the directory)."""
    folder = os.path.realpath(folder)
    for name in names:
        final = os.path.join(folder, name)
        k = next(i for i, e in enumerate(events) if e[0] == "replace" and os.path.realpath(e[2]) == final)
        tmp = os.path.realpath(events[k][1])
        assert os.path.basename(tmp).startswith(bdh_gpu.io.TMP_PREFIX), events[k]
        assert ("fsync", tmp) in events[:k], f"{name}: its temporary file was not fsynced before the rename"
        assert ("fsync", folder) in events[k + 1 :], f"{name}: the directory was not fsynced after the rename"


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to name an fd")
def test_save_fsyncs_each_file_before_its_rename_and_the_directory_after(tmp_path, monkeypatch):
    d = tmp_path / "m"
    d.mkdir()
    events = _record_writes(monkeypatch, d)
    bdh_gpu.save(small_model(), str(d))
    _assert_fsync_rename_fsync(events, d, [bdh_gpu.io.WEIGHTS_FILE, bdh_gpu.io.CONFIG_FILE])


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to name an fd")
def test_checkpoint_fsyncs_each_file_before_its_rename(tmp_path, monkeypatch):
    from bdh_gpu.checkpoint import TRAIN_STATE, TRAIN_STATE_JSON, save_checkpoint
    from bdh_gpu.train import TrainConfig, make_optimizer

    d = tmp_path / "run"
    d.mkdir()
    model = small_model()
    cfg = TrainConfig(steps=1)
    events = _record_writes(monkeypatch, d)
    save_checkpoint(str(d), model, make_optimizer(model, cfg), torch.Generator().manual_seed(0), 1, cfg)
    names = [bdh_gpu.io.WEIGHTS_FILE, bdh_gpu.io.CONFIG_FILE, TRAIN_STATE, TRAIN_STATE_JSON]
    _assert_fsync_rename_fsync(events, d, names)
    order = [os.path.basename(e[2]) for e in events if e[0] == "replace"]
    assert order.index(TRAIN_STATE) > max(order.index(bdh_gpu.io.WEIGHTS_FILE), order.index(bdh_gpu.io.CONFIG_FILE))


# ---- a repeated signal ----------------------------------------------------------------------------------------


def test_a_repeated_signal_is_one_request_and_a_later_one_quits(monkeypatch):
    """Within REPEAT_S of the first (torchrun forwarding the terminal's Ctrl-C), a signal is the same request: no
    KeyboardInterrupt; one more than REPEAT_S later raises it. Removing the de-duplication fails the first half,
    removing the second-signal exit the second."""
    from bdh_gpu import train as T

    now = [100.0]
    monkeypatch.setattr(T.time, "monotonic", lambda: now[0])
    with T.StopSignals(announce=False) as stop:
        signal.raise_signal(signal.SIGINT)
        assert stop.requested and stop.name == "SIGINT"
        now[0] += 0.5 * T.StopSignals.REPEAT_S
        try:
            signal.raise_signal(signal.SIGTERM)  # the same request, whichever signal it is
            signal.raise_signal(signal.SIGINT)
        except KeyboardInterrupt:
            pytest.fail("a signal within REPEAT_S of the first ended the run instead of joining its request")
        assert stop.name == "SIGINT"
        now[0] += 1.5 * T.StopSignals.REPEAT_S
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handlers came back


# ---- the validator's two locality probes -----------------------------------------------------------------------


def _peeks_at_the_maximum(rule, v, ops):
    """Reads the population's maximum: unchanged on any sub-population of the probe's values, moved when one
    node's input is raised past 2 (only the perturbation probe sees it)."""
    h = v[rule.src[0]]
    return {rule.dst: h + (1.0 if 2.0 < float(h.max()) <= 3.3 else 0.0)}


def _counts_the_population(rule, v, ops):
    """Adds the population's size: no single node's input moves it, a sub-population does (only the
    sub-population probe sees it)."""
    h = v[rule.src[0]]
    return {rule.dst: h + len(h)}


def _verdict(kind, without=None):
    saved = {p: getattr(K, p) for p in ("_probe_one_node", "_probe_sub_population")}
    if without:
        setattr(K, without, lambda *a: None)
    try:
        K.check_local(K.Rule(kind, ("H",), "V"), 8)
        return "passes"
    except GraphError:
        return "refused"
    finally:
        for p, f in saved.items():
            setattr(K, p, f)


@pytest.mark.parametrize(
    "kind, fn, only",
    [
        ("audit_peeks_at_max", _peeks_at_the_maximum, "_probe_one_node"),
        ("audit_counts_population", _counts_the_population, "_probe_sub_population"),
    ],
)
def test_each_locality_probe_refuses_a_rule_the_other_lets_pass(kind, fn, only):
    K.register_rule(kind, fn, local=True)  # a false claim of locality
    try:
        other = ({"_probe_one_node", "_probe_sub_population"} - {only}).pop()
        assert _verdict(kind) == "refused"
        assert _verdict(kind, without=other) == "refused"  # this probe alone refuses it
        assert _verdict(kind, without=only) == "passes"  # and without it the rule would get through
    finally:
        K.COMPUTATION_RULES.pop(kind, None)


# ---- the memory attribution's rule ------------------------------------------------------------------------------


def test_a_synapse_holds_a_fact_only_where_its_write_beats_all_the_others_together():
    """Three facts at positions 0, 1, 2, asked at 3; x = 1 everywhere, so the write of fact s at synapse (i, j)
    read at the question is y_s(j). Value neuron 0: fact 0 wrote 3, the others 2 each (more than each, less than
    both): not the fact's synapse. Neuron 1: 5 against 2 + 2: its synapse. Neuron 2: 1 against nothing: its
    synapse. Neuron 3: nothing written. A rule of `more than any other`, or `any write`, takes neuron 0 too."""
    from bdh.teach.memory import memory_synapses
    from equivalence import compile_model

    torch.manual_seed(0)
    model = bdh_gpu.BDH(bdh_gpu.BDHConfig(n_head=1, d=4, N=6, n_layer=1, variant="normfree", U="none", dropout=0.0))
    c = compile_model(model.double().eval(), "dense")
    n = c.weights.n
    x, y = np.ones((4, 2, n)), np.zeros((4, 2, n))
    y[0, 0, :4] = [3.0, 5.0, 1.0, 0.0]
    y[1, 0, :2] = [2.0, 2.0]
    y[2, 0, :2] = [2.0, 2.0]
    (mem,) = memory_synapses(c, [1, 2, 3, 4], x, y, {0: "a", 1: "b", 2: "c"}, {0: (3, 4)}, carry=1.0)
    (name,) = c.network.sigma_names
    g = c.network.groups[c.network.edge_vars[name].group]
    held = set(np.unique(g.indices[mem.edges[name]]).tolist())
    assert held == {1, 2}, held
    assert len(mem.edges[name]) == int(np.isin(g.indices, [1, 2]).sum())  # every key neuron's synapse to them
