r"""Pontryagin solvers: the method of successive approximations (MSA) and extended MSA.

One iteration, from the controls ``θ_k = (A_t, b_t)_t`` and the readout ``φ_k = (W, c)``:

1. forward pass, the states ``x(t)`` (:func:`controldl.problem.trajectory`);
2. backward pass, the costates ``p(t)`` (:func:`costates`, i.e.
   :func:`controldl.problem.costates`);
3. every layer ``t`` maximizes its (augmented) Hamiltonian — all layers at once: given the
   states and costates the layers are independent, so their small problems are solved as
   one batch — and the readout is updated as the terminal control;
4. an acceptance test on the true cost ``J`` with an adaptive penalty ``ρ``.

The whole iteration — forward, backward, the per-layer models, the inner solver, and the
acceptance loop with its retries (``lax.while_loop``) — is one jitted function, compiled
ahead of time once per (formulation, structural options, shapes) and cached, so an
iteration is one dispatch. The numeric options (``ρ`` bounds and factors, ``η``,
``max_retries``, ``costate_weight``) are arguments of the compiled function: changing
them does not compile again.

**Augmented Hamiltonian (E-MSA, Li, Chen, Tai & E 2018).** Layer ``t`` maximizes

.. math::

    \tilde H_t(θ) = H_t(x(t), p(t+1), θ)
        - \frac{ρ\,s_t}{2h}\,\frac1N \sum_i ‖x_i(t+1) - f(x_i(t), θ)‖^2
        - \frac{w\,ρ}{2h\,s_t}\,\frac1N \sum_i ‖N\,(p_i(t) - ∇_x H_t(x_i(t), p_i(t+1), θ))‖^2

with ``H_t`` of :func:`controldl.problem.hamiltonian` (flow minus control cost minus
running cost), ``w = costate_weight`` and ``h = T/L``. The weight of layer ``t`` is
``s_t = σ_t²/σ̄``: ``σ_t = √((1/N)Σ_i ‖N p_i(t+1)‖²)`` is the root-mean-square per-sample
costate entering the layer (``N·p_i`` is of order one: the costates carry the ``1/N`` of
the mean loss) and ``σ̄`` its mean over the layers.

**The scaling of ρ.** ``ρ`` is dimensionless and means the same on every problem:

- *samples*: both penalties are means over the samples and use the per-sample costate
  ``N·p_i``, so they scale like ``H_t`` when ``N`` changes;
- *depth*: ``(x(t+1) - f)/h`` is a velocity residual and the penalties are
  ``h·(1/h²)·…``, the discretization of ``(ρ/2)∫ … dt``, so ``ρ`` does not change with
  ``L`` at a fixed horizon;
- *loss scale*: ``H_t`` is linear in the costates and ``s_t`` is homogeneous of degree one
  in them, so both penalties are too (the costate residual is itself linear in the
  costates): ``\tilde H_t`` is homogeneous of degree one in ``p``, and the E-MSA step does
  not change when the loss is multiplied by a constant — nor shrink when the loss (and
  with it every costate) becomes small late in training (the step is normalized, as
  Adam's is);
- *across layers*: a perturbation of the state after layer ``t`` reaches the loss through
  the flow map ``Φ(L, t+1)``; the first-order sensitivity is ``σ_t ∝ |Φ|`` but the
  curvature of the cost-to-go is ``∝ |Φ|²``, so the profile ``σ_t²/σ̄`` gives the layers
  that the flow amplifies the larger penalty (on a 50-layer spiral this halves the cost
  reached in 100 iterations compared with ``s_t = σ_t``).

At ``θ = θ_k`` both residuals vanish; the Hessian of the penalties there is the
Gauss–Newton matrix ``G_t`` of the layer's state and costate maps. ``ρ`` of order 1–10 is
typical; it adapts by the acceptance test. The default ``w = 0.1``: the costate penalty
matters (without it the normalization is lost and the ring problem needs twice the
iterations) but at ``w = 1`` it dominates and slows deep networks.

The readout, the terminal control, maximizes
``-R(φ) - (ρ s_z/2)(1/N)Σ_i‖z_i - (W x_i(L) + c)‖² - (wρ/(2 s_z))(1/N)Σ_i‖N(p_i(L) -
p_i^L(φ))‖²`` with ``R`` the part of ``J`` that contains the readout
(:func:`controldl.problem.readout_objective`), ``z_i`` the current outputs, ``p^L(φ)`` the
terminal costate (:func:`controldl.problem.terminal_costate`) and ``s_z`` the RMS of
``∇_z ℓ(z_i, y_i)`` (the terminal costate residual is linear in ``∇_z ℓ``; unlike
``N p(L) = -Wᵀ∇_z ℓ``, ``s_z`` does not vanish at a flat start ``W = 0``).

**MSA** (:class:`MSA`) maximizes ``H_t(x(t), p(t+1), θ) - (μ/2)·h·‖θ - θ_k‖²`` and
``-R(φ) - (μ/2)‖φ - φ_k‖²`` (Sakawa & Shindo's successive approximations; ``μ`` is in
the units of ``l2``). With ``safeguard=False`` every step is taken with a fixed ``μ``;
with ``rho=0`` too it is Li et al.'s basic MSA, which may diverge (reported ``diverged``).

**Inner solver.** A damped Newton step per layer on its ``d²+d`` unknowns, Hessians from
JAX: ``θ_t ← θ_t + (B_t + ρ G_t)^{-1} g_t`` with ``g_t = ∇_θ H_t - ∂(smooth)/∂θ_t`` and
``B_t = |-∇²_θ H_t| + S_t``: ``|·|`` takes the absolute values of the eigenvalues
(saddle-free Newton; ``curvature="gauss_newton"`` keeps only the control cost's
Hessian), ``S_t`` is the smoothness majorizer below, and ``G_t`` carries a ridge of
``1e-6·tr(G_t)/n``. ``inner_steps > 1`` repeats the step from the new point on the full
augmented Hamiltonian (the residuals no longer vanish), keeping a layer's new point only
where ``\tilde H_t`` increased. The readout takes the same step on its ``m(d+1)``
unknowns. The derivatives use the structure of the canonical layer (see
:func:`layer_flow_terms`); ``tests/test_msa.py`` checks them against plain autodiff.

**Terms that couple layers or are not smooth.**

- ``smooth``, ``(α/2h)Σ_t‖θ_{t+1}-θ_t‖²``: Jacobi splitting with a separable quadratic
  majorizer. Neighbours are held at ``θ_k``; the term enters through its gradient at
  ``θ_k`` and the curvature ``S_t = (2α/h)·n_t·I`` (``n_t`` neighbours of layer ``t``).
  Since ``‖δ_{t+1}-δ_t‖² ≤ 2‖δ_t‖² + 2‖δ_{t+1}‖²``, the model bounds the term from
  above, so updating all layers at once cannot be spoiled by the coupling.
- ``l1``: a proximal step. Each layer's model ``g·δ - ½δᵀ(B+ρG)δ - βh‖θ+δ‖₁`` is
  maximized by ``prox_iters`` FISTA iterations (soft threshold, step ``1/‖B+ρG‖_F``),
  started from the soft-thresholded Newton step: exact zeros, and the fixed points are
  the first-order (KKT) points of the true problem.
- constraints (``lipschitz_bound``, ``box_bound``): the same FISTA iterations with the
  projection :func:`controldl.problem.project` applied after the soft threshold.

**Acceptance test.** The predicted decrease is the model's,
``pred = Σ_t (g_t·δ_t - ½δ_tᵀB_tδ_t) - Δl1 + (readout part)`` (without the ``ρ``
term, so ``pred > 0`` for any nonzero step). A trial is kept only if ``J`` is finite and
``J(θ_k) - J(θ_k+δ) ≥ η·pred`` (``η = sufficient_decrease``); otherwise ``ρ`` is
multiplied by ``rho_increase`` and the trial repeated, inside the same compiled call.
After an accepted step with ratio ``r = (J(θ_k) - J(θ_k+δ))/pred``, ``ρ`` is divided by
``rho_decrease`` if ``r > 1/2``, doubled if ``r < 1/4``, kept otherwise. ``J`` is
monotone. When ``max_retries`` trials fail or ``ρ`` would exceed ``rho_max``, the solve
stops ``stalled`` (or ``converged`` if the stationarity residual is below ``tol``).

**Momentum.** With ``momentum = β > 0`` the first trial of an iteration is
``θ_k + δ_k + β(θ_k - θ_{k-1})`` (heavy ball on the accepted steps), tested like any
trial against the decrease predicted for ``δ_k``; if it fails, the same ``ρ`` is tried
without momentum before ``ρ`` grows. The augmented Hamiltonian sees each layer alone, so
updates of all layers that push the states the same way are under-estimated in size and
``ρ`` must stay large enough for them; the momentum recovers the speed along such
persistent directions (on the ring problem it cuts the iterations by a third). It is
not used with ``l1`` or constraints (the extrapolated point would leave the prox).

**Stationarity (the PMP residual).** For layer ``t``,
``r_t = ‖θ_t - Π(prox_{βh}(θ_t + ∇_θ H_t - ∂(smooth)/∂θ_t))‖``: this is ``‖∇_θ H_t‖``,
the first-order residual of the maximum condition, when there is no ``smooth``, ``l1`` or
constraint; for the readout ``r_φ = ‖∇_φ R‖``. The solve is ``converged`` when
``√(Σ_t r_t² + r_φ²) ≤ tol`` or an accepted step changes ``J`` by at most ``rtol·|J|``.
``RunResult.stats`` holds the final ``pmp_residual`` per layer, ``readout_residual``,
``rho`` per accepted iteration, and the ``accepted`` / ``rejected`` counts; every history
entry carries ``rho``, ``accepted``, ``rejected`` (trials rejected in that iteration) and
the ``ratio``.

**Mini-batches** (``batch_size``): each iteration draws a batch without replacement and
runs the whole iteration, acceptance test included, on the batch cost; the history
records the full cost once per epoch (then not necessarily monotone).

**Cost.** An iteration is linear in ``N`` and ``L``: ``O(L·N·d²(d+1)²)`` for the models,
``O(L·d⁶)`` for the solves, plus one forward pass per trial.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from controldl import model, parallel
from controldl import problem as P
from controldl.problem import Params, Problem
from controldl.solvers.base import Monitor, RunResult, Solver, training_arrays

DTYPES: dict[str, Any] = {"float64": jnp.float64, "float32": jnp.float32}
CURVATURES: tuple[str, ...] = ("exact", "gauss_newton")
RATIO_GOOD, RATIO_POOR, POOR_FACTOR = 0.5, 0.25, 2.0
"""After an accepted step: ``ρ /= rho_decrease`` if the ratio of actual to predicted
decrease exceeds ``RATIO_GOOD``, ``ρ *= POOR_FACTOR`` if it is below ``RATIO_POOR``."""
RIDGE = 1e-6
"""Relative ridge added to each penalty matrix: ``G + RIDGE·tr(G)/n·I``."""


# --------------------------------------------------------------------------- flat vectors


def _split_rows(r: int, d: int, v: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``v`` (..., r(d+1)), the rows of ``[A | b]``, → ``A`` (..., r, d), ``b`` (..., r)."""
    Ab = v.reshape(v.shape[:-1] + (r, d + 1))
    return Ab[..., :d], Ab[..., d]


