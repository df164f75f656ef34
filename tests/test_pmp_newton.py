"""pmp-newton (controldl.solvers.pmp.newton): the layer-wise trust-region Newton method.

The predicted decrease against an independent autodiff model of the step actually
taken (momentum included), a low cost on a small ring, a width above the input dimension,
non-finite models ending ``failed``, the stationarity and work in the history, no
recompilation when the numbers change.

Sizes are tiny and most tests share one compiled iteration (one formulation structure
and one set of structural options).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import controldl as cdl
from controldl import problem as P
from controldl.solution import solver_family
from controldl.solvers import base
from controldl.solvers.pmp import newton_algebra as LA
from controldl.solvers.pmp import newton_step as NS
from controldl.solvers.pmp import newton_work as NW
from controldl.solvers.pmp.newton import PMPNewton
from controldl.status import Status


def ring_problem(**options):
    """A small ring (2-D inputs) in width 3: ``d > n``, so the padded inputs make the
    layer-0 Hessian singular in the columns of ``A_0`` they multiply."""
    base_options = dict(width=3, layers=4, horizon=2.0, l2=1e-3, readout_l2=1e-3)
    base_options.update(options)
    return cdl.Problem(cdl.data.ring(80, seed=0), **base_options)


FORM = ring_problem().formulation


# --------------------------------------------------------------------------- the ratio


@jax.jit
def _reference_models(params, X0, Y):
    """Per layer ``g_t = ∇_θ H_t``, ``C_t = -∇²_θ H_t`` in ``θ_t = (A_t, b_t)`` flattened,
    and the readout's ``-∇R``, ``∇²R`` in ``(W, c)``: plain autodiff of
    problem.hamiltonian and problem.readout_objective (no structure used)."""
    form = FORM
    L, d, m = form.layers, form.width, form.n_outputs
    xs = P.trajectory(form, params, X0)
    ps = P.costates(form, params, xs, Y)

    def H(v, X, P_next, t):
        A, b = v[: d * d].reshape(d, d), v[d * d:]
        return P.hamiltonian(form, X, P_next, A, b, params.W, params.c, Y, t > 0)

    v = jnp.concatenate([params.A.reshape(L, -1), params.b], axis=1)
    args = (v, xs[:-1], ps[1:], jnp.arange(L))
    g, C = jax.vmap(jax.grad(H))(*args), -jax.vmap(jax.hessian(H))(*args)

    def R(phi):
        return P.readout_objective(form, phi[: m * d].reshape(m, d), phi[m * d:], xs, Y)

    phi = jnp.concatenate([params.W.ravel(), params.c])
    return g, C, -jax.grad(R)(phi), jax.hessian(R)(phi)


def reference_pred(params, new, X0, Y):
    """The model's decrease of J for the step ``D = new - params``:
    ``Σ_t (g_t·D_t - ½D_tᵀ|C_t|D_t) + gR·Dr - ½DrᵀCR Dr`` (``|·|`` the absolute
    eigenvalues) from :func:`_reference_models`."""
    g, C, gR, CR = (np.asarray(a) for a in _reference_models(params, X0, Y))
    L = FORM.layers
    D = np.concatenate([np.asarray(new.A - params.A).reshape(L, -1),
                        np.asarray(new.b - params.b)], axis=1)
    lam, U = np.linalg.eigh(C)
    B = (U * np.abs(lam)[:, None, :]) @ np.swapaxes(U, 1, 2)
    pred = np.sum(g * D) - 0.5 * np.einsum("tk,tkl,tl->", D, B, D)
    Dr = np.concatenate([np.ravel(new.W - params.W), np.asarray(new.c - params.c)])
    return float(pred + gR @ Dr - 0.5 * Dr @ CR @ Dr)


def test_predicted_decrease_is_for_the_step_taken_with_momentum():
    """A momentum trial θ_k + δ + β·m: its pred, and so the ratio that drives ρ, is the
    model's decrease for that whole step, not for δ alone."""
    problem = ring_problem()
    form = problem.formulation
    X0, Y = problem.initial_states(), problem.targets()
    params = P.init_params(form, seed=0)
    k = jax.random.split(jax.random.PRNGKey(1), 4)
    prev = P.Params(*(0.05 * jax.random.normal(ki, jnp.shape(a))
                      for ki, a in zip(k, params, strict=True)))
    solver = PMPNewton(momentum=0.9)
    st, knobs = solver.structure(), solver.knobs()

    @jax.jit
    def trial(params, prev):
        ex = NS.expand(form, st, knobs, params, X0, Y)
        return NS.trial(form, st, knobs, ex, prev, jnp.asarray(1.0), jnp.asarray(True), X0, Y)

    t = trial(params, prev)
    ref = reference_pred(params, t.params, X0, Y)
    np.testing.assert_allclose(float(t.pred), ref, rtol=1e-8)
    J0 = P.cost(form, params, X0, Y)
    np.testing.assert_allclose(float(t.ratio), float((J0 - t.J) / ref), rtol=1e-8)


# --------------------------------------------------------------------------- whole solves


@pytest.fixture(scope="module")
def ring_solution():
    return cdl.solve(ring_problem(), PMPNewton(), seed=0, max_iter=100)


def test_reaches_a_low_cost_on_a_small_ring(ring_solution):
    costs = np.array([e["cost"] for e in ring_solution.history])
    assert np.all(np.diff(costs) <= 0.0)  # every accepted step decreases J
    assert costs[-1] < 0.1 * costs[0], ring_solution.summary()
    assert ring_solution.train_accuracy == 1.0


