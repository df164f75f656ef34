r"""The cost ``J``, assembled once.

.. math::

    J = \underbrace{\frac{w}{N} \sum_i ℓ(z_i(L), y_i)}_{\text{terminal}}
        + \underbrace{\frac{λ}{2} h \sum_t (‖A_t‖_F^2 + ‖b_t‖^2)}_{\text{l2}}
        + \underbrace{β h \sum_t (‖A_t‖_1 + ‖b_t‖_1)}_{\text{l1}}
        + \underbrace{\frac{α}{2h} \sum_{t=0}^{L-2} (‖A_{t+1} - A_t‖_F^2
          + ‖b_{t+1} - b_t‖^2)}_{\text{smooth}}
        + \underbrace{γ h \sum_{t=1}^{L} \frac1N \sum_i ℓ(z_i(t), y_i)}_{\text{running}}
        + \underbrace{\frac{κ}{2}(‖W‖_F^2 + ‖c‖^2)}_{\text{readout\_l2}}
        \;[+\; \underbrace{s\,h \sum_t \mathrm{nnz}(A_t)}_{\text{sparsity}}].

The last term exists for ternary controls only (:mod:`controldl.problem.discrete`).

:func:`assemble` is the one place the terms are put together, from the two quantities
that depend on the states: the terminal mean loss ``(1/N) Σ_i ℓ(z_i(L), y_i)`` and the
running sum ``Σ_{t=1}^{L} (1/N) Σ_i ℓ(z_i(t), y_i)``. :func:`cost_terms`,
:func:`cost_and_outputs`, :func:`cost` and :func:`readout_objective` are views of it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from controldl import model
from controldl.problem.discrete import sparsity_cost
from controldl.problem.dynamics import JAX, forward, mean_loss, outputs, trajectory
from controldl.problem.formulation import Formulation, Params

Array = jax.Array

COST_TERMS: tuple[str, ...] = ("terminal", "l2", "l1", "smooth", "running", "readout_l2")
"""Names of the cost terms, in the order of docs/design.md (``total`` is their sum)."""

DISCRETE_TERMS: tuple[str, ...] = ("sparsity",)
"""The term a ternary formulation adds (:func:`terms_of`)."""


def terms_of(form: Formulation) -> tuple[str, ...]:
    """The cost terms of ``form``: :data:`COST_TERMS`, and ``sparsity`` for ternary
    controls."""
    return COST_TERMS + (DISCRETE_TERMS if form.controls == "ternary" else ())

READOUT_TERMS: tuple[str, ...] = ("terminal", "running", "readout_l2")
"""The terms of J that depend on the readout ``(W, c)``."""


def running_term(form: Formulation, loss_sum: Array) -> Array:
    """``γ·h·loss_sum``: the running term given ``loss_sum``, a sum over times ``t ≥ 1`` of
    the mean loss ``(1/N) Σ_i ℓ(z_i(t), y_i)`` (one time or all of them)."""
    return form.running * form.h * loss_sum


def running_cost_at(form: Formulation, W: Array, c: Array, X: Array, Y: Array) -> Array:
    """The running term contributed by one time ``t ≥ 1``: ``γ·h·(1/N) Σ_i ℓ(z_i(t), y_i)``;
    without a running term (weight 0) a constant 0, left out of the program."""
    if not form.uses("running"):
        return jnp.zeros((), X.dtype)
    return running_term(form, mean_loss(form, W, c, X, Y))


def control_cost(form: Formulation, A: Array, b: Array) -> Array:
    """The control cost of one layer: ``l2`` plus ``l1`` terms (what ``H_t`` subtracts); an
    absent term (weight 0, :meth:`Formulation.uses`) is left out of the program."""
    l2 = model.layer_l2(JAX, form.l2, form.h, A, b)
    return l2 + model.layer_l1(JAX, form.l1, form.h, A, b) if form.uses("l1") else l2


def smooth_cost(form: Formulation, A: Array, b: Array) -> Array:
    """``(α/(2h)) Σ_{t=0}^{L-2} (‖A_{t+1}-A_t‖² + ‖b_{t+1}-b_t‖²)`` for all layers."""
    if form.layers < 2 or not form.uses("smooth"):  # absent: left out of the program
        return jnp.zeros((), A.dtype)
    terms = jax.vmap(lambda A0, b0, A1, b1: model.layer_smooth(JAX, form.smooth, form.h,
                                                                A0, b0, A1, b1))
    return jnp.sum(terms(A[:-1], b[:-1], A[1:], b[1:]))


def l1_cost(form: Formulation, A: Array, b: Array) -> Array:
    """``β·h·Σ_t (‖A_t‖₁ + ‖b_t‖₁)``: the non-smooth part of J (a constant 0, left out of
    the program, without l1)."""
    if not form.uses("l1"):
        return jnp.zeros((), A.dtype)
    return jnp.sum(jax.vmap(lambda A_t, b_t: model.layer_l1(JAX, form.l1, form.h, A_t, b_t))(A, b))


def readout_terms(form: Formulation, W: Array, c: Array, terminal_loss: Array,
                  loss_sum: Array) -> dict[str, Array]:
    """The terms of :data:`READOUT_TERMS` given the terminal mean loss and the running sum
    of mean losses (see the module docstring)."""
    return {"terminal": form.terminal * terminal_loss,
            "running": running_term(form, loss_sum),
            "readout_l2": model.readout_l2(JAX, form.readout_l2, W, c)}


def assemble(form: Formulation, params: Params, terminal_loss: Array, loss_sum: Array
             ) -> dict[str, Array]:
    """Every term of :func:`terms_of` and their sum ``total``, given the terminal mean loss
    ``(1/N) Σ_i ℓ(z_i(L), y_i)`` and the running sum ``Σ_{t=1}^{L} (1/N) Σ_i ℓ(z_i(t), y_i)``
    (scalars); the control terms are computed from ``params.A`` (L, d, d), ``params.b`` (L, d)."""
    A, b, W, c = params
    l2 = jax.vmap(lambda A_t, b_t: model.layer_l2(JAX, form.l2, form.h, A_t, b_t))(A, b)
    terms = {"l2": jnp.sum(l2), "l1": l1_cost(form, A, b), "smooth": smooth_cost(form, A, b),
             **readout_terms(form, W, c, terminal_loss, loss_sum)}
    if form.controls == "ternary":
        terms["sparsity"] = (sparsity_cost(form, A) if form.uses("sparsity")
                             else jnp.zeros((), A.dtype))
    terms = {k: terms[k] for k in terms_of(form)}
    terms["total"] = sum(terms.values())
    return terms


def state_losses(form: Formulation, W: Array, c: Array, xs: Array, Y: Array
                 ) -> tuple[Array, Array]:
    """The terminal mean loss at ``xs[-1]`` and the running sum over ``xs[1:]`` (0 without a
    running term), for states ``xs`` (L+1, N, d) and targets ``Y`` (N, m)."""
    terminal = mean_loss(form, W, c, xs[-1], Y)
    if not form.uses("running"):
        return terminal, jnp.zeros((), terminal.dtype)
    return terminal, jnp.sum(jax.vmap(lambda x: mean_loss(form, W, c, x, Y))(xs[1:]))


def cost_terms_from_states(form: Formulation, params: Params, xs: Array, Y: Array
                           ) -> dict[str, Array]:
    """Every cost term of docs/design.md given the states ``xs`` (L+1, N, d); plus ``total``."""
    return assemble(form, params, *state_losses(form, params.W, params.c, xs, Y))


def cost_terms(form: Formulation, params: Params, X0: Array, Y: Array) -> dict[str, Array]:
    """Every cost term at ``params`` for initial states ``X0`` (N, d), targets ``Y`` (N, m)."""
    return cost_terms_from_states(form, params, trajectory(form, params, X0), Y)


def cost_and_outputs(form: Formulation, params: Params, X0: Array, Y: Array,
                     checkpoint_every: int | None = None) -> tuple[Array, Array]:
    """The total cost ``J(θ, W, c)`` and the final outputs ``z(L)`` (N, m), in one forward
    pass that keeps no intermediate state (see
    :func:`~controldl.problem.dynamics.forward` for ``checkpoint_every``)."""
    W, c = params.W, params.c
    x_L, loss_sum = forward(form, params, X0, Y, checkpoint_every)
    total = assemble(form, params, mean_loss(form, W, c, x_L, Y), loss_sum)["total"]
    return total, outputs(form, W, c, x_L)


def cost(form: Formulation, params: Params, X0: Array, Y: Array) -> Array:
    """The total cost ``J(θ, W, c)``."""
    return cost_and_outputs(form, params, X0, Y)[0]


def readout_objective(form: Formulation, W: Array, c: Array, xs: Array, Y: Array) -> Array:
    """The part of J that depends on the readout given the states ``xs`` (L+1, N, d): the
    terminal loss, the running terms and ``readout_l2`` (:data:`READOUT_TERMS`)."""
    return sum(readout_terms(form, W, c, *state_losses(form, W, c, xs, Y)).values())
