"""No lost work: `bdh train` under real signals and kill -9, in real processes (issue 12, part 1).

- SIGINT / SIGTERM at seeded random steps: the run finishes its step, writes a checkpoint, names it and the
  resume command, exits 128 + signal; the resume ends bitwise equal to a straight run (float32, dropout on),
  and metrics.jsonl lists each step once.
- A second Ctrl-C during the checkpoint write exits at once and leaves the previous checkpoint whole.
- kill -9 in the middle of a checkpoint write (test hook: the training state stands half-written in its
  temporary file) and at seeded random moments: the last good checkpoint loads and resumes exactly.
- A non-empty --out that is not the run being resumed is refused (exit 2, one line); --force alone replaces.
The runs are pinned to a known step with test hooks (--pause / --ckpt-pause of tests/train_hooks.py, callbacks of
the training loop); the signals are real ones sent from this process.
"""

import json
import os
import random
import select
import signal
import subprocess
import sys
import time

import pytest
import torch
from cli_errors import one_line_error as _one_line
from safetensors.torch import load_file

import bdh_gpu
from bdh.cli import main
from bdh_gpu.checkpoint import TRAIN_STATE, read_train_state

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = [
    "--data",
    "recall:4",
    "--steps",
    "8",
    "--batch-size",
    "4",
    "--block-size",
    "24",
    "--eval-every",
    "2",
    "--ckpt-every",
    "100",
    "--dropout",
    "0.2",
    "--seed",
    "5",
    "--quiet",
    "--device",
    "cpu",
]


HOOKS = os.path.join(REPO, "tests", "train_hooks.py")


