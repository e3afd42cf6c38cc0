"""Training on 2 CPU ranks under torchrun (gloo), float64: DDP and FSDP2 against one process (issue 12, parts 2-4).

- DDP on K = 2 ranks equals one process on the combined (global) batch to 1e-12 on every parameter and AdamW
  moment after 6 AdamW steps with gradient clipping active (dropout 0): the gradient of the global mean loss
  is the average of the ranks' scaled sums, so only the summation order differs.
- FSDP2 (`--fsdp`, `fully_shard`) equals DDP to 1e-10; its checkpoints load in a single process (`bdh generate`,
  `bdh verify`) with no conversion step, and a resume of an FSDP run continues it.
- `--resume` under K = 2 (dropout on: every rank's own dropout stream is in the checkpoint) ends bitwise equal
  to the straight K = 2 run, after a SIGTERM sent to torchrun, as SLURM sends it.
- A rank that raises, or that dies (SIGKILL), ends every rank within 30 s (measured from the failure's time stamp),
  non-zero, with one line per rank from bdh, and the last checkpoint loads.
Each run is `python -m torch.distributed.run` (torchrun) in a subprocess; one uses the `bdh` entry point.
"""

import json
import os
import select
import signal
import subprocess
import sys
import time

import pytest
import torch
from cli_errors import one_line_error as _one_line_error
from safetensors.torch import load_file

import bdh_gpu
from bdh.cli import main
from bdh_gpu.checkpoint import TRAIN_STATE, read_train_state

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
BASE = [
    "--data",
    "recall:4",
    "--steps",
    "6",
    "--batch-size",
    "4",
    "--block-size",
    "24",
    "--eval-every",
    "3",
    "--ckpt-every",
    "2",
    "--quiet",
    "--device",
    "cpu",
    "--dtype",
    "float64",
    "--seed",
    "3",
    "--grad-clip",
    "0.05",
]
NO_DROPOUT = [*BASE, "--dropout", "0"]
DROPOUT = [*BASE, "--dropout", "0.2"]
LIMIT = 150  # seconds: a hung run fails the test instead of hanging CI


HOOKS = os.path.join(REPO, "tests", "train_hooks.py")


def _cmd(out, args, entry="module", hooks=()):
    if hooks:  # test hooks (tests/train_hooks.py), e.g. ("--fail", "1:3:raise")
        return [*TORCHRUN, HOOKS, *hooks, "train", "--out", str(out), *args]
    if entry == "script":  # the installed `bdh` entry point under torchrun
        bdh = os.path.join(os.path.dirname(sys.executable), "bdh")
        return [*TORCHRUN, "--no-python", bdh, "train", "--out", str(out), *args]
    return [*TORCHRUN, "-m", "bdh", "train", "--out", str(out), *args]


def _env(extra=None):
    return {**os.environ, "OMP_NUM_THREADS": "1", **(extra or {})}


def _torchrun(out, args, entry="module", hooks=()):
    t0 = time.monotonic()
    cmd = _cmd(out, args, entry, hooks)
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=_env(), timeout=LIMIT)
    return r, time.monotonic() - t0


def _state(d):
    t = load_file(os.path.join(d, TRAIN_STATE))
    return {k: v for k, v in t.items() if k.startswith(("model.", "optim."))}


def _max_diff(a, b):
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def _report(msg):
    """A measured figure, shown with `pytest -s` (past capsys)."""
    print(msg, file=sys.__stdout__, flush=True)


def _fault_to_exit(err):
    """Seconds from the injected failure (its time stamp on stderr) to torchrun's exit."""
    stamp = [line for line in err.splitlines() if line.startswith("bdh-test: rank") and " at time " in line]
    return time.time() - float(stamp[0].rsplit(" ", 1)[1])


def _bdh_lines(err):
    return [line for line in err.splitlines() if line.startswith("bdh train:")]


@pytest.fixture(scope="module")
def ddp(tmp_path_factory):
    """The straight 6-step DDP run on 2 ranks, dropout 0."""
    d = tmp_path_factory.mktemp("ddp") / "run"
    r, _ = _torchrun(d, NO_DROPOUT)
    assert r.returncode == 0, r.stderr[-3000:]
    return str(d), r


def test_ddp_two_ranks_equal_one_process_on_the_combined_batch(ddp, tmp_path, capsys):
    d, r = ddp
    one = str(tmp_path / "one")
    assert main(["train", "--out", one, *NO_DROPOUT]) == 0
    capsys.readouterr()
    a, b = _state(d), _state(one)
    assert a["model.E"].dtype == torch.float64
    _report(f"DDP K=2 vs one process, 6 AdamW steps, float64: max |diff| {_max_diff(a, b):.1e}")
    assert _max_diff(a, b) < 1e-12
    assert (
        _max_diff(
            {k: v for k, v in a.items() if k.startswith("model.")},
            {k: torch.zeros_like(v) for k, v in a.items() if k.startswith("model.")},
        )
        > 1e-3
    )  # not vacuous
    meta = read_train_state(d)[1]
    assert meta["world_size"] == 2 and meta["parallel"] == "ddp" and meta["step"] == 6
    # rank 0 alone logs and writes: one header, one metrics line per eval step
    assert r.stdout.count("bdh train:") == 1 and "2 ranks (DDP, 2 windows each)" in r.stdout
    assert [json.loads(x)["step"] for x in open(os.path.join(d, "metrics.jsonl"))] == [3, 6]
    line = _one_line_error(capsys, ["train", "--out", d, "--resume", "--steps", "8"])
    assert "trained on 2 rank(s), this run has 1" in line


