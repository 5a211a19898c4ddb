"""``descent arena`` from the command line: bad input gives a clear error, a non-zero exit
and no report; a failed run leaves nothing that looks like success; a good run prints the
summary and writes the report."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from descent.cli.main import main

TINY = ["--task", "arena_tiny_task:make", "--workers", "0", "--no-landscapes", "--no-progress"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tasks", "digits_mlp,nope"], "Unknown task 'nope'"),
        (["--optimizers", "adam,nope"], "Unknown optimizer 'nope'"),
        (["--task", "no_such_module_xyz:make_task"], "cannot import 'no_such_module_xyz'"),
        (["--task", "arena_tiny_task:broken"], "Task 'broken' does not run"),
        (["--budget", "0"], "Invalid budget 0"),
        (["--seeds", "0"], "Invalid seeds 0"),
    ],
)
def test_bad_input_is_a_clear_error_and_no_report(tmp_path, capsys, args, message):
    out = tmp_path / "out"
    code = main(["arena", "--out", str(out), "--no-progress", *args])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and err.startswith("descent arena: error: ")
    assert not out.exists()
    assert os.listdir(tmp_path) == []


def test_a_run_that_fails_midway_leaves_no_report(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code = main(["arena", "--out", str(out), *TINY[:0], "--task", "arena_tiny_task:explodes", *TINY[2:]])
    err = capsys.readouterr().err
    assert code == 1 and "the loss exploded on purpose" in err and "no report written" in err
    assert sorted(os.listdir(tmp_path)) == ["out"]  # no staging folder left behind
    assert os.listdir(out) == ["notes.txt"]


def test_a_good_run_prints_the_summary_and_writes_the_report(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(
        ["arena", "--out", str(out), *TINY, "--optimizers", "sgd,adam", "--budget", "2", "--seeds", "2"]
    )
    stdout = capsys.readouterr().out
    assert code == 0
    assert "Recommended:" in stdout and "Mean rank" in stdout and str(out / "index.html") in stdout
    assert {"index.html", "results.json", "figures"} <= set(os.listdir(out))


def test_exit_status_from_the_console_entry_point(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "descent.cli.main", "arena", "--budget", "0", "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "Invalid budget 0" in proc.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--report-only", "{tmp}/none/results.json"], "cannot read '{tmp}/none/results.json'"),
        (["--report-only", "{tmp}/bad.json"], "'{tmp}/bad.json' is not JSON"),
        (["--report-only", "{tmp}/other.json"], "not a descent.arena/results/2 results file (schema: 'x')"),
        (["--report-only", "{tmp}/other.json", "--quick", "--seeds", "2"], "drop --quick, --seeds"),
    ],
)
def test_report_only_errors_name_the_bad_value(tmp_path, capsys, args, message):
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "other.json").write_text('{"schema": "x"}')
    before = sorted(os.listdir(tmp_path))
    code = main(["arena", *(a.format(tmp=tmp_path) for a in args)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("descent arena: error: ") and message.format(tmp=tmp_path) in err
    assert sorted(os.listdir(tmp_path)) == before  # nothing written
