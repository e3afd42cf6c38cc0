"""Concurrent runs are safe (issue 19, item 6): `bdh train --out D` while another process trains into D refuses at
once with one line (the lock D/.lock, held for the run), for a fresh run, --force and --resume alike, and the
first run's files are untouched; a lock file left by a killed run blocks nothing."""

import os
import subprocess
import sys
import time

import pytest
from cli_errors import one_line_error

from bdh.cli import main
from bdh_gpu.checkpoint import LOCK, read_train_state, run_lock

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOOKS = os.path.join(REPO, "tests", "train_hooks.py")
ARGS = ["--data", "recall:4", "--steps", "4", "--batch-size", "2", "--block-size", "24", "--quiet", "--device", "cpu"]


def _paused(out, *extra, step=2):
    """`bdh train` in another process, paused after update `step` (the lock held) until a signal."""
    p = subprocess.Popen(
        [sys.executable, HOOKS, "--pause", f"{step}:60", "train", "--out", str(out), *ARGS, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    end = time.monotonic() + 120
    while time.monotonic() < end:
        line = p.stderr.readline()
        if "paused after step" in line:
            return p
        if not line:
            break
    p.kill()
    raise AssertionError(f"never paused: {p.stderr.read()}")


def test_a_second_run_into_the_same_out_is_refused_and_a_killed_runs_lock_blocks_nothing(tmp_path, capsys):
    """While the first run trains, a fresh run, --force and --resume into its --out are each refused (one line
    naming the directory and the first one's pid) and touch nothing; after a kill -9 of the first, its .lock file
    stays but no process holds it, so --resume proceeds."""
    d = tmp_path / "run"
    first = _paused(d, "--ckpt-every", "1")
    try:
        with open(d / LOCK) as f:
            assert f.read().strip() == str(first.pid)
        before = {f: os.path.getmtime(d / f) for f in os.listdir(d)}
        for extra in ([], ["--force"], ["--resume"]):
            one_line_error(capsys, ["train", "--out", str(d), *ARGS, *extra], str(d), f"pid {first.pid}", "another")
        assert {f: os.path.getmtime(d / f) for f in os.listdir(d)} == before  # nothing written, nothing removed
    finally:
        first.kill()
        first.communicate(timeout=60)
    assert (d / LOCK).exists() and read_train_state(str(d))[1]["step"] == 1  # paused before the step-2 one
    assert main(["train", "--out", str(d), "--resume", "--quiet"]) == 0
    assert read_train_state(str(d))[1]["step"] == 4
    assert not (d / LOCK).exists()  # removed on release
    capsys.readouterr()


def test_run_lock_is_exclusive_in_one_process_too(tmp_path):
    """Two holders never overlap (flock is per open file, so a second take in the same process is refused too)."""
    from bdh_gpu.checkpoint import Busy

    with run_lock(str(tmp_path)), pytest.raises(Busy, match=f"pid {os.getpid()}"), run_lock(str(tmp_path)):
        pass
    with run_lock(str(tmp_path)):
        pass


@pytest.mark.slow  # two demos side by side: ~25 s on 2 cores
def test_two_demos_on_an_empty_cache_both_succeed(tmp_path):
    """Two `bdh demo --fast --part normfree` at once on an empty cache (before: both trained into the same
    `.partial` directory and one removed the other's files): both exit 0, one entry is published, no partial
    directory is left."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BDH_CACHE": str(tmp_path / "cache"), "MPLBACKEND": "Agg"}
    demos = [
        subprocess.Popen(
            [sys.executable, "-m", "bdh", "demo", "--fast", "--part", "normfree", "--backend", "numpy"]
            + ["--out", str(tmp_path / f"report{i}")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=env,
        )
        for i in range(2)
    ]
    for p in demos:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        assert "equivalence OK" in out, out
    left = [str(p.relative_to(tmp_path)) for p in (tmp_path / "cache").rglob("*") if ".partial-" in p.name]
    assert not left, left
