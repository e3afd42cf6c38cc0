"""The training loop (bdh_gpu.train): exact resume, non-finite loss, atomic checkpoints, schedule, learning."""

import json
import os

import pytest
import torch

import bdh_gpu
from bdh_gpu import BDH, BDHConfig, get_preset
from bdh_gpu import checkpoint as CK
from bdh_gpu import train as T
from bdh_gpu.data import RecallData

SMALL = dict(n_head=2, d=16, N=32, n_layer=2, dropout=0.2)


def _cfg(**kw):
    base = dict(
        data="recall:4",
        steps=6,
        batch_size=4,
        block_size=24,
        lr=3e-3,
        warmup_steps=2,
        eval_every=2,
        ckpt_every=3,
        eval_batches=1,
        seed=11,
    )
    base.update(kw)
    return T.TrainConfig(**base)


def _run(out, steps, resume=False, stop_at=None, **kw):
    torch.manual_seed(1)
    model = BDH(BDHConfig(**SMALL))
    cfg = _cfg(steps=steps, **kw)
    summary = T.train(
        model,
        RecallData(cfg.block_size, 4),
        cfg,
        str(out),
        resume=resume,
        progress=False,
        log=lambda s: None,
        stop_at=stop_at,
    )
    return model, summary


def test_resume_continues_exactly(tmp_path):
    """2k steps straight == k steps, stop, resume for k more (float32, CPU, dropout on): the same batches,
    dropout masks and AdamW updates, because data/torch RNG and optimizer moments are checkpointed."""
    a, _ = _run(tmp_path / "a", 6, ckpt_every=100)
    _, s = _run(tmp_path / "b", 6, stop_at=4, ckpt_every=100)  # interrupted after step 4 (not a ckpt step)
    assert s["step"] == 4
    b, summary = _run(tmp_path / "b", 6, resume=True, ckpt_every=100)
    assert summary["start_step"] == 4 and summary["step"] == 6
    for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), k
    loaded = bdh_gpu.load(str(tmp_path / "b"))
    assert all(torch.equal(p, q) for p, q in zip(loaded.state_dict().values(), a.state_dict().values()))
    assert json.load(open(tmp_path / "b" / CK.TRAIN_STATE_JSON))["step"] == 6


def test_dropout_makes_a_difference_so_resume_test_is_not_vacuous(tmp_path):
    """Without restoring the torch RNG, a resumed run with dropout would diverge: check that the stored
    RNG state is what drives it (replace it and the result changes)."""
    a, _ = _run(tmp_path / "a", 6)
    _run(tmp_path / "b", 6, stop_at=3)
    tensors, meta = CK.read_train_state(str(tmp_path / "b"))
    tensors["rng.torch"] = torch.manual_seed(999).get_state()
    from safetensors.torch import save_file

    save_file(tensors, str(tmp_path / "b" / CK.TRAIN_STATE), metadata={"train_state": json.dumps(meta)})
    b, _ = _run(tmp_path / "b", 6, resume=True)
    assert not torch.equal(a.E, b.E)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    """A NaN loss at step 5 raises one line naming the step; the step-3 checkpoint is untouched and resumes."""
    real = T.loss_fn
    calls = {"n": 0}

    def nan_at_5(logits, y):
        calls["n"] += 1
        loss = real(logits, y)
        return loss * float("nan") if calls["n"] == 5 else loss

    _run(tmp_path / "ok", 6, stop_at=3)
    before = (tmp_path / "ok" / CK.TRAIN_STATE).read_bytes()
    monkeypatch.setattr(T, "loss_fn", nan_at_5)
    calls["n"] = 3
    with pytest.raises(T.NonFiniteLossError, match=r"non-finite loss \(nan\) at step 5.*step 3\)"):
        _run(tmp_path / "ok", 6, resume=True)
    assert (tmp_path / "ok" / CK.TRAIN_STATE).read_bytes() == before
    monkeypatch.setattr(T, "loss_fn", real)
    _, s = _run(tmp_path / "ok", 6, resume=True)
    assert s["step"] == 6


def test_huge_lr_is_caught_before_a_bad_checkpoint(tmp_path):
    """lr 1e20 blows the weights up: training stops with NonFiniteLossError and never writes a checkpoint
    holding inf/nan weights."""
    with pytest.raises(T.NonFiniteLossError, match="non-finite"):
        _run(tmp_path / "x", 6, lr=1e20, warmup_steps=0, ckpt_every=1)
    if (tmp_path / "x" / CK.TRAIN_STATE).exists():
        tensors, _ = CK.read_train_state(str(tmp_path / "x"))
        assert all(torch.isfinite(v).all() for k, v in tensors.items() if k.startswith("model."))