def test_fsdp_equals_ddp_survives_a_dead_rank_and_loads_in_one_process(ddp, tmp_path, capsys):
    """FSDP2 run whose rank 1 is SIGKILLed after step 5: every rank ends (non-zero, within 30 s), the
    step-4 checkpoint loads in one process (`bdh generate`, `bdh verify`), and the FSDP resume ends within
    1e-10 of the DDP run."""
    d = tmp_path / "fsdp"
    r, secs = _torchrun(d, [*NO_DROPOUT, "--fsdp"], hooks=("--fail", "1:5:kill"))
    lag = _fault_to_exit(r.stderr)
    _report(f"FSDP, rank 1 SIGKILLed after step 5: torchrun exit {r.returncode}, {lag:.2f} s after the kill")
    assert r.returncode != 0 and lag < 30, (r.returncode, lag, r.stderr[-3000:])
    assert "Traceback" not in "\n".join(_bdh_lines(r.stderr))
    meta = read_train_state(str(d))[1]
    assert meta["step"] == 4 and meta["parallel"] == "fsdp"
    assert main(["generate", str(d), "--prompt", "ab", "--tokens", "4", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["completion_ids"]) == 4
    assert main(["verify", str(d), "--text", "abc"]) == 0
    capsys.readouterr()
    r, _ = _torchrun(d, ["--resume", "--fsdp", "--quiet"])
    assert r.returncode == 0, r.stderr[-3000:]
    _report(f"FSDP (killed at 5, resumed from 4) vs DDP: max |diff| {_max_diff(_state(str(d)), _state(ddp[0])):.1e}")
    assert _max_diff(_state(str(d)), _state(ddp[0])) < 1e-10


def test_ddp_resume_after_sigterm_to_torchrun_is_bitwise(tmp_path):
    """Dropout on, K = 2: a run stopped by SIGTERM sent to torchrun after step 3 (it forwards the signal to the
    ranks) writes a step-3 checkpoint and names the resume command; the resume under K = 2 ends bitwise equal
    to the straight run (started through the `bdh` entry point)."""
    straight = tmp_path / "straight"
    r, _ = _torchrun(straight, DROPOUT, entry="script")
    assert r.returncode == 0, r.stderr[-3000:]
    d = tmp_path / "stopped"
    p = subprocess.Popen(
        _cmd(d, DROPOUT, hooks=("--pause", "3:60")),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=_env(),
    )
    seen, end = "", time.monotonic() + LIMIT
    while "paused after step 3" not in seen and time.monotonic() < end and p.poll() is None:
        if select.select([p.stderr], [], [], 0.5)[0]:
            seen += p.stderr.readline()
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=LIMIT)
    err = seen + err
    assert p.returncode != 0
    assert read_train_state(str(d))[1]["step"] == 3, err[-3000:]
    assert (
        f"stopped by SIGTERM after step 3; checkpoint in {d}; resume with: torchrun --nproc-per-node 2 -m bdh "
        f"train --out {d} --resume"
    ) in err, err[-3000:]
    r, _ = _torchrun(d, ["--resume", "--quiet"])
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = _state(str(d)), _state(str(straight))
    assert all(torch.equal(a[k], b[k]) for k in a) and a.keys() == b.keys()
    ra, rb = load_file(os.path.join(d, TRAIN_STATE)), load_file(os.path.join(straight, TRAIN_STATE))
    assert not torch.equal(ra["rng.torch.rank0"], ra["rng.torch.rank1"])  # each rank its own dropout stream
    assert torch.equal(ra["rng.torch.rank1"], rb["rng.torch.rank1"])


def test_a_rank_that_raises_ends_every_rank_with_one_line(tmp_path):
    """Rank 1 raises after step 3: both ranks end within 30 s of it, non-zero, each with one bdh line (the failing
    rank names the error), and the step-2 checkpoint loads."""
    d = tmp_path / "raise"
    r, secs = _torchrun(d, NO_DROPOUT, hooks=("--fail", "1:3:raise"))
    lag = _fault_to_exit(r.stderr)
    _report(f"DDP, rank 1 raises after step 3: torchrun exit {r.returncode}, {lag:.2f} s after the raise")
    assert r.returncode != 0 and lag < 30, (lag, r.stderr[-3000:])
    lines = _bdh_lines(r.stderr)
    assert "bdh train: rank 1/2: error: injected failure (tests/train_hooks.py --fail) after step 3" in lines, r.stderr[
        -3000:
    ]
    assert any(
        x.startswith("bdh train: rank 0/2: error: lost contact with another rank") and "(step 2), is intact" in x
        for x in lines
    ), lines
    assert read_train_state(str(d))[1]["step"] == 2
    bdh_gpu.load(str(d))
