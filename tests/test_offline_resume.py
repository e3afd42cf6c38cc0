"""Offline and resume (issue 19, item 7), and the thread count (item 8): a dataset that cannot be fetched is one
line saying what to pass (exit 3, the environment); a run records its data so `--resume` needs no `--data`, also
after a Ctrl-C; `--threads N` sets torch's intra-op threads. No test reaches the network: the download is pointed
at a closed local port and every socket connection is refused."""

import json
import os
import signal
import socket

import pytest
import torch

import bdh_gpu.data
from bdh.cli import main


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network: the URL is a closed local port and socket.connect refuses everything."""

    def refuse(self, *a, **kw):
        raise ConnectionRefusedError(111, "Connection refused (the test is offline)")

    monkeypatch.setattr(bdh_gpu.data, "TINYSHAKESPEARE_URL", "http://127.0.0.1:9/input.txt")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setenv("BDH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("BDH_TINYSHAKESPEARE", raising=False)


def test_tinyshakespeare_offline_is_one_line_exit_3_saying_what_to_pass(offline, tmp_path, capsys):
    rc = main(["train", "--data", "tinyshakespeare", "--out", str(tmp_path / "run"), "--steps", "1", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 3, err
    assert "\n" not in err and "Traceback" not in err, err
    assert "--data PATH to a local copy" in err and "$BDH_TINYSHAKESPEARE" in err, err
    assert not os.path.exists(tmp_path / "cache" / "tinyshakespeare.txt")


def test_tinyshakespeare_offline_with_a_local_copy_trains(offline, tmp_path, monkeypatch, capsys):
    local = tmp_path / "input.txt"
    local.write_bytes(b"First Citizen: we are accounted poor citizens.\n" * 80)
    monkeypatch.setenv("BDH_TINYSHAKESPEARE", str(local))
    argv = ["train", "--data", "tinyshakespeare", "--out", str(tmp_path / "run"), "--steps", "1", "--quiet"]
    assert main(argv + ["--block-size", "16", "--batch-size", "2", "--threads", "1"]) == 0


class _CtrlCAt:
    """A training callback: a real SIGINT to this process right after update `step` (as a user's Ctrl-C)."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, step, rank, stop):
        if step == self.step:
            os.kill(os.getpid(), signal.SIGINT)


def test_resume_after_ctrl_c_needs_no_data_flag(tmp_path, monkeypatch, capsys):
    """The run records its data (an absolute path): after a Ctrl-C, `--resume` from another directory, without
    --data, continues on the same file to the end."""
    text = tmp_path / "corpus.txt"
    text.write_bytes(bytes(range(32, 127)) * 30)
    out = tmp_path / "run"
    monkeypatch.chdir(tmp_path)
    small = ["--block-size", "16", "--batch-size", "4", "--eval-every", "100", "--quiet", "--threads", "1"]
    argv = ["train", "--data", "corpus.txt", "--out", str(out), "--steps", "6", *small]
    assert main(argv, callbacks=[_CtrlCAt(2)]) == 130
    meta = json.loads(open(out / "train_state.json").read())
    assert meta["train_config"]["data"] == str(text)
    os.makedirs(tmp_path / "elsewhere")
    monkeypatch.chdir(tmp_path / "elsewhere")
    capsys.readouterr()
    assert main(["train", "--out", str(out), "--resume", "--quiet", "--json", "--threads", "1"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["step"] == 6


def test_threads_flag_sets_torch_threads_and_refuses_zero(tmp_path, capsys):
    from bdh.options import set_threads

    before = torch.get_num_threads()
    try:
        d = str(tmp_path / "m")
        bdh_gpu.save(bdh_gpu.BDH(bdh_gpu.get_preset("tiny")), d)
        assert main(["generate", d, "--prompt", "a", "--tokens", "2", "--threads", "1"]) == 0
        assert torch.get_num_threads() == 1
        assert main(["eval", d, "--data", "recall", "--threads", "0"]) == 2
        assert "--threads: expected 1..1,024, got 0" in capsys.readouterr().err
        torch.set_num_threads(1)  # torch was imported before bdh ran: its setting is kept without --threads
        assert set_threads(type("A", (), {"threads": None})()) == 1
    finally:
        torch.set_num_threads(before)


def test_default_threads_in_a_fresh_process_are_the_usable_cpus_waiting_passively():
    import subprocess
    import sys

    code = (
        "import os, sys; from bdh.options import set_threads; "
        "k = set_threads(type('A', (), {'threads': None})()); "
        "print(k, len(os.sched_getaffinity(0)), os.environ['OMP_WAIT_POLICY'])"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    k, cpus, policy = out.stdout.split()
    assert k == cpus and policy == "PASSIVE", out.stderr
