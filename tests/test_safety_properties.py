"""Safety properties that a mutation once broke without any test noticing (each of these
tests fails when its property is broken; the mutations are listed in the commit):

- the turnpike padding certificate admits round-off only (relative 1e-9), not a loose
  slack;
- a resumed run returns the best iterate of the whole run (non-monotone SGD) and draws
  the same mini-batches (Adam with batch 10) as the uninterrupted run;
- E-MSA's Hamiltonian gap counts the l1 term at the new controls: with l1 it stays >= 0;
- the stationarity measure is the proximal-gradient norm with l1's soft threshold, and
  every solver that reports it reports that measure.
"""

from __future__ import annotations

import os
import signal
import types

import jax
import numpy as np
import pytest
from reference import np_cost_terms

import controldl as cdl
from controldl.studies.turnpike import starts

# --------------------------------------------------------------------------- certificate


def _pair(bound, cost):
    return starts.certificate_pair({"horizon": 1.0, "padding_bound_next": bound},
                                   {"horizon": 2.0, "cost": {"total": cost}})


@pytest.mark.parametrize("bound", [0.3, 7.5])
def test_the_padding_certificate_admits_round_off_only(bound):
    assert _pair(bound, bound)["holds"] is True
    assert _pair(bound, bound * (1 + 1e-12))["holds"] is True  # round-off
    for excess in (1e-6, 1e-4, 1e-2):  # a real violation, however small, is one
        pair = _pair(bound, bound * (1 + excess))
        assert pair["holds"] is False
        assert pair["violation"] == pytest.approx(bound * excess, rel=1e-6)


# --------------------------------------------------------------------------- resume


def _signal_at(iteration):
    def callback(entry):
        if entry["iteration"] == iteration:
            os.kill(os.getpid(), signal.SIGINT)
    return callback


def _resumed(problem, solver, total, cut_at, tmp_path):
    with pytest.raises(cdl.SolveInterrupted) as stop:
        cdl.solve(problem, solver, max_iter=total, callback=_signal_at(cut_at))
    stop.value.solution.save(tmp_path / "cut")
    return cdl.solve(problem, solver, resume=tmp_path / "cut")


def test_a_resumed_non_monotone_run_returns_the_best_iterate_of_the_whole_run(tmp_path):
    """SGD with lr 10 rises after its start: the best iterate is iteration 0, found before
    the interruption at 10, and the resumed run must still return it."""
    problem = cdl.Problem(cdl.data.ring(40, seed=1), width=3, layers=4)
    sgd = cdl.GradientDescent("sgd", lr=10.0)
    ref = cdl.solve(problem, sgd, max_iter=30)
    assert ref.stats["best_iteration"] == 0 and ref.stats["last_cost"] > 2 * ref.cost["total"]
    resumed = _resumed(problem, sgd, 30, 10, tmp_path)
    assert resumed.stats["best_iteration"] == 0 and resumed.iterations == 30
    assert resumed.cost["total"] == pytest.approx(ref.cost["total"], rel=1e-12)
    for mine, theirs in zip(resumed.params, ref.params, strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-12)


def test_a_resumed_mini_batch_run_draws_the_same_batches(tmp_path):
    problem = cdl.Problem(cdl.data.ring(40, seed=1), width=3, layers=4)
    adam = cdl.GradientDescent("adam", lr=0.05, batch_size=10)
    ref = cdl.solve(problem, adam, max_iter=25)
    resumed = _resumed(problem, adam, 25, 8, tmp_path)  # recorded once per epoch (4)
    assert resumed.iterations == ref.iterations == 25
    assert abs(resumed.cost["total"] - ref.cost["total"]) <= 1e-10
    np.testing.assert_allclose(resumed.params.A, ref.params.A, rtol=0, atol=1e-10)


# --------------------------------------------------------------------------- l1


def _l1_problem():
    return cdl.Problem(cdl.data.ring(40, seed=0), width=3, layers=3, horizon=2.0, l1=0.05)