def test_history_records_stationarity_trials_and_work(ring_solution):
    """The history's stationarity is controldl.stationarity at that iterate; the trial
    counts add up; the work grows by the count of newton_work per iteration."""
    problem, sol = ring_problem(), ring_solution
    last = sol.history[-1]
    np.testing.assert_allclose(last["stationarity"], cdl.stationarity(problem, sol.params),
                               rtol=1e-8)
    entries = sol.history[1:]
    assert sum(e["trials"] for e in entries) == sol.stats["trials"]
    assert sum(e["rejected"] for e in entries) == sol.stats["rejected"]
    assert all(e["trials"] == e["rejected"] + 1 for e in entries)
    assert all(e["inner_iterations"] == e["trials"] for e in entries)  # inner_steps = 1
    shape = PMPNewton().work_shape(problem)
    steps = np.diff([e["work"] for e in sol.history])
    expected = [NW.iteration_work(shape, e["trials"], True) for e in entries]
    np.testing.assert_allclose(steps, expected, rtol=1e-12)
    assert sol.history[0]["work"] == 1.0  # the stationarity at the start


def test_new_numbers_do_not_recompile(ring_solution):
    """The formulation's weights and the numeric options are traced: another l2, rho
    and momentum reuse the compiled iteration."""
    again = cdl.solve(ring_problem(l2=2e-3, horizon=1.5), PMPNewton(rho=0.5, momentum=0.5,
                                                                    rho_increase=3.0),
                      init=ring_solution, max_iter=3)
    assert again.compile_time_s < 0.5, again.compile_time_s
    assert again.iterations >= 1 and np.isfinite(again.cost["total"])


def test_wide_state_singular_layer_model_runs():
    """d > n without l2 from the flat start: the layer-0 curvature is exactly singular
    (the padded inputs are zero); the Levenberg-shifted Cholesky still solves, and the
    plain one does not."""
    problem = ring_problem(l2=0.0)
    form = problem.formulation
    X0, Y = problem.initial_states(), problem.targets()
    params = P.init_params(form, seed=0)
    solver = PMPNewton()
    ex = jax.jit(lambda p: NS.expand(form, solver.structure(), solver.knobs(), p, X0, Y))(
        params)
    B0, g0 = ex.B[0], ex.g[0]
    assert np.min(np.linalg.eigvalsh(B0)) <= 1e-12 * np.max(np.abs(B0))  # singular
    plain = jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(B0), g0)
    assert not np.all(np.isfinite(plain))
    delta = LA.psd_solve(B0, g0)
    assert np.all(np.isfinite(delta))
    sol = cdl.solve(problem, solver, seed=0, max_iter=20)
    costs = np.array([e["cost"] for e in sol.history])
    assert sol.status in ("max_iter", "converged"), sol.summary()
    assert np.all(np.isfinite(costs)) and costs[-1] < costs[0]


def test_non_finite_model_fails_with_the_pmp_hint():
    """Inputs so large that the models' sums over the samples overflow (the cost stays
    finite: tanh saturates): the solve ends failed, keeps the start, and its hint is the
    Pontryagin family's (no learning rate)."""
    data = cdl.data.ring(80, seed=0)
    huge = dataclasses.replace(data, X_train=data.X_train * 1e160)
    problem = cdl.Problem(huge, width=3, layers=4, horizon=2.0, l2=1e-3, readout_l2=1e-3)
    sol = cdl.solve(problem, PMPNewton(), seed=0, max_iter=5)
    assert sol.status == Status.FAILED and sol.iterations == 0
    assert "not finite" in sol.stats["message"]
    assert np.isfinite(sol.cost["total"])
    assert solver_family(sol.solver["name"]) == "pmp"
    assert "lr" not in Status.FAILED.hint("pmp")


def test_factorization_failure_fails(monkeypatch):
    """A Newton solve that returns NaN (a failed factorization) ends failed, not
    diverged or stalled, with the last finite iterate."""
    monkeypatch.setattr(LA, "psd_solve", lambda M, g: jnp.full_like(g, jnp.nan))
    base.COMPILED.clear()
    try:
        sol = cdl.solve(ring_problem(), PMPNewton(), seed=0, max_iter=5)
    finally:
        base.COMPILED.clear()  # drop the iteration compiled with the patched solve
    assert sol.status == Status.FAILED and sol.iterations == 0, sol.summary()
    assert np.isfinite(sol.cost["total"])


@pytest.mark.parametrize("options,message", [
    (dict(rho=0.0), "rho must be >"),
    (dict(rho=1e11), "rho_min <= rho <= rho_max"),
    (dict(rho_increase=1.0), "rho_increase"),
    (dict(sufficient_decrease=1.0), "sufficient_decrease"),
    (dict(momentum=1.0), "momentum"),
    (dict(curvature="newton"), "curvature"),
    (dict(dtype="float16"), "dtype"),
    (dict(batch_size=0), "batch_size"),
    (dict(costate_weight=-1.0), "costate_weight"),
    (dict(max_retries=True), "max_retries"),
    (dict(layer_block=0), "layer_block"),
    (dict(tol=float("nan")), "tol must be finite"),
])
def test_bad_options_raise(options, message):
    with pytest.raises(ValueError, match=message):
        PMPNewton(**options)
