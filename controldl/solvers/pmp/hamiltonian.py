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
    """:class:`RunningPart`: ``H_t − H⁰_t = −γh(1/N)Σ_i ℓ(z_i(t), y_i)`` for ``t ≥ 1``
    (``with_running``; :func:`controldl.problem.running_cost_at`, the term
    :func:`controldl.problem.hamiltonian` subtracts) and its ``x``-gradient. It does not
    depend on ``θ``, so one evaluation per layer and iteration serves every inner
    evaluation."""
    if not form.uses("running"):
        return RunningPart(jnp.zeros((), data.X.dtype), jnp.zeros_like(data.X))
    value, grad = jax.value_and_grad(P.running_cost_at, argnums=3)(form, *readout, data.X, Y)
    on = data.with_running
    return RunningPart(jnp.where(on, -value, 0.0), jnp.where(on, -grad, 0.0))


def _flow_hamiltonian(form: P.Formulation, data: LayerData, readout: Theta, Y: Array,
                      theta: Theta) -> Array:
    """``H⁰_t(θ) = Σ_i p_i(t+1)·f(x_i(t), θ) − h(λ/2‖θ‖² + β‖θ‖₁)``: the Hamiltonian of
    :func:`controldl.problem.hamiltonian` without its running cost."""
    return P.hamiltonian(form, data.X, data.P_next, *theta, *_readout_args(readout, Y),
                         False)


class Flow(NamedTuple):
    """One layer's flow at ``θ``: ``H⁰_t(θ)`` (``value``), the step ``f(x(t), θ)`` (N, d)
    and ``∇_x H⁰_t = J_x f(x(t), θ)ᵀ p(t+1)`` (N, d)."""

    value: Array
    step: Array
    grad_x: Array


def flow(form: P.Formulation, data: LayerData, theta: Theta) -> Flow:
    """:class:`Flow` from one linearization of the step: ``f, vjp = jax.vjp(x ↦ f(x, θ))``,
    ``H⁰_t = Σ_i p_i(t+1)·f_i − (control cost of θ)`` (as
    :func:`controldl.problem.hamiltonian` without the running cost) and
    ``∇_x H⁰_t = vjp(p(t+1))``. The step is computed once, so the θ-gradient of an
    objective built on it sums the cotangents of the pre-activation before the one
    product with the states (five products per layer for E-MSA, not six)."""
    f, vjp = jax.vjp(lambda X: P.step_batch(form, X, *theta), data.X)
    value = jnp.sum(data.P_next * f) - P.control_cost(form, *theta)
    return Flow(value, f, vjp(data.P_next)[0])


