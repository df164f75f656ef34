r"""Dense linear algebra of the layer-wise trust-region Newton method (:mod:`.newton`).

A layer's unknowns are the rows of ``[A_t | b_t]`` flattened, ``n = d(d+1)`` numbers; the
readout's are the rows of ``[W | c]``, ``m(d+1)`` numbers. The per-layer Newton systems
are small dense symmetric matrices, one per layer, solved as a batch.

Every sum over the samples of a per-sample outer product is built here from the
structure of the canonical layer (the pre-activation ``u = [A | b] x̃`` is linear in the
controls, ``x̃ = (x, 1)``): a Jacobian in ``[A | b]`` is a Kronecker product with ``x̃``, so
``Σ_i J_iᵀ M_i J_i = Σ_i M_i ⊗ x̃_i x̃_iᵀ`` and no per-sample Jacobian is formed.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

RIDGE = 1e-6
"""Relative ridge of a penalty matrix: ``G + RIDGE·tr(G)/n·I`` (so that ρ damps every
direction)."""


# --------------------------------------------------------------------------- flat vectors


def split_rows(r: int, d: int, v: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``v`` (..., r(d+1)), the rows of ``[A | b]``, → ``A`` (..., r, d), ``b`` (..., r)."""
    Ab = v.reshape(v.shape[:-1] + (r, d + 1))
    return Ab[..., :d], Ab[..., d]


def join_rows(A: jax.Array, b: jax.Array) -> jax.Array:
    """``A`` (..., r, d), ``b`` (..., r) → the rows of ``[A | b]`` flattened (..., r(d+1))."""
    Ab = jnp.concatenate([A, b[..., None]], axis=-1)
    return Ab.reshape(Ab.shape[:-2] + (-1,))


# --------------------------------------------------------------------------- symmetric solves


def abs_psd(H: jax.Array) -> jax.Array:
    """``V|Λ|Vᵀ`` for a symmetric (batch of) matrix ``H = VΛVᵀ``: the saddle-free Newton
    curvature, positive semidefinite."""
    H = 0.5 * (H + jnp.swapaxes(H, -1, -2))
    lam, V = jnp.linalg.eigh(H)
    return (V * jnp.abs(lam)[..., None, :]) @ jnp.swapaxes(V, -1, -2)


def levenberg_shift(M: jax.Array) -> jax.Array:
    """``M + τI`` with ``τ = √ε·max(max_j M_jj, tiny)`` per matrix (``ε`` the machine
    epsilon): a Levenberg shift relative to the matrix's own scale. A positive
    semidefinite ``M`` — singular ones included, such as the rows of the padded inputs at
    layer 0 when ``d > n`` — becomes positive definite with condition number at most
    about ``n/√ε``, so its Cholesky factorization exists."""
    n = M.shape[-1]
    info = jnp.finfo(M.dtype)
    scale = jnp.max(jnp.diagonal(M, axis1=-2, axis2=-1), axis=-1)
    tau = jnp.sqrt(info.eps) * jnp.maximum(scale, jnp.sqrt(info.tiny))
    return M + tau[..., None, None] * jnp.eye(n, dtype=M.dtype)


def psd_solve(M: jax.Array, g: jax.Array) -> jax.Array:
    """``(M + τI)⁻¹ g`` (:func:`levenberg_shift`) for a (batch of) symmetric positive
    semidefinite ``M`` (..., n, n), ``g`` (..., n), by Cholesky. The result is
    non-finite exactly when the factorization failed (a non-finite or indefinite ``M``):
    callers test it with ``jnp.isfinite``."""
    factor = jax.scipy.linalg.cho_factor(levenberg_shift(M))
    return jax.scipy.linalg.cho_solve(factor, g[..., None])[..., 0]


def ridge(G: jax.Array) -> jax.Array:
    """``G + RIDGE·tr(G)/n·I`` for a (batch of) ``G`` (..., n, n)."""
    n = G.shape[-1]
    tr = jnp.trace(G, axis1=-2, axis2=-1)
    return G + (RIDGE * tr / n)[..., None, None] * jnp.eye(n, dtype=G.dtype)


def soft_threshold(v: jax.Array, tau: jax.Array | float) -> jax.Array:
    """The prox of ``τ‖·‖₁``: ``sign(v)·max(|v| - τ, 0)``."""
    return jnp.sign(v) * jnp.maximum(jnp.abs(v) - tau, 0.0)


# --------------------------------------------------------------------------- Kronecker sums


def kron_sum(M: jax.Array, Xt: jax.Array) -> jax.Array:
    """``Σ_i M_i ⊗ x̃_i x̃_iᵀ`` per batch: ``M`` (B, N, r, r), ``x̃`` (B, N, k) →
    (B, r·k, r·k) in the ``(row a, column j)`` order of ``[A | b]``."""
    B, N, r, _ = M.shape
    k = Xt.shape[-1]
    XX = (Xt[..., :, None] * Xt[..., None, :]).reshape(B, N, k * k)
    S = jnp.einsum("tip,tiq->tpq", M.reshape(B, N, r * r), XX)  # (B, r·r, k·k)
    S = S.reshape(B, r, r, k, k).transpose(0, 1, 3, 2, 4)
    return S.reshape(B, r * k, r * k)


def diag_kron_sums(D: jax.Array, Xt: jax.Array) -> jax.Array:
    """:func:`kron_sum` for diagonal ``M_i = diag(D_i)``, several at once: ``D``
    (S, L, N, r), ``x̃`` (L, N, k) → (S, L, r·k, r·k), block diagonal over the rows."""
    S, L, N, r = D.shape
    k = Xt.shape[-1]
    XX = (Xt[..., :, None] * Xt[..., None, :]).reshape(L, N, k * k)
    M = jnp.einsum("stia,tiq->staq", D, XX).reshape(S, L, r, k, k)
    eye = jnp.eye(r, dtype=D.dtype)
    out = M[:, :, :, :, None, :] * eye[None, None, :, None, :, None]  # [a, k, b, l]
    return out.reshape(S, L, r * k, r * k)


