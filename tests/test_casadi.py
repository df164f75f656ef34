"""The CasADi direct method (``controldl.solvers.direct``).

Tiny problems, float64, explicit seeds. The NLP is checked against the JAX problem
(``controldl.problem.cost`` and ``jax.grad``), its custom Hessians against CasADi's own,
and its solutions against independent (JAX, numpy) optimality and feasibility checks.
"""

from __future__ import annotations

import shutil

import casadi as ca
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import controldl as cdl
from controldl import problem as P
from controldl.solvers.base import Monitor, Stopping, as_params
from controldl.solvers.direct import (
    LIPSCHITZ_DESCRIPTIONS,
    CasadiDirect,
    certificates,
    cost_and_gradient,
    ipopt,
    transcription,
)
from controldl.solvers.direct.certificates import ROUND_OFF
from controldl.status import Status

# --------------------------------------------------------------------------- helpers

# One set of shapes (N = 16, width 3, L = 3) throughout, so that JAX's per-shape caches are
# shared by every test and the suite stays fast.
BASE = dict(width=3, layers=3, horizon=1.5)


def ring(n: int = 16, seed: int = 0) -> cdl.Dataset:
    return cdl.data.ring(n, seed=seed)


def three_classes(n: int = 16, seed: int = 1) -> cdl.Dataset:
    rng = np.random.default_rng(seed)
    return cdl.data.classification(rng.normal(size=(n, 2)), np.arange(n) % 3, {"name": "k3"})


def regression(n: int = 16, seed: int = 2) -> cdl.Dataset:
    rng = np.random.default_rng(seed)
    return cdl.data.regression(rng.normal(size=(n, 2)), rng.normal(size=(n, 3)), {"name": "r"})


def random_params(form: P.Formulation, seed: int) -> P.Params:
    """Generic random controls and readout (nonzero biases, no exact zeros)."""
    rng = np.random.default_rng(seed)
    L, d, m = form.layers, form.width, form.n_outputs
    return P.Params(rng.normal(size=(L, d, d)) * 0.8, rng.normal(size=(L, d)) * 0.4,
                    rng.normal(size=(m, d)), rng.normal(size=m) * 0.3)


def jax_cost_grad(problem: cdl.Problem, params: P.Params) -> tuple[float, P.Params]:
    """``J`` and ``∇J`` by JAX, op by op (no compilation: tiny problems, many formulations)."""
    form = problem.formulation
    X0, Y = problem.initial_states(), problem.targets()
    p = P.Params(*(jnp.asarray(v, jnp.float64) for v in params))
    with jax.disable_jit():
        J, g = jax.value_and_grad(lambda q: P.cost(form, q, X0, Y))(p)
    return float(J), P.Params(*(np.asarray(v) for v in g))


def grad_norm(problem: cdl.Problem, params: P.Params) -> float:
    """‖∇J‖₂ over the optimized variables, by JAX (independent of IPOPT)."""
    g = jax_cost_grad(problem, params)[1]
    parts = [g.A, g.b] + ([g.W, g.c] if problem.formulation.train_readout else [])
    return float(np.sqrt(sum(np.sum(np.asarray(v) ** 2) for v in parts)))


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(a)), 1e-300))


# --------------------------------------------------------------------------- options


def test_options_are_validated():
    with pytest.raises(ValueError, match="transcription"):
        CasadiDirect(transcription="collocation")
    with pytest.raises(ValueError, match="hessian"):
        CasadiDirect(hessian="bfgs-ish")
    with pytest.raises(ValueError, match="tol"):
        CasadiDirect(tol=-1.0)
    with pytest.raises(ValueError, match="print_level"):
        CasadiDirect(print_level=13)
    with pytest.raises(ValueError, match="KEY=VALUE"):
        CasadiDirect(ipopt_options=("mu_init",))
    with pytest.raises(ValueError, match="expand"):
        CasadiDirect(expand="sometimes")
    with pytest.raises(ValueError, match="lipschitz_form"):
        CasadiDirect(lipschitz_form="nuclear")
    with pytest.raises(ValueError, match="threads"):
        CasadiDirect(threads=0)
    s = CasadiDirect(hessian="gn", ipopt_options={"mu_init": "1e-4"}, expand="false")
    assert s.hessian == "gauss-newton" and s.expand is False
    assert s.ipopt_options == (("mu_init", "1e-4"),)
    assert CasadiDirect(ipopt_options=("max_cpu_time=5",)).ipopt_options == (("max_cpu_time", "5"),)
    assert cdl.make_solver("casadi", transcription="multiple").label() == "casadi/multiple/auto"


