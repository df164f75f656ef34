r"""The objectives the Pontryagin solvers maximize, layer by layer: ``H_t`` (MSA, Li, Chen,
Tai & E 2018, Algorithm 1) and the extended ``H̃_t`` (E-MSA, Algorithm 2).

Everything is assembled from :mod:`controldl.problem` (``hamiltonian``, ``step_batch``,
``terminal_costate``, ``readout_objective``, ``project``) and :mod:`controldl.model`
(``layer_l1``, ``layer_smooth``): no formula of the model is written here again.

**Normalization, in docs/design.md terms.** The terminal loss is a *mean* over the N samples,
so the costates carry the ``1/N``: ``p_i(L) = −∇_x (1/N) ℓ(z_i(L), y_i)`` (plus the
running term at L). The Hamiltonian of layer ``t`` is a plain *sum* over samples,

.. math::

    H_t(θ) = \sum_i p_i(t+1)·f(x_i(t), θ) − h\,(\tfrac{λ}{2}‖θ‖^2 + β‖θ‖_1)
             − γ h \tfrac1N \sum_i ℓ(z_i(t), y_i),

with ``h = T/L`` inside ``f`` (``x + h σ(A x + b)``) and in the control cost, as in
:func:`controldl.problem.hamiltonian`. E-MSA subtracts the penalties of Algorithm 2 as
*sums* over the samples (the paper's and its code's ``Σ_i``, ``tf.nn.l2_loss``):

.. math::

    H̃_t(θ) = H_t(θ) − \tfrac{ρ}{2}\sum_i ‖x_i(t+1) − f(x_i(t), θ)‖^2
              − \tfrac{ρ}{2}\sum_i ‖p_i(t) − ∇_x H_t(x_i(t), p_i(t+1), θ)‖^2 .

No ``h`` and no ``N`` enter the penalties: the state residual is of order ``h`` per
sample and is summed over N samples, the costate residual is of order ``h/N``. So with a
fixed ρ the state penalty's weight grows with N relative to ``H_t`` (which is of order
one): ρ means what it means in the paper, for the batch size used.

**Coupling and non-smooth terms.**

- ``smooth`` couples neighbouring layers: it is handled by a Jacobi splitting, the
  neighbours held at the current iterate ``θ_k``: layer ``t`` subtracts
  ``(α/2h)(‖θ − θ_{k,t−1}‖² + ‖θ_{k,t+1} − θ‖²)`` (the terms that exist).
- ``l1`` is not differentiable: the smooth part (everything above but ``βh‖θ‖₁``) is
  what the inner solvers differentiate; the l1 term enters through its proximal map
  (soft-thresholding at ``βh`` times the step), see :func:`layer_prox`.
- the constraints (box, Lipschitz ``h‖A_t‖₂ ≤ B``) enter through
  :func:`controldl.problem.project` applied after the soft threshold.
- MSA's Sakawa–Shindo damping ``−(μ/2)‖θ − θ_k‖²`` is added when ``μ > 0``.

**The readout** ``φ = (W, c)`` is the terminal control: it maximizes
``−R(φ)`` with ``R`` the terminal loss, the running terms and ``readout_l2``
(:func:`controldl.problem.readout_objective`), minus the same damping for MSA; for E-MSA
minus ``(ρ/2) Σ_i ‖p_i(L) − p^L_i(φ)‖²``, the residual of the terminal costate condition
(the readout has no state equation, so this is the only residual it moves).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from controldl import model, parallel
from controldl import problem as P

Array = jax.Array
Theta = tuple[Array, Array]
"""One layer's controls ``(A_t (d, d), b_t (d,))`` or the readout ``(W (m, d), c (m,))``."""


class Knobs(NamedTuple):
    """The numeric options of an iteration (traced: changing them does not compile):
    ``rho`` weighs E-MSA's penalties, ``mu`` MSA's Sakawa–Shindo damping."""

    rho: Array
    mu: Array


