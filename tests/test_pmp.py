"""The Pontryagin solvers (controldl.solvers.pmp): one MSA / E-MSA iteration against an
independent plain implementation of Li et al.'s Algorithms 1 and 2 (jax.numpy +
scipy.optimize), the Hamiltonian's gradient against autodiff, the Hamiltonian gap, basic
MSA's behaviour, constraints, options.

Compiled iterations are shared between tests with the same formulation structure and
options, so the file pays a few compilations.
"""

import dataclasses
import functools
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

import controldl as cdl
from controldl import problem as P
from controldl.solvers.pmp import EMSA, LBFGS, MSA
from controldl.solvers.pmp import hamiltonian as H
from controldl.status import Status

# --------------------------------------------------------------------------- the reference

TINY = dict(width=3, layers=3, horizon=1.0, l2=0.1, readout_l2=0.1)
RHO = 1.0


def tiny_problem(**options):
    """N = 8 points in the plane, width 3 (one padded coordinate), L = 3."""
    return cdl.Problem(cdl.data.moons(8, seed=3), **{**TINY, **options})


def _plain_layer(h, X, A, b):
    return X + h * jnp.tanh(X @ A.T + b)


def _plain_mean_loss(Z, y):
    return jnp.mean(jnp.logaddexp(0.0, -(2.0 * y - 1.0) * Z[:, 0]))


def _argmax(fun, x0):
    """``argmax fun`` from ``x0`` by scipy (BFGS to a tight tolerance, autodiff jac)."""
    neg = jax.jit(jax.value_and_grad(lambda v: -fun(v)))
    res = scipy.optimize.minimize(lambda v: [np.asarray(a) for a in neg(jnp.asarray(v))],
                                  np.asarray(x0), jac=True, method="BFGS",
                                  options={"gtol": 1e-12, "maxiter": 10_000})
    return res.x


def plain_objectives(problem, params, extended):
    """The objectives of Algorithm 2 (``extended``) or 1, written from the paper: states,
    costates ``p(L) = −∇(1/N)Σℓ``, ``p(t) = ∇_x Σ_i p_i(t+1)·f``; every layer's ``Σ_i H̃_t``
    (or ``H_t``) and the readout's terminal objective as functions of the flat controls,
    with their flat values at ``params``."""
    l2, kappa = TINY["l2"], TINY["readout_l2"]
    L, d, h = TINY["layers"], TINY["width"], TINY["horizon"] / TINY["layers"]
    X = jnp.pad(jnp.asarray(problem.data.X_train), ((0, 0), (0, d - 2)))
    y = jnp.asarray(problem.data.y_train, jnp.float64)
    A, b, W, c = (jnp.asarray(v) for v in params)
    xs = [X]
    for t in range(L):
        xs.append(_plain_layer(h, xs[-1], A[t], b[t]))
    ps = [None] * (L + 1)
    ps[L] = -jax.grad(lambda Z: _plain_mean_loss(Z @ W.T + c, y))(xs[L])
    flow = lambda Xt, p, A_, b_: jnp.sum(p * _plain_layer(h, Xt, A_, b_))  # noqa: E731
    for t in reversed(range(L)):
        ps[t] = jax.grad(flow)(xs[t], ps[t + 1], A[t], b[t])
    layers = []
    for t in range(L):
        def Ht(v, t=t):
            A_, b_ = v[: d * d].reshape(d, d), v[d * d:]
            value = flow(xs[t], ps[t + 1], A_, b_) - 0.5 * l2 * h * jnp.sum(v * v)
            if extended:
                rx = xs[t + 1] - _plain_layer(h, xs[t], A_, b_)
                rp = ps[t] - jax.grad(flow)(xs[t], ps[t + 1], A_, b_)
                value = value - 0.5 * RHO * (jnp.sum(rx * rx) + jnp.sum(rp * rp))
            return value
        layers.append((Ht, np.concatenate([np.ravel(A[t]), np.ravel(b[t])])))

    def terminal(v):
        W_, c_ = v[:d].reshape(1, d), v[d:]
        value = -_plain_mean_loss(xs[L] @ W_.T + c_, y) - 0.5 * kappa * jnp.sum(v * v)
        if extended:
            pL = -jax.grad(lambda Z: _plain_mean_loss(Z @ W_.T + c_, y))(xs[L])
            value = value - 0.5 * RHO * jnp.sum((ps[L] - pL) ** 2)
        return value
    return layers, (terminal, np.concatenate([np.ravel(W), np.ravel(c)]))