def _padded_identity(d: int, dtype: jnp.dtype) -> jax.Array:
    """``diag(1, …, 1, 0)`` (d+1, d+1): the ``A`` columns of ``[A | b]`` (not ``b``)."""
    return jnp.diag(jnp.concatenate([jnp.ones(d, dtype), jnp.zeros(1, dtype)]))


def costate_gram(E: jax.Array, q: jax.Array, Xt: jax.Array) -> jax.Array:
    """``Σ_i J_iᵀJ_i`` for the Jacobian in ``[A | b]`` of a costate map
    ``g(θ) = a(u) + Aᵀq(u)``, ``u = [A | b] x̃``:
    ``J[j, (a, k)] = E_{ja} x̃_k + q_a δ_{jk}`` (the last term for ``k < d`` only), with
    ``E = ∂g/∂u`` (B, N, d, r), ``q`` (B, N, r), ``x̃`` (B, N, d+1) → (B, r(d+1), r(d+1))."""
    B, N, d, r = E.shape
    k = d + 1
    T1 = kron_sum(jnp.einsum("tija,tijb->tiab", E, E), Xt)
    Ep = jnp.concatenate([E, jnp.zeros((B, N, 1, r), E.dtype)], axis=2)  # (B, N, d+1, r)
    EQ = (Ep[..., :, :, None] * q[..., None, None, :]).reshape(B, N, k * r * r)
    T2 = jnp.einsum("tip,tik->tpk", EQ, Xt).reshape(B, k, r, r, k)  # [l, a, b, k]
    T2 = T2.transpose(0, 2, 4, 3, 1).reshape(B, r * k, r * k)  # Σ_i x̃_k q_b E_{la}
    Qq = jnp.einsum("tia,tib->tab", q, q)
    Ipad = _padded_identity(d, E.dtype)
    T4 = (Qq[:, :, None, :, None] * Ipad[None, None, :, None, :]).reshape(B, r * k, r * k)
    return T1 + T2 + jnp.swapaxes(T2, -1, -2) + T4


def costate_jvec(E: jax.Array, q: jax.Array, Xt: jax.Array, res: jax.Array) -> jax.Array:
    """``Σ_i J_iᵀ res_i`` for the Jacobian of :func:`costate_gram`; ``res`` (B, N, d)
    → (B, r(d+1))."""
    B, N, d, r = E.shape
    res_pad = jnp.concatenate([res, jnp.zeros((B, N, 1), res.dtype)], axis=-1)
    Er = jnp.einsum("tija,tij->tia", E, res)
    out = jnp.einsum("tia,tik->tak", Er, Xt) + jnp.einsum("tia,tik->tak", q, res_pad)
    return out.reshape(B, r * (d + 1))


def layer_costate_gram(A: jax.Array, K: jax.Array, q: jax.Array, Xt: jax.Array
                       ) -> jax.Array:
    """:func:`costate_gram` for a layer, where ``E = Aᵀ diag(K)`` (``E_{ja} = A_{aj}K_a``):
    the per-sample products become sums over the samples of small outer products.
    ``A`` (L, d, d), ``K``, ``q`` (L, N, d), ``x̃`` (L, N, d+1) → (L, d(d+1), d(d+1))."""
    L, N, d = K.shape
    k = d + 1
    XX = (Xt[..., :, None] * Xt[..., None, :]).reshape(L, N, k * k)
    KK = (K[..., :, None] * K[..., None, :]).reshape(L, N, d * d)
    M1 = jnp.einsum("tip,tiq->tpq", KK, XX).reshape(L, d, d, k, k)  # [a, b, k, l]
    AA = jnp.einsum("taj,tbj->tab", A, A)
    T1 = (AA[:, :, :, None, None] * M1).transpose(0, 1, 3, 2, 4)  # [a, k, b, l]
    KQ = (K[..., :, None] * q[..., None, :]).reshape(L, N, d * d)
    M2 = jnp.einsum("tip,tik->tpk", KQ, Xt).reshape(L, d, d, k)  # Σ_i K_a q_b x̃_k
    Ap = jnp.concatenate([A, jnp.zeros((L, d, 1), K.dtype)], axis=-1)  # A_{al}, l < d
    T2 = M2.transpose(0, 1, 3, 2)[..., None] * Ap[:, :, None, None, :]  # [a, k, b, l]
    Qq = jnp.einsum("tia,tib->tab", q, q)
    T4 = Qq[:, :, None, :, None] * _padded_identity(d, K.dtype)[None, None, :, None, :]
    T = (T1 + T4).reshape(L, d * k, d * k)
    T2 = T2.reshape(L, d * k, d * k)
    return T + T2 + jnp.swapaxes(T2, -1, -2)


def layer_costate_jvec(A: jax.Array, K: jax.Array, q: jax.Array, Xt: jax.Array,
                       res: jax.Array) -> jax.Array:
    """:func:`costate_jvec` for a layer (``E = Aᵀ diag(K)``); ``res`` (L, N, d) →
    (L, d(d+1))."""
    L, N, d = K.shape
    res_pad = jnp.concatenate([res, jnp.zeros((L, N, 1), res.dtype)], axis=-1)
    Er = K * jnp.einsum("taj,tij->tia", A, res)
    out = jnp.einsum("tia,tik->tak", Er, Xt) + jnp.einsum("tia,tik->tak", q, res_pad)
    return out.reshape(L, d * (d + 1))
