"""The discrete maximum principle (Li & Hao 2018 form): the Hamiltonian, the costate
recursion and the gradient of J it gives.

``H_t(x, p, θ) = Σ_i p_i·f(x_i, θ) − (control cost of θ) − (running cost at x)``,
``p(L) = −∇_x [w·(1/N) Σ_i ℓ(z_i(L), y_i) + running cost at L]``,
``p(t) = ∇_x H_t(x(t), p(t+1), θ_t)``, and ``∂J/∂θ_t = −∇_θ H_t(x(t), p(t+1), θ_t)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from controldl.problem.cost import control_cost, readout_objective, running_cost_at, smooth_cost
from controldl.problem.dynamics import layer_unroll, mean_loss, step_batch, trajectory
from controldl.problem.formulation import Formulation, Params

Array = jax.Array


def hamiltonian(form: Formulation, X: Array, P_next: Array, A: Array, b: Array,
                W: Array, c: Array, Y: Array, with_running: bool | Array = True) -> Array:
    """``H_t(x, p, θ) = Σ_i p_i·f(x_i, θ) - (control cost of θ) - (running cost at x)``.

    ``X`` (N, d) are the states at ``t``, ``P_next`` (N, d) the costates at ``t+1``.
    The running cost at ``t`` is counted for ``t ≥ 1`` (``with_running``).
    """
    flow = jnp.sum(P_next * step_batch(form, X, A, b))
    run = jnp.where(with_running, running_cost_at(form, W, c, X, Y), 0.0)
    return flow - control_cost(form, A, b) - run


def terminal_costate(form: Formulation, W: Array, c: Array, X_L: Array, Y: Array) -> Array:
    """``p(L) = -∇_x [w·(1/N) Σ ℓ(z_i(L)) + running cost at L]`` (N, d), ``w`` the
    ``terminal`` weight."""
    phi = lambda X: (form.terminal * mean_loss(form, W, c, X, Y)  # noqa: E731
                     + running_cost_at(form, W, c, X, Y))
    return -jax.grad(phi)(X_L)


def costates(form: Formulation, params: Params, xs: Array, Y: Array) -> Array:
    """The backward recursion ``p(t) = ∇_x H_t(x(t), p(t+1), θ_t)``, ``t = L-1..0``.

    Returns ``ps`` (L+1, N, d) with ``ps[L]`` the terminal costate.
    """
    A, b, W, c = params
    p_L = terminal_costate(form, W, c, xs[-1], Y)
    grad_x = jax.grad(hamiltonian, argnums=1)

    def body(p_next, inputs):
        X, A_t, b_t, t = inputs
        p = grad_x(form, X, p_next, A_t, b_t, W, c, Y, t > 0)
        return p, p

    ts = jnp.arange(form.layers)
    _, ps = jax.lax.scan(body, p_L, (xs[:-1], A, b, ts), reverse=True,
                         unroll=layer_unroll(form))
    return jnp.concatenate([ps, p_L[None]], axis=0)


def gradient_from_costates(form: Formulation, params: Params, xs: Array, ps: Array, Y: Array
                           ) -> Params:
    """``∇J`` from the maximum principle: ``∂J/∂θ_t = -∇_θ H_t(x(t), p(t+1), θ_t)`` plus the
    derivative of the smoothness term (which couples layers), and the readout's gradient
    from the terms that contain it (zero when the readout is frozen)."""
    A, b, W, c = params
    grad_theta = jax.vmap(jax.grad(hamiltonian, argnums=(3, 4)),
                          in_axes=(None, 0, 0, 0, 0, None, None, None, None))
    gA, gb = grad_theta(form, xs[:-1], ps[1:], A, b, W, c, Y, False)
    sA, sb = jax.grad(lambda A_, b_: smooth_cost(form, A_, b_), argnums=(0, 1))(A, b)
    if form.train_readout:
        gW, gc = jax.grad(readout_objective, argnums=(1, 2))(form, W, c, xs, Y)
    else:
        gW, gc = jnp.zeros_like(W), jnp.zeros_like(c)
    return Params(-gA + sA, -gb + sb, gW, gc)


def costate_gradient(form: Formulation, params: Params, X0: Array, Y: Array) -> Params:
    """Forward pass, backward costate pass, and ``∇J`` from the Hamiltonian."""
    xs = trajectory(form, params, X0)
    return gradient_from_costates(form, params, xs, costates(form, params, xs, Y), Y)