def _join_rows(A: jax.Array, b: jax.Array) -> jax.Array:
    """``A`` (..., r, d), ``b`` (..., r) → the rows of ``[A | b]`` flattened (..., r(d+1))."""
    Ab = jnp.concatenate([A, b[..., None]], axis=-1)
    return Ab.reshape(Ab.shape[:-2] + (-1,))


def _abs_psd(H: jax.Array) -> jax.Array:
    """``V|Λ|Vᵀ`` for a symmetric (batch of) matrix ``H = VΛVᵀ`` (saddle-free Newton)."""
    H = 0.5 * (H + jnp.swapaxes(H, -1, -2))
    lam, V = jnp.linalg.eigh(H)
    return (V * jnp.abs(lam)[..., None, :]) @ jnp.swapaxes(V, -1, -2)


def _soft_threshold(v: jax.Array, tau: jax.Array | float) -> jax.Array:
    """The prox of ``τ‖·‖₁``: ``sign(v)·max(|v| - τ, 0)``."""
    return jnp.sign(v) * jnp.maximum(jnp.abs(v) - tau, 0.0)


def _psd_solve(B: jax.Array, g: jax.Array) -> jax.Array:
    """``B⁻¹g`` for a (batch of) symmetric positive definite ``B``, by Cholesky."""
    factor = jax.scipy.linalg.cho_factor(B)
    return jax.scipy.linalg.cho_solve(factor, g[..., None])[..., 0]


def _ridge(G: jax.Array) -> jax.Array:
    n = G.shape[-1]
    tr = jnp.trace(G, axis1=-2, axis2=-1)
    return G + (RIDGE * tr / n)[..., None, None] * jnp.eye(n, dtype=G.dtype)


def _rms_costate(Pc: jax.Array) -> jax.Array:
    """``s = √((1/N) Σ_i ‖N p_i‖²)`` over the last two axes (N, d) of ``Pc``: the
    root-mean-square per-sample costate, floored away from zero."""
    N = Pc.shape[-2]
    s = N * jnp.sqrt(jnp.mean(jnp.sum(Pc * Pc, axis=-1), axis=-1))
    return jnp.maximum(s, jnp.sqrt(jnp.finfo(Pc.dtype).tiny))


def _penalty_scale(P_next: jax.Array) -> jax.Array:
    """The per-layer weight ``s_t = σ_t²/σ̄`` of the E-MSA penalties, with ``σ_t`` the
    RMS per-sample costate ``N p(t+1)`` (:func:`_rms_costate`) and ``σ̄`` its mean over
    the layers ``P_next`` (L, N, d)."""
    sigma = _rms_costate(P_next)
    return sigma * sigma / jnp.mean(sigma)


# --------------------------------------------------------------------------- Kronecker sums


def _kron_sum(M: jax.Array, Xt: jax.Array) -> jax.Array:
    """``Σ_i M_i ⊗ x̃_i x̃_iᵀ`` per batch: ``M`` (B, N, r, r), ``x̃`` (B, N, k) →
    (B, r·k, r·k) in the ``(row a, column j)`` order of ``[A | b]``."""
    B, N, r, _ = M.shape
    k = Xt.shape[-1]
    XX = (Xt[..., :, None] * Xt[..., None, :]).reshape(B, N, k * k)
    S = jnp.einsum("tip,tiq->tpq", M.reshape(B, N, r * r), XX)  # (B, r·r, k·k)
    S = S.reshape(B, r, r, k, k).transpose(0, 1, 3, 2, 4)
    return S.reshape(B, r * k, r * k)


def _diag_kron_sums(D: jax.Array, Xt: jax.Array) -> jax.Array:
    """:func:`_kron_sum` for diagonal ``M_i = diag(D_i)``, several at once: ``D``
    (S, L, N, r) → (S, L, r(d+1), r(d+1)), block diagonal over the rows of ``[A | b]``."""
    S, L, N, r = D.shape
    k = Xt.shape[-1]
    XX = (Xt[..., :, None] * Xt[..., None, :]).reshape(L, N, k * k)
    M = jnp.einsum("stia,tiq->staq", D, XX).reshape(S, L, r, k, k)
    eye = jnp.eye(r, dtype=D.dtype)
    out = M[:, :, :, :, None, :] * eye[None, None, :, None, :, None]  # [a, k, b, l]
    return out.reshape(S, L, r * k, r * k)


