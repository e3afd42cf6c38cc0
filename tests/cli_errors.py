"""The one check every command-line error test makes (imported by them like tests/mpi_harness.py): an input
error exits 2 with exactly one line on stderr, no traceback, naming what is wrong."""

from bdh.cli import main


def one_line_error(capsys, argv, *matches) -> str:
    """Run `bdh argv` in-process; assert exit 2 and one stderr line (no traceback) containing every match;
    return that line."""
    assert main(argv) == 2, argv
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err, err
    for m in matches:
        assert m in err, (m, err)
    return err
