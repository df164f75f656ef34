"""Where each block of the NLP's variable vector ``w`` lives, and the packing of
:class:`~controldl.problem.Params` into it and back.

Blocks, in order: the controls — ``A`` (L·d·d, each ``A_t`` column-major) then ``b``
(L·d), or with the L1 split ``A⁺, b⁺, A⁻, b⁻`` — the readout ``W`` (m·d, column-major)
and ``c`` (m) when it is trained, the states ``x_i(t)``, t = 1..L (``d`` per sample,
samples consecutive, layers consecutive) for multiple shooting, and the factors ``R_t``
(upper triangle, column-major) of the exact Lipschitz form.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import casadi as ca
import numpy as np

from controldl import model


class Blocks(NamedTuple):
    """The slices of ``w`` that hold each block (empty when the block is absent)."""

    controls: slice
    readout: slice
    states: slice
    factors: slice


@dataclasses.dataclass(frozen=True)
class Layout:
    """The sizes of the NLP's blocks: ``L`` layers, width ``d``, ``m`` outputs, ``N``
    samples; ``split`` (L1 split of the controls), ``readout`` (W, c are variables),
    ``states`` (multiple shooting), ``factors`` (spectral Lipschitz factors ``R_t``).
    For the conv model ``kernel`` k and ``channels`` C: a layer's ``A_t`` is then the
    kernel matrix (C, k·k·C) of :func:`controldl.model.kernel_matrix`, ``b_t`` (C,), and
    ``features`` the readout's input dimension (``d`` without pooling)."""

    L: int
    d: int
    m: int
    N: int
    split: bool
    readout: bool
    states: bool
    factors: bool
    kernel: int = 0
    channels: int = 0
    features: int = 0

    @property
    def a_shape(self) -> tuple[int, int]:
        """A layer's ``A_t`` as a matrix: (d, d), or (C, k·k·C) for the conv model."""
        if self.kernel:
            return self.channels, self.kernel * self.kernel * self.channels
        return self.d, self.d

    @property
    def n_a(self) -> int:
        return self.a_shape[0] * self.a_shape[1]

    @property
    def n_b(self) -> int:
        return self.channels if self.kernel else self.d

    @property
    def d_out(self) -> int:
        """The readout's input dimension (the columns of ``W``)."""
        return self.features or self.d

    @property
    def n_theta(self) -> int:
        """Number of effective controls ``P_θ = L·(d² + d)`` (``L·(C²k² + C)`` for conv)."""
        return self.L * (self.n_a + self.n_b)

    @property
    def n_controls(self) -> int:
        return self.n_theta * (2 if self.split else 1)

    @property
    def n_readout(self) -> int:
        return self.m * self.d_out + self.m if self.readout else 0

    @property
    def n_states(self) -> int:
        return self.L * self.N * self.d if self.states else 0

    @property
    def n_tri(self) -> int:
        return self.d * (self.d + 1) // 2

    @property
    def n_factors(self) -> int:
        return self.L * self.n_tri if self.factors else 0

    @property
    def n(self) -> int:
        return self.n_controls + self.n_readout + self.n_states + self.n_factors

    def blocks(self) -> Blocks:
        sizes = (self.n_controls, self.n_readout, self.n_states, self.n_factors)
        starts = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        return Blocks(*(slice(int(s), int(e)) for s, e in zip(starts[:-1], starts[1:],
                                                              strict=True)))

    def pack_theta(self, A: np.ndarray, b: np.ndarray) -> np.ndarray:
        """``θ = (vec A_0, …, vec A_{L-1}, b_0, …, b_{L-1})`` (column-major ``vec``; for
        conv ``A_t`` is the kernel matrix of the kernels ``A`` (L, C, C, k, k))."""
        A = np.asarray(A, np.float64)
        if self.kernel:
            A = model.kernel_matrix(A)
        return np.concatenate([A.transpose(0, 2, 1).reshape(-1),
                               np.asarray(b, np.float64).reshape(-1)])

    def unpack_theta(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(A (L, d, d), b (L, d))`` from ``θ`` (conv: ``(K (L, C, C, k, k), b (L, C))``)."""
        L, (r, c), na = self.L, self.a_shape, self.L * self.n_a
        A = np.asarray(theta)[:na].reshape(L, c, r).transpose(0, 2, 1)
        if self.kernel:
            C, k = self.channels, self.kernel
            A = A.reshape(L, C, k, k, C).transpose(0, 1, 4, 2, 3)
        return np.ascontiguousarray(A), np.asarray(theta)[na:].reshape(L, self.n_b).copy()

    def pack_readout(self, W: np.ndarray, c: np.ndarray) -> np.ndarray:
        """``(vec W, c)`` (column-major ``vec``)."""
        return np.concatenate([np.asarray(W, np.float64).ravel(order="F"),
                               np.asarray(c, np.float64).reshape(-1)])

    def unpack_readout(self, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(W (m, d), c (m,))`` from ``(vec W, c)``."""
        m, d = self.m, self.d_out
        return v[: m * d].reshape(m, d, order="F").copy(), v[m * d:].copy()

    def theta_of(self, ctrl: Any) -> Any:
        """The effective controls ``θ`` from the control block (``θ⁺ − θ⁻`` when split);
        numpy arrays or CasADi expressions."""
        return ctrl[: self.n_theta] - ctrl[self.n_theta:] if self.split else ctrl


def effective_map(lay: Layout) -> ca.DM:
    """The constant sparse matrix ``T`` with ``v = T w``: ``v = (θ, vec W, c)`` the
    effective controls and readout (``θ = θ⁺ − θ⁻`` with the L1 split), ``w`` the NLP
    variables. Shape ``(P_θ + n_readout) × n``."""
    ctrl, ro = lay.blocks().controls, lay.blocks().readout
    P_ = lay.n_theta
    rows = list(range(P_))
    cols = list(range(ctrl.start, ctrl.start + P_))
    vals = [1.0] * P_
    if lay.split:
        rows += list(range(P_))
        cols += list(range(ctrl.start + P_, ctrl.start + 2 * P_))
        vals += [-1.0] * P_
    if lay.readout:
        rows += list(range(P_, P_ + lay.n_readout))
        cols += list(range(ro.start, ro.stop))
        vals += [1.0] * lay.n_readout
    sp = ca.Sparsity.triplet(P_ + lay.n_readout, lay.n, rows, cols)
    T = ca.DM(sp, 0.0)
    for r, c_, v in zip(rows, cols, vals, strict=True):
        T[r, c_] = v
    return T


def block_diagonal(K: int, m: int) -> ca.Sparsity:
    """The sparsity of ``K`` dense ``m×m`` blocks on the diagonal (its column-major
    nonzeros are the columns of the blocks in order)."""
    rows = [k * m + i for k in range(K) for j in range(m) for i in range(m)]
    cols = [k * m + j for k in range(K) for j in range(m) for i in range(m)]
    return ca.Sparsity.triplet(K * m, K * m, rows, cols)


def triu_to_matrix(v: Any, d: int) -> Any:
    """An upper-triangular ``d×d`` CasADi matrix from its column-major upper nonzeros."""
    return ca.sparsity_cast(v, ca.Sparsity.upper(d)) if d > 0 else v


def factor_init(A: np.ndarray, h: float, bound: float) -> np.ndarray:
    """Upper-triangular ``R`` with ``RᵀR = I − (h/B)² AᵀA`` (negative eigenvalues clipped),
    returned as its column-major upper nonzeros (``d(d+1)/2``)."""
    d = A.shape[0]
    M = np.eye(d) - (h / bound) ** 2 * A.T @ A
    lam, V = np.linalg.eigh((M + M.T) / 2)
    F = np.sqrt(np.maximum(lam, 0.0))[:, None] * V.T  # FᵀF = M⁺
    R = np.linalg.qr(F, mode="r")
    return np.concatenate([R[: j + 1, j] for j in range(d)])