def _costate_gram(E: jax.Array, q: jax.Array, Xt: jax.Array) -> jax.Array:
    """``Σ_i J_iᵀJ_i`` for the Jacobian in ``[A | b]`` of a costate map
    ``g(θ) = a(u) + Aᵀq(u)``, ``u = [A | b] x̃``:
    ``J[j, (a, k)] = E_{ja} x̃_k + q_a δ_{jk}`` (the last term for ``k < d`` only), with
    ``E = ∂g/∂u`` (B, N, d, r), ``q`` (B, N, r), ``x̃`` (B, N, d+1) → (B, r(d+1), r(d+1))."""
    B, N, d, r = E.shape
    k = d + 1
    dtype = E.dtype
    T1 = _kron_sum(jnp.einsum("tija,tijb->tiab", E, E), Xt)
    Ep = jnp.concatenate([E, jnp.zeros((B, N, 1, r), dtype)], axis=2)  # (B, N, d+1, r)
    EQ = (Ep[..., :, :, None] * q[..., None, None, :]).reshape(B, N, k * r * r)
    T2 = jnp.einsum("tip,tik->tpk", EQ, Xt).reshape(B, k, r, r, k)  # [l, a, b, k]
    T2 = T2.transpose(0, 2, 4, 3, 1).reshape(B, r * k, r * k)  # Σ_i x̃_k q_b E_{la}
    Ipad = jnp.diag(jnp.concatenate([jnp.ones(d, dtype), jnp.zeros(1, dtype)]))
    Qq = jnp.einsum("tia,tib->tab", q, q)
    T4 = (Qq[:, :, None, :, None] * Ipad[None, None, :, None, :]).reshape(B, r * k, r * k)
    return T1 + T2 + jnp.swapaxes(T2, -1, -2) + T4


def _layer_costate_gram(A: jax.Array, K: jax.Array, q: jax.Array, Xt: jax.Array
                        ) -> jax.Array:
    """:func:`_costate_gram` for a layer, where ``E = Aᵀ diag(K)`` (``E_{ja} = A_{aj}K_a``):
    the per-sample products become sums over the samples of small outer products
    (no batched tiny matrix products). ``A`` (L, d, d), ``K``, ``q`` (L, N, d)."""
    L, N, d = K.shape
    k = d + 1
    dtype = K.dtype
    XX = (Xt[..., :, None] * Xt[..., None, :]).reshape(L, N, k * k)
    KK = (K[..., :, None] * K[..., None, :]).reshape(L, N, d * d)
    M1 = jnp.einsum("tip,tiq->tpq", KK, XX).reshape(L, d, d, k, k)  # [a, b, k, l]
    AA = jnp.einsum("taj,tbj->tab", A, A)
    T1 = (AA[:, :, :, None, None] * M1).transpose(0, 1, 3, 2, 4)  # [a, k, b, l]
    KQ = (K[..., :, None] * q[..., None, :]).reshape(L, N, d * d)
    M2 = jnp.einsum("tip,tik->tpk", KQ, Xt).reshape(L, d, d, k)  # Σ_i K_a q_b x̃_k
    Ap = jnp.concatenate([A, jnp.zeros((L, d, 1), dtype)], axis=-1)  # A_{al}, l < d
    T2 = M2.transpose(0, 1, 3, 2)[..., None] * Ap[:, :, None, None, :]  # [a, k, b, l]
    Ipad = jnp.diag(jnp.concatenate([jnp.ones(d, dtype), jnp.zeros(1, dtype)]))
    Qq = jnp.einsum("tia,tib->tab", q, q)
    T4 = Qq[:, :, None, :, None] * Ipad[None, None, :, None, :]
    T = (T1 + T4).reshape(L, d * k, d * k)
    T2 = T2.reshape(L, d * k, d * k)
    return T + T2 + jnp.swapaxes(T2, -1, -2)


def _layer_costate_jvec(A: jax.Array, K: jax.Array, q: jax.Array, Xt: jax.Array,
                        res: jax.Array) -> jax.Array:
    """:func:`_costate_jvec` for a layer (``E = Aᵀ diag(K)``)."""
    L, N, d = K.shape
    res_pad = jnp.concatenate([res, jnp.zeros((L, N, 1), res.dtype)], axis=-1)
    Er = K * jnp.einsum("taj,tij->tia", A, res)
    out = jnp.einsum("tia,tik->tak", Er, Xt) + jnp.einsum("tia,tik->tak", q, res_pad)
    return out.reshape(L, d * (d + 1))


def _costate_jvec(E: jax.Array, q: jax.Array, Xt: jax.Array, res: jax.Array) -> jax.Array:
    """``Σ_i J_iᵀ res_i`` for the Jacobian of :func:`_costate_gram`; ``res`` (B, N, d)
    → (B, r(d+1))."""
    B, N, d, r = E.shape
    res_pad = jnp.concatenate([res, jnp.zeros((B, N, 1), res.dtype)], axis=-1)
    Er = jnp.einsum("tija,tij->tia", E, res)
    out = jnp.einsum("tia,tik->tak", Er, Xt) + jnp.einsum("tia,tik->tak", q, res_pad)
    return out.reshape(B, r * (d + 1))


# --------------------------------------------------------------------------- layer models


def costates(form: P.Formulation, params: Params, xs: jax.Array, Y: jax.Array) -> jax.Array:
    """The costates ``ps`` (L+1, N, d), as :func:`controldl.problem.costates`.

    Without a running cost the recursion ``p(t) = ∇_x[Σ_i p_i(t+1)·f(x_i(t), θ_t)]`` is a
    vector–Jacobian product of :func:`controldl.problem.step_batch`; this skips the
    running term that :func:`controldl.problem.hamiltonian` evaluates (times zero) at every
    layer. With a running cost it is :func:`controldl.problem.costates`.
    """
    if form.running != 0.0:
        return P.costates(form, params, xs, Y)
    A, b, W, c = params
    p_L = P.terminal_costate(form, W, c, xs[-1], Y)

    def body(p_next, inputs):
        X, A_t, b_t = inputs
        _, vjp = jax.vjp(lambda X_: P.step_batch(form, X_, A_t, b_t), X)
        p = vjp(p_next)[0]
        return p, p

    _, ps = jax.lax.scan(body, p_L, (xs[:-1], A, b), reverse=True)
    return jnp.concatenate([ps, p_L[None]], axis=0)