def test_unknown_ipopt_option_is_a_value_error():
    problem = cdl.Problem(ring(), **BASE)
    with pytest.raises(ValueError, match="IPOPT"):
        cdl.solve(problem, CasadiDirect(ipopt_options=(("no_such_option", "1"),)), max_iter=2)


# --------------------------------------------------------------------------- cost and gradient

LOSS_DATA = {"logistic": "ring", "sigmoid_mse": "ring", "cross_entropy": "k3", "squared": "reg"}
TERMS = (("l2", 0.3), ("l1", 0.2), ("smooth", 0.5), ("running", 0.4), ("readout_l2", 0.2))
# Compact coverage: every dynamics × activation, each with one loss and one cost term in
# turn (so every loss and every term appears at least twice), then all terms together and
# the frozen readout.
CASES = [
    (f"{mdl}-{act}-{loss}-{TERMS[i % 5][0]}", LOSS_DATA[loss],
     dict(model=mdl, activation=act, loss=loss, **dict([TERMS[i % 5]])))
    for i, (mdl, act) in enumerate((m, a) for m in ("resnet", "mlp")
                                   for a in ("tanh", "relu", "sigmoid", "softplus", "identity"))
    for loss in [("logistic", "sigmoid_mse", "cross_entropy", "squared")[i % 4]]
] + [
    ("all-terms", "k3", dict(l2=0.1, l1=0.05, smooth=0.2, running=0.3, readout_l2=0.1)),
    ("frozen-readout", "ring", dict(train_readout=False, l1=0.1, running=0.2, readout_l2=0.3)),
    ("inside-terminal", "ring", dict(model="inside", terminal=0.5, running=0.3, l2=0.1)),
    ("integral", "k3", dict(terminal=0.0, running=0.4, smooth=0.1)),
]
DATA = {"ring": ring, "k3": three_classes, "reg": regression}


@pytest.mark.parametrize("name,data,options", CASES, ids=[c[0] for c in CASES])
def test_cost_and_gradient_match_jax(name, data, options):
    problem = cdl.Problem(DATA[data](), **{**BASE, **options})
    params = random_params(problem.formulation, seed=len(name))
    J, g = jax_cost_grad(problem, params)
    Jc, gc = cost_and_gradient(problem, params, transcription="single")
    assert abs(Jc - J) <= 1e-10 * abs(J)
    keys = ("A", "b", "W", "c") if problem.formulation.train_readout else ("A", "b")
    for k in keys:
        assert rel_err(getattr(g, k), getattr(gc, k)) <= 1e-10, k
    if not problem.formulation.train_readout:
        assert np.all(gc.W == 0) and np.all(gc.c == 0)


@pytest.mark.parametrize("name", [CASES[1][0], CASES[8][0], "all-terms", "frozen-readout",
                                  "inside-terminal", "integral"])
def test_multiple_shooting_cost_and_reduced_gradient_match_jax(name):
    _, data, options = next(c for c in CASES if c[0] == name)
    problem = cdl.Problem(DATA[data](), **{**BASE, **options})
    params = random_params(problem.formulation, seed=3)
    J, g = jax_cost_grad(problem, params)
    Jc, gc = cost_and_gradient(problem, params, transcription="multiple")
    assert abs(Jc - J) <= 1e-10 * abs(J)
    for k in (("A", "b", "W", "c") if problem.formulation.train_readout else ("A", "b")):
        assert rel_err(getattr(g, k), getattr(gc, k)) <= 1e-10, k


def test_multiple_shooting_dynamics_residual_vanishes_at_simulated_states():
    problem = cdl.Problem(ring(), **BASE, l2=0.1)
    params = random_params(problem.formulation, seed=4)
    tr = CasadiDirect(transcription="multiple").build(problem, params)
    g = np.asarray(ca.Function("g", [tr.w, tr.p], [tr.g])(tr.w0, tr.p0)).ravel()
    assert g.shape == (problem.layers * problem.data.n_train * problem.width,)
    assert np.max(np.abs(g)) < 1e-13
    back = tr.params(tr.w0)
    for a, b in zip(back, params, strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))


