r"""Discrete controls: binary and ternary weights (``controls`` = ``binary``/``ternary``).

Every entry of ``A_t`` (a conv kernel's too) is ``α_t·s`` with a sign ``s`` in
``{−1, +1}`` (binary) or ``{−1, 0, +1}`` (ternary); ``b_t`` and the readout stay real.

**The scale** ``α_t`` follows one rule, :data:`SCALE_RULE`: it is fixed,
``α_t = 1/√fan_in`` (``fan_in = d`` for the dense models, ``C·k·k`` for conv), the standard
deviation of the shared normal initialization. Li & Hao's networks put batch
normalization after every binary layer, which absorbs the weights' scale; ours have none,
so the scale is set where the real initialization puts it: ``α_t·s`` then has the
magnitude of a real layer at initialization and ``A_t x`` the same variance.

**The cost** of a discrete formulation is the canonical ``J`` at ``A_t = α_t·s_t`` plus,
for ternary controls, ``sparsity·h·Σ_t nnz(A_t)``, the number of non-zero entries
(:func:`sparsity_cost`).

**The shared initialization** is the Euclidean projection of the real one onto the set
(:func:`project`): ``α·sign(A)`` (binary, ``sign(0) = +1``), ``α·round(clip(A/α, −1, 1))``
(ternary: zero where ``|A| < α/2``).

**The maximization over the set.** With ``m`` (the moving average of ``M_t = α_t∇_A H_t``)
and the current signs ``w``, the error-controlled step maximizes entry by entry

.. math::

    \text{binary: } m v − \tfrac{ρ_k}{2}(v − w)^2 \text{ over } v ∈ \{−1, +1\},\qquad
    \text{ternary: } m v − κ|v| − ρ_k (v − w)^2 \text{ over } v ∈ \{−1, 0, +1\},

with ``ρ_k = ρ·max{|m_j| : w_j ≠ sign(m_j)}`` per layer (0 when no entry has the wrong
sign) and ``κ`` the cost of one non-zero entry. The binary maximizer flips exactly the
wrong-signed entries with ``|m| > ρ_k`` (flipping gains ``2|m|`` and costs ``2ρ_k``); the
ternary maximizer is ``+1`` where ``m > ρ_k(1 − 2w) + κ``, ``−1`` where
``m < −ρ_k(1 + 2w) − κ``, else ``0`` (comparing ``v = ±1`` with ``v = 0``:
``m − κ − ρ_k(1 − w)² + ρ_k w² = m − κ − ρ_k(1 − 2w)``; the two conditions exclude each
other because ``ρ_k, κ ≥ 0``, so the one that holds beats both others). These are the rules
of Li & Hao's published code (``LiQianxiao/discrete-MSA``, ``layers.py``); docs/discrete.md
derives them.

**The straight-through estimator** (gradient descent on a discrete formulation): latent real
weights ``u`` in units of ``α`` clipped to ``[−1, 1]``, the forward pass at
``α·q(u)`` and the gradient passed straight through ``q`` (:func:`straight_through`);
``q`` is ``sign`` (BinaryConnect, Courbariaux et al. 2015) or the ternary-weight-network
threshold ``Δ_t = 0.7·mean|u_t|`` (Li & Liu 2016) with the fixed scale.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from controldl.problem.formulation import Formulation, Params

Array = jax.Array

SCALE_RULE = "fixed: α_t = 1/√fan_in (fan_in = d dense, C·k·k conv)"
"""The rule of the scale ``α_t`` of discrete controls (reported in ``meta.json``)."""

TWN_THRESHOLD = 0.7
"""The ternary-weight-network threshold ``Δ = 0.7·mean|u|`` (Li & Liu 2016)."""


def fan_in(form: Formulation) -> int:
    """The inputs of one output entry of ``A_t x``: ``d``, or ``C·k·k`` for conv."""
    geo = form.geometry
    return int(form.width) if geo is None else geo.channels * geo.kernel_size ** 2


def scale(form: Formulation) -> float:
    """``α = 1/√fan_in`` (:data:`SCALE_RULE`), the same for every layer."""
    return 1.0 / math.sqrt(fan_in(form))


def scales(form: Formulation) -> np.ndarray:
    """``α_t`` for every layer, (L,) float64 (``A_scale`` of ``arrays.npz``)."""
    return np.full(form.layers, scale(form))


def _sign_plus(x: Any) -> Any:
    """``sign(x)`` with ``sign(0) = +1`` (NumPy or JAX)."""
    xp = jnp if isinstance(x, jax.Array) else np
    return xp.where(x >= 0, 1, -1).astype(x.dtype)


def quantize(form: Formulation, u: Any) -> Any:
    """The nearest point of the set in units of ``α``: ``sign(u)`` (binary, ``+1`` at 0) or
    ``round(clip(u, −1, 1))`` (ternary: 0 where ``|u| ≤ 1/2``). NumPy or JAX."""
    xp = jnp if isinstance(u, jax.Array) else np
    if form.controls == "binary":
        return _sign_plus(u)
    if form.controls == "ternary":
        return xp.where(xp.abs(u) > 0.5, xp.sign(u), 0).astype(u.dtype)
    raise ValueError(f"controls={form.controls} is not a discrete set")


def project(form: Formulation, A: Any) -> Any:
    """The Euclidean projection of real controls ``A`` (L, …) onto ``α·{set}``."""
    a = scale(form)
    return a * quantize(form, A / a)


def signs(form: Formulation, A: Any) -> np.ndarray:
    """The signs ``s = A/α`` of discrete controls as int8 (``A_sign`` of ``arrays.npz``).

    Raises:
        ValueError: ``A`` is not ``α`` times a point of the set (to round-off)."""
    A = np.asarray(A, np.float64)
    s = np.rint(A / scale(form))
    allowed = (-1, 1) if form.controls == "binary" else (-1, 0, 1)
    if not np.isin(s, allowed).all() or not np.allclose(A, scale(form) * s, rtol=1e-5,
                                                       atol=0.0):
        raise ValueError(f"A is not α·{{{', '.join(map(str, allowed))}}} with α = "
                         f"{scale(form):.6g} ({form.controls} controls)")
    return s.astype(np.int8)


def exact(form: Formulation, params: Params) -> Params:
    """``params`` with ``A`` recomputed as ``α·s`` in float64 from its signs: the exact
    discrete controls, whatever precision the solver used."""
    A = scale(form) * signs(form, params.A).astype(np.float64)
    return params._replace(A=A)


def zero_fraction(A: Any) -> float:
    """The fraction of entries of ``A`` that are exactly zero."""
    A = np.asarray(A)
    return float(np.mean(A == 0)) if A.size else 0.0


def nonzeros(A: Array) -> Array:
    """``Σ_t nnz(A_t)``, the number of non-zero entries, in ``A``'s dtype (traceable)."""
    return jnp.sum(A != 0).astype(A.dtype)