def layer_flow_terms(sform: P.Formulation, V: jax.Array, X: jax.Array, P_next: jax.Array
                     ) -> dict[str, jax.Array]:
    """Per layer and sample, the derivatives of the flow part of ``H_t`` in the
    pre-activation ``u = A x + b``.

    Every layer of the canonical model is ``f(x, θ) = F(x, A x + b)`` with
    ``F(x, u) = step(x, 0, u)`` (:func:`controldl.problem.step` with ``A = 0, b = u``), and
    ``F(x, u) = G(x) + Φ(u)`` with ``Φ`` entrywise (``resnet``: ``G(x) = x``, ``Φ = hσ``;
    ``mlp``: ``G = 0``, ``Φ = σ``). So ``∂F/∂u`` and ``∇²_u(p·F)`` are diagonal — one
    nested forward-mode pass along the all-ones direction of ``u`` gives them — and
    ``∇_x(p·F)`` does not depend on ``u``. The derivatives in ``θ`` follow by the chain
    rule ``∂u/∂[A | b] = x̃ᵀ ⊗ I``, ``x̃ = (x, 1)``.

    ``V`` (L, d(d+1)) are the controls, ``X`` (L, N, d) the states ``x(t)``, ``P_next``
    (L, N, d) the costates ``p(t+1)``. Returns, with leading axes (L, N): ``f`` (the next
    state), ``q = ∇_u(p·F)``, ``K = diag ∇²_u(p·F)``, ``Fu = diag ∂F/∂u``,
    ``gx = ∇_x(p·f)`` (the costate map, whose derivative in ``u`` is
    ``E = Aᵀ diag(K)``); and ``A`` (L, d, d), ``Xt`` = x̃.
    """
    L, N, d = X.shape
    Ab = V.reshape(L, d, d + 1)
    A = Ab[..., :d]
    Xt = jnp.concatenate([X, jnp.ones((L, N, 1), X.dtype)], axis=-1)
    U = jnp.einsum("tak,tik->tia", Ab, Xt)
    zero = jnp.zeros((d, d), X.dtype)
    F = jax.vmap(jax.vmap(lambda x, u: P.step(sform, x, zero, u)))
    ones = jnp.ones_like(U)

    def F_and_slope(U_):
        return jax.jvp(lambda U__: F(X, U__), (U_,), (ones,))

    (f, d1), (_, d2) = jax.jvp(F_and_slope, (U,), (ones,))
    _, vjp = jax.vjp(lambda X_: F(X_, U), X)
    a = vjp(P_next)[0]  # ∇_x(p·F(x, u)) at fixed u
    q, K = P_next * d1, P_next * d2
    gx = a + jnp.einsum("taj,tia->tij", A, q)
    return {"f": f, "q": q, "K": K, "Fu": d1, "gx": gx, "A": A, "Xt": Xt}


def layer_models(sform: P.Formulation, metric: str, costate_weight: jax.Array | None,
                 V: jax.Array, V_ref: jax.Array, X: jax.Array, X_next: jax.Array,
                 P_next: jax.Array, gx_ref: jax.Array | None,
                 scale: jax.Array | None = None) -> dict[str, jax.Array]:
    """The quadratic model of every layer's augmented (``metric="augmented"``) or proximal
    (``"identity"``) Hamiltonian at the controls ``V`` (L, d(d+1)).

    Returns, per layer: ``H`` (``H_t`` without the running cost, which does not depend on
    ``θ``), ``g = ∇_θ H_t``, ``C = -∇²_θ H_t``, the penalty's Gauss–Newton matrix ``G``, the
    costate map ``gx`` (L, N, d) and, when ``gx_ref`` (the costate map at the reference
    controls ``V_ref``) is given, the penalty's value ``res2`` and gradient ``g_res``: the
    model of ``\\tilde H_t`` is ``H - ½ρ·res2``, gradient ``g + ρ·g_res``, curvature
    ``C + ρG``. ``costate_weight`` ``None`` drops the costate penalty. ``scale`` (L,) is
    the penalty weight ``s_t`` (:func:`_penalty_scale`, by default from ``P_next``; pass it
    when ``V`` holds a block of the layers).
    """
    L, N, d = X.shape
    n = d * (d + 1)
    h = sform.h
    dtype = X.dtype

    def cc(v):
        return P.control_cost(sform, *_split_rows(d, d, v))

    t = layer_flow_terms(sform, V, X, P_next)
    Xt, q, K, A = t["Xt"], t["q"], t["K"], t["A"]
    s = _penalty_scale(P_next) if scale is None else scale  # (L,)
    cx = s / (N * h)
    Fu = t["Fu"]
    if metric == "augmented":
        KC, GX = _diag_kron_sums(jnp.stack([K, cx[:, None, None] * Fu * Fu]), Xt)
    else:
        KC = _diag_kron_sums(K[None], Xt)[0]
    out = {
        "H": jnp.einsum("tid,tid->t", P_next, t["f"]) - jax.vmap(cc)(V),
        "g": jnp.einsum("tia,tik->tak", q, Xt).reshape(L, n) - jax.vmap(jax.grad(cc))(V),
        "C": -KC + jax.vmap(jax.hessian(cc))(V),
        "gx": t["gx"],
    }
    if metric == "augmented":
        G = GX
        if costate_weight is not None:
            cp = costate_weight * N / (h * s)
            G = G + cp[:, None, None] * _layer_costate_gram(A, K, q, Xt)
        if gx_ref is not None:
            rx = X_next - t["f"]
            g_res = cx[:, None] * jnp.einsum("tia,tik->tak", Fu * rx, Xt).reshape(L, n)
            res2 = cx * jnp.sum(rx * rx, axis=(1, 2))
            if costate_weight is not None:
                rp = gx_ref - t["gx"]
                g_res = g_res + cp[:, None] * _layer_costate_jvec(A, K, q, Xt, rp)
                res2 = res2 + cp * jnp.sum(rp * rp, axis=(1, 2))
            out.update(g_res=g_res, res2=res2)
    else:
        G = jnp.broadcast_to(h * jnp.eye(n, dtype=dtype), (L, n, n))
        if gx_ref is not None:
            D = V - V_ref
            out.update(g_res=-h * D, res2=h * jnp.sum(D * D, axis=-1))
    out["G"] = _ridge(G)
    return out