def test_crash_while_writing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    """Kill the write of the step-6 training state half-way: the step-3 file is intact and resumable."""
    _run(tmp_path / "c", 6, stop_at=3)
    before = (tmp_path / "c" / CK.TRAIN_STATE).read_bytes()

    def crash(tensors, path, metadata=None):
        with open(path, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(CK, "save_file", crash)
    with pytest.raises(OSError, match="simulated"):
        _run(tmp_path / "c", 6, resume=True)
    assert (tmp_path / "c" / CK.TRAIN_STATE).read_bytes() == before
    assert not [f for f in os.listdir(tmp_path / "c") if f.endswith(".tmp")]
    monkeypatch.undo()
    a, _ = _run(tmp_path / "a", 6)
    b, _ = _run(tmp_path / "c", 6, resume=True)
    assert torch.equal(a.E, b.E)


def test_resume_refuses_changed_hyperparameters_and_fresh_runs_refuse_existing_checkpoints(tmp_path):
    _run(tmp_path / "r", 6, stop_at=3)
    with pytest.raises(ValueError, match="batch_size is 5 but the checkpoint .* 4"):
        _run(tmp_path / "r", 6, resume=True, batch_size=5)
    with pytest.raises(ValueError, match="already holds a training checkpoint"):
        _run(tmp_path / "r", 6)


def test_resume_rejects_a_checkpoint_of_another_shape(tmp_path):
    _run(tmp_path / "s", 6, stop_at=3)
    model = BDH(BDHConfig(**{**SMALL, "d": 8}))
    cfg = _cfg(steps=6)
    with pytest.raises(ValueError, match=r"shape \(2, 32, 16\).*expects \(2, 32, 8\)"):
        T.train(model, RecallData(24, 4), cfg, str(tmp_path / "s"), resume=True, progress=False)


def test_optimizer_state_round_trips_without_pickle():
    model = BDH(BDHConfig(**SMALL))
    opt = T.make_optimizer(model, _cfg())
    model(torch.randint(256, (2, 8))).sum().backward()
    opt.step()
    tensors, meta = CK.optimizer_to_flat(opt)
    json.dumps(meta)  # plain JSON
    back = CK.optimizer_from_flat(tensors, json.loads(json.dumps(meta)))
    sd = opt.state_dict()
    assert back["param_groups"] == sd["param_groups"]
    for pid, st in sd["state"].items():
        for k, v in st.items():
            assert torch.equal(back["state"][pid][k], v)


def test_lr_schedule_warms_up_and_decays_to_ten_percent():
    cfg = _cfg(steps=100, lr=1e-3, warmup_steps=10, min_lr_ratio=0.1)
    lrs = [T.lr_at(s, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    assert T.lr_at(100, cfg) == pytest.approx(1e-4)


def test_tiny_learns_recall_above_chance(tmp_path):
    """The tiny preset, 120 short steps on 4 pairs: held-out answer accuracy at least twice chance (1/8).
    The values are random per episode, so anything above chance is read from the state (working memory)."""
    torch.manual_seed(1337)
    model = BDH(get_preset("tiny"))
    cfg = T.TrainConfig(
        data="recall:4",
        steps=120,
        batch_size=16,
        block_size=24,
        lr=5e-3,
        warmup_steps=10,
        eval_every=120,
        ckpt_every=120,
        eval_batches=8,
    )
    s = T.train(model, RecallData(24, 4), cfg, str(tmp_path), progress=False, log=lambda m: None)
    assert s["val"]["accuracy"] > 2 * RecallData.chance, s["val"]


@pytest.mark.slow
def test_tiny_masters_recall(tmp_path):
    """300 steps: answers recalled almost perfectly (>= 0.97) from the state."""
    torch.manual_seed(1337)
    model = BDH(get_preset("tiny"))
    cfg = T.TrainConfig(
        data="recall",
        steps=300,
        batch_size=32,
        block_size=64,
        lr=3e-3,
        warmup_steps=20,
        eval_every=300,
        ckpt_every=300,
        eval_batches=8,
    )
    s = T.train(model, RecallData(64), cfg, str(tmp_path), progress=False, log=lambda m: None)
    assert s["val"]["accuracy"] >= 0.97, s["val"]


def test_errors_are_input_or_training_failed(tmp_path):
    """Bad input is a bdh_gpu.InputError (a ValueError); a run that fails on its own numbers is a
    bdh_gpu.TrainingFailed (a RuntimeError, not a ValueError), so callers can tell the two apart."""
    for cls in (bdh_gpu.NonFiniteLossError, bdh_gpu.ActivationError):
        assert issubclass(cls, bdh_gpu.TrainingFailed) and not issubclass(cls, ValueError)
    assert issubclass(bdh_gpu.TrainingFailed, RuntimeError) and issubclass(bdh_gpu.InputError, ValueError)
    with pytest.raises(bdh_gpu.InputError, match="steps must be >= 1"):
        _cfg(steps=0).validate()
    _run(tmp_path / "s", 6, stop_at=3)
    with pytest.raises(bdh_gpu.InputError, match="already holds a training checkpoint"):
        _run(tmp_path / "s", 6)
