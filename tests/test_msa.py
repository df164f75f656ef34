"""MSA and E-MSA (controldl.solvers.msa): the models against plain autodiff, the step
against the gradient, agreement with L-BFGS, monotonicity, l1, constraints, float32.

Sizes are tiny and the compiled iterations are shared between tests (one per
formulation and structural options), so the file stays well under a minute.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import controldl as cdl
from controldl import problem as P
from controldl.solvers import msa as M
from controldl.solvers.msa import EMSA, MSA

# --------------------------------------------------------------------------- helpers


def small_problem(**options):
    """The small, well-conditioned problem of the issue (l2 1e-3, readout_l2 1e-2)."""
    data = cdl.data.moons(40, seed=1)
    base = dict(width=2, layers=3, horizon=1.0, l2=1e-3, readout_l2=1e-2)
    base.update(options)
    return cdl.Problem(data, **base)


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


def reference_layer_model(form, w, V, V_ref, X, X_next, P_next, with_running, s):
    """The augmented-Hamiltonian model of one layer by plain autodiff of
    problem.hamiltonian and problem.step_batch (no structure used); ``s`` is the
    layer's penalty weight."""
    sform = dataclasses.replace(form, l1=0.0)
    d, N, h = form.width, X.shape[0], form.h
    W = jnp.zeros((form.n_outputs, d))
    c = jnp.zeros((form.n_outputs,))
    Y = jnp.zeros((N, form.n_outputs))

    def H(v):
        return P.hamiltonian(sform, X, P_next, *M._split_rows(d, d, v), W, c, Y, with_running)

    def f(v):
        return P.step_batch(sform, X, *M._split_rows(d, d, v))

    def gx(v):
        A, b = M._split_rows(d, d, v)
        return jax.grad(P.hamiltonian, argnums=1)(sform, X, P_next, A, b, W, c, Y, with_running)

    cx, cp = s / (N * h), w * N / (h * s)
    rx, rp = (X_next - f(V)).reshape(-1), (gx(V_ref) - gx(V)).reshape(-1)
    Jx, Jp = jax.jacfwd(f)(V).reshape(-1, V.size), jax.jacfwd(gx)(V).reshape(-1, V.size)
    return {"g": jax.grad(H)(V), "C": -jax.hessian(H)(V),
            "G": M._ridge(cx * Jx.T @ Jx + cp * Jp.T @ Jp),
            "res2": cx * rx @ rx + cp * rp @ rp, "g_res": cx * Jx.T @ rx + cp * Jp.T @ rp}


# --------------------------------------------------------------------------- the models