def blocked_layer_models(sform: P.Formulation, metric: str,
                         costate_weight: jax.Array | None, V: jax.Array, xs: jax.Array,
                         ps: jax.Array, block: int | None) -> dict[str, jax.Array]:
    """:func:`layer_models` at ``V`` (no residual terms), ``block`` layers at a time.

    ``xs``, ``ps`` (L+1, N, d) are the states and costates. The per-sample temporaries
    of the models (about fifteen arrays of N·d numbers per layer) then exist for ``block``
    layers at once instead of all ``L``: memory ``O(N·block·d)`` on top of the stored
    states and costates. Returns ``H``, ``g``, ``C``, ``G`` (leading axis L); ``None``
    (or ``block ≥ L``): all layers at once, the costate map ``gx`` included.
    """
    L = V.shape[0]
    if block is None or block >= L:
        return layer_models(sform, metric, costate_weight, V, V, xs[:-1], xs[1:], ps[1:],
                            None)
    scale = _penalty_scale(ps[1:])
    n = V.shape[1]
    dtype = V.dtype
    out0 = {"H": jnp.zeros((L,), dtype), "g": jnp.zeros((L, n), dtype),
            "C": jnp.zeros((L, n, n), dtype), "G": jnp.zeros((L, n, n), dtype)}

    def body(i, out):
        # The last block may overlap the one before it: its layers are recomputed, equal.
        t0 = jnp.minimum(i * block, L - block)

        def take(a, shift=0):
            return jax.lax.dynamic_slice_in_dim(a, t0 + shift, block)

        lm = layer_models(sform, metric, costate_weight, take(V), take(V), take(xs),
                          take(xs, 1), take(ps, 1), None, scale=take(scale))
        return {k: jax.lax.dynamic_update_slice_in_dim(v, lm[k], t0, 0)
                for k, v in out.items()}

    return jax.lax.fori_loop(0, -(-L // block), body, out0)


def readout_model(form: P.Formulation, metric: str, costate_weight: jax.Array | None,
                  phi: jax.Array, phi_ref: jax.Array, xs: jax.Array, Y: jax.Array,
                  z_ref: jax.Array, p_ref: jax.Array, with_residual: bool
                  ) -> dict[str, jax.Array]:
    """The model of the terminal control: the readout ``φ``, the rows of ``[W | c]``.

    Returns the value ``-R(φ)``, gradient ``-∇R``, curvature ``∇²R`` (``R``:
    :func:`controldl.problem.readout_objective`), the penalty's Gauss–Newton matrix ``G``
    and, with ``with_residual``, the penalty's value ``res2`` and gradient ``g_res``
    relative to the outputs ``z_ref`` (N, m) and terminal costate ``p_ref`` (N, d) of the
    current iterate (E-MSA), or to ``phi_ref`` (MSA).

    Without a running cost, ``R`` depends on ``φ`` through ``z = [W | c] x̃`` only, so
    everything follows from the loss derivatives in ``z`` (:func:`controldl.model.loss`
    by autodiff) and the chain rule; with a running cost ``R`` is differentiated
    directly.
    """
    m, d = form.n_outputs, form.width
    N = xs.shape[1]
    nr = m * (d + 1)
    dtype = xs.dtype
    W, c = _split_rows(m, d, phi)
    x_L = xs[-1]
    Xt = jnp.concatenate([x_L, jnp.ones((N, 1), dtype)], axis=-1)[None]  # (1, N, d+1)
    Z = jax.vmap(model.readout, in_axes=(None, None, 0))(W, c, x_L)

    def loss(z, target):
        return model.loss(P.JAX, form.loss, z, target)

    def reg(f):
        return model.readout_l2(P.JAX, form.readout_l2, *_split_rows(m, d, f))

    dl = jax.vmap(jax.grad(loss))(Z, Y)  # (N, m)
    if form.running == 0.0:
        d2l = jax.vmap(jax.hessian(loss))(Z, Y)  # (N, m, m)
        value = jnp.mean(jax.vmap(loss)(Z, Y)) + reg(phi)
        grad = jnp.einsum("ia,ik->ak", dl, Xt[0]).reshape(nr) / N + jax.grad(reg)(phi)
        hess = _kron_sum(d2l[None], Xt)[0] / N + jax.hessian(reg)(phi)
        p_now = -jnp.einsum("aj,ia->ij", W, dl) / N  # the terminal costate
        E = -jnp.einsum("bj,iba->ija", W, d2l)[None] / N
        q = -dl[None] / N
    else:
        def R(f):
            return P.readout_objective(form, *_split_rows(m, d, f), xs, Y)

        value, grad, hess = R(phi), jax.grad(R)(phi), jax.hessian(R)(phi)
    out = {"H": -value, "g": -grad, "C": hess}
    if metric == "augmented":
        sz = _rms_costate(dl / N)  # the RMS of ∇_z ℓ, the per-sample output costate
        eye_m = jnp.broadcast_to(jnp.eye(m, dtype=dtype), (1, N, m, m))
        G = sz * _kron_sum(eye_m, Xt)[0] / N
        if with_residual:
            rz = z_ref - Z
            g_res = sz * jnp.einsum("ia,ik->ak", rz, Xt[0]).reshape(nr) / N
            res2 = sz * jnp.sum(rz * rz) / N
        if costate_weight is not None:
            cp = costate_weight * N / sz
            if form.running == 0.0:
                G = G + cp * _costate_gram(E, q, Xt)[0]
                if with_residual:
                    rp = p_ref - p_now
                    g_res = g_res + cp * _costate_jvec(E, q, Xt, rp[None])[0]
            else:
                def fp(f):
                    return P.terminal_costate(form, *_split_rows(m, d, f), x_L, Y)

                Jp = jax.jacfwd(fp)(phi)  # (N, d, nr)
                G = G + cp * jnp.einsum("idk,idl->kl", Jp, Jp)
                if with_residual:
                    rp = p_ref - fp(phi)
                    g_res = g_res + cp * jnp.einsum("idk,id->k", Jp, rp)
            if with_residual:
                res2 = res2 + cp * jnp.sum(rp * rp)
    else:
        G = jnp.eye(nr, dtype=dtype)
        if with_residual:
            g_res, res2 = -(phi - phi_ref), jnp.sum((phi - phi_ref) ** 2)
    out["G"] = _ridge(G)
    if with_residual:
        out.update(g_res=g_res, res2=res2)
    return out


# --------------------------------------------------------------------------- the iteration


def _iteration(form: P.Formulation, static: dict[str, Any], params: Params, prev: Params,
               rho: jax.Array, knobs: jax.Array, X0: jax.Array, Y: jax.Array, y: jax.Array
               ) -> dict[str, Any]:
    """One outer iteration on the samples ``X0`` (N, d), ``Y`` (N, m), labels ``y`` (N,).

    ``knobs`` = (rho_min, rho_max, rho_increase, rho_decrease, sufficient_decrease,
    max_retries, costate_weight).
    """
    dtype = X0.dtype
    L, d, m = form.layers, form.width, form.n_outputs
    h = form.h
    n, nr = d * (d + 1), m * (d + 1)
    sform = dataclasses.replace(form, l1=0.0)  # the smooth part of H; l1 goes by the prox
    metric = static["metric"]
    rho_min, rho_max, rho_up, rho_down, eta, max_retries, w, beta = (knobs[i] for i in range(8))
    w = w if static["costate"] else None
    exact = static["curvature"] == "exact"
    constrained = form.box_bound is not None or form.lipschitz_bound is not None
    has_prox = form.l1 > 0 or constrained
    eye = jnp.eye(n, dtype=dtype)

    # ---------------------------------------------------------- forward, backward
    A, b, W, c = params
    xs = P.trajectory(form, params, X0)
    # J from the states (without a running cost only x(L) enters the loss terms).
    J = P.cost_terms_from_states(form, params, xs if form.running != 0.0 else xs[-1:],
                                 Y)["total"]
    z_now = jax.vmap(model.readout, in_axes=(None, None, 0))(W, c, xs[-1])
    ps = costates(form, params, xs, Y)
    V = _join_rows(A, b)
    ctx = (xs[:-1], xs[1:], ps[1:])

    # ---------------------------------------------------------- layer models at θ_k
    # The residual terms of inner steps > 1 need the costate map of every layer.
    block = static["layer_block"] if static["inner_steps"] == 1 else None
    lm = blocked_layer_models(sform, metric, w, V, xs, ps, block)
    gx_ref = lm.get("gx")
    if form.smooth > 0 and L >= 2:  # Jacobi splitting with a separable majorizer
        gS = jax.grad(lambda v: P.smooth_cost(form, *_split_rows(d, d, v)))(V)
        neighbours = jnp.full((L,), 2.0, dtype).at[0].set(1.0).at[-1].set(1.0)
        s_curv = 2.0 * form.smooth / h * neighbours
    else:
        gS = jnp.zeros_like(V)
        s_curv = jnp.zeros((L,), dtype)
    S = s_curv[:, None, None] * eye
    g0 = lm["g"] - gS
    cc_hess = jax.vmap(jax.hessian(lambda v: P.control_cost(sform, *_split_rows(d, d, v))))
    B0 = (_abs_psd(lm["C"]) if exact else cc_hess(V)) + S
    G0 = lm["G"]

    def l1_of(V_):
        return form.l1 * h * jnp.sum(jnp.abs(V_), axis=-1)

    def prox(V_, tau):
        if form.l1 > 0:
            V_ = _soft_threshold(V_, tau * form.l1 * h)
        if constrained:
            pr = P.project(form, Params(*_split_rows(d, d, V_), W, c))
            V_ = _join_rows(pr.A, pr.b)
        return V_

    # ---------------------------------------------------------- readout model
    train_readout = form.train_readout
    # ∇²R is positive semidefinite for the convex losses; only sigmoid_mse needs |·|.
    readout_psd = _abs_psd if form.loss == "sigmoid_mse" else (lambda C: C)
    phi = _join_rows(W, c)
    if train_readout:
        rm = readout_model(form, metric, w, phi, phi, xs, Y, z_now, ps[-1], False)
        gR0, BR0, GR0 = rm["g"], readout_psd(rm["C"]), rm["G"]
    else:
        gR0 = jnp.zeros((nr,), dtype)

    # ---------------------------------------------------------- stationarity (PMP) residual
    layer_res = jnp.sqrt(jnp.sum((V - prox(V + g0, 1.0)) ** 2, axis=-1))
    readout_res = jnp.sqrt(jnp.sum(gR0 ** 2))
    residual = jnp.sqrt(jnp.sum(layer_res ** 2) + readout_res ** 2)

    # ---------------------------------------------------------- the step for a given ρ
    def solve_layers(V_from, g, B):
        """argmax_δ g·δ - ½δᵀBδ - l1(V_from + δ) over the constraints, per layer."""
        delta = _psd_solve(B, g)
        if not has_prox:
            return V_from + delta
        step = 1.0 / jnp.sqrt(jnp.sum(B * B, axis=(-2, -1)))  # 1/‖B‖_F ≤ 1/λ_max(B)

        def fista(_, carry):
            U, Z, tk = carry
            grad = g - jnp.einsum("tkl,tl->tk", B, Z - V_from)
            U_new = prox(Z + step[:, None] * grad, step[:, None])
            t_new = 0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * tk * tk))
            Z_new = U_new + ((tk - 1.0) / t_new) * (U_new - U)
            return U_new, Z_new, t_new

        U0 = prox(V_from + delta, 1.0 / jnp.diagonal(B, axis1=-2, axis2=-1))
        U, _, _ = jax.lax.fori_loop(0, static["prox_iters"], fista,
                                    (U0, U0, jnp.ones((), dtype)))
        return U

    def layer_objective(V_, lm_, r):
        D = V_ - V
        smooth = jnp.einsum("tk,tk->t", gS, D) + 0.5 * s_curv * jnp.sum(D * D, axis=-1)
        return lm_["H"] - 0.5 * r * lm_["res2"] - smooth - l1_of(V_)

    def propose(r):
        V1 = solve_layers(V, g0, B0 + r * G0)
        if static["inner_steps"] > 1:
            def inner(_, carry):
                Vj, fj = carry
                lmj = layer_models(sform, metric, w, Vj, V, *ctx, gx_ref)
                Cj = (_abs_psd(lmj["C"]) if exact else cc_hess(Vj)) + S
                gj = lmj["g"] + r * lmj["g_res"] - gS - s_curv[:, None] * (Vj - V)
                Vc = solve_layers(Vj, gj, Cj + r * lmj["G"])
                fc = layer_objective(
                    Vc, layer_models(sform, metric, w, Vc, V, *ctx, gx_ref), r)
                better = fc > fj
                return jnp.where(better[:, None], Vc, Vj), jnp.where(better, fc, fj)

            lm1 = layer_models(sform, metric, w, V1, V, *ctx, gx_ref)
            f1 = layer_objective(V1, lm1, r)
            V1, _ = jax.lax.fori_loop(0, static["inner_steps"] - 1, inner, (V1, f1))
        D = V1 - V
        pred = jnp.sum(jnp.einsum("tk,tk->t", g0, D)
                       - 0.5 * jnp.einsum("tk,tkl,tl->t", D, B0, D) - l1_of(V1) + l1_of(V))
        phi1 = phi
        if train_readout:
            phi1 = phi + _psd_solve(BR0 + r * GR0, gR0)
            if static["inner_steps"] > 1:
                def readout_objective(f):
                    rm_ = readout_model(form, metric, w, f, phi, xs, Y, z_now,
                                        ps[-1], True)
                    return rm_["H"] - 0.5 * r * rm_["res2"], rm_

                def inner_r(_, carry):
                    fj, oj = carry
                    _, rmj = readout_objective(fj)
                    fc = fj + _psd_solve(readout_psd(rmj["C"]) + r * rmj["G"],
                                         rmj["g"] + r * rmj["g_res"])
                    oc = readout_objective(fc)[0]
                    return jnp.where(oc > oj, fc, fj), jnp.maximum(oc, oj)

                phi1, _ = jax.lax.fori_loop(0, static["inner_steps"] - 1, inner_r,
                                            (phi1, readout_objective(phi1)[0]))
            Dr = phi1 - phi
            pred = pred + gR0 @ Dr - 0.5 * Dr @ BR0 @ Dr
        return Params(*_split_rows(d, d, V1), *_split_rows(m, d, phi1)), pred

    # ---------------------------------------------------------- acceptance loop
    safeguard = static["safeguard"]

    use_momentum = static["momentum"] and not has_prox

    def attempt(r, mom_on):
        new, pred = propose(r)
        if use_momentum:
            new = jax.tree.map(lambda a, m_: a + jnp.where(mom_on, beta, 0.0) * m_, new, prev)
        J_new, z_new = P.cost_and_outputs(form, new, X0, Y)
        decrease = J - J_new
        if safeguard:
            ok = jnp.isfinite(J_new) & (pred > 0) & (decrease >= eta * pred)
        else:
            ok = jnp.ones((), jnp.bool_)
        ratio = decrease / jnp.where(pred > 0, pred, 1.0)
        return new, J_new, z_new, ok, ratio

    def cond(carry):
        *_, ok, tries, r, _ = carry
        return (~ok) & (tries < max_retries) & (r <= rho_max)

    def body(carry):
        *_, tries, r, mom_on = carry
        new, J_new, z_new, ok, ratio = attempt(r, mom_on)
        # A failed trial with momentum is retried without it at the same ρ.
        r_next = jnp.where(ok | mom_on, r, r * rho_up)
        return new, J_new, z_new, ratio, ok, tries + 1, r_next, mom_on & ok

    r0 = jnp.clip(rho, rho_min, rho_max) if safeguard else rho
    has_prev = jnp.any(jnp.stack([jnp.any(a != 0) for a in prev]))
    init = (params, J, z_now, jnp.zeros((), dtype), jnp.zeros((), jnp.bool_),
            jnp.zeros((), dtype), r0, has_prev if use_momentum else jnp.zeros((), jnp.bool_))
    new, J_new, z_new, ratio, ok, tries, r_used, _ = jax.lax.while_loop(cond, body, init)
    if safeguard:
        r_after = jnp.where(ratio > RATIO_GOOD, r_used / rho_down,
                            jnp.where(ratio < RATIO_POOR, r_used * POOR_FACTOR, r_used))
        r_after = jnp.clip(jnp.where(ok, r_after, r_used), rho_min, rho_max)
    else:
        r_after = rho

    def keep(a, b_):
        return jnp.where(ok, a, b_)

    acc_now, acc_new = jax.vmap(lambda z: _accuracy(form, z, y))(
        jnp.stack([z_now, keep(z_new, z_now)]))

    return {
        "params": jax.tree.map(keep, new, params),
        "displacement": jax.tree.map(lambda a, b_: jnp.where(ok, a - b_, 0.0), new, params),
        "J": keep(J_new, J),
        "accuracy": acc_new,
        "J_start": J,
        "accuracy_start": acc_now,
        "rho": r_after,
        "rho_used": r_used,
        "accepted": ok,
        "rejected": tries - ok.astype(dtype),
        "ratio": ratio,
        "residual": residual,
        "layer_residual": layer_res,
        "readout_residual": readout_res,
    }


