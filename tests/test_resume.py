"""Long runs lose nothing: a signal during ``controldl train`` saves the best iterate with
status ``interrupted`` and a checkpoint (exit 130); resuming continues with the
optimizer's state and ends where the uninterrupted run ends."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import controldl as cdl
from controldl.cli import main
from controldl.solvers import checkpoint
from controldl.solvers.gd import GradientDescent
from controldl.solvers.pmp import EMSA

PROBLEM = ["--n-samples", "40", "--layers", "4", "--test-fraction", "0", "--tol", "0",
           "--lr", "0.05"]


def _meta(directory):
    return json.loads((directory / "meta.json").read_text())


@pytest.fixture(scope="module")
def jax_cache(tmp_path_factory):
    """A persistent compilation cache shared by this module's subprocesses (the second
    one compiles less; results do not depend on it)."""
    return tmp_path_factory.mktemp("jax-cache")


def _interrupted_train(out, sig, cache):
    """Start ``controldl train`` (Adam, practically endless), wait until it iterates (its
    first periodic checkpoint exists), send ``sig``; its return code and stderr."""
    env = dict(os.environ, CONTROLDL_CACHE_DIR=str(cache))
    cmd = [sys.executable, "-m", "controldl", "train", *PROBLEM, "--max-iter", "10000000",
           "--checkpoint-every-s", "0.2", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            text=True)
    deadline = time.monotonic() + 180
    while not (out / "checkpoint" / "state.json").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=180)
    return proc.returncode, err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_saves_an_interrupted_solution_that_resumes_exactly(sig, tmp_path, capsys,
                                                                    jax_cache):
    out = tmp_path / "run"
    rc, err = _interrupted_train(out, sig, jax_cache)
    assert rc == 130, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("controldl: interrupted at iteration"), err
    meta = _meta(out)
    assert meta["status"] == "interrupted"
    k = meta["iterations"]
    assert k > 0 and checkpoint.load(out).iteration == k
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs

    total = k + 20
    assert main(["train", "--resume", str(out), "--max-iter", str(total)]) == 0
    assert main(["train", *PROBLEM, "--max-iter", str(total), "--out",
                 str(tmp_path / "ref")]) == 0
    resumed, ref = _meta(out), _meta(tmp_path / "ref")
    assert resumed["stats"]["resumed_from_iteration"] == k
    assert resumed["iterations"] == ref["iterations"] == total
    assert abs(resumed["cost"]["total"] - ref["cost"]["total"]) <= 1e-10
    assert [h["iteration"] for h in resumed["history"]] == list(range(total + 1))
    np.testing.assert_allclose([h["cost"] for h in resumed["history"]],
                               [h["cost"] for h in ref["history"]], rtol=0, atol=1e-10)
    a, b = np.load(out / "arrays.npz"), np.load(tmp_path / "ref" / "arrays.npz")
    np.testing.assert_allclose(a["A"], b["A"], rtol=0, atol=1e-10)


def _signal_at(iteration):
    """A history callback that sends this process SIGINT at ``iteration``."""

    def callback(entry):
        if entry["iteration"] == iteration:
            os.kill(os.getpid(), signal.SIGINT)

    return callback


@pytest.mark.parametrize("solver, total", [
    (GradientDescent("adam", lr=0.05), 25),
    (GradientDescent("lbfgs"), 14),
    (EMSA(rho=0.5, adaptive_rho=True, batch_size=20, inner_steps=3), 8),
], ids=["adam", "lbfgs", "emsa-adaptive-rho-minibatch"])
def test_library_resume_equals_the_uninterrupted_solve(solver, total, tmp_path):
    problem = cdl.Problem(cdl.data.ring(40, seed=1), width=3, layers=4)
    ref = cdl.solve(problem, solver, max_iter=total)
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN in a background job (`pytest &`)
    with pytest.raises(cdl.SolveInterrupted) as stop:  # a KeyboardInterrupt
        cdl.solve(problem, solver, max_iter=total, callback=_signal_at(4))
    cut = stop.value.solution
    assert cut.status == "interrupted" and cut.checkpoint is not None
    assert signal.getsignal(signal.SIGINT) is before  # restored to what it was
    cut.save(tmp_path / "cut")  # through the directory format
    resumed = cdl.solve(problem, solver, resume=tmp_path / "cut")
    assert resumed.iterations == ref.iterations == total
    assert abs(resumed.cost["total"] - ref.cost["total"]) <= 1e-10
    for mine, theirs in zip(resumed.params, ref.params, strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-10)
    assert [h["iteration"] for h in resumed.history] == [h["iteration"] for h in ref.history]
    if "rho" in ref.stats:
        assert resumed.stats["rho"] == ref.stats["rho"]


@pytest.mark.parametrize("disposition", [signal.SIG_IGN, signal.default_int_handler],
                         ids=["ignored", "default"])
def test_a_solve_restores_the_sigint_handler_it_found(disposition):
    """A shell's background job (``pytest &``) starts with SIGINT ignored: a solve that
    caught SIGINT while it ran puts back what it found, ignored or not."""
    previous = signal.signal(signal.SIGINT, disposition)
    try:
        problem = cdl.Problem(cdl.data.ring(40, seed=1), width=3, layers=4)
        with pytest.raises(cdl.SolveInterrupted):
            cdl.solve(problem, GradientDescent("adam", lr=0.05), max_iter=8,
                      callback=_signal_at(2))
        assert signal.getsignal(signal.SIGINT) is disposition
    finally:
        signal.signal(signal.SIGINT, previous)


def test_resume_refuses_another_solver_or_an_earlier_limit(tmp_path, capsys):
    problem = cdl.Problem(cdl.data.ring(40, seed=1), width=3, layers=4)
    cut = cdl.solve(problem, GradientDescent("adam", lr=0.05), max_iter=10,
                    checkpoint_dir=tmp_path / "ck")
    assert cut.checkpoint.iteration == 10
    with pytest.raises(ValueError, match="options differ"):
        cdl.solve(problem, GradientDescent("adam", lr=0.01), resume=cut)
    with pytest.raises(ValueError, match="below the checkpoint's iteration 10"):
        cdl.solve(problem, GradientDescent("adam", lr=0.05), resume=cut, max_iter=5)
    with pytest.raises(ValueError, match="problem differs"):
        cdl.solve(problem.replace(l2=0.1), GradientDescent("adam", lr=0.05), resume=cut)
    cut.save(tmp_path / "run")
    code = main(["train", "--resume", str(tmp_path / "run"), "--lr", "0.1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--lr 0.1 (checkpoint: 0.05)" in err[0]


def test_ipopt_resumes_from_its_primal_dual_iterate(tmp_path):
    """IPOPT is warm-started from the saved primal and dual values: not bit-equal to the
    uninterrupted run (the barrier parameter and IPOPT's filter restart), but it starts at
    the saved iterate and converges to the same KKT point."""
    from controldl.solvers.direct import CasadiDirect

    problem = cdl.Problem(cdl.data.ring(30, seed=1), width=3, layers=3)
    solver = CasadiDirect()
    ref = cdl.solve(problem, solver, max_iter=200)
    with pytest.raises(cdl.SolveInterrupted) as stop:
        cdl.solve(problem, solver, max_iter=200, callback=_signal_at(6))
    cut = stop.value.solution
    assert cut.status == "interrupted" and cut.iterations == 6
    cut.save(tmp_path / "cut")
    resumed = cdl.solve(problem, solver, resume=tmp_path / "cut")
    assert ref.status == resumed.status == "converged"
    # the resumed run's first iterate is the interrupted one's iterate 6
    assert resumed.history[6]["iteration"] == 6
    assert abs(resumed.history[6]["cost"] - cut.history[6]["cost"]) <= 1e-12
    assert abs(resumed.cost["total"] - ref.cost["total"]) <= 1e-8
    assert resumed.iterations > 6


def test_a_crash_keeps_the_last_periodic_checkpoint(tmp_path):
    """A process that dies mid-solve (here: an exception at iteration 7) leaves its last
    periodic checkpoint whole; resuming from it ends where the uninterrupted run ends."""
    problem = cdl.Problem(cdl.data.ring(40, seed=1), width=3, layers=4)
    adam = GradientDescent("adam", lr=0.05)
    ref = cdl.solve(problem, adam, max_iter=25)

    def crash(entry):
        if entry["iteration"] == 7:
            raise RuntimeError("crash")

    with pytest.raises(RuntimeError, match="crash"):
        cdl.solve(problem, adam, max_iter=25, callback=crash, checkpoint_every_s=1e-9,
                  checkpoint_dir=tmp_path / "run" / "checkpoint")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["checkpoint"]
    assert checkpoint.load(tmp_path / "run").iteration == 7
    resumed = cdl.solve(problem, adam, resume=tmp_path / "run")
    assert resumed.iterations == 25
    assert abs(resumed.cost["total"] - ref.cost["total"]) <= 1e-10


def test_a_schedule_keeps_its_length_when_a_resume_runs_longer():
    """A learning-rate schedule spans the first run's max_iter: a resume with a larger
    limit follows the uninterrupted run's schedule up to that limit, then goes on."""
    problem = cdl.Problem(cdl.data.ring(40, seed=1), width=3, layers=4)
    cosine = GradientDescent("adam", lr=0.05, schedule="cosine")
    ref = cdl.solve(problem, cosine, max_iter=20)
    with pytest.raises(cdl.SolveInterrupted) as stop:
        cdl.solve(problem, cosine, max_iter=20, callback=_signal_at(5))
    longer = cdl.solve(problem, cosine, resume=stop.value.solution, max_iter=26)
    assert longer.iterations == 26
    np.testing.assert_allclose([h["cost"] for h in longer.history[:21]],
                               [h["cost"] for h in ref.history], rtol=0, atol=1e-10)