def reference_iteration(problem, params, extended):
    """One iteration of Algorithm 2 (``extended``) or 1: every layer's ``Σ_i H̃_t`` (or
    ``H_t``) of :func:`plain_objectives` maximized by scipy, and the readout's terminal
    objective."""
    d = TINY["width"]
    layers, (terminal, phi) = plain_objectives(problem, params, extended)
    new_A, new_b = [], []
    for Ht, v0 in layers:
        v = _argmax(Ht, v0)
        new_A.append(v[: d * d].reshape(d, d))
        new_b.append(v[d * d:])
    v = _argmax(terminal, phi)
    return P.Params(np.stack(new_A), np.stack(new_b), v[:d].reshape(1, d), v[d:])


CONVERGED_INNER = dict(inner=LBFGS(gtol=1e-13), inner_steps=400)


@pytest.mark.parametrize("solver", [EMSA(rho=RHO, **CONVERGED_INNER),
                                    MSA(**CONVERGED_INNER)], ids=["emsa", "msa"])
def test_one_iteration_matches_the_plain_algorithm(solver):
    problem = tiny_problem()
    init = P.init_params(problem.formulation, seed=2)
    one = cdl.solve(problem, solver, init=init, max_iter=1)
    ref = reference_iteration(problem, init, extended=solver.extended)
    for name, got, want in zip(P.Params._fields, one.params, ref, strict=True):
        np.testing.assert_allclose(np.asarray(got), want, atol=1e-6, err_msg=name)
    assert one.history[0]["inner_ascent"] > 0


# --------------------------------------------------------------------------- the objectives


