"""Faults of the environment and of the operator end in one line and the documented exit code (issue 19, item 3):
a full disk during a checkpoint keeps the previous checkpoint and exits 3 naming the file and the OS error; an
--out where nothing may be written exits 3; two signals close together (SIGINT SIGINT, SIGTERM SIGINT) exit with
the first one's code (130, 143), also when the second lands while the interpreter shuts down."""

import os
import signal
import subprocess
import sys
import time

import pytest
from safetensors import SafetensorError

import bdh_gpu.checkpoint
import bdh_gpu.io
from bdh.cli import main
from bdh_gpu.checkpoint import TRAIN_STATE, read_train_state

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOOKS = os.path.join(REPO, "tests", "train_hooks.py")
ARGS = ["--data", "recall:4", "--steps", "4", "--batch-size", "2", "--block-size", "24", "--quiet", "--device", "cpu"]
ENOSPC_TEXT = 'Error while serializing: I/O error: No space left on device (os error 28) at path "{}"'


def _full_disk_at(monkeypatch, module, step):
    """safetensors' writer in `module` fails as on a full disk (half a file written) from the step-`step` write."""
    real = module.save_file

    def save_file(tensors, path, metadata=None):
        meta = metadata or {}
        at = meta.get("step") or (f"{step}" if f'"step": {step}' in meta.get("train_state", "") else None)
        if at == str(step):
            with open(path, "wb") as f:
                f.write(b"\0" * 100)
            raise SafetensorError(ENOSPC_TEXT.format(path))
        return real(tensors, path, metadata=metadata)

    monkeypatch.setattr(module, "save_file", save_file)


@pytest.mark.parametrize("module", [bdh_gpu.io, bdh_gpu.checkpoint], ids=["model-file", "train-state"])
def test_full_disk_during_a_checkpoint_keeps_the_previous_one_and_exits_3(module, tmp_path, monkeypatch, capsys):
    d = tmp_path / "run"
    _full_disk_at(monkeypatch, module, 4)
    assert main(["train", "--out", str(d), *ARGS, "--ckpt-every", "2"]) == 3
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    name = bdh_gpu.io.WEIGHTS_FILE if module is bdh_gpu.io else TRAIN_STATE
    assert f"{d / name}: No space left on device" in err, err
    assert "step-4 checkpoint" in err and "step 2" in err, err
    assert read_train_state(str(d))[1]["step"] == 2
    assert not [f for f in os.listdir(d) if f.startswith(bdh_gpu.io.TMP_PREFIX)]
    monkeypatch.undo()
    assert main(["train", "--out", str(d), "--resume", "--quiet"]) == 0
    capsys.readouterr()


def test_an_out_where_nothing_may_be_written_exits_3(tmp_path, monkeypatch, capsys):
    """A read-only parent of --out (simulated: the tests may run as root, who writes anywhere): exit 3, one line
    naming the directory and the OS error; the same for a model directory written by import-official/merge."""
    ro = tmp_path / "ro"
    real = os.makedirs

    def makedirs(path, *a, **kw):
        if str(path).startswith(str(ro)):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, *a, **kw)

    monkeypatch.setattr(os, "makedirs", makedirs)
    assert main(["train", "--out", str(ro / "run"), *ARGS]) == 3
    err = capsys.readouterr().err.strip()
    assert err == f"bdh train: error: {ro / 'run'}: Permission denied", err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_read_only_directory_exits_3(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert main(["train", "--out", str(ro / "run"), *ARGS]) == 3
    finally:
        ro.chmod(0o755)
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Permission denied" in err, err


def _paused_run(out, step=2):
    p = subprocess.Popen(
        [sys.executable, HOOKS, "--pause", f"{step}:60", "train", "--out", str(out), *ARGS],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    end = time.monotonic() + 120
    while time.monotonic() < end:
        line = p.stderr.readline()
        if "paused after step" in line or not line:
            return p
    p.kill()
    raise AssertionError("the run never paused")


@pytest.mark.parametrize("first", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT-SIGINT", "SIGTERM-SIGINT"])
def test_a_second_signal_close_behind_the_first_keeps_its_exit_code(first, tmp_path):
    """The first signal stops the run (checkpoint, exit 128 + its number); a SIGINT 0.2 s later lands while the
    step finishes or while the process shuts down (before: exit -2, the process died of it): the exit code is
    still the first signal's."""
    gap = 0.2
    p = _paused_run(tmp_path / "run")
    p.send_signal(first)
    time.sleep(gap)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 128 + first, (p.returncode, err)
    assert "Traceback" not in err, err
    assert read_train_state(str(tmp_path / "run"))[1]["step"] == 2
