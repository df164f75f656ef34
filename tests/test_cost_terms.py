"""Every cost term and constraint of docs/design.md: the value from ``controldl.problem.cost_terms``
against a hand computation in plain NumPy, the gradient (``jax.grad`` of
``controldl.problem.cost``) against central finite differences of that hand computation,
and a tiny solve with every solver that exists (cost decreases, constraints hold)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference import np_cost_terms

import controldl as cdl
from controldl import data as D
from controldl import problem as P
from controldl.solvers.base import evaluate

TERMS = ("l2", "l1", "smooth", "running", "readout_l2")
WEIGHT = 0.37
WIDTH, LAYERS, HORIZON = 3, 4, 2.0

# --------------------------------------------------------------------------- fixtures


def make_problem(loss: str = "logistic", **options) -> cdl.Problem:
    rng = np.random.default_rng(7)
    N = 10
    X = rng.normal(size=(N, 2))
    if loss == "squared":
        data = D.regression(X, rng.normal(size=(N, 2)), {"name": "test"})
    elif loss == "cross_entropy":
        data = D.classification(X, np.arange(N) % 3, {"name": "test"})
    else:
        data = D.classification(X, np.arange(N) % 2, {"name": "test"})
    opts = dict(width=WIDTH, layers=LAYERS, horizon=HORIZON, loss=loss)
    opts.update(options)
    return cdl.Problem(data, **opts)


def random_params(problem: cdl.Problem, seed: int = 3) -> P.Params:
    """Entries away from zero (so that |·| of the l1 term is differentiable there)."""
    rng = np.random.default_rng(seed)
    L, d, m = problem.layers, problem.width, problem.n_outputs

    def draw(*shape):
        v = rng.normal(scale=0.6, size=shape)
        return np.where(np.abs(v) < 0.05, 0.05 * np.sign(v) + v, v)

    return P.Params(draw(L, d, d), draw(L, d), draw(m, d), draw(m))


def hand_terms(problem, params):
    X0 = np.asarray(problem.initial_states())
    Y = np.asarray(problem.targets())
    return np_cost_terms(problem.formulation, *(np.asarray(v) for v in params), X0, Y)


# Compiled once per formulation (op-by-op dispatch of the scans is far slower).
_cost_terms = jax.jit(P.cost_terms, static_argnums=0)
_cost_grad = jax.jit(jax.grad(P.cost, argnums=1), static_argnums=0)


@jax.jit
def _stack(terms):
    return jnp.stack([terms[k] for k in ("terminal", *TERMS)])


def _term_jacobian(form, params, X0, Y):
    """∂(term)/∂params for every term at once: leading axis = ("terminal", *TERMS)."""
    return jax.jit(jax.jacrev(lambda p: _stack(P.cost_terms(form, p, X0, Y))))(params)


def library_terms(problem, params):
    jp = P.Params(*(jnp.asarray(v) for v in params))
    out = _cost_terms(problem.formulation, jp, problem.initial_states(), problem.targets())
    return {k: float(v) for k, v in out.items()}


# --------------------------------------------------------------------------- values

# One formulation with every term switched on (distinct weights), so that each term is
# checked separately while the compiled functions are shared by the tests below.
ALL_WEIGHTS = dict(l2=0.37, l1=0.11, smooth=0.23, running=0.41, readout_l2=0.19)


@pytest.fixture(scope="module")
def all_terms():
    problem = make_problem(**ALL_WEIGHTS)
    params = random_params(problem)
    form = problem.formulation
    X0, Y = problem.initial_states(), problem.targets()
    jp = P.Params(*(jnp.asarray(v) for v in params))
    return {
        "problem": problem, "params": params,
        "library": library_terms(problem, params), "hand": hand_terms(problem, params),
        "jacobian": _term_jacobian(form, jp, X0, Y),
        "grad": _cost_grad(form, jp, X0, Y),
    }


@pytest.mark.parametrize("term", ("terminal", *TERMS, "total"))
def test_term_value_matches_hand_computation(term, all_terms):
    got, want = all_terms["library"][term], all_terms["hand"][term]
    assert want > 1e-3  # the term is really exercised
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("loss", ["logistic", "cross_entropy", "sigmoid_mse", "squared"])
def test_terminal_and_running_value_for_every_loss(loss):
    problem = make_problem(loss, running=WEIGHT)
    params = random_params(problem)
    got, want = library_terms(problem, params), hand_terms(problem, params)
    for k in ("terminal", "running", "total"):
        np.testing.assert_allclose(got[k], want[k], rtol=1e-12, err_msg=k)


# --------------------------------------------------------------------------- gradients


def central_differences(f, params: P.Params, eps: float = 1e-6) -> P.Params:
    """∂f/∂p ≈ (f(p + ε e) − f(p − ε e)) / 2ε for every entry of every array."""
    out = []
    for k, arr in enumerate(params):
        arr = np.asarray(arr, np.float64)
        g = np.zeros_like(arr)
        for idx in np.ndindex(arr.shape):
            for sign in (1.0, -1.0):
                shifted = arr.copy()
                shifted[idx] += sign * eps
                trial = list(params)
                trial[k] = shifted
                g[idx] += sign * f(P.Params(*trial)) / (2 * eps)
        out.append(g)
    return P.Params(*out)


@pytest.mark.parametrize("term", ("terminal", *TERMS))
def test_term_gradient_matches_finite_differences(term, all_terms):
    """The gradient of each term (autodiff of ``cost_terms``) against central differences
    of the NumPy hand computation of that term."""
    problem, params = all_terms["problem"], all_terms["params"]
    row = ("terminal", *TERMS).index(term)
    fd = central_differences(lambda p: hand_terms(problem, p)[term], params)
    assert max(np.max(np.abs(f)) for f in fd) > 1e-4  # the term depends on the params
    for name, jac, f in zip(P.Params._fields, all_terms["jacobian"], fd, strict=True):
        np.testing.assert_allclose(np.asarray(jac[row]), f, rtol=1e-6, atol=1e-8,
                                   err_msg=f"{term}: {name}")


def test_cost_gradient_matches_finite_differences(all_terms):
    """``jax.grad`` of ``controldl.problem.cost`` (every term on) against central
    differences of the hand total."""
    problem, params = all_terms["problem"], all_terms["params"]
    fd = central_differences(lambda p: hand_terms(problem, p)["total"], params)
    for name, g, f in zip(P.Params._fields, all_terms["grad"], fd, strict=True):
        np.testing.assert_allclose(np.asarray(g), f, rtol=1e-6, atol=1e-8, err_msg=name)


# --------------------------------------------------------------------------- every solver

# Every cost term and both constraints in one problem per solver (one compilation each):
# the solve must lower the total from the shared initialization, keep every term in the
# objective, and end feasible. (Solving each term separately costs a compilation each.)
CASE = dict(l2=0.05, l1=0.01, smooth=0.05, running=0.5, readout_l2=0.05,
            lipschitz_bound=0.2, box_bound=0.15)
ITERATIONS = {"gd": 40, "msa": 4, "emsa": 4, "casadi": 15}
SOLVERS = ("gd", "msa", "emsa", "casadi")


@pytest.fixture(scope="module")
def ring():
    return D.ring(24, seed=1)


@pytest.mark.parametrize("solver", SOLVERS)
def test_every_term_and_constraint_with_every_solver(solver, ring):
    if solver not in cdl.available():
        pytest.skip(f"solver {solver!r} is not available yet")
    problem = cdl.Problem(ring, width=3, layers=4, horizon=2.0, **CASE)
    form = problem.formulation
    init = P.init_params(form, seed=0)
    before, _, _ = evaluate(problem, init)
    extra = {"optimizer": "adam", "lr": 0.02} if solver == "gd" else {}
    solution = cdl.solve(problem, cdl.make_solver(solver, **extra), seed=0,
                         max_iter=ITERATIONS[solver])
    assert np.isfinite(solution.cost["total"]), solution.summary()
    assert solution.cost["total"] < before["total"] - 1e-6, solution.summary()
    for k in TERMS:
        assert solution.cost[k] > 0.0, k  # the term is part of the objective solved
    A, b = np.asarray(solution.params.A), np.asarray(solution.params.b)
    lip = P.lipschitz_constants(form, solution.params)
    assert np.all(lip <= form.lipschitz_bound + 1e-6), lip
    assert np.max(np.abs(A)) <= form.box_bound + 1e-7
    assert np.max(np.abs(b)) <= form.box_bound + 1e-7