def test_models_and_costate_gradient_match_autodiff():
    """The structured models (pre-activation chain rule, Kronecker sums) equal plain
    autodiff of problem.hamiltonian / step_batch / readout_objective / terminal_costate,
    penalty residuals and Gauss–Newton matrices included; three classes make the readout
    rectangular (m = 3). And through the solver's own path (costates, layer and readout
    models, smoothness gradient) the costates are exact backpropagation: the models'
    gradients are -∇J by autodiff."""
    data = cdl.data.make_dataset("spheres", 9, seed=0)
    data = dataclasses.replace(data, y_train=np.arange(9) % 3, n_classes=3)
    problem = cdl.Problem(data, width=3, layers=3, horizon=1.2, loss="cross_entropy",
                          l2=0.05, readout_l2=0.1, smooth=0.05)
    form = problem.formulation
    params, xs, ps = random_state(form, 9, seed=1)
    X0 = problem.initial_states()
    Y = jnp.asarray(P.encode_targets(form, np.asarray(data.y_train)))
    m, d, N = form.n_outputs, form.width, 9
    V = M._join_rows(params.A, params.b)
    V_ref = V + 0.05 * jax.random.normal(jax.random.PRNGKey(9), V.shape)
    phi = M._join_rows(params.W, params.c)
    phi_ref = phi + 0.1 * jax.random.normal(jax.random.PRNGKey(3), phi.shape)
    W0, c0 = M._split_rows(m, d, phi_ref)
    z_ref = xs[-1] @ W0.T + c0
    p_ref = P.terminal_costate(form, W0, c0, xs[-1], Y)

    def models(V, V_ref, phi, phi_ref, xs, ps, z_ref, p_ref):
        gx_ref = M.layer_models(form, "augmented", 0.7, V_ref, V_ref, xs[:-1], xs[1:],
                                ps[1:], None)["gx"]
        layers = M.layer_models(form, "augmented", 0.7, V, V_ref, xs[:-1], xs[1:], ps[1:],
                                gx_ref)
        readout = M.readout_model(form, "augmented", 0.5, phi, phi_ref, xs, Y, z_ref, p_ref,
                                  True)
        return layers, readout

    def gradient_through_the_solver(params):
        xs = P.trajectory(form, params, X0)
        ps = M.costates(form, params, xs, Y)
        V = M._join_rows(params.A, params.b)
        lm = M.layer_models(form, "augmented", 1.0, V, V, xs[:-1], xs[1:], ps[1:], None)
        gS = jax.grad(lambda v: P.smooth_cost(form, *M._split_rows(d, d, v)))(V)
        phi = M._join_rows(params.W, params.c)
        z = xs[-1] @ params.W.T + params.c
        rm = M.readout_model(form, "augmented", 1.0, phi, phi, xs, Y, z, ps[-1], False)
        grad = jax.grad(lambda p: P.cost(form, p, X0, Y))(params)
        return (ps, P.costates(form, params, xs, Y), lm["g"] - gS,
                -M._join_rows(grad.A, grad.b), rm["g"], -M._join_rows(grad.W, grad.c))

    def R(f):
        return P.readout_objective(form, *M._split_rows(m, d, f), xs, Y)

    def z(f):
        W, c = M._split_rows(m, d, f)
        return xs[-1] @ W.T + c

    def pL(f):
        return P.terminal_costate(form, *M._split_rows(m, d, f), xs[-1], Y)

    @jax.jit
    def reference(V, V_ref, phi):
        layer = functools.partial(reference_layer_model, form, 0.7)
        sigma = N * jnp.sqrt(jnp.mean(jnp.sum(ps[1:] ** 2, -1), -1))  # RMS of N p(t+1)
        s = sigma ** 2 / jnp.mean(sigma)
        layers = jax.vmap(layer)(V, V_ref, xs[:-1], xs[1:], ps[1:], jnp.arange(3) > 0, s)
        dl = jax.vmap(jax.grad(lambda z, t: cdl.model.loss(P.JAX, form.loss, z, t)))(
            z(phi), Y)
        sz = jnp.sqrt(jnp.mean(jnp.sum(dl ** 2, -1)))
        Jz = jax.jacfwd(z)(phi).reshape(-1, phi.size)
        Jp = jax.jacfwd(pL)(phi).reshape(-1, phi.size)
        rz, rp = (z_ref - z(phi)).reshape(-1), (p_ref - pL(phi)).reshape(-1)
        cz, cp = sz / N, 0.5 * N / sz
        readout = {"g": -jax.grad(R)(phi), "C": jax.hessian(R)(phi),
                   "res2": cz * rz @ rz + cp * rp @ rp,
                   "g_res": cz * Jz.T @ rz + cp * Jp.T @ rp,
                   "G": M._ridge(cz * Jz.T @ Jz + cp * Jp.T @ Jp)}
        return layers, readout

    @jax.jit
    def solver_side(params, V, V_ref, phi, phi_ref, xs, ps, z_ref, p_ref):
        return (models(V, V_ref, phi, phi_ref, xs, ps, z_ref, p_ref),
                gradient_through_the_solver(params))

    got, through = solver_side(params, V, V_ref, phi, phi_ref, xs, ps, z_ref, p_ref)
    ref = reference(V, V_ref, phi)
    for part, got_part, ref_part in zip(("layers", "readout"), got, ref, strict=True):
        for key in ("g", "C", "G", "res2", "g_res"):
            np.testing.assert_allclose(got_part[key], ref_part[key], rtol=1e-9, atol=1e-12,
                                       err_msg=f"{part}: {key}")
    ps, ps_core, g_layers, minus_grad_layers, g_readout, minus_grad_readout = through
    np.testing.assert_allclose(ps, ps_core, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(g_layers, minus_grad_layers, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(g_readout, minus_grad_readout, rtol=1e-9, atol=1e-12)


# --------------------------------------------------------------------------- one iteration


def test_tiny_step_decreases_J_like_a_gradient_step():
    """With a large ρ one E-MSA iteration is a small preconditioned gradient step: the
    actual decrease of J matches its first-order prediction ∇J·Δθ < 0."""
    solver = EMSA(rho=1e6, rho_min=1e6)
    problem = small_problem()
    form = problem.formulation
    X0, Y = problem.initial_states(), problem.targets()
    init = P.init_params(form, seed=0)
    sol = cdl.solve(problem, solver, init=init, max_iter=1)
    assert sol.iterations == 1 and sol.history[-1]["accepted"]
    new = P.Params(*(jnp.asarray(v) for v in sol.params))
    step = jax.tree.map(jnp.subtract, new, init)
    cost = jax.jit(lambda p: P.cost(form, p, X0, Y))
    grad = jax.jit(jax.grad(lambda p: P.cost(form, p, X0, Y)))(init)
    first_order = sum(jnp.vdot(g, s) for g, s in zip(grad, step, strict=True))
    actual = cost(new) - cost(init)
    assert first_order < 0
    np.testing.assert_allclose(actual, first_order, rtol=1e-3)


# --------------------------------------------------------------------------- whole solves


@pytest.fixture(scope="module")
def warm_start():
    """50 L-BFGS iterations from seed 0: a common start inside the basin of one local
    minimum (the problem is not convex: from a cold start the two methods may end in
    different local minima, which says nothing about either)."""
    return cdl.solve(small_problem(), cdl.GradientDescent("lbfgs"), seed=0, max_iter=50)


@pytest.fixture(scope="module")
def emsa_solution(warm_start):
    return cdl.solve(small_problem(), EMSA(tol=1e-10), init=warm_start, max_iter=300)


def test_emsa_reaches_the_lbfgs_cost(emsa_solution, warm_start):
    ref = cdl.solve(small_problem(), cdl.GradientDescent("lbfgs"), init=warm_start,
                    max_iter=3000)
    assert emsa_solution.status == "converged", emsa_solution.summary()
    assert ref.status == "converged", ref.summary()
    np.testing.assert_allclose(emsa_solution.cost["total"], ref.cost["total"], rtol=1e-6)


def test_cost_is_monotone_and_diagnostics_are_recorded(emsa_solution):
    costs = np.array([e["cost"] for e in emsa_solution.history])
    assert np.all(np.diff(costs) <= 0.0)
    stats = emsa_solution.stats
    assert len(stats["pmp_residual"]) == 3 and stats["stationarity"] < 1e-6
    assert len(stats["rho"]) == stats["accepted"] == emsa_solution.iterations
    assert all(e["accepted"] for e in emsa_solution.history[1:])
    assert {"rho", "rejected", "ratio"} <= set(emsa_solution.history[1])


def test_warm_start_does_not_recompile(emsa_solution):
    again = cdl.solve(small_problem(), EMSA(tol=1e-10, rho=0.5), init=emsa_solution,
                      max_iter=5)
    assert again.compile_time_s < 0.05
    assert again.cost["total"] <= emsa_solution.cost["total"] * (1 + 1e-12)


def test_stalls_when_no_trial_can_pass():
    sol = cdl.solve(small_problem(), EMSA(sufficient_decrease=0.999, max_retries=2),
                    seed=0, max_iter=50)
    assert sol.status == "stalled"
    costs = [e["cost"] for e in sol.history]
    assert costs == sorted(costs, reverse=True)


def test_every_term_and_constraint_l1_zeros_and_projection():
    """MSA on an mlp with l1 (prox: exact zeros), smooth (Jacobi splitting), a running
    cost, and both constraints (projection) at once; J stays monotone."""
    problem = small_problem(width=3, l1=0.05, smooth=0.05, running=0.2, lipschitz_bound=0.3,
                            box_bound=0.4, model="mlp", activation="softplus")
    sol = cdl.solve(problem, MSA(prox_iters=10), seed=0, max_iter=8)
    A, b = np.asarray(sol.params.A), np.asarray(sol.params.b)
    assert np.sum(A == 0.0) + np.sum(b == 0.0) > 0
    assert np.all(P.lipschitz_constants(problem.formulation, sol.params) <= 0.3 + 1e-9)
    assert np.max(np.abs(A)) <= 0.4 + 1e-9 and np.max(np.abs(b)) <= 0.4 + 1e-9
    costs = np.array([e["cost"] for e in sol.history])
    assert np.all(np.diff(costs) <= 0.0) and costs[-1] < costs[0]
    assert sol.cost["l1"] > 0 and sol.cost["smooth"] > 0 and sol.cost["running"] > 0


@pytest.mark.parametrize("metric", ["augmented", "identity"])
def test_blocked_layer_models_equal_all_at_once(metric):
    """Blocks of 2 over 5 layers (the last block overlaps) give the same models."""
    problem = small_problem(width=2, layers=5, smooth=0.05)
    form = dataclasses.replace(problem.formulation, l1=0.0)
    params, xs, ps = random_state(form, 30, seed=3)
    V = M._join_rows(params.A, params.b)

    @functools.partial(jax.jit, static_argnums=0)
    def models(block, V, xs, ps):
        return M.blocked_layer_models(form, metric, 0.1, V, xs, ps, block)

    full, blocked = models(None, V, xs, ps), models(2, V, xs, ps)
    for key in ("H", "g", "C", "G"):
        np.testing.assert_allclose(blocked[key], full[key], rtol=1e-12, atol=1e-14)


def test_float32_minibatch_flat_start():
    """float32, mini-batches (the full cost recorded once per epoch) and Li et al.'s
    flat start (every control and the readout zero: all costates vanish at first, the
    readout moves, then the layers)."""
    sol = cdl.solve(small_problem(), EMSA(dtype="float32", batch_size=20),
                    init_scheme="zeros", max_iter=16)
    assert [e["iteration"] for e in sol.history] == list(range(0, 17, 2))
    costs = np.array([e["cost"] for e in sol.history])
    assert np.all(np.isfinite(costs)) and costs[-1] < 0.8 * costs[0]
    assert np.any(np.asarray(sol.params.A) != 0.0)  # the layers left the flat start


@pytest.mark.parametrize("options,message", [
    (dict(rho=0.0), "rho must be > 0"),
    (dict(rho_min=0.0), "rho_min must be >"),
    (dict(rho_increase=1.0), "rho_increase"),
    (dict(sufficient_decrease=1.0), "sufficient_decrease"),
    (dict(curvature="newton"), "curvature"),
    (dict(dtype="float16"), "dtype"),
    (dict(batch_size=0), "batch_size"),
    (dict(momentum=1.0), "momentum"),
    (dict(costate_weight=-1.0), "costate_weight"),
    (dict(max_retries=True), "max_retries"),
    (dict(layer_block=0), "layer_block"),
    (dict(devices=0), "devices"),
])
def test_bad_options_raise(options, message):
    with pytest.raises(ValueError, match=message):
        EMSA(**options)


def test_msa_options():
    with pytest.raises(ValueError, match="safeguard"):
        MSA(safeguard="yes")
    MSA(rho=0.0, safeguard=False)  # the basic MSA of Li et al. is allowed