def _popen(out, *extra, hooks=()):
    """`bdh train` in a subprocess (through tests/train_hooks.py when hooks are given, e.g. ("--pause", "3:60"))."""
    e = {**os.environ, "OMP_NUM_THREADS": "1"}
    entry = [HOOKS, *hooks] if hooks else ["-m", "bdh"]
    return subprocess.Popen(
        [sys.executable, *entry, "train", "--out", str(out), *ARGS, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=e,
    )


def _wait_for(proc, marker, timeout=120):
    """Read proc's stderr until a line contains `marker`; returns the lines read."""
    lines, end = [], time.monotonic() + timeout
    while time.monotonic() < end:
        ready, _, _ = select.select([proc.stderr], [], [], 0.5)
        if ready:
            line = proc.stderr.readline()
            if not line and proc.poll() is not None:
                break
            lines.append(line)
            if marker in line:
                return lines
        elif proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError(f"never saw {marker!r}; stderr: {''.join(lines)}{proc.stderr.read()}")


def _finish(proc, timeout=120):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def _state(d):
    """Weights and AdamW moments of the checkpoint in d (the training state file)."""
    t = load_file(os.path.join(d, TRAIN_STATE))
    return {k: v for k, v in t.items() if k.startswith(("model.", "optim."))}


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _metric_steps(d):
    return [json.loads(line)["step"] for line in open(os.path.join(d, "metrics.jsonl"))]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The uninterrupted 8-step run (in-process: the same code path, no signal)."""
    d = str(tmp_path_factory.mktemp("straight") / "run")
    assert main(["train", "--out", d, *ARGS]) == 0
    return d


def test_signals_at_seeded_random_steps_then_resume_is_bitwise(straight, tmp_path, capsys):
    """SIGINT and SIGTERM, each at a step drawn from a seeded RNG: exit 128+sig, a checkpoint of exactly that
    step, a message naming it and the resume command; `--resume` then ends bitwise equal to the straight run
    (weights and AdamW moments; the dropout masks and batches after the resume are the straight run's)."""
    rng = random.Random(12)
    for sig in (signal.SIGINT, signal.SIGTERM):
        step = rng.randint(1, 7)
        d = tmp_path / f"{sig.name}"
        p = _popen(d, hooks=("--pause", f"{step}:60"))
        _wait_for(p, f"paused after step {step}")
        p.send_signal(sig)
        rc, _, err = _finish(p)
        assert rc == 128 + sig, (rc, err)
        assert read_train_state(str(d))[1]["step"] == step
        assert (
            f"stopped by {sig.name} after step {step}; checkpoint in {d}; resume with: bdh train --out {d} "
            f"--resume" in err
        ), err
        assert "Traceback" not in err
        assert main(["train", "--out", str(d), "--resume", "--quiet"]) == 0
        _assert_same(_state(str(d)), _state(straight))
        assert _metric_steps(str(d)) == [2, 4, 6, 8]
        print(
            f"{sig.name} after step {step}: exit {rc}, checkpoint step {step}, resume bitwise equal",
            file=sys.__stdout__,
        )
    capsys.readouterr()


def test_second_ctrl_c_exits_at_once_and_keeps_the_previous_checkpoint(straight, tmp_path):
    """Ctrl-C while the step-4 checkpoint is being written, then Ctrl-C again: the process exits at once
    (no step-4 training state), the step-2 checkpoint is whole, and a resume from it ends bitwise equal."""
    d = tmp_path / "twice"
    p = _popen(d, "--ckpt-every", "2", hooks=("--ckpt-pause", "4:60"))
    _wait_for(p, "checkpoint write of step 4 paused half-way")
    p.send_signal(signal.SIGINT)
    time.sleep(1.3)  # past StopSignals.REPEAT_S: a second, deliberate Ctrl-C
    t0 = time.monotonic()
    p.send_signal(signal.SIGINT)
    rc, _, err = _finish(p)
    print(f"second Ctrl-C during the step-4 write: exit {rc} {time.monotonic() - t0:.2f} s later")
    assert time.monotonic() - t0 < 10
    assert rc == 130 and "interrupted again: stopped at once; last good checkpoint" in err, (rc, err)
    assert read_train_state(str(d))[1]["step"] == 2
    assert not [f for f in os.listdir(d) if f.startswith(".tmp-")]  # the half file was removed
    bdh_gpu.load(str(d))
    assert _weights_step(d) == "4"  # the model files went first: one checkpoint ahead, a valid model
    assert main(["train", "--out", str(d), "--resume", "--quiet", "--ckpt-every", "2"]) == 0
    _assert_same(_state(str(d)), _state(straight))
    assert _weights_step(d) == "8"
    for k, v in bdh_gpu.load(str(d)).state_dict().items():
        assert torch.equal(v, _state(straight)[f"model.{k}"]), k


def _weights_step(d):
    from safetensors import safe_open

    with safe_open(os.path.join(d, "model.safetensors"), framework="pt") as f:
        return f.metadata().get("step")


def test_kill_9_mid_write_leaves_the_last_checkpoint_loadable(straight, tmp_path):
    """kill -9 while the step-4 training state is half-written: the real file is still the step-2 one (the half
    file exists only under its temporary name), the model directory loads, and a resume removes the leftover,
    cuts metrics.jsonl back to step 2, and ends bitwise equal to the straight run."""
    d = tmp_path / "killed"
    p = _popen(d, "--ckpt-every", "2", hooks=("--ckpt-pause", "4:60"))
    _wait_for(p, "checkpoint write of step 4 paused half-way")
    p.send_signal(signal.SIGKILL)
    _finish(p)
    leftovers = [f for f in os.listdir(d) if f.startswith(".tmp-")]
    assert leftovers and all(f.endswith(TRAIN_STATE) for f in leftovers)
    assert read_train_state(str(d))[1]["step"] == 2
    bdh_gpu.load(str(d))
    assert _metric_steps(str(d)) == [2, 4]
    assert main(["train", "--out", str(d), "--resume", "--quiet", "--ckpt-every", "2"]) == 0
    assert not [f for f in os.listdir(d) if f.startswith(".tmp-")]
    assert _metric_steps(str(d)) == [2, 4, 6, 8]
    _assert_same(_state(str(d)), _state(straight))


def test_kill_9_at_a_seeded_random_moment_leaves_a_loadable_checkpoint(straight, tmp_path):
    """A checkpoint every step, kill -9 at a seeded random moment after step 2 (mid-step, mid-write or between):
    what survives loads, as a training state and as a model directory, and the resume ends bitwise equal."""
    d = tmp_path / "random"
    p = _popen(d, "--ckpt-every", "1")
    end = time.monotonic() + 120
    while "step 2:" not in p.stdout.readline() and time.monotonic() < end:
        pass
    time.sleep(random.Random(7).uniform(0.0, 0.3))
    p.send_signal(signal.SIGKILL)
    _finish(p)
    print(f"kill -9 at a random moment after step 2: survivor checkpoint at step {read_train_state(str(d))[1]['step']}")
    assert 1 <= read_train_state(str(d))[1]["step"] <= 8
    bdh_gpu.load(str(d))
    assert main(["train", "--out", str(d), "--resume", "--quiet", "--ckpt-every", "1"]) == 0
    _assert_same(_state(str(d)), _state(straight))


def test_non_empty_out_is_refused_and_force_alone_replaces(straight, tmp_path, capsys):
    """`bdh train` never replaces what --out holds unless --force: a foreign directory, a model (`bdh merge`
    output) and a run are each refused with one line naming DIR, --resume and --force; --force replaces the
    run's files and leaves other files; --resume without a checkpoint says so (not 'no config.json')."""
    quick = [
        "--data",
        "recall:4",
        "--steps",
        "2",
        "--batch-size",
        "2",
        "--block-size",
        "24",
        "--quiet",
        "--device",
        "cpu",
    ]
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    line = _one_line(capsys, ["train", "--out", str(foreign), *quick])
    assert str(foreign) in line and "--resume" in line and "--force" in line and "not empty" in line
    model_dir = tmp_path / "model"
    bdh_gpu.save(bdh_gpu.BDH(bdh_gpu.get_preset("tiny")), str(model_dir))
    before = (model_dir / "model.safetensors").read_bytes()
    line = _one_line(capsys, ["train", "--out", str(model_dir), *quick])
    assert "already holds a model" in line and "--force" in line
    assert (model_dir / "model.safetensors").read_bytes() == before
    line = _one_line(capsys, ["train", "--out", straight, *quick])
    assert "already holds a training checkpoint (step 8)" in line and "--resume" in line
    line = _one_line(capsys, ["train", "--out", str(foreign), "--resume"])
    assert "no train_state.safetensors" in line and "config.json" not in line
    assert main(["train", "--out", str(foreign), "--force", *quick]) == 0
    assert (foreign / "notes.txt").read_text() == "mine" and read_train_state(str(foreign))[1]["step"] == 2
    assert main(["train", "--out", str(model_dir), "--force", *quick]) == 0
    assert (model_dir / "model.safetensors").read_bytes() != before
    assert "pass one of them" in _one_line(capsys, ["train", "--out", str(foreign), "--force", "--resume"])