class LayerData(NamedTuple):
    """What layer ``t``'s objective depends on besides ``θ`` (leading axis L when
    stacked): states ``X`` = x(t), ``X_next`` = x(t+1), costates ``P`` = p(t),
    ``P_next`` = p(t+1) (each (N, d)), the current controls ``theta_k``, the neighbours'
    controls ``left`` (t−1) and ``right`` (t+1) with ``has_left`` / ``has_right`` flags,
    and ``with_running`` (``t ≥ 1``: the running cost at ``t`` is part of ``H_t``)."""

    X: Array
    X_next: Array
    P: Array
    P_next: Array
    theta_k: Theta
    left: Theta
    right: Theta
    has_left: Array
    has_right: Array
    with_running: Array


def layer_data(form: P.Formulation, params: P.Params, xs: Array, ps: Array) -> LayerData:
    """Stack every layer's :class:`LayerData` from the states and costates (L+1, N, d)."""
    return LayerData(xs[:-1], xs[1:], ps[:-1], ps[1:], *layer_controls(form, params))


def layer_controls(form: P.Formulation, params: P.Params) -> tuple:
    """The θ part of every layer's :class:`LayerData`, stacked over ``t``: ``theta_k``,
    ``left``, ``right`` (the neighbours' controls, masked at the ends by ``has_left``,
    ``has_right``) and ``with_running``."""
    A, b = params.A, params.b
    L = form.layers
    shift = lambda v, k: jnp.roll(v, k, axis=0)  # noqa: E731 (masked at the ends)
    t = jnp.arange(L)
    return ((A, b), (shift(A, 1), shift(b, 1)), (shift(A, -1), shift(b, -1)), t > 0,
            t < L - 1, t > 0)


def _readout_args(readout: Theta, Y: Array) -> tuple[Array, Array, Array]:
    return readout[0], readout[1], Y


def layer_l1(form: P.Formulation, theta: Theta) -> Array:
    """``βh(‖A‖₁ + ‖b‖₁)``, the non-smooth part of the layer's control cost."""
    if not form.uses("l1"):
        return jnp.zeros((), theta[0].dtype)
    return model.layer_l1(P.JAX, form.l1, form.h, *theta)


def jacobi_smooth(form: P.Formulation, data: LayerData, theta: Theta) -> Array:
    """The smoothness terms of layer ``t`` with its neighbours held at the current
    iterate: ``(α/2h)(‖θ − θ_{k,t−1}‖² + ‖θ_{k,t+1} − θ‖²)``."""
    if not form.uses("smooth") or form.layers < 2:
        return jnp.zeros((), theta[0].dtype)
    left = model.layer_smooth(P.JAX, form.smooth, form.h, *data.left, *theta)
    right = model.layer_smooth(P.JAX, form.smooth, form.h, *theta, *data.right)
    return jnp.where(data.has_left, left, 0.0) + jnp.where(data.has_right, right, 0.0)


def _squared_distance(a: Theta, b: Theta) -> Array:
    return sum(jnp.sum((u - v) ** 2) for u, v in zip(a, b, strict=True))


class RunningPart(NamedTuple):
    """The part of ``H_t`` that depends on ``x`` alone, ``H_t − H⁰_t`` with ``H⁰_t`` the
    Hamiltonian without the running cost: its ``value`` (scalar) and its ``grad_x``
    (N, d). Both are ``0`` when the problem has no running cost or ``t = 0``."""

    value: Array
    grad_x: Array


def running_part(form: P.Formulation, data: LayerData, readout: Theta, Y: Array
                 ) -> RunningPart:
    """:class:`RunningPart` from :func:`controldl.problem.hamiltonian` at ``θ_k`` with and
    without the running cost (``with_running`` false). The running cost
    ``γh(1/N)Σ_i ℓ(z_i(t), y_i)`` does not depend on ``θ``, so one evaluation per layer
    and iteration serves every inner evaluation."""
    if not form.uses("running"):
        return RunningPart(jnp.zeros((), data.X.dtype), jnp.zeros_like(data.X))
    args = (form, data.X, data.P_next, *data.theta_k, *_readout_args(readout, Y))
    value_grad = jax.value_and_grad(P.hamiltonian, argnums=1)
    with_run, without = value_grad(*args, data.with_running), value_grad(*args, False)
    return RunningPart(with_run[0] - without[0], with_run[1] - without[1])


