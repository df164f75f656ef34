"""An interrupted ``compare`` keeps what finished: the report of the rows that completed,
marked interrupted, and ``--resume`` runs the rest; a killed report write leaves no
temporary past the next run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from controldl.cli import main

PROBLEM = ["--n-samples", "40", "--layers", "3", "--test-fraction", "0", "--no-figures"]


def _results(out):
    return json.loads((out / "results.json").read_text())


def test_a_signal_after_the_first_row_keeps_it_and_resume_runs_the_rest(tmp_path):
    out = tmp_path / "cmp"
    argv = ["compare", *PROBLEM, "--solvers", "adam:max_iter=15,sgd:max_iter=20000",
            "--max-time", "60", "--out", str(out)]  # limits that hold on a loaded machine
    env = dict(os.environ, CONTROLDL_CACHE_DIR=str(tmp_path / "cache"))
    proc = subprocess.Popen([sys.executable, "-m", "controldl", *argv], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    for line in proc.stderr:  # the log: one line per finished row
        if line.startswith("adam:max_iter=15: "):
            break
        assert time.monotonic() < deadline and proc.poll() is None
    time.sleep(0.5)  # inside the second row
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("controldl: interrupted during row 'sgd:max_iter=20000'")
    assert "--resume" in last
    first = _results(out)
    assert first["interrupted"] is True and first["pending"] == ["sgd:max_iter=20000"]
    assert [r["solver"] for r in first["rows"]] == ["adam:max_iter=15"]
    assert first["rows"][0]["iterations"] == 15
    assert ("**Interrupted**: 1 of 2 rows finished; not run: sgd:max_iter=20000"
            in (out / "report.md").read_text())

    assert main([*argv, "--resume"]) in (0, 1)
    again = _results(out)
    assert again["interrupted"] is False and again["pending"] == []
    assert [r["solver"] for r in again["rows"]] == ["adam:max_iter=15", "sgd:max_iter=20000"]
    assert again["rows"][0] == first["rows"][0] | {k: again["rows"][0][k] for k in
                                                     ("time_to_target_s",
                                                      "iterations_to_target",
                                                      "work_to_target")}  # kept as run
    assert again["rows"][1]["iterations"] > 0
    assert again["rows"][1]["status"] in ("max_iter", "converged")


def test_resume_refuses_another_comparison(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", *PROBLEM, "--solvers", "adam:max_iter=3", "--out", str(out)]) == 0
    code = main(["compare", *PROBLEM, "--solvers", "adam:max_iter=3", "--out", str(out),
                 "--resume"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "holds a complete comparison: nothing to resume" in err[-1]
    results = _results(out)
    results["interrupted"], results["pending"] = True, ["lbfgs"]
    (out / "results.json").write_text(json.dumps(results))
    code = main(["compare", *PROBLEM, "--layers", "4", "--solvers", "adam:max_iter=3,lbfgs",
                 "--out", str(out), "--resume"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "was run with other settings (solvers adam:max_iter=3; another " \
                         "problem)" in err[-1]


@pytest.mark.parametrize("solvers", ["", ",,", "adam,,lbfgs"])
def test_an_empty_solver_list_is_one_line(solvers, tmp_path, capsys):
    code = main(["compare", "--solvers", solvers, "--out", str(tmp_path / "x")])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 2 and len(err) == 1 and "names no solver" in err[0]
    assert list(tmp_path.iterdir()) == []


KILLED = """
import os, signal, sys
import controldl.compare as C
def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)
C._report = die  # the report is being written: killed there
from controldl.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_killed_report_write_leaves_no_temporary_after_the_next_run(tmp_path):
    out = tmp_path / "cmp"
    argv = ["compare", *PROBLEM, "--solvers", "adam:max_iter=3", "--out", str(out)]
    env = dict(os.environ, CONTROLDL_CACHE_DIR=str(tmp_path / "cache"))
    killed = subprocess.run([sys.executable, "-c", KILLED, *argv], env=env,
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL
    stray = [p.name for p in tmp_path.iterdir() if p.name.startswith(".cmp.tmp-")]
    assert len(stray) == 1 and not out.exists()  # what a kill leaves: no report, a temporary
    assert main(argv) == 0  # adam stops at max_iter: a completed solve
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "cmp"]
    assert _results(out)["rows"][0]["iterations"] == 3
