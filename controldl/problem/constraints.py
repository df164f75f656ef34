"""The constraints of the problem: one projection (the box ``|A|, |b| ≤ M`` and the
Lipschitz bound ``h·‖A_t‖₂ ≤ B``) and the one measure of ``h·‖A_t‖₂``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from controldl.problem.formulation import Formulation, Params

Array = jax.Array


def clip_spectral_norm(A: Array, bound: float) -> Array:
    """Clip the singular values of each ``A_t`` (..., d, d) at ``bound``."""
    U, s, Vt = jnp.linalg.svd(A, full_matrices=False)
    return (U * jnp.minimum(s, bound)[..., None, :]) @ Vt


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
            A = clip_spectral_norm(A, lip / form.h)
    return Params(A, b, W, c)


def lipschitz_constants(form: Formulation, params: Params) -> np.ndarray:
    """``h·‖A_t‖₂`` for every layer (L,) — below 1 means the residual layer is invertible."""
    return form.h * np.linalg.norm(np.asarray(params.A), ord=2, axis=(1, 2))