# --------------------------------------------------------------------------- Hessians


def _hess_lag_reference(tr, w, lam_f, lam_g, drop_dynamics=False):
    """CasADi's own Hessian of ``lam_f·f + lam_gᵀg`` (upper triangle), densified."""
    sig, lg = ca.MX.sym("s"), ca.MX.sym("l", tr.g.shape[0])
    lag = sig * tr.f + (ca.dot(lg, tr.g) if tr.g.shape[0] else 0)
    H = ca.Function("H", [tr.w, tr.p, sig, lg], [ca.triu(ca.hessian(lag, tr.w)[0])])
    return np.asarray(ca.densify(H(w, tr.p0, lam_f, lam_g)))


def test_exact_hessian_matches_casadi_hessian_of_the_lagrangian():
    # L1 split, box, spectral Lipschitz factors and a running cost all at once
    problem = cdl.Problem(ring(), width=2, layers=3, horizon=1.5, l2=0.1, l1=0.05,
                          smooth=0.2, running=0.3, readout_l2=0.1, box_bound=3.0,
                          lipschitz_bound=0.9)
    params = random_params(problem.formulation, seed=5)
    tr = CasadiDirect().build(problem, params, hessian="exact")
    rng = np.random.default_rng(0)
    w = tr.w0 + 0.1 * rng.uniform(size=tr.w0.shape)
    lam_g = rng.normal(size=tr.g.shape[0])
    H = np.asarray(ca.densify(tr.hess_lag(w, tr.p0, 0.7, lam_g)))
    ref = _hess_lag_reference(tr, w, 0.7, lam_g)
    assert rel_err(ref, H) < 1e-12


@pytest.mark.parametrize("transcription", ["single", "multiple"])
def test_gauss_newton_equals_exact_hessian_at_zero_residual(transcription):
    """For the squared loss with targets produced by the model itself, the neglected
    curvature Σ r_i ∇²z_i vanishes (and so do the costates): GN is the exact Hessian."""
    problem, params = self_generated_regression(seed=6)
    tr = CasadiDirect(transcription=transcription).build(problem, params, hessian="gauss-newton")
    lam_g = np.zeros(tr.g.shape[0])
    H = np.asarray(ca.densify(tr.hess_lag(tr.w0, tr.p0, 1.0, lam_g)))
    ref = _hess_lag_reference(tr, tr.w0, 1.0, lam_g)
    assert rel_err(ref, H) < 1e-10
    # and it is positive semidefinite in general
    params2 = random_params(problem.formulation, seed=7)
    tr2 = CasadiDirect().build(problem.replace(loss="squared"), params2, hessian="gauss-newton")
    H2 = np.asarray(ca.densify(tr2.hess_lag(tr2.w0, tr2.p0, 1.0, [])))
    H2 = H2 + np.triu(H2, 1).T
    assert np.linalg.eigvalsh(H2).min() > -1e-12


# --------------------------------------------------------------------------- solves

SMALL = dict(BASE, l2=1e-2, readout_l2=1e-2)


def small_problem(**options) -> cdl.Problem:
    return cdl.Problem(ring(seed=3), **{**SMALL, **options})


def run(problem: cdl.Problem, solver: CasadiDirect, init=None, max_iter: int = 300):
    """``solver.run`` with the common monitor, without ``solve``'s final JAX evaluation."""
    params = (P.init_params(problem.formulation, seed=0) if init is None
              else as_params(problem, init))
    return solver.run(problem, params, Monitor(Stopping(max_iter)))


