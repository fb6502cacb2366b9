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


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["evaluate", "data", "--k", "0"], "argument --k: expected a positive integer, got 0"),
        (["evaluate", "data", "--limit", "x"], "expected a positive integer, got 'x'"),
        (["consume", "--limit", "-3"], "argument --limit: expected a positive integer, got -3"),
        (
            ["encode", "items.csv", "--batch-size", "0"],
            "argument --batch-size: expected a positive",
        ),
    ],
)
def test_bad_values_are_one_line_errors_in_process(argv, fragment, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err, err


def test_runtime_errors_are_one_line(capsys, tmp_path):
    assert main(["evaluate", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such dataset folder" in err
