"""The constraints of the problem: one projection (the box ``|A|, |b| ≤ M`` and the
Lipschitz bound ``h·‖A_t‖₂ ≤ B``) and the one measure of ``h·‖A_t‖₂``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from controldl.conv import project_kernels, same_norm
from controldl.problem.formulation import Formulation, Params

Array = jax.Array


def clip_spectral_norm(A: Array, bound: float) -> Array:
    """Clip the singular values of each ``A_t`` (..., d, d) at ``bound``; an ``A_t`` whose
    singular values are all within it is returned as it is (the projection of a point of
    the set is the point, exactly, not its SVD reassembled in round-off)."""
    U, s, Vt = jnp.linalg.svd(A, full_matrices=False)
    inside = jnp.max(s, axis=-1) <= bound
    return jnp.where(inside[..., None, None], A, (U * jnp.minimum(s, bound)[..., None, :]) @ Vt)


def project(form: Formulation, params: Params, rounds: int = 20) -> Params:
    """Euclidean-style projection onto the constraints: ``|A|, |b| ≤ M`` entrywise (clip) and
    ``h·‖A_t‖₂ ≤ B`` (clip singular values at ``B/h``). With both, alternate ``rounds``
    times, ending on the spectral clip so that the Lipschitz bound holds exactly."""
    A, b, W, c = params
    box, lip = form.box_bound, form.lipschitz_bound
    if box is not None:
        b = jnp.clip(b, -box, box)
    if box is not None and lip is None:
        A = jnp.clip(A, -box, box)
    elif lip is not None:
        for _ in range(rounds if box is not None else 1):
            if box is not None:
                A = jnp.clip(A, -box, box)
            A = _lipschitz_projection(form, A, lip)
    return Params(A, b, W, c)


def _lipschitz_projection(form: Formulation, A: Array, bound: float) -> Array:
    """Dense: singular values clipped at ``B/h``; conv: kernels scaled onto the sufficient
    set ``h·norm_bound(K_t) ≤ B`` (:func:`controldl.conv.project_kernels`)."""
    geo = form.geometry
    if geo is None:
        return clip_spectral_norm(A, bound / form.h)
    return project_kernels(A, form.h, bound, geo.height, geo.width)


def lipschitz_constants(form: Formulation, params: Params) -> np.ndarray:
    """``h·‖A_t‖₂`` for every layer (L,) — below 1 means the residual layer is invertible;
    for ``conv`` ``h·‖K_t ⋆ ·‖₂`` of the 'same'-padded convolution, exactly
    (:func:`controldl.conv.same_norm`)."""
    geo = form.geometry
    if geo is not None:
        return form.h * same_norm(geo, np.asarray(params.A))
    return form.h * np.linalg.norm(np.asarray(params.A), ord=2, axis=(1, 2))