def test_solve_is_stationary_and_the_transcriptions_agree():
    problem = small_problem()
    init = P.init_params(problem.formulation, seed=0)
    single = cdl.solve(problem, cdl.make_solver("casadi", transcription="single",
                                                hessian="exact", tol=1e-10),
                       init=init, max_iter=200)
    multiple = cdl.solve(problem, cdl.make_solver("casadi", transcription="multiple",
                                                  tol=1e-10), init=init, max_iter=200)
    lbfgs = cdl.solve(problem, cdl.make_solver("casadi", hessian="limited-memory",
                                               tol=1e-10), init=init, max_iter=1000)
    for sol in (single, multiple, lbfgs):
        assert sol.status == "converged", sol.stats["ipopt_status"]
        assert grad_norm(problem, sol.params) < 1e-6
        assert sol.stats["iter_count"] == sol.iterations > 0
        assert sol.stats["build_time_s"] > 0 and sol.compile_time_s > 0
        assert sol.stats["dual_infeasibility"] < 1e-6
        assert len(sol.history) >= sol.iterations
    assert single.stats["transcription"] == "single" and single.stats["hessian"] == "exact"
    assert multiple.stats["transcription"] == "multiple"
    # Multiple shooting's history is the cost of each iterate's controls (simulated), with
    # the NLP objective and the dynamics' infeasibility alongside; at the converged end
    # they coincide.
    first, last = multiple.history[0], multiple.history[-1]
    J0 = float(P.cost(problem.formulation, init, problem.initial_states(), problem.targets()))
    assert first["cost"] == pytest.approx(J0, rel=1e-12)
    assert last["infeasibility"] < 1e-8
    assert last["objective"] == pytest.approx(last["cost"], rel=1e-8)
    assert last["cost"] == pytest.approx(multiple.cost["total"], rel=1e-8)
    assert lbfgs.stats["hessian"] == "limited-memory"
    # From one start the two transcriptions may reach different local minima of this
    # nonconvex problem (or mirror images: x₃ ↦ -x₃ is a symmetry with width 3 > n = 2);
    # at a common KKT point they must agree: multiple shooting started at the
    # single-shooting solution stays there.
    again = run(problem, CasadiDirect(transcription="multiple", tol=1e-10), init=single.params,
                max_iter=50)
    assert again.status == "converged" and again.iterations <= 3
    for a, b in zip(single.params, again.params, strict=True):
        assert np.max(np.abs(np.asarray(a) - np.asarray(b))) < 1e-6


def self_generated_regression(seed: int) -> tuple[cdl.Problem, P.Params]:
    """Squared loss with targets produced by the model at known parameters: a
    (near-)zero-residual problem, where Gauss-Newton is the natural Hessian."""
    base = cdl.Problem(regression(), **BASE, l2=0.1, readout_l2=0.05)
    params = random_params(base.formulation, seed=seed)
    Z = np.asarray(P.predict(base.formulation, P.Params(*map(jnp.asarray, params)),
                             base.initial_states()))
    return base.replace(data=cdl.data.regression(base.data.X_train, Z, {"name": "self"})), params


def test_gauss_newton_reaches_stationarity_on_a_small_residual_problem():
    # GN converges linearly at a rate set by the neglected curvature Σ ℓ'(z)∇²z, which the
    # regularization makes small but not zero here.
    problem, params = self_generated_regression(seed=9)
    problem = problem.replace(l2=1e-3, readout_l2=1e-3)
    rng = np.random.default_rng(1)
    start = P.Params(*(np.asarray(v) + 0.1 * rng.normal(size=np.shape(v)) for v in params))
    res = run(problem, CasadiDirect(hessian="gauss-newton", tol=1e-10), init=start,
              max_iter=200)
    assert res.status == "converged"
    assert grad_norm(problem, res.params) < 1e-6


def test_l1_gives_exact_zeros_and_is_optimal():
    problem = small_problem(l1=2e-2)
    res = run(problem, CasadiDirect(tol=1e-10), max_iter=500)
    assert res.status == "converged"
    A, b = np.asarray(res.params.A), np.asarray(res.params.b)
    theta = np.concatenate([A.ravel(), b.ravel()])
    zeros = theta == 0.0
    assert zeros.sum() >= 3 and res.stats["n_exact_zeros"] == zeros.sum()
    assert (~zeros).sum() >= 3
    # Optimality of the nonsmooth problem, checked with JAX on the smooth part:
    # ∇smooth + βh·sign(θ) = 0 where θ ≠ 0 and |∇smooth| ≤ βh where θ = 0.
    g = jax_cost_grad(problem.replace(l1=0.0), res.params)[1]
    gt = np.concatenate([np.ravel(g.A), np.ravel(g.b)])
    bh = problem.l1 * problem.h
    assert np.max(np.abs(gt[~zeros] + bh * np.sign(theta[~zeros]))) < 1e-6
    assert np.max(np.abs(gt[zeros])) <= bh + 1e-6
    assert np.max(np.abs(np.concatenate([np.ravel(g.W), np.ravel(g.c)]))) < 1e-6


