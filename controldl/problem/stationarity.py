"""First-order stationarity of J with its l1 term and its constraints: the norm of the
projected/proximal gradient step, the same measure for every solver."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import optax

from controldl.compilation import RUN_ONCE_OPTIONS
from controldl.problem.constraints import project
from controldl.problem.cost import cost_and_outputs, l1_cost
from controldl.problem.formulation import Formulation, Params

if TYPE_CHECKING:
    from controldl.problem.instance import Problem

Array = jax.Array


def smooth_gradient(form: Formulation, params: Params, X0: Array, Y: Array) -> Params:
    """``∇f`` where ``f = J − l1 term`` is the differentiable part of J; the readout's
    gradient is zero when the readout is frozen."""
    return cost_outputs_and_smooth_gradient(form, params, X0, Y)[2]


def cost_outputs_and_smooth_gradient(form: Formulation, params: Params, X0: Array, Y: Array,
                                     checkpoint_every: int | None = None
                                     ) -> tuple[Array, Array, Params]:
    """``(J, z(L), ∇f)`` from one forward and one backward pass: the cost, the outputs
    (N, m) and :func:`smooth_gradient`; ``checkpoint_every`` rematerializes the forward
    pass in blocks of that many layers (:func:`controldl.problem.cost_and_outputs`)."""
    def f(p: Params) -> tuple[Array, tuple[Array, Array]]:
        J, z = cost_and_outputs(form, p, X0, Y, checkpoint_every)
        return J - l1_cost(form, p.A, p.b), (J, z)

    (_, (J, z)), g = jax.value_and_grad(f, has_aux=True)(params)
    if not form.train_readout:
        g = g._replace(W=jnp.zeros_like(g.W), c=jnp.zeros_like(g.c))
    return J, z, g


def proximal_gradient_point(form: Formulation, params: Params, grad: Params) -> Params:
    """``Π(prox_{l1}(θ − ∇f))`` with a unit step: soft-thresholding of the controls at
    ``β·h`` (the l1 term's prox), then :func:`project` onto the constraints. For the box
    this is the exact prox of l1 plus the box; with the spectral bound it is the
    composition of the two (exact without l1)."""
    moved = jax.tree.map(jnp.subtract, params, grad)
    if form.uses("l1"):
        tau = form.l1 * form.h
        soft = lambda v: jnp.sign(v) * jnp.maximum(jnp.abs(v) - tau, 0.0)  # noqa: E731
        moved = moved._replace(A=soft(moved.A), b=soft(moved.b))
    return project(form, moved)


def stationarity_residual(form: Formulation, params: Params, X0: Array, Y: Array) -> Array:
    """The first-order stationarity measure ``‖θ − Π(prox_{l1}(θ − ∇f(θ)))‖₂`` over all
    optimization variables (controls and readout): the norm of the projected/proximal
    gradient step, zero exactly at a first-order critical point of J with its l1 term and
    its constraints. Without l1 and constraints it is ``‖∇J‖₂``. Traceable."""
    return stationarity_from_gradient(form, params, smooth_gradient(form, params, X0, Y))


def stationarity_from_gradient(form: Formulation, params: Params, grad: Params) -> Array:
    """:func:`stationarity_residual` given ``grad = ∇f(θ)``, the gradient of the smooth part
    (:func:`smooth_gradient`), for a solver that has computed it already. Traceable."""
    new = proximal_gradient_point(form, params, grad)
    return optax.tree_utils.tree_norm(jax.tree.map(jnp.subtract, params, new))


@functools.partial(jax.jit, compiler_options=RUN_ONCE_OPTIONS)
def _stationarity_jit(form: Formulation, params: Params, X0: Array, Y: Array) -> Array:
    return stationarity_residual(form, params, X0, Y)


def stationarity(problem: Problem, params: Params) -> float:
    """:func:`stationarity_residual` of ``problem`` at ``params`` on the training data, in
    the dtype of ``params`` — the same measure for every solver."""
    dtype = jnp.asarray(params.A).dtype
    params = Params(*(jnp.asarray(v, dtype) for v in params))
    X0, Y = problem.initial_states(dtype), problem.targets(dtype)
    return float(_stationarity_jit(problem.formulation, params, X0, Y))