def extended_penalty(data: LayerData, running: RunningPart, fl: Flow,
                     weight: Array | None = None) -> Array:
    """``½Σ_i ‖x_i(t+1) − f(x_i(t), θ)‖² + ½Σ_i ‖p_i(t) − ∇_x H_t(x_i(t), p_i(t+1), θ)‖²``
    (to be multiplied by ρ): the residuals of the state and costate equations, with the
    step and ``∇_x H_t = fl.grad_x + running.grad_x`` of the :class:`Flow` ``fl`` at ``θ``.
    The sums run over the real samples: ``weight`` (N,) 0 on the padding of
    :func:`controldl.parallel.pad_samples` (``None``: every sample)."""
    rx = data.X_next - fl.step
    rp = data.P - (fl.grad_x + running.grad_x)
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
    each call then evaluates ``H⁰_t`` and, for E-MSA, the step and its ``x``-gradient
    ``J_x f(x(t), θ)ᵀ p(t+1)`` from one linearization (:func:`flow`): the value and
    ``θ``-gradient of ``H̃_t`` cost five products of an (N, d) by a (d, d) matrix, those of
    ``H_t`` two (:func:`evaluation_weight`)."""
    if running is None:
        running = running_part(form, data, readout, Y)

    def objective(theta: Theta) -> Array:
        if extended:
            fl = flow(form, data, theta)
            h0 = fl.value
        else:
            h0 = _flow_hamiltonian(form, data, readout, Y, theta)
        value = h0 + running.value + layer_l1(form, theta) - jacobi_smooth(form, data, theta)
        if extended:
            value = value - knobs.rho * extended_penalty(data, running, fl,
                                                         parallel.sample_weight(Y))
        return value - 0.5 * knobs.mu * _squared_distance(theta, data.theta_k)

    return objective


def layer_start(form: P.Formulation, data: LayerData, running: RunningPart,
                grad: Theta) -> tuple[Array, Theta]:
    """The value and gradient of :func:`layer_objective` at ``θ_k`` from the forward and
    costate passes, without evaluating it: there ``x(t+1) = f(x(t), θ_k)`` and
    ``p(t) = ∇_x H_t``, so the penalties and the damping vanish with their gradients, the
    value is ``Σ_i p_i(t+1)·x_i(t+1) − h(λ/2)‖θ_k‖² + running − (Jacobi smoothness)`` and
    the gradient is ``−∂f/∂θ_t`` (``f`` the smooth part of J), given as ``grad``
    (:func:`smooth_gradient_from_costates`, layer ``t``'s part)."""
    theta = data.theta_k
    value = (jnp.sum(data.P_next * data.X_next) - P.control_cost(form, *theta)
             + running.value + layer_l1(form, theta) - jacobi_smooth(form, data, theta))
    return value, (-grad[0], -grad[1])


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


def readout_start(form: P.Formulation, data: ReadoutData, grad: Theta
                  ) -> tuple[Array, Theta]:
    """The value and gradient of :func:`readout_smooth_objective` at ``φ_k`` from the
    forward and costate passes: ``−R(φ_k)`` (the terminal-costate residual and the damping
    vanish) and ``−∇_φ J``, given as ``grad``."""
    W, c = data.phi_k
    return -P.readout_objective(form, W, c, data.xs, data.Y), (-grad[0], -grad[1])


def costates_and_gradient(form: P.Formulation, params: P.Params, xs: Array, Y: Array
                          ) -> tuple[Array, P.Params]:
    """The costates ``ps`` (L+1, N, d) of :func:`controldl.problem.costates` and ``∇f``
    (``f`` the smooth part of J, as :func:`smooth_gradient_from_costates`) in one backward
    pass: per layer one linearization of ``H_t`` (:func:`controldl.problem.hamiltonian`)
    gives both ``p(t) = ∇_x H_t`` and ``∇_θ H_t`` (three layer products: the step again,
    ``Aᵀ`` and the states), where a costate pass followed by
    :func:`controldl.problem.gradient_from_costates` takes four."""
    A, b, W, c = params
    p_L = P.terminal_costate(form, W, c, xs[-1], Y)
    grads = jax.grad(P.hamiltonian, argnums=(1, 3, 4))

    def body(p_next, inputs):
        X, A_t, b_t, t = inputs
        p, gA, gb = grads(form, X, p_next, A_t, b_t, W, c, Y, t > 0)
        return p, (p, gA, gb)

    _, (ps, gA, gb) = jax.lax.scan(body, p_L, (xs[:-1], A, b, jnp.arange(form.layers)),
                                   reverse=True)
    sA, sb = jax.grad(lambda A_, b_: P.smooth_cost(form, A_, b_), argnums=(0, 1))(A, b)
    if form.train_readout:
        gW, gc = jax.grad(P.readout_objective, argnums=(1, 2))(form, W, c, xs, Y)
    else:
        gW, gc = jnp.zeros_like(W), jnp.zeros_like(c)
    grad = P.Params(-gA + sA, -gb + sb, gW, gc)
    if form.uses("l1"):  # ∇_θ H_t differentiates the l1 term: take it off to leave ∇f
        lA, lb = jax.grad(P.l1_cost, argnums=(1, 2))(form, A, b)
        grad = grad._replace(A=grad.A - lA, b=grad.b - lb)
    return jnp.concatenate([ps, p_L[None]], axis=0), grad


def smooth_gradient_from_costates(form: P.Formulation, params: P.Params, xs: Array,
                                  ps: Array, Y: Array) -> P.Params:
    """``∇f`` at ``params``, ``f`` the smooth part of J (J without its l1 term), from the
    states ``xs`` and costates ``ps`` (L+1, N, d): the gradient the maximum principle gives
    (:func:`controldl.problem.gradient_from_costates`, which differentiates the l1 term
    too: its derivative is taken off), without another forward and backward pass."""
    grad = P.gradient_from_costates(form, params, xs, ps, Y)
    if form.uses("l1"):
        gA, gb = jax.grad(P.l1_cost, argnums=(1, 2))(form, params.A, params.b)
        grad = grad._replace(A=grad.A - gA, b=grad.b - gb)
    return grad


def stationarity_from_costates(form: P.Formulation, params: P.Params, xs: Array, ps: Array,
                               Y: Array) -> Array:
    """:func:`controldl.problem.stationarity_residual` at ``params`` from its states ``xs``
    and costates ``ps`` (L+1, N, d), by :func:`smooth_gradient_from_costates`."""
    return P.stationarity_from_gradient(
        form, params, smooth_gradient_from_costates(form, params, xs, ps, Y))


class WorkWeights(NamedTuple):
    """The work of the parts of an MSA / E-MSA iteration in gradient-evaluation
    equivalents (:func:`work_weights`): ``outer`` (the forward pass, the costates and the
    gradient, the cost, accuracy and starting values; with ``checkpoint_every`` the
    recomputations of the sweep), one evaluation of every ``layers``' objective and one of
    the ``readout``'s."""

    outer: float
    layers: float
    readout: float


def products(form: P.Formulation) -> tuple[float, float]:
    """Multiply-adds per sample of one layer product (``A x``: ``d²``; a convolution:
    ``C²k²·H·W``) and of one readout product (``W x``: ``m`` times the features)."""
    geo = form.geometry
    layer = (form.width ** 2 if geo is None
             else geo.channels ** 2 * geo.kernel_size ** 2 * geo.pixels)
    features = form.param_shapes()["W"][1]
    return float(layer), float(form.n_outputs * features)


class ReadoutProducts(NamedTuple):
    """Readout products (:func:`products`) in the optimized programs: of one value and
    gradient of J (``gradient``), of an iteration's outer part (``outer``) and of one
    evaluation of the readout's objective (``evaluation``). With one output the product
    ``∂ℓ·W`` is an elementwise scaling, not a product; a running cost repeats the readout
    at every ``t`` (and E-MSA's costate residual needs the running cost's x-gradient)."""

    gradient: int
    outer: int
    evaluation: int


def readout_products(form: P.Formulation, extended: bool) -> ReadoutProducts:
    """:class:`ReadoutProducts` of ``form`` for MSA or E-MSA (``extended``), counted in the
    compiled programs (``tests/test_pmp_work.py`` holds them to the optimized HLO)."""
    one = form.n_outputs == 1
    if not form.uses("running"):
        return ReadoutProducts(2 if one else 3, 2 if one else 3,
                               (5 if one else 6) if extended else 2)
    T = form.layers + 1
    outer = 4 * T - 2 if one else (6 * T - 2 if extended else 5 * T - 1)
    return ReadoutProducts((2 if one else 3) * T, outer,
                           2 * T + ((5 if one else 7) if extended else 0))


def gradient_products(form: P.Formulation) -> float:
    """One value and gradient of J in multiply-adds per sample: ``3L`` layer products
    (the step, the costate ``Aᵀp`` and the control gradient ``p xᵀ`` of every layer) and
    the readout's (:func:`readout_products`): the unit of work."""
    layer, readout = products(form)
    return 3.0 * form.layers * layer + readout_products(form, False).gradient * readout


def work_weights(form: P.Formulation, extended: bool, checkpointed: bool = False
                 ) -> WorkWeights:
    """:class:`WorkWeights` from the products the compiled iteration performs (counted in
    its optimized program by ``tests/test_pmp_work.py``), in units of
    :func:`gradient_products`:

    - outer: the forward pass (one layer product per layer) and
      :func:`costates_and_gradient` (three per layer), the readout's products; with
      ``checkpoint_every`` (an estimate, not counted in a program) eight per layer: the
      checkpoints' forward pass (one), the cost's rematerialized gradient (four) and the
      sweep's recomputed states and costates (three);
    - layers: ``H̃_t`` five layer products per layer (the step, ``J_x fᵀp``, and for the
      gradient the costate residual's ``Aᵀ`` and outer product and the summed
      pre-activation cotangent times the states), ``H_t`` two;
    - readout: :func:`readout_products`.
    """
    layer, readout = products(form)
    L, G = form.layers, gradient_products(form)
    r = readout_products(form, extended)
    outer = (8 if checkpointed else 4) * L * layer + r.outer * readout
    per_layer = 5 if extended else 2
    return WorkWeights(outer / G, per_layer * L * layer / G, r.evaluation * readout / G)