def test_the_inner_ascent_with_l1_is_not_negative():
    """Each layer's maximization starts at θ_k, so its ascent (objective at the result
    minus at θ_k, the l1 term at each point) is >= 0; taking l1 at θ_k on both sides makes
    it negative once the prox shrinks the controls."""
    sol = cdl.solve(_l1_problem(), cdl.EMSA(), max_iter=6)
    gaps = [h["inner_ascent"] for h in sol.history if h.get("inner_ascent") is not None]
    assert len(gaps) >= 6
    assert min(gaps) >= -1e-12, gaps
    assert min(sol.stats["inner_ascent"]) >= -1e-12, sol.stats["inner_ascent"]


def _numpy_stationarity(problem, params, eps=1e-6):
    """‖θ − prox_{βh‖·‖₁}(θ − ∇f(θ))‖₂ with ∇f by central differences of the NumPy oracle's
    smooth part f = J − l1 (the soft threshold on A and b only)."""
    form = problem.formulation
    ns = types.SimpleNamespace(**{k: getattr(form, k) for k in (
        "horizon", "layers", "model", "activation", "loss", "l2", "l1", "smooth",
        "running", "readout_l2")})
    X = problem.data.X_train
    X0 = np.hstack([X, np.zeros((len(X), form.width - X.shape[1]))])
    Y = problem.data.y_train[:, None].astype(float)
    theta = [np.array(v, np.float64) for v in params]

    def f(parts):
        terms = np_cost_terms(ns, *parts, X0, Y)
        return terms["total"] - terms["l1"]

    grads = []
    for i, block in enumerate(theta):
        g = np.zeros_like(block)
        for idx in np.ndindex(block.shape):
            plus = [v.copy() for v in theta]
            minus = [v.copy() for v in theta]
            plus[i][idx] += eps
            minus[i][idx] -= eps
            g[idx] = (f(plus) - f(minus)) / (2 * eps)
        grads.append(g)
    tau = form.l1 * form.horizon / form.layers
    residual = 0.0
    for i, (v, g) in enumerate(zip(theta, grads, strict=True)):
        moved = v - g
        if i < 2:  # A, b: the l1 term's prox
            moved = np.sign(moved) * np.maximum(np.abs(moved) - tau, 0.0)
        residual += float(np.sum((v - moved) ** 2))
    return np.sqrt(residual)


def test_stationarity_is_the_proximal_gradient_norm_with_l1():
    """Against an independent NumPy computation, at a point where the soft threshold
    matters (entries at zero whose gradient is below β·h)."""
    problem = _l1_problem()
    params = cdl.init_params(problem.formulation, seed=3)
    A = np.array(params.A)
    A[:, 0, :] = 0.0  # zero rows: |∂f/∂A| < β·h there leaves them fixed by the prox
    params = params._replace(A=jax.numpy.asarray(A))
    mine = cdl.stationarity(problem, params)
    ref = _numpy_stationarity(problem, params)
    assert mine == pytest.approx(ref, rel=1e-6)
    plain = np.sqrt(sum(float(np.sum(np.asarray(g) ** 2)) for g in jax.grad(
        lambda p: cdl.problem.cost_terms(problem.formulation, p, problem.initial_states(),
                                         problem.targets())["total"]
        - cdl.problem.l1_cost(problem.formulation, p.A, p.b))(params)))
    assert abs(ref - plain) > 1e-3 * plain  # the threshold changes the measure here


SOLVERS = {
    "adam": lambda: cdl.GradientDescent("adam", lr=0.05, return_best=False),
    "lbfgs": lambda: cdl.GradientDescent("lbfgs", return_best=False),
    "msa": lambda: cdl.MSA(),
    "emsa": lambda: cdl.EMSA(),
    "emsa-bounded-memory": lambda: cdl.EMSA(checkpoint_every=2),
    "pmp-newton": lambda: cdl.solver_class("pmp-newton")(),
}


@pytest.mark.parametrize("name", SOLVERS)
def test_every_solver_reports_the_proximal_stationarity_with_l1(name):
    """The stationarity a solver records for its last iterate (its own computation: from
    its gradient, from the costates, ...) equals controldl.stationarity there."""
    problem = _l1_problem()
    sol = cdl.solve(problem, SOLVERS[name](), max_iter=4)
    last = sol.history[-1]
    assert last["iteration"] == sol.iterations == 4
    assert last["stationarity"] == pytest.approx(cdl.stationarity(problem, sol.params),
                                                 rel=1e-8, abs=1e-14)
