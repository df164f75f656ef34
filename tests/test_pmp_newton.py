"""pmp-newton (controldl.solvers.pmp.newton): the layer-wise trust-region Newton method.

The predicted decrease against an independent autodiff model of the step actually
taken (momentum included), a low cost on a small ring, a width above the input dimension,
non-finite models ending ``failed``, the stationarity and work in the history, no
recompilation when the numbers change.

Sizes are tiny and most tests share one compiled iteration (one formulation structure
and one set of structural options).
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import controldl as cdl
from controldl import problem as P
from controldl.solvers import base
from controldl.solvers.pmp import newton_algebra as LA
from controldl.solvers.pmp import newton_models as NM
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


# --------------------------------------------------------------------------- the models


def random_state(form, N, seed):
    """Random controls, states and costates of the right shapes (not a trajectory: the
    models are pointwise in them)."""
    k = jax.random.split(jax.random.PRNGKey(seed), 6)
    L, d, m = form.layers, form.width, form.n_outputs
    params = P.Params(0.7 * jax.random.normal(k[0], (L, d, d)),
                      0.3 * jax.random.normal(k[1], (L, d)),
                      jax.random.normal(k[2], (m, d)), 0.1 * jax.random.normal(k[3], (m,)))
    xs = jax.random.normal(k[4], (L + 1, N, d))
    ps = jax.random.normal(k[5], (L + 1, N, d)) / N
    return params, xs, ps


def reference_layer(form, w, V, V_ref, X, X_next, P_next, s):
    """One layer's augmented-Hamiltonian model by plain autodiff of problem.hamiltonian
    and problem.step_batch: ``g``, ``C``, ``G``, ``res2``, ``g_res`` (``s`` its weight)."""
    d, N, h = form.width, X.shape[0], form.h
    W, c = jnp.zeros((form.n_outputs, d)), jnp.zeros((form.n_outputs,))
    Y = jnp.zeros((N, form.n_outputs))

    def H(v):
        return P.hamiltonian(form, X, P_next, *LA.split_rows(d, d, v), W, c, Y, False)

    def f(v):
        return P.step_batch(form, X, *LA.split_rows(d, d, v))

    def gx(v):
        A, b = LA.split_rows(d, d, v)
        return jax.grad(P.hamiltonian, argnums=1)(form, X, P_next, A, b, W, c, Y, False)

    cx, cp = s / (N * h), w * N / (h * s)
    rx, rp = (X_next - f(V)).reshape(-1), (gx(V_ref) - gx(V)).reshape(-1)
    Jx, Jp = jax.jacfwd(f)(V).reshape(-1, V.size), jax.jacfwd(gx)(V).reshape(-1, V.size)
    return {"g": jax.grad(H)(V), "C": -jax.hessian(H)(V),
            "G": LA.ridge(cx * Jx.T @ Jx + cp * Jp.T @ Jp),
            "res2": cx * rx @ rx + cp * rp @ rp, "g_res": cx * Jx.T @ rx + cp * Jp.T @ rp}


def reference_readout(form, w, phi, xs, Y, z_ref, p_ref):
    """The readout's model by plain autodiff of problem.readout_objective and
    problem.terminal_costate."""
    m, d, N = form.n_outputs, form.width, xs.shape[1]

    def R(f):
        return P.readout_objective(form, *LA.split_rows(m, d, f), xs, Y)

    def z(f):
        W, c = LA.split_rows(m, d, f)
        return xs[-1] @ W.T + c

    def pL(f):
        return P.terminal_costate(form, *LA.split_rows(m, d, f), xs[-1], Y)

    dl = jax.vmap(jax.grad(lambda z_, t: cdl.model.loss(P.JAX, form.loss, z_, t)))(z(phi), Y)
    sz = jnp.sqrt(jnp.mean(jnp.sum(dl ** 2, -1)))
    Jz, Jp = jax.jacfwd(z)(phi).reshape(-1, phi.size), jax.jacfwd(pL)(phi).reshape(-1, phi.size)
    rz, rp = (z_ref - z(phi)).reshape(-1), (p_ref - pL(phi)).reshape(-1)
    cz, cp = sz / N, w * N / sz
    return {"g": -jax.grad(R)(phi), "C": jax.hessian(R)(phi),
            "res2": cz * rz @ rz + cp * rp @ rp, "g_res": cz * Jz.T @ rz + cp * Jp.T @ rp,
            "G": LA.ridge(cz * Jz.T @ Jz + cp * Jp.T @ Jp)}


def test_models_match_plain_autodiff():
    """The structured models (pre-activation chain rule, Kronecker sums) equal plain
    autodiff, penalty residuals and Gauss–Newton matrices included; three classes make
    the readout rectangular (m = 3); blocks of 2 over 3 layers (the last block overlaps)
    give the same models; the solver's costates are problem.costates."""
    data = cdl.data.make_dataset("spheres", 9, seed=0)
    data = dataclasses.replace(data, y_train=np.arange(9) % 3, n_classes=3)
    problem = cdl.Problem(data, width=3, layers=3, horizon=1.2, loss="cross_entropy",
                          l2=0.05, readout_l2=0.1, smooth=0.05)
    form = problem.formulation
    params, xs, ps = random_state(form, 9, seed=1)
    Y = jnp.asarray(P.encode_targets(form, np.asarray(data.y_train)))
    m, d = form.n_outputs, form.width
    V = LA.join_rows(params.A, params.b)
    V_ref = V + 0.05 * jax.random.normal(jax.random.PRNGKey(9), V.shape)
    phi = LA.join_rows(params.W, params.c)
    W0, c0 = LA.split_rows(m, d, phi + 0.1 * jax.random.normal(jax.random.PRNGKey(3), phi.shape))
    z_ref, p_ref = xs[-1] @ W0.T + c0, P.terminal_costate(form, W0, c0, xs[-1], Y)

    @jax.jit
    def solver_side(V, V_ref, phi):
        gx_ref = NM.layer_models(form, 0.7, V_ref, xs[:-1], xs[1:], ps[1:]).gx
        layers = NM.layer_models(form, 0.7, V, xs[:-1], xs[1:], ps[1:], gx_ref)
        blocked = NM.blocked_layer_models(form, 0.7, V, xs, ps, 2)
        full = NM.blocked_layer_models(form, 0.7, V, xs, ps, None)
        readout = NM.readout_model(form, 0.5, phi, xs, Y, z_ref, p_ref)
        return (layers._asdict(), readout._asdict(), blocked, full,
                NM.costates(form, params, xs, Y))

    @jax.jit
    def reference(V, V_ref, phi):
        s = NM.penalty_scale(ps[1:])
        layers = jax.vmap(functools.partial(reference_layer, form, 0.7))(
            V, V_ref, xs[:-1], xs[1:], ps[1:], s)
        return layers, reference_readout(form, 0.5, phi, xs, Y, z_ref, p_ref)

    layers, readout, blocked, full, costates = solver_side(V, V_ref, phi)
    for part, got, ref in zip(("layers", "readout"), (layers, readout),
                              reference(V, V_ref, phi), strict=True):
        for key in ("g", "C", "G", "res2", "g_res"):
            np.testing.assert_allclose(got[key], ref[key], rtol=1e-9, atol=1e-12,
                                       err_msg=f"{part}: {key}")
    for key in ("H", "g", "C", "G"):
        np.testing.assert_allclose(getattr(blocked, key), getattr(full, key), rtol=1e-12,
                                   atol=1e-14)
    np.testing.assert_allclose(costates, P.costates(form, params, xs, Y), rtol=1e-12,
                               atol=1e-15)


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
    # the stationarity at the start comes from the first step's costates (2/3 of a
    # gradient: the step again and the control gradient) and is the one autodiff gives
    # at the initial controls
    assert sol.history[0]["work"] == NW.start_work(shape) == 2.0 / 3.0
    init = cdl.init_params(problem.formulation, seed=0)
    np.testing.assert_allclose(sol.history[0]["stationarity"],
                               cdl.stationarity(problem, init), rtol=1e-9)


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
    assert sol.message == Status.FAILED.describe("pmp") and sol.exit_code == 1
    assert "learning rate" not in sol.message and "lr" not in sol.message


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