def test_objective_gradient_at_the_iterate_is_minus_the_cost_gradient():
    """At ``θ_k`` the penalties of H̃_t vanish to first order and the Jacobi smoothness
    term has the true partial derivative, so ``∇_θ`` of every layer's E-MSA objective is
    ``−∂J/∂θ_t`` (autodiff of the cost): the costates are backpropagation. Likewise the
    readout's terminal objective. Every smooth term is on (running, smooth)."""
    problem = cdl.Problem(cdl.data.moons(12, seed=0), width=3, layers=4, horizon=2.0,
                          l2=0.05, smooth=0.1, running=0.3, readout_l2=0.02)
    form = problem.formulation
    params = P.init_params(form, seed=1)
    X0, Y = problem.initial_states(), problem.targets()
    xs = P.trajectory(form, params, X0)
    ps = P.costates(form, params, xs, Y)
    knobs = H.Knobs(jnp.asarray(3.0), jnp.asarray(0.7))
    data = H.layer_data(form, params, xs, ps)
    grad = jax.jit(jax.vmap(lambda d: jax.grad(
        H.layer_objective(form, True, knobs, d, (params.W, params.c), Y))(d.theta_k)))
    gA, gb = grad(data)
    auto = jax.grad(lambda q: P.cost(form, q, X0, Y))(params)
    np.testing.assert_allclose(gA, -auto.A, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(gb, -auto.b, rtol=1e-9, atol=1e-12)
    rdata = H.ReadoutData(xs, Y, ps[-1], (params.W, params.c))
    gW, gc = jax.jit(jax.grad(functools.partial(H.readout_smooth_objective, form, True,
                                                knobs, rdata)))((params.W, params.c))
    np.testing.assert_allclose(gW, -auto.W, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(gc, -auto.c, rtol=1e-9, atol=1e-12)


def test_the_hamiltonian_gap_is_the_plain_maximum_of_the_extended_hamiltonian():
    """``controldl.hamiltonian_gap`` from ``θ_k`` alone with a converged inner L-BFGS is
    ``max_θ Σ_i H̃_t − Σ_i H̃_t(θ_k)`` of the plain objectives written from the paper
    (maximized by scipy), layer by layer and for the readout, at a point that is not
    stationary. The penalties enter only away from ``θ_k``: flipping the sign of either
    residual term of H̃ makes this test fail (checked), which the ascent recorded per
    iteration cannot show (the penalties and their gradients vanish at ``θ_k``). With
    perturbed starts the bound can only grow."""
    problem = tiny_problem()
    init = P.init_params(problem.formulation, seed=2)
    solver = EMSA(rho=RHO, inner=LBFGS(gtol=1e-13))
    gap = cdl.hamiltonian_gap(problem, init, solver, starts=0, steps=400)
    layers, (terminal, phi) = plain_objectives(problem, init, extended=True)
    want = [float(Ht(_argmax(Ht, v0)) - Ht(v0)) for Ht, v0 in layers]
    np.testing.assert_allclose(gap.layers, want, rtol=1e-6, atol=1e-12)
    assert min(want) > 1e-6
    np.testing.assert_allclose(gap.readout, terminal(_argmax(terminal, phi)) - terminal(phi),
                               rtol=1e-6, atol=1e-12)
    wider = cdl.hamiltonian_gap(problem, init, solver, starts=3, scale=0.3, steps=400)
    assert np.all(np.asarray(wider.layers) >= np.asarray(gap.layers) - 1e-12)


def test_the_gap_probe_sees_a_violated_maximum_condition_at_a_stationary_point():
    """At a stationary point of J (L-BFGS to ‖∇J‖ ≤ 1e-9) the ascent of the inner
    maximizer from ``θ_k`` is ~‖∇J‖², nothing more; the probe from perturbed starts finds
    that basic MSA's ``H_t`` is not maximized there (the discrete maximum condition fails:
    ``H_t`` is not concave, Li & Hao's Theorem 1 needs convexity), while E-MSA's ``H̃_t``
    (ρ = 1) shows no gap. The recorded inner ascent is that of a solve that does not
    stop at the tolerance first (``tol = 0``)."""
    problem = cdl.Problem(cdl.data.ring(40, seed=0), width=3, layers=4, horizon=2.0,
                          l2=1e-3, readout_l2=1e-3)
    lbfgs = cdl.solve(problem, cdl.GradientDescent("lbfgs", grad_tol=1e-9), max_iter=3000)
    assert lbfgs.status == "converged"
    ascent = cdl.solve(problem, MSA(tol=0.0), init=lbfgs, max_iter=0)
    assert max(ascent.stats["inner_ascent"]) < 1e-14
    assert ascent.history[0]["stationarity"] < 1e-9
    local = cdl.hamiltonian_gap(problem, lbfgs, MSA(), starts=0)
    probed = cdl.hamiltonian_gap(problem, lbfgs, MSA(), starts=8, scale=1.0)
    assert max(local.layers) < 1e-14 < 1e-4 < max(probed.layers)
    extended = cdl.hamiltonian_gap(problem, lbfgs, EMSA(), starts=8, scale=1.0)
    assert max(extended.layers) < 1e-14


def test_an_iterate_within_the_tolerance_costs_no_inner_work():
    """At an iterate whose stationarity is within ``tol`` the solve stops there: its
    iteration makes no inner evaluation (work = the forward and backward passes)."""
    problem = tiny_problem()
    lbfgs = cdl.solve(problem, cdl.GradientDescent("lbfgs", grad_tol=1e-10), max_iter=2000)
    sol = cdl.solve(problem, EMSA(tol=1e-8), init=lbfgs, max_iter=5)
    assert sol.status == "converged" and sol.iterations == 0
    assert sol.history[0]["inner_evaluations"] == 0 and sol.stats["inner_ascent"] == [0.0] * 3


# --------------------------------------------------------------------------- behaviour


def test_basic_msa_runs_and_reports_its_behaviour():
    """Basic MSA (μ = 0) at width 3 on 2-D data: 20 iterations with finite costs and a
    status that names what happened (no linear-algebra failure); the count of cost
    increases in stats is the one in the history."""
    problem = cdl.Problem(cdl.data.ring(60, seed=0), width=3, layers=10, horizon=5.0,
                          l2=1e-3, readout_l2=1e-3)
    sol = cdl.solve(problem, MSA(), max_iter=20)
    costs = [h["cost"] for h in sol.history]
    assert np.all(np.isfinite(costs))
    assert sol.status in (Status.MAX_ITER, Status.STALLED, Status.CONVERGED), sol.status
    assert sol.iterations == 20 and len(costs) == 21
    rises = sum(b > a for a, b in zip(costs[:-1], costs[1:], strict=True))
    assert sol.stats["cost_increases"] == rises
    assert sol.stats["oscillating"] == (rises >= 5)
    assert all(h["work"] >= 0 and h["inner_iterations"] >= 1 for h in sol.history)
    works = [h["work"] for h in sol.history]
    assert works == sorted(works) and works[-1] > 20


def test_emsa_decreases_the_cost_and_records_its_diagnostics():
    problem = tiny_problem()
    sol = cdl.solve(problem, EMSA(rho=RHO), max_iter=15)
    costs = [h["cost"] for h in sol.history]
    assert costs[-1] < costs[0]
    for key in ("stationarity", "inner_ascent", "work", "rejected", "inner_iterations"):
        assert all(np.isfinite(h[key]) for h in sol.history), key
    assert len(sol.stats["inner_ascent"]) == problem.layers
    assert sol.stats["inner"] == {"layers": "lbfgs", "readout": "lbfgs", "steps": 10}


def test_constraints_and_l1_are_respected_by_the_inner_steps():
    """Box and Lipschitz bounds with l1: the proximal-gradient inner solver keeps every
    iterate feasible, and l1 gives exact zeros."""
    problem = tiny_problem(l1=0.02, box_bound=0.3, lipschitz_bound=0.08)
    form = problem.formulation
    sol = cdl.solve(problem, MSA(), max_iter=3)
    assert sol.stats["inner"]["layers"] == "proximal-gradient"
    A, b = np.asarray(sol.params.A), np.asarray(sol.params.b)
    assert np.max(np.abs(A)) <= 0.3 + 1e-12 and np.max(np.abs(b)) <= 0.3 + 1e-12
    assert np.all(P.lipschitz_constants(form, sol.params) <= 0.08 + 1e-9)
    assert np.any(A == 0.0)
    with pytest.raises(ValueError, match="cannot respect l1 or constraints"):
        cdl.solve(problem, MSA(inner="lbfgs"), max_iter=1)


def test_minibatch_float32_runs():
    problem = tiny_problem()
    sol = cdl.solve(problem, EMSA(rho=RHO, batch_size=4, dtype="float32"), max_iter=4)
    assert np.isfinite(sol.cost["total"])
    assert [h["iteration"] for h in sol.history] == [0, 2, 4]


@pytest.mark.parametrize("options, message", [
    ({"rho": 0.0}, "rho must be"), ({"inner": "newton"}, "unknown inner solver"),
    ({"inner_steps": 0}, "inner_steps"), ({"rho_factor": 1.0}, "rho_factor"),
    ({"dtype": "float16"}, "dtype")])
def test_bad_options_raise(options, message):
    with pytest.raises(ValueError, match=message):
        EMSA(**options)


def test_cli_flags_come_from_the_option_declarations():
    from controldl.cli.common import solver_fields

    fields = solver_fields()
    assert fields["mu"]["solvers"] == ["msa"] and "Sakawa" in fields["mu"]["help"]
    assert set(fields["inner_steps"]["solvers"]) >= {"msa", "emsa"}
    assert "paper's 10" in fields["inner_steps"]["help"]
    assert "fixed" in fields["rho"]["help"]


def test_a_second_solve_does_not_compile_again():
    from controldl.solvers.base import compile_count

    problem = tiny_problem()
    solver = EMSA(rho=RHO, **CONVERGED_INNER)
    first = cdl.solve(problem, solver, max_iter=1)
    builds = compile_count()
    again = cdl.solve(problem.replace(l2=0.2), EMSA(rho=2.0, **CONVERGED_INNER), init=first,
                      max_iter=1)
    assert compile_count() == builds  # other weights and rho: the same executable
    assert np.isfinite(again.cost["total"])


@dataclasses.dataclass(frozen=True)
class NonFiniteInner:
    """A test double: L-BFGS whose result is replaced by NaN (an inner maximization that
    broke down)."""

    name: ClassVar[str] = "non-finite"

    def maximize(self, objective, theta0, steps, prox=None, start=None):
        res = LBFGS().maximize(objective, theta0, steps, start=start)
        return res._replace(theta=jax.tree.map(lambda v: v * jnp.nan, res.theta))


def test_a_non_finite_inner_result_fails_with_the_pmp_hint():
    problem = tiny_problem()
    sol = cdl.solve(problem, MSA(inner=NonFiniteInner(), inner_steps=2), max_iter=3)
    assert sol.status == Status.FAILED
    assert "non-finite" in sol.stats["message"]
    assert sol.iterations == 0 and np.all(np.isfinite(np.asarray(sol.params.A)))
    assert Status.FAILED.hint("pmp") in sol.message


@pytest.mark.parametrize("extended, train_readout", [(True, True), (False, True),
                                                     (True, False)])
def test_lockstep_loop_gives_each_maximization_its_own_iterates(extended, train_readout):
    """The one loop over every layer and the readout (one evaluation of each per pass, a
    finished maximization held) ends where running each maximization alone ends: the same
    controls, objective values and step, evaluation and rejection counts, with a running
    cost (hoisted part) and smoothness (neighbour coupling) present."""
    from controldl.solvers.pmp import iteration as IT

    problem = tiny_problem(running=0.2, smooth=0.05, train_readout=train_readout)
    form = problem.formulation
    params = P.init_params(form, seed=1)
    X0, Y = problem.initial_states(), problem.targets()
    xs = P.trajectory(form, params, X0)
    ps = P.costates(form, params, xs, Y)
    knobs = H.Knobs(jnp.asarray(RHO if extended else 0.0), jnp.asarray(0.0 if extended else 0.5))
    config = IT.Config(extended, LBFGS(), LBFGS(), 6, None)
    assert IT.stepwise(config)
    (theta, lay, gap), (phi, rd, rgap) = jax.jit(
        lambda p, xs, ps: IT._lockstep_updates(form, config, knobs, p, xs, ps, Y))(params, xs, ps)
    (theta_1, lay_1, gap_1) = jax.jit(
        lambda p, xs, ps: IT._layer_updates(form, config, knobs, p, xs, ps, Y))(params, xs, ps)
    phi_1, rd_1, rgap_1 = IT.readout_update(form, config, knobs,
                                            H.ReadoutData(xs, Y, ps[-1], (params.W, params.c)))
    for a, b in zip((*theta, *phi, gap, rgap), (*theta_1, *phi_1, gap_1, rgap_1), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    for field in ("steps", "evaluations", "rejected"):
        np.testing.assert_array_equal(getattr(lay, field), getattr(lay_1, field))
        np.testing.assert_array_equal(getattr(rd, field), getattr(rd_1, field))
    assert int(jnp.max(lay.steps)) == 6 and int(jnp.max(lay.evaluations)) > 6
    if train_readout:
        assert int(rd.steps) > 0 and not np.allclose(phi[0], params.W)


def test_the_unrolled_two_loop_recursion_is_optax_s_lbfgs():
    """inner.lbfgs_direction (the memory oldest first, the recursion unrolled) gives the
    directions of optax.scale_by_lbfgs on a sequence of points and gradients, to
    round-off (the same operations in the same order; XLA may fuse them differently)."""
    import optax

    from controldl.solvers.pmp import inner as I

    rng = np.random.default_rng(0)
    n = 12
    M = rng.standard_normal((n, n))
    Hm = M @ M.T / n + np.eye(n)
    tx = optax.scale_by_lbfgs(memory_size=4)
    theirs, ours = tx.init(jnp.zeros(n)), I.lbfgs_memory(jnp.zeros(n), 4)
    v = jnp.asarray(rng.standard_normal(n))
    for _ in range(9):  # more pairs than the memory holds
        g = jnp.asarray(Hm @ np.asarray(v))
        p, theirs = jax.jit(tx.update)(g, theirs, v)
        q, ours = jax.jit(I.lbfgs_direction)(g, ours, v)
        np.testing.assert_allclose(q, p, rtol=1e-13, atol=1e-15)
        v = v - 0.5 * p


def test_the_inner_maximizations_start_from_the_costate_pass():
    """layer_start and readout_start (from the forward and costate passes, no evaluation)
    are the value and gradient of the objectives at θ_k, with every term on; a seeded
    L-BFGS state is the state after the first evaluation, with that evaluation not
    counted."""
    problem = cdl.Problem(cdl.data.moons(12, seed=0), width=3, layers=4, horizon=2.0,
                          l2=0.05, smooth=0.1, running=0.3, readout_l2=0.02)
    form = problem.formulation
    params = P.Params(*(jnp.asarray(v) for v in P.init_params(form, seed=1)))
    X0, Y = problem.initial_states(), problem.targets()
    xs = P.trajectory(form, params, X0)
    ps, grad = H.costates_and_gradient(form, params, xs, Y)
    np.testing.assert_allclose(ps, P.costates(form, params, xs, Y), rtol=1e-13, atol=1e-16)
    knobs = H.Knobs(jnp.asarray(3.0), jnp.asarray(0.7))
    data = H.layer_data(form, params, xs, ps)
    phi = (params.W, params.c)

    def both(d, g):
        run = H.running_part(form, d, phi, Y)
        objective = H.layer_objective(form, True, knobs, d, phi, Y, run)
        return jax.value_and_grad(objective)(d.theta_k), H.layer_start(form, d, run, g)

    (value, gradient), (v0, g0) = jax.jit(jax.vmap(both))(data, (grad.A, grad.b))
    np.testing.assert_allclose(v0, value, rtol=1e-12)
    for a, b in zip(g0, gradient, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-13)
    rdata = H.ReadoutData(xs, Y, ps[-1], phi)
    value, gradient = jax.value_and_grad(lambda f: H.readout_smooth_objective(
        form, True, knobs, rdata, f))(phi)
    v0, g0 = H.readout_start(form, rdata, (grad.W, grad.c))
    np.testing.assert_allclose(v0, value, rtol=1e-12)
    for a, b in zip(g0, gradient, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-13)
    objective = lambda f: H.readout_smooth_objective(form, True, knobs, rdata, f)  # noqa: E731
    lbfgs = LBFGS()
    evaluated = lbfgs.advance(objective, lbfgs.start(phi), phi)
    seeded = lbfgs.start(phi, jax.value_and_grad(objective)(phi))
    for field, a, b in zip(type(seeded)._fields, seeded, evaluated, strict=True):
        if field != "evaluations":
            jax.tree.map(lambda x, y, f=field: np.testing.assert_array_equal(x, y, f), a, b)
    assert int(seeded.evaluations) == 0 and int(evaluated.evaluations) == 1


@pytest.mark.parametrize("solver, rules", [
    (EMSA(tol=0.05), {}),                        # converged: the device ends the dispatch
    (EMSA(), {"target_cost": 0.45}),             # target: the device ends the dispatch
    (MSA(patience=3), {}),                       # stalled: the host only (redone up to it)
], ids=["tol", "target", "patience"])
def test_several_iterations_per_dispatch_keep_the_history_and_the_stop(monkeypatch, solver,
                                                                      rules):
    """One iteration per call and up to K_MAX per call give the same iterates, history
    (costs, stationarity, work) and status at the same iteration, whichever rule stops
    the solve (one the device checks, or one only the host applies)."""
    from controldl.solvers.pmp import solvers as S

    problem = cdl.Problem(cdl.data.ring(60, seed=0), width=3, layers=10, horizon=5.0,
                          l2=1e-3, readout_l2=1e-3)
    runs = []
    for seconds in (0.0, 1e9):
        monkeypatch.setattr(S, "DISPATCH_S", seconds)
        runs.append(cdl.solve(problem, solver, max_iter=60, **rules))
    one, many = runs
    assert (one.status, one.iterations) == (many.status, many.iterations)
    assert one.iterations < 60
    for key in ("cost", "stationarity", "work", "inner_evaluations", "rho"):
        assert [h[key] for h in one.history] == [h[key] for h in many.history], key
    for a, b in zip(one.params, many.params, strict=True):
        np.testing.assert_array_equal(a, b)