def sparsity_cost(form: Formulation, A: Array) -> Array:
    """``s·h·Σ_t nnz(A_t)``: the ternary formulation's sparsity term (traceable)."""
    return form.sparsity * form.h * nonzeros(A)


def entry_cost(form: Formulation) -> Any:
    """``κ``: what one non-zero entry ``±α`` of ``A_t`` adds to the layer's control cost,
    ``h·(s + β·α + (λ/2)·α²)`` (sparsity, l1 and l2 are all proportional to ``|v|`` on
    ``{−1, 0, +1}``). Traced numbers of ``form``."""
    a = scale(form)
    return form.h * (form.sparsity + form.l1 * a + 0.5 * form.l2 * a * a)


# --------------------------------------------------------------------------- the maximization


def wrong_signs(m: Array, w: Array, controls: str) -> Array:
    """Where the current signs ``w`` differ from the target ``sign(m)``: ``sign⁺`` (0 → +1)
    for binary, ``sign`` (0 at 0, so a zero entry with ``m ≠ 0`` is wrong) for ternary."""
    target = _sign_plus(m) if controls == "binary" else jnp.sign(m)
    return w != target


def error_control(m: Array, w: Array, rho: Any, controls: str) -> Array:
    """``ρ_k = ρ·max{|m_j| : j of wrong sign}`` over one layer (0 when none is wrong)."""
    wrong = wrong_signs(m, w, controls)
    return rho * jnp.max(jnp.where(wrong, jnp.abs(m), 0.0))


def maximize(m: Array, w: Array, rho: Any, kappa: Any, controls: str) -> Array:
    """The new signs of one layer (the module docstring's entrywise maximizer): ``m`` the
    moving average of ``M_t``, ``w`` the current signs (same shape), ``ρ`` the
    error-control parameter, ``κ`` the cost of a non-zero entry (ternary only)."""
    rho_k = error_control(m, w, rho, controls)
    if controls == "binary":
        flip = wrong_signs(m, w, controls) & (jnp.abs(m) > rho_k)
        return jnp.where(flip, -w, w)
    plus = m > rho_k * (1.0 - 2.0 * w) + kappa
    minus = m < -rho_k * (1.0 + 2.0 * w) - kappa
    return jnp.where(plus, 1.0, jnp.where(minus, -1.0, 0.0)).astype(w.dtype)


# --------------------------------------------------------------------------- straight-through


def latent(form: Formulation, A: Any) -> Any:
    """Latent weights ``u = clip(A/α, −1, 1)`` of controls ``A`` (JAX)."""
    return jnp.clip(jnp.asarray(A) / scale(form), -1.0, 1.0)


def estimator_quantize(form: Formulation, u: Array) -> Array:
    """``q(u)``: ``sign⁺(u)`` (BinaryConnect) or, per layer, ``sign(u)`` where
    ``|u| > 0.7·mean|u_t|`` and 0 elsewhere (the ternary-weight-network threshold)."""
    if form.controls == "binary":
        return _sign_plus(u)
    axes = tuple(range(1, u.ndim))
    delta = TWN_THRESHOLD * jnp.mean(jnp.abs(u), axis=axes, keepdims=True)
    return jnp.where(jnp.abs(u) > delta, jnp.sign(u), 0.0).astype(u.dtype)


def straight_through(form: Formulation, params: Params) -> Params:
    """The parameters the forward pass sees from latent ``params.A`` = ``u``:
    ``A = α·q(u)``, whose derivative with respect to ``u`` is taken as ``α`` (the
    straight-through estimator): ``∂J/∂u = α·∂J/∂A``."""
    u = params.A
    q = u + jax.lax.stop_gradient(estimator_quantize(form, u) - u)
    return params._replace(A=scale(form) * q)


def from_latent(form: Formulation, params: Params) -> Params:
    """The projected controls ``α·q(u)`` of latent ``params.A`` (what a solution holds)."""
    return params._replace(A=scale(form) * estimator_quantize(form, params.A))


ESTIMATORS: dict[str, str] = {
    "binary": "BinaryConnect (straight-through sign, latent weights clipped to [-1, 1])",
    "ternary": "ternary-weight-network threshold 0.7·mean|u| (straight-through, latent "
               "weights clipped to [-1, 1])"}
"""What gradient descent on a discrete formulation is, for ``stats['estimator']``."""