@pytest.mark.parametrize("form", ["spectral", "frobenius"])
def test_lipschitz_bound_holds_on_the_raw_iterate(form):
    problem = small_problem(horizon=3.0, l2=1e-3, lipschitz_bound=0.9)  # h = 1
    res = run(problem, CasadiDirect(lipschitz_form=form))
    assert res.status == "converged"
    # IPOPT's raw iterate, before any clean-up: within round-off of the bound
    assert res.stats["lipschitz_max_raw"] <= 0.9 * (1 + ROUND_OFF)
    assert res.stats["lipschitz_excess_raw"] <= ROUND_OFF
    A = np.asarray(res.params.A)
    lips = problem.h * np.linalg.norm(A, ord=2, axis=(1, 2))  # numpy, independent
    assert np.all(lips <= 0.9)
    assert abs(np.max(lips) - res.stats["lipschitz_max_raw"]) <= 1e-8
    # the constraint is active, so the test means something (the Frobenius form is
    # conservative: it binds on h‖A_t‖_F, leaving h‖A_t‖₂ below the bound)
    ord_ = 2 if form == "spectral" else "fro"
    assert np.max(problem.h * np.linalg.norm(A, ord=ord_, axis=(1, 2))) > 0.9 - 1e-6
    assert res.stats["lipschitz_form"] == LIPSCHITZ_DESCRIPTIONS[form]


def test_box_bound_holds_on_the_raw_iterate():
    problem = small_problem(horizon=3.0, l2=1e-3, box_bound=0.3)
    res = run(problem, CasadiDirect())
    assert res.status == "converged"
    assert res.stats["box_violation_raw"] <= 0.3 * ROUND_OFF
    theta = np.concatenate([np.ravel(res.params.A), np.ravel(res.params.b)])
    assert np.all(np.abs(theta) <= 0.3)
    assert np.max(np.abs(theta)) > 0.3 - 1e-6


@pytest.mark.parametrize("bound", ["lipschitz", "box"])
def test_a_loosened_nlp_is_reported_as_violated(monkeypatch, bound):
    """Mutation test: the NLP is built with a bound 100x looser than the problem's (the
    seam the transcription reads its bounds from); the checks on the raw iterate must
    see it, and nothing may be projected back onto the bound."""
    options = {"lipschitz": dict(lipschitz_bound=0.9), "box": dict(box_bound=0.3)}[bound]
    problem = small_problem(horizon=3.0, l2=1e-3, **options)
    true_bounds = transcription.constraint_bounds(problem.formulation)

    def loosened(form):
        return transcription.ConstraintBounds(*(None if v is None else 100 * v
                                                for v in true_bounds))

    monkeypatch.setattr(transcription, "constraint_bounds", loosened)
    res = run(problem, CasadiDirect())
    assert res.stats["ipopt_status"] == "Solve_Succeeded"
    assert res.status == Status.CONSTRAINT_VIOLATED
    assert res.stats[f"{bound}_excess_raw"] > ROUND_OFF
    if bound == "lipschitz":
        assert res.stats["lipschitz_max_raw"] > 0.9
        assert np.max(P.lipschitz_constants(problem.formulation, res.params)) > 0.9
    else:
        assert np.max(np.abs(np.asarray(res.params.A))) > 0.3


def test_warm_start_from_gradient_descent_does_not_increase_the_cost(tmp_path):
    problem = small_problem()
    gd = cdl.solve(problem, cdl.GradientDescent("adam", lr=0.02), max_iter=150)
    gd.save(tmp_path / "gd")
    sol = cdl.solve(problem, CasadiDirect(), init=tmp_path / "gd", max_iter=300)
    assert sol.solver["init"] == "warm_start" and sol.stats["warm_start"] is True
    assert sol.cost["total"] <= gd.cost["total"]
    assert sol.history[0]["cost"] == pytest.approx(gd.cost["total"], rel=1e-10)
    assert grad_norm(problem, sol.params) < 1e-6


