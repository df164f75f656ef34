r"""The convolutional controls' operator norm, the Lipschitz projection and the kernels'
initialization.

The layer ``x ↦ x + h·σ(K ⋆ x + b)`` is invertible when ``h·‖K ⋆ ·‖₂ < 1`` (σ
1-Lipschitz), ``K ⋆ ·`` the 'same'-padded convolution on ``C × H × W`` images
(:func:`controldl.model.conv`). Its operator norm is bounded exactly and cheaply through
the circular convolution on the larger torus of ``(H + k − 1) × (W + k − 1)`` pixels:

- the 'same' convolution is ``Crop ∘ Circ ∘ Embed`` (embed the image in the torus with
  zeros, convolve circularly, crop): with ``p = (k − 1)/2`` zero rows and columns on each
  side, no output pixel of the crop sees a wrapped-around input, and ``Crop``, ``Embed``
  have norm 1, so ``‖K ⋆ ·‖₂ ≤ ‖Circ‖₂``;
- a circular convolution is diagonalized by the 2-D DFT: ``‖Circ‖₂ = max_ω ‖K̂(ω)‖₂``
  with ``K̂(ω) = Σ_{i,j} K[:, :, i, j] e^{−2πi(ω₁ i/H' + ω₂ j/W')}`` (C × C, one per
  frequency of the torus; the phase of the shift by ``p`` does not change the norm).

So :func:`norm_bound` is exact for circular padding on the torus and an upper bound (a
few per cent above on small images, see docs/conv.md) of the 'same'-padded norm, which
:func:`same_norm` computes exactly from the dense operator (for reports and tests).

The projection :func:`project_kernels` scales ``K_t`` by ``B/(h·norm_bound(K_t))`` when
that is below 1: a radial retraction onto the *sufficient* set
``{K : h·norm_bound(K) ≤ B} ⊂ {K : h‖K ⋆ ·‖₂ ≤ B}``, not the Euclidean projection onto
either set. It keeps the direction of the kernel, is the identity inside the set and is
what gradient descent and the Pontryagin solvers apply (through
:func:`controldl.problem.project`).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from controldl import model, rng

Array = jax.Array


def norm_bound(K: Array, height: int, width: int) -> Array:
    """``max_ω ‖K̂(ω)‖₂`` on the ``(H + k − 1) × (W + k − 1)`` torus for kernels ``K``
    (..., C, C, k, k) → (...): the exact norm of the circular convolution there, an
    upper bound of the 'same'-padded one on ``H × W`` images."""
    k = K.shape[-1]
    Kf = jnp.fft.fft2(K, s=(height + k - 1, width + k - 1), axes=(-2, -1))
    Kf = jnp.moveaxis(jnp.moveaxis(Kf, -2, -4), -1, -4)  # (..., H', W', C, C)
    sv = jnp.linalg.svd(Kf, compute_uv=False)
    return jnp.max(sv[..., 0], axis=(-2, -1))


def project_kernels(K: Array, h: Any, bound: Any, height: int, width: int) -> Array:
    """``K_t · min(1, B / (h·norm_bound(K_t)))`` for every layer of ``K`` (L, C, C, k, k):
    afterwards ``h‖K_t ⋆ ·‖₂ ≤ h·norm_bound(K_t) ≤ B`` (a sufficient set, see the module)."""
    nb = norm_bound(K, height, width)
    scale = jnp.minimum(1.0, bound / jnp.maximum(h * nb, jnp.finfo(K.dtype).tiny))
    return K * scale[:, None, None, None, None]


def operator_matrix(geometry: model.ConvGeometry, K: np.ndarray) -> np.ndarray:
    """The dense matrix (C·H·W, C·H·W) of ``x ↦ K ⋆ x`` ('same' padding, no bias), column
    ``j`` the convolution of the j-th unit image (:func:`controldl.model.conv`)."""
    ops = model.ops_for("jax")
    n = geometry.channels * geometry.pixels
    Km = model.kernel_matrix(jnp.asarray(K))
    zero = jnp.zeros(geometry.channels, Km.dtype)
    apply = jax.vmap(lambda e: model.conv(ops, geometry, Km, zero, e))
    return np.asarray(apply(jnp.eye(n, dtype=Km.dtype))).T


def same_norm(geometry: model.ConvGeometry, K: np.ndarray) -> np.ndarray:
    """``‖K_t ⋆ ·‖₂`` exactly (the largest singular value of the dense operator) for every
    layer of ``K`` (L, C, C, k, k) → (L,). Costs ``O((C·H·W)³)`` per layer: reports only."""
    return np.array([np.linalg.norm(operator_matrix(geometry, Kt), 2) for Kt in np.asarray(K)])


def init_kernels(key: np.ndarray, shape: tuple[int, ...], scale: Any, dtype: Any) -> np.ndarray:
    """Kernels ``N(0, scale² / (C·k·k))`` (the fan-in of one output pixel), shape
    (L, C, C, k, k): ``jax.random.normal(key, shape, dtype)`` drawn on the host
    (:func:`controldl.rng.normal`)."""
    fan_in = shape[2] * shape[3] * shape[4]
    return scale / math.sqrt(fan_in) * rng.normal(key, shape, dtype)
