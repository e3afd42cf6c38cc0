"""The `bdh` command's shell: unknown commands and flags are one-line errors with exit code 2."""

import subprocess
import sys


def _bdh(*args):
    return subprocess.run([sys.executable, "-m", "bdh", *args], capture_output=True, text=True)


def test_unknown_command_exits_2_with_one_line():
    r = _bdh("no-such-command")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_help_lists_commands():
    r = _bdh("--help")
    assert r.returncode == 0
    assert "COMMAND" in r.stdout