def test_frozen_readout_is_not_changed():
    problem = small_problem(train_readout=False)
    init = random_params(problem.formulation, seed=8)
    res = run(problem, CasadiDirect(), init=init, max_iter=100)
    assert res.status == "converged"
    assert np.array_equal(res.params.W, init.W) and np.array_equal(res.params.c, init.c)
    assert grad_norm(problem, res.params) < 1e-6  # ∇ w.r.t. (A, b) only


def test_stopping_rules_and_status():
    problem = small_problem()
    sol = cdl.solve(problem, CasadiDirect(), max_iter=3)
    assert sol.status == "max_iter" and sol.iterations == 3
    assert sol.stats["ipopt_status"] == "Maximum_Iterations_Exceeded"
    assert [h["iteration"] for h in sol.history] == [0, 1, 2, 3]
    start = sol.history[0]["cost"]
    sol = cdl.solve(problem, CasadiDirect(), max_iter=100, target_cost=start - 1e-3)
    assert sol.status == "target_reached" and sol.history[-1]["cost"] <= start - 1e-3
    assert sol.iterations < 100
    # the monitor's clock: a tiny budget ends the run
    mon = Monitor(Stopping(100, max_time=1e-6))
    res = CasadiDirect().run(problem, as_params(problem, sol.params), mon)
    assert res.status == "max_time"


# --------------------------------------------------------------------------- certificates


def test_dynamics_multipliers_are_the_pmp_costates(monkeypatch):
    """At a multiple-shooting KKT point the multipliers of ``x(t+1) − f(x(t), θ_t) = 0``
    are the costates ``p(t+1)`` of :func:`controldl.problem.costates` (sign +1, scale 1);
    the running term makes every layer's recursion carry its own source term."""
    problem = small_problem(running=0.3, smooth=0.1)
    seen = {}
    original = transcription.Transcription.dynamics_multipliers

    def capture(self, lam_g):
        seen["lam"] = original(self, lam_g)
        return seen["lam"]

    monkeypatch.setattr(transcription.Transcription, "dynamics_multipliers", capture)
    res = run(problem, CasadiDirect(transcription="multiple", tol=1e-11), max_iter=200)
    assert res.status == "converged"
    assert res.stats["costate_multiplier_gap"] <= 1e-6
    # the measure discriminates: the other sign, or the multipliers of N·J, are far off
    lam = seen["lam"]
    assert lam.shape == (problem.layers, problem.data.n_train, problem.width)
    gap = certificates.costate_multiplier_gap
    assert gap(problem, res.params, -lam) > 1.0
    assert gap(problem, res.params, problem.data.n_train * lam) > 1.0


def test_the_certificate_is_read_against_the_infeasibility_at_an_acceptable_exit():
    """The certificate comes with IPOPT's primal and dual infeasibility and the distance
    of IPOPT's states to the simulated ones: at a converged exit all are round-off; at an
    acceptable exit (loose tolerances) the states are off by about ``inf_pr`` and the gap
    is of the order of what the unconverged KKT conditions explain (the state gap and the
    dual infeasibility relative to the costates), well above round-off. Reading the
    states in the wrong order makes the converged state gap O(1) (checked)."""
    problem = small_problem()
    done = run(problem, CasadiDirect(transcription="multiple", tol=1e-10))
    cert = done.stats["costate_multiplier_certificate"]
    assert done.status == "converged" and cert["ipopt_status"] == "Solve_Succeeded"
    assert cert["gap"] == done.stats["costate_multiplier_gap"] <= 1e-8
    assert cert["state_gap"] <= 1e-12 and cert["primal_infeasibility"] <= 1e-12
    loose = run(problem, CasadiDirect(transcription="multiple", ipopt_options=(
        ("tol", "1e-30"), ("acceptable_tol", "1e-3"), ("acceptable_iter", "1"),
        ("acceptable_constr_viol_tol", "1e-4"))))
    cert = loose.stats["costate_multiplier_certificate"]
    assert loose.status == "acceptable" and cert["ipopt_status"] == "Solved_To_Acceptable_Level"
    x_scale = float(np.max(np.abs(problem.initial_states())))
    assert 1e-8 < cert["state_gap"] <= 10 * cert["primal_infeasibility"] * problem.layers / x_scale
    explained = max(cert["state_gap"], cert["dual_infeasibility"] / cert["costate_scale"])
    assert 1e-8 < cert["gap"] <= 10 * explained