def _accuracy(form: P.Formulation, z: jax.Array, y: jax.Array) -> jax.Array:
    if form.task != "classification":
        return jnp.zeros((), z.dtype)
    return P.accuracy_from_outputs(form, z, y).astype(z.dtype)


def _step(form: P.Formulation, static: dict[str, Any], params: Params, prev: Params,
          rho: jax.Array,
          knobs: jax.Array, X0: jax.Array, Y: jax.Array, y: jax.Array, key: jax.Array,
          full_cost: jax.Array) -> dict[str, Any]:
    """One iteration on the full batch, or on a mini-batch drawn with ``key``; with
    mini-batches, ``full_cost`` asks for the full cost and accuracy before and after."""
    batch = static["batch_size"]
    if batch is None:
        out = _iteration(form, static, params, prev, rho, knobs, X0, Y, y)
        out.update(full_J=out["J"], full_accuracy=out["accuracy"],
                   full_J_start=out["J_start"], full_accuracy_start=out["accuracy_start"])
        return out
    idx = jax.random.choice(key, X0.shape[0], (batch,), replace=False)
    out = _iteration(form, static, params, prev, rho, knobs, X0[idx], Y[idx], y[idx])

    def evaluate(p):
        J, z = P.cost_and_outputs(form, p, X0, Y)
        return J, _accuracy(form, z, y)

    def full():
        return (*evaluate(params), *evaluate(out["params"]))

    nan = jnp.full((), jnp.nan, X0.dtype)
    J0, a0, J1, a1 = jax.lax.cond(full_cost, full, lambda: (nan, nan, nan, nan))
    out.update(full_J=J1, full_accuracy=a1, full_J_start=J0, full_accuracy_start=a0)
    return out


