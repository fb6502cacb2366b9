"""The dispatcher: bad arguments give one line and exit status 2."""

import subprocess
import sys

import pytest

from recstream.cli import main


def test_unknown_command_is_one_line(capsys):
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid choice: 'frobnicate'" in err


def test_console_script_help_lists_commands():
    out = subprocess.run(
        [sys.executable, "-m", "recstream.cli", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for command in ("worker", "produce", "consume", "evaluate", "encode"):
        assert command in out