def test_single_shooting_reports_no_multiplier_gap():
    res = run(small_problem(), CasadiDirect(transcription="single"), max_iter=5)
    assert "costate_multiplier_gap" not in res.stats


# --------------------------------------------------------------------------- statuses


def test_ipopt_status_table():
    expected = {
        "Solve_Succeeded": Status.CONVERGED,
        "Solved_To_Acceptable_Level": Status.ACCEPTABLE,
        "Feasible_Point_Found": Status.STALLED,
        "Search_Direction_Becomes_Too_Small": Status.STALLED,
        "Maximum_Iterations_Exceeded": Status.MAX_ITER,
        "Maximum_CpuTime_Exceeded": Status.MAX_TIME,
        "Maximum_WallTime_Exceeded": Status.MAX_TIME,
        "Diverging_Iterates": Status.DIVERGED,
        "Restoration_Failed": Status.FAILED,
        "Error_In_Step_Computation": Status.FAILED,
        "Invalid_Number_Detected": Status.FAILED,
        "Infeasible_Problem_Detected": Status.FAILED,
        "Insufficient_Memory": Status.FAILED,
        "Some_Future_Status": Status.FAILED,
        "User_Requested_Stop": Status.INTERRUPTED,
    }
    for ret, status in expected.items():
        assert ipopt.status_of(ret, None) is status, ret
    assert ipopt.status_of("User_Requested_Stop", "target_reached") is Status.TARGET_REACHED
    assert ipopt.hint_of("Solve_Succeeded", Status.CONVERGED) is None
    hint = ipopt.hint_of("Restoration_Failed", Status.FAILED)
    assert "restoration" in hint and Status.FAILED.hint("direct") in hint


def test_acceptable_and_time_limits_are_not_converged():
    problem = small_problem()
    acceptable = run(problem, CasadiDirect(ipopt_options=(
        ("tol", "1e-30"), ("acceptable_tol", "1e-1"), ("acceptable_iter", "1"))))
    assert acceptable.stats["ipopt_status"] == "Solved_To_Acceptable_Level"
    assert acceptable.status == Status.ACCEPTABLE and acceptable.status != "converged"
    timed = run(problem, CasadiDirect(ipopt_options=(("max_cpu_time", "1e-9"),)))
    assert timed.stats["ipopt_status"] == "Maximum_CpuTime_Exceeded"
    assert timed.status == Status.MAX_TIME


# --------------------------------------------------------------------------- work, setup


def test_work_and_stationarity_are_recorded():
    problem = small_problem()
    for transcription_ in ("single", "multiple"):
        sol = cdl.solve(problem, CasadiDirect(transcription=transcription_, tol=1e-10),
                        max_iter=200)
        works = [h["work"] for h in sol.history]
        assert works[0] == 0 and bool(np.all(np.diff(works) >= 0))
        assert works[-1] == pytest.approx(sol.stats["work"])
        st = sol.stats
        # exact Hessian: one first-derivative and one Hessian evaluation per iteration at
        # least, the Hessian weighted by its measured time
        assert st["work_first_order"] >= sol.iterations and st["work_hessian"] >= sol.iterations
        assert st["work_hessian_weight"] > 0
        expected = (st["work_first_order"] + 0.5 * st["work_values"]
                    + st["work_hessian_weight"] * st["work_hessian"])
        assert st["work"] == pytest.approx(expected)
        assert st["stationarity"] == pytest.approx(cdl.stationarity(problem, sol.params))
        assert st["stationarity"] < 1e-6
        assert st["build_time_s"] > 0


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs a C compiler")
def test_codegen_gives_the_same_solution():
    # single shooting with its own exact Hessian: a short gcc run
    problem = small_problem()
    options = dict(hessian="exact", tol=1e-10)
    vm = run(problem, CasadiDirect(**options))
    cg = run(problem, CasadiDirect(codegen=True, **options))
    assert cg.stats["codegen"] is True and cg.status == vm.status == "converged"
    assert cg.iterations == vm.iterations
    for a, b in zip(vm.params, cg.params, strict=True):
        assert np.max(np.abs(np.asarray(a) - np.asarray(b))) < 1e-8