@functools.lru_cache(maxsize=32)
def _compiled(form: P.Formulation, static: tuple, signature: tuple,
              devices: int | None = None) -> Any:
    """The AOT-compiled iteration for one formulation, structural options and shapes;
    with ``devices``, for samples sharded over that many devices (everything else
    replicated, see :mod:`controldl.parallel`)."""
    mesh = parallel.data_mesh(devices)
    sample, whole = parallel.shardings(mesh)
    args = [jax.ShapeDtypeStruct(shape, jnp.dtype(dt), sharding=whole)
            for shape, dt in signature[:4]]
    args += [jax.ShapeDtypeStruct(shape, jnp.dtype(dt), sharding=sample)
             for shape, dt in signature[4:]]
    params = Params(*args[:4])
    X0, Y, y = args[4:]
    scalar = jax.ShapeDtypeStruct((), X0.dtype, sharding=whole)
    knobs = jax.ShapeDtypeStruct((8,), X0.dtype, sharding=whole)
    key = jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=whole)
    flag = jax.ShapeDtypeStruct((), jnp.bool_, sharding=whole)
    fn = functools.partial(_step, form, dict(static))
    return jax.jit(fn).lower(params, params, scalar, knobs, X0, Y, y, key, flag).compile()


# --------------------------------------------------------------------------- the solvers