def _flow_hamiltonian(form: P.Formulation, data: LayerData, readout: Theta, Y: Array,
                      theta: Theta) -> Array:
    """``H⁰_t(θ) = Σ_i p_i(t+1)·f(x_i(t), θ) − h(λ/2‖θ‖² + β‖θ‖₁)``: the Hamiltonian of
    :func:`controldl.problem.hamiltonian` without its running cost."""
    return P.hamiltonian(form, data.X, data.P_next, *theta, *_readout_args(readout, Y),
                         False)


def _flow_value_and_grad_x(form: P.Formulation, data: LayerData, readout: Theta,
                           Y: Array, theta: Theta) -> tuple[Array, Array]:
    """``H⁰_t(θ)`` and ``∇_x H⁰_t(x(t), p(t+1), θ) = J_x f(x(t), θ)ᵀ p(t+1)`` (N, d)."""
    return jax.value_and_grad(P.hamiltonian, argnums=1)(
        form, data.X, data.P_next, *theta, *_readout_args(readout, Y), False)


def extended_penalty(form: P.Formulation, data: LayerData, running: RunningPart,
                     theta: Theta, grad_x: Array, weight: Array | None = None) -> Array:
    """``½Σ_i ‖x_i(t+1) − f(x_i(t), θ)‖² + ½Σ_i ‖p_i(t) − ∇_x H_t(x_i(t), p_i(t+1), θ)‖²``
    (to be multiplied by ρ): the residuals of the state and costate equations, with
    ``∇_x H_t = grad_x + running.grad_x`` and ``grad_x = ∇_x H⁰_t(θ)`` (N, d). The sums
    run over the real samples: ``weight`` (N,) 0 on the padding of
    :func:`controldl.parallel.pad_samples` (``None``: every sample)."""
    rx = data.X_next - P.step_batch(form, data.X, *theta)
    rp = data.P - (grad_x + running.grad_x)
    if weight is None:
        return 0.5 * (jnp.sum(rx * rx) + jnp.sum(rp * rp))
    per_sample = jnp.sum(rx * rx, axis=1) + jnp.sum(rp * rp, axis=1)
    return 0.5 * jnp.sum(jnp.where(weight > 0, per_sample, 0.0))


def layer_objective(form: P.Formulation, extended: bool, knobs: Knobs, data: LayerData,
                    readout: Theta, Y: Array, running: RunningPart | None = None
                    ) -> Callable[[Theta], Array]:
    """The differentiable part of layer ``t``'s objective as a function of ``θ``: ``H_t``
    without its l1 term, minus the Jacobi smoothness terms, minus
    ``ρ·``:func:`extended_penalty` (E-MSA) and minus ``(μ/2)‖θ − θ_k‖²`` (MSA's damping;
    ``μ = 0`` turns it off).

    The θ-free running part (:func:`running_part`, unless given) is evaluated here, once;
    each call
    then evaluates ``H⁰_t`` and, for E-MSA, its ``x``-gradient
    (``J_x f(x(t), θ)ᵀ p(t+1)``) in one ``jax.value_and_grad`` pass: a forward and a
    backward pass of one layer, so that the value and ``θ``-gradient of ``H̃_t`` cost a
    small multiple of one layer's share of a gradient evaluation."""
    if running is None:
        running = running_part(form, data, readout, Y)

    def objective(theta: Theta) -> Array:
        if extended:
            h0, grad_x = _flow_value_and_grad_x(form, data, readout, Y, theta)
        else:
            h0 = _flow_hamiltonian(form, data, readout, Y, theta)
        value = h0 + running.value + layer_l1(form, theta) - jacobi_smooth(form, data, theta)
        if extended:
            value = value - knobs.rho * extended_penalty(form, data, running, theta, grad_x,
                                                         parallel.sample_weight(Y))
        return value - 0.5 * knobs.mu * _squared_distance(theta, data.theta_k)

    return objective


def layer_prox(form: P.Formulation, theta: Theta, step: Array) -> Theta:
    """The proximal map of the layer's non-smooth terms for a step ``step``:
    soft-thresholding at ``βh·step`` (the prox of the l1 term), then
    :func:`controldl.problem.project` (box clip; singular values clipped at ``B/h``).
    With the box alone this is the exact prox of l1 plus the box."""
    A, b = theta
    if form.uses("l1"):
        tau = form.l1 * form.h * step
        soft = lambda v: jnp.sign(v) * jnp.maximum(jnp.abs(v) - tau, 0.0)  # noqa: E731
        A, b = soft(A), soft(b)
    projected = P.project(form, P.Params(A[None], b[None], None, None))
    return projected.A[0], projected.b[0]


def has_layer_prox(form: P.Formulation) -> bool:
    """Whether the layers have a non-smooth term or a constraint (then the inner solver
    must take proximal/projected steps)."""
    return (form.uses("l1") or form.box_bound is not None
            or form.lipschitz_bound is not None)


class ReadoutData(NamedTuple):
    """What the readout's objective depends on: all states ``xs`` (L+1, N, d), targets
    ``Y`` (N, m), the terminal costate ``P_L`` (N, d) and the current readout."""

    xs: Array
    Y: Array
    P_L: Array
    phi_k: Theta


def readout_smooth_objective(form: P.Formulation, extended: bool, knobs: Knobs,
                             data: ReadoutData, phi: Theta) -> Array:
    """The terminal control's objective: ``−R(φ)`` (:func:`controldl.problem.readout_objective`),
    minus ``(ρ/2)Σ_i‖p_i(L) − p^L_i(φ)‖²`` (E-MSA), minus ``(μ/2)‖φ − φ_k‖²`` (MSA)."""
    W, c = phi
    value = -P.readout_objective(form, W, c, data.xs, data.Y)
    if extended:
        r = data.P_L - P.terminal_costate(form, W, c, data.xs[-1], data.Y)
        value = value - 0.5 * knobs.rho * jnp.sum(r * r)
    return value - 0.5 * knobs.mu * _squared_distance(phi, data.phi_k)


def evaluation_weight(form: P.Formulation, extended: bool) -> tuple[float, float]:
    """Work of one value-and-gradient evaluation, in gradient-evaluation equivalents
    (one forward plus one backward pass over all samples and layers = 1, three products
    of an (N, d) by a (d, d) matrix per layer): ``(layers, readout)``, counted in those
    products. All layers' ``H_t`` take two (the step and the θ-gradient): 2/3. ``H̃_t``
    (:func:`layer_objective`) takes five: the step and ``J_x fᵀ p(t+1)`` for the value,
    and for the θ-gradient the products of the costate residual with ``σ'(u)⊙p(t+1)``
    and with ``Aᵀ``, and one with the states for the summed cotangent of ``u = A x + b``:
    5/3. The readout is one layer's worth (``1/L``; a whole pass with a running cost)
    times the same factor."""
    factor = 5.0 / 3.0 if extended else 2.0 / 3.0
    readout = 1.0 if form.uses("running") else 1.0 / form.layers
    return factor, factor * readout


def stationarity_from_costates(form: P.Formulation, params: P.Params, xs: Array, ps: Array,
                               Y: Array) -> Array:
    """:func:`controldl.problem.stationarity_residual` at ``params`` from its states ``xs``
    and costates ``ps`` (L+1, N, d): the gradient the maximum principle gives
    (:func:`controldl.problem.gradient_from_costates`, which differentiates the l1 term
    too: its derivative is taken off to leave ``∇f``), without another forward and
    backward pass."""
    grad = P.gradient_from_costates(form, params, xs, ps, Y)
    if form.uses("l1"):
        gA, gb = jax.grad(P.l1_cost, argnums=(1, 2))(form, params.A, params.b)
        grad = grad._replace(A=grad.A - gA, b=grad.b - gb)
    return P.stationarity_from_gradient(form, params, grad)