@dataclasses.dataclass(frozen=True)
class _Pontryagin(Solver):
    """The engine shared by :class:`MSA` and :class:`EMSA` (see the module docstring)."""

    rho: float = 1.0
    rho_min: float = 1e-6
    rho_max: float = 1e10
    rho_increase: float = 4.0
    rho_decrease: float = 5.0
    sufficient_decrease: float = 1e-3
    max_retries: int = 30
    inner_steps: int = 1
    curvature: str = "exact"
    prox_iters: int = 50
    tol: float = 1e-9
    rtol: float = 1e-13
    batch_size: int | None = None
    batch_seed: int = 0
    dtype: str = "float64"
    momentum: float = 0.9
    devices: int | None = None
    layer_block: int | None = None

    metric: ClassVar[str] = "augmented"
    default_max_iter: ClassVar[int] = 500
    tolerance_option: ClassVar[str | None] = "tol"  # compare's common tolerance

    def _costate_weight(self) -> float:
        return 0.0

    def _safeguarded(self) -> bool:
        return True

    def __post_init__(self) -> None:
        def number(name: str, low: float, strict: bool) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float | np.integer | np.floating):
                raise ValueError(f"{name} must be a number, got {v!r}")
            if not math.isfinite(v):
                raise ValueError(f"{name} must be finite, got {v!r}")
            if v < low or (strict and v == low):
                raise ValueError(f"{name} must be {'>' if strict else '>='} {low}, got {v!r}")

        def integer(name: str, low: int, allow_none: bool = False) -> None:
            v = getattr(self, name)
            if v is None and allow_none:
                return
            if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {v!r}")

        number("rho", 0.0, strict=False)
        number("rho_min", 0.0, strict=True)
        number("rho_max", 0.0, strict=True)
        if self.rho_min > self.rho_max:
            raise ValueError(f"rho_min ({self.rho_min}) must not exceed rho_max ({self.rho_max})")
        if self.rho > self.rho_max:
            raise ValueError(f"rho ({self.rho}) must not exceed rho_max ({self.rho_max})")
        number("rho_increase", 1.0, strict=True)
        number("rho_decrease", 1.0, strict=False)
        number("sufficient_decrease", 0.0, strict=False)
        if self.sufficient_decrease >= 1.0:
            raise ValueError("sufficient_decrease must be in [0, 1), got "
                             f"{self.sufficient_decrease!r}")
        integer("max_retries", 1)
        integer("inner_steps", 1)
        integer("prox_iters", 1)
        integer("batch_size", 1, allow_none=True)
        integer("batch_seed", 0)
        integer("devices", 1, allow_none=True)
        integer("layer_block", 1, allow_none=True)
        number("tol", 0.0, strict=False)
        number("rtol", 0.0, strict=False)
        number("momentum", 0.0, strict=False)
        if self.momentum >= 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if self.curvature not in CURVATURES:
            raise ValueError(f"curvature must be one of {', '.join(CURVATURES)}, got "
                             f"{self.curvature!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be float64 or float32, got {self.dtype!r}")

    def _static(self) -> tuple:
        return tuple(sorted({
            "metric": self.metric, "curvature": self.curvature,
            "inner_steps": int(self.inner_steps), "prox_iters": int(self.prox_iters),
            "batch_size": None if self.batch_size is None else int(self.batch_size),
            "safeguard": self._safeguarded(), "costate": self._costate_weight() > 0,
            "momentum": self.momentum > 0,
            "layer_block": None if self.layer_block is None else int(self.layer_block),
        }.items()))

    def _knobs(self, dtype: Any) -> np.ndarray:
        return np.asarray([self.rho_min, self.rho_max, self.rho_increase, self.rho_decrease,
                            self.sufficient_decrease, self.max_retries,
                            self._costate_weight(), self.momentum], dtype)

    def run(self, problem: Problem, params: Params, monitor: Monitor) -> RunResult:
        form = problem.formulation
        dtype = DTYPES[self.dtype]
        N = problem.data.n_train
        X0, Y, y, mesh = training_arrays(problem, dtype, self.batch_size, self.devices)
        params = Params(*(np.asarray(v, np.dtype(dtype)) for v in params))
        signature = tuple((tuple(a.shape), str(a.dtype)) for a in (*params, X0, Y, y))
        with monitor.compiling():
            step = _compiled(form, self._static(), signature, self.devices)
        knobs = self._knobs(dtype)
        classify = form.task == "classification"
        batched = self.batch_size is not None
        epoch = max(N // self.batch_size, 1) if batched else 1
        max_iter = monitor.stopping.max_iter
        # Host values only: no eager device operation (each would compile) in the loop.
        rho = np.asarray(self.rho, np.dtype(dtype))
        prev = Params(*(np.zeros(v.shape, np.dtype(dtype)) for v in params))
        rhos: list[float] = []
        n_accepted = n_rejected = 0
        status, k = "max_iter", 0

        def record(k: int, J: Any, acc: Any, **extra: Any) -> str | None:
            return monitor.record(k, J, acc if classify else None, **extra)

        scalars = ("accepted", "rejected", "residual", "rho_used", "ratio", "J_start", "J",
                   "full_J_start", "full_accuracy_start", "full_J", "full_accuracy")
        while True:
            sub = np.asarray([self.batch_seed, k], np.uint32)  # a raw PRNG key
            record_after = not batched or (k + 1) % epoch == 0 or k + 1 == max_iter
            out = step(params, prev, rho, knobs, X0, Y, y, sub, k == 0 or record_after)
            info = jax.device_get({key: out[key] for key in scalars})  # one host transfer
            if k == 0:  # the cost at the initial iterate
                stop = record(0, info["full_J_start"], info["full_accuracy_start"],
                              rho=float(rho), accepted=None, rejected=0)
                if stop or max_iter == 0:
                    status = stop or status
                    break
            rejected = int(info["rejected"])
            n_rejected += rejected
            residual = float(info["residual"])
            rho = out["rho"]
            if not bool(info["accepted"]):
                status = "converged" if residual <= self.tol else "stalled"
                break
            k += 1
            n_accepted += 1
            rho_used = float(info["rho_used"])
            rhos.append(rho_used)
            params, prev = out["params"], out["displacement"]
            stop = None
            if record_after:
                stop = record(k, info["full_J"], info["full_accuracy"], rho=rho_used,
                              accepted=True, rejected=rejected, ratio=float(info["ratio"]))
            if stop:
                status = stop
                break
            if residual <= self.tol:
                status = "converged"
                break
            J_old, J_new = float(info["J_start"]), float(info["J"])
            if not batched and abs(J_old - J_new) <= self.rtol * abs(J_old):
                status = "converged"
                break
            if k >= max_iter:
                break
        # Diagnostics at the returned iterate (the iteration is compiled already; its
        # step is discarded).
        final = step(params, prev, rho, knobs, X0, Y, y, np.zeros(2, np.uint32), False)
        stats = {
            "pmp_residual": np.asarray(final["layer_residual"], np.float64).tolist(),
            "readout_residual": float(final["readout_residual"]),
            "stationarity": float(final["residual"]),
            "rho": rhos,
            "rho_final": float(rho),
            "accepted": n_accepted,
            "rejected": n_rejected,
            "metric": self.metric,
            "devices": parallel.describe(mesh),
        }
        return RunResult(params, status, k, stats)


@dataclasses.dataclass(frozen=True)
class EMSA(_Pontryagin):
    """Extended MSA: every layer maximizes its augmented Hamiltonian

    ``H_t(x(t), p(t+1), θ) - (ρ s_t/2h)(1/N)Σ_i‖x_i(t+1) - f(x_i(t), θ)‖²
    - (wρ/(2h s_t))(1/N)Σ_i‖N(p_i(t) - ∇_x H_t(x_i(t), p_i(t+1), θ))‖²``

    (``s_t`` the RMS per-sample costate ``N p(t+1)``; see :mod:`controldl.solvers.msa`),
    all layers at once by damped Newton steps, with an adaptive ``ρ`` and a
    sufficient-decrease test on ``J``.

    Attributes:
        rho: initial penalty ρ (dimensionless; the step does not depend on N, on L at a
            fixed horizon, nor on the scale of the loss).
        rho_min: lower bound of the adaptive ρ.
        rho_max: upper bound of ρ; when no trial is accepted below it the solve stalls.
        rho_increase: factor on ρ after a rejected trial (> 1).
        rho_decrease: divisor of ρ after a step whose actual/predicted decrease exceeds
            1/2 (ρ doubles below 1/4).
        sufficient_decrease: η in [0, 1): keep a trial only if J decreases by at least η
            times the model's predicted decrease.
        max_retries: trials per iteration before the solve stalls.
        inner_steps: damped Newton steps on each layer's augmented Hamiltonian (1: one
            step from the current controls, where the penalty residuals vanish).
        curvature: exact (saddle-free |∇²_θ H_t|) or gauss_newton (only the control
            cost's Hessian; the penalties give the rest).
        prox_iters: proximal-gradient iterations per trial for l1 and constraints.
        tol: converged when the stationarity (PMP) residual is at most tol.
        rtol: converged when an accepted step changes J by at most rtol·|J|.
        batch_size: mini-batch size (None: full batch; the test then uses the batch cost).
        batch_seed: seed of the mini-batch draws.
        dtype: float64 (default) or float32.
        momentum: β in [0, 1): the first trial of an iteration adds β times the previous
            step (heavy ball); it is dropped if that trial fails (0: plain E-MSA; not used
            with l1 or constraints).
        devices: shard the samples over this many devices (controls replicated); the
            result equals the single-device one. None: one device.
        layer_block: build the layers' Hamiltonian models this many layers at a time
            (memory for long horizons: the models' per-sample temporaries exist for
            k layers instead of L; the states and costates of all layers are
            still stored). None: all layers at once. Used with inner_steps=1.
        costate_weight: weight w of the costate penalty (0 drops it).
    """

    costate_weight: float = 0.1

    name: ClassVar[str] = "emsa"
    metric: ClassVar[str] = "augmented"

    def __post_init__(self) -> None:
        super().__post_init__()
        v = self.costate_weight
        if isinstance(v, bool) or not isinstance(v, int | float | np.integer | np.floating) \
                or not math.isfinite(v) or v < 0:
            raise ValueError(f"costate_weight must be a finite number >= 0, got {v!r}")
        if self.rho == 0.0:
            raise ValueError("rho must be > 0 for E-MSA (it weighs the penalties)")

    def _costate_weight(self) -> float:
        return float(self.costate_weight)


@dataclasses.dataclass(frozen=True)
class MSA(_Pontryagin):
    """Method of successive approximations: every layer maximizes its Hamiltonian with a
    proximal term, ``H_t(x(t), p(t+1), θ) - (μ/2)·h·‖θ - θ_k‖²`` (Sakawa–Shindo), all
    layers at once by damped Newton steps; ``μ`` is the option ``rho``. With
    ``safeguard`` (default) μ adapts and a sufficient-decrease test keeps J monotone;
    without it μ stays fixed and every step is taken (with ``rho=0``: Li et al.'s basic
    MSA, which may diverge).

    Attributes:
        rho: initial proximal weight μ, in the units of l2 (0 only without safeguard).
        rho_min: lower bound of the adaptive μ.
        rho_max: upper bound of μ; when no trial is accepted below it the solve stalls.
        rho_increase: factor on μ after a rejected trial (> 1).
        rho_decrease: divisor of μ after a step whose actual/predicted decrease exceeds
            1/2 (μ doubles below 1/4).
        sufficient_decrease: η in [0, 1): keep a trial only if J decreases by at least η
            times the model's predicted decrease.
        max_retries: trials per iteration before the solve stalls.
        inner_steps: damped Newton steps on each layer's proximal Hamiltonian.
        curvature: exact (saddle-free |∇²_θ H_t|) or gauss_newton (only the control
            cost's Hessian).
        prox_iters: proximal-gradient iterations per trial for l1 and constraints.
        tol: converged when the stationarity (PMP) residual is at most tol.
        rtol: converged when an accepted step changes J by at most rtol·|J|.
        batch_size: mini-batch size (None: full batch; the test then uses the batch cost).
        batch_seed: seed of the mini-batch draws.
        dtype: float64 (default) or float32.
        momentum: β in [0, 1): the first trial of an iteration adds β times the previous
            step (heavy ball); it is dropped if that trial fails (0: plain MSA; not used
            with l1 or constraints).
        devices: shard the samples over this many devices (controls replicated); the
            result equals the single-device one. None: one device.
        layer_block: build the layers' Hamiltonian models this many layers at a time
            (memory for long horizons: the models' per-sample temporaries exist for
            k layers instead of L; the states and costates of all layers are
            still stored). None: all layers at once. Used with inner_steps=1.
        safeguard: adaptive μ and the acceptance test (False: fixed μ, every step taken).
    """

    safeguard: bool = True

    name: ClassVar[str] = "msa"
    metric: ClassVar[str] = "identity"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.safeguard, bool):
            raise ValueError(f"safeguard must be True or False, got {self.safeguard!r}")
        if self.safeguard and self.rho == 0.0:
            raise ValueError("rho must be > 0 with the safeguard (it is the initial μ)")

    def _safeguarded(self) -> bool:
        return bool(self.safeguard)
