"""CasADi callbacks: the Gauss-Newton Gram product with BLAS, and IPOPT's per-iteration
hook."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import casadi as ca
import numpy as np


class GramCallback(ca.Callback):
    """``H = s·Σ_k G_k D_k G_kᵀ`` with BLAS: ``G`` is ``P × K·m`` (blocks ``G_k`` of ``m``
    columns), ``D`` is ``m × K·m`` (symmetric blocks ``D_k``). Output dense ``P × P``."""

    def __init__(self, name: str, P_: int, K: int, m: int, scale: float) -> None:
        ca.Callback.__init__(self)
        self.P, self.K, self.m, self.scale = P_, K, m, scale
        self.construct(name, {})

    def get_n_in(self) -> int:
        return 2

    def get_n_out(self) -> int:
        return 1

    def get_sparsity_in(self, i: int) -> ca.Sparsity:
        if i == 0:
            return ca.Sparsity.dense(self.P, self.K * self.m)
        return ca.Sparsity.dense(self.m, self.K * self.m)

    def get_sparsity_out(self, i: int) -> ca.Sparsity:
        return ca.Sparsity.dense(self.P, self.P)

    def has_eval_buffer(self) -> bool:
        return True

    def eval_buffer(self, arg: Any, res: Any) -> int:
        K, m, P_ = self.K, self.m, self.P
        Gt = np.frombuffer(arg[0], dtype=np.float64).reshape(K * m, P_)  # rows: columns of G
        Dt = np.frombuffer(arg[1], dtype=np.float64)
        if m == 1:
            GD = Gt * Dt[:, None]
        else:
            GD = np.einsum("kjl,klp->kjp", Dt.reshape(K, m, m),
                           Gt.reshape(K, m, P_)).reshape(K * m, P_)
        H = GD.T @ Gt
        H *= self.scale
        out = np.frombuffer(res[0], dtype=np.float64).reshape(P_, P_)
        out[:] = (H + H.T) * 0.5  # column-major = transpose; symmetric anyway
        return 0


class IterationCallback(ca.Callback):
    """Called by IPOPT (through CasADi) once per iteration with the current iterate
    (``nlpsol``'s outputs); ``on_iteration`` returns True to ask IPOPT to stop."""

    def __init__(self, nx: int, ng: int, np_: int, on_iteration: Callable[[Any], bool]
                 ) -> None:
        ca.Callback.__init__(self)
        self.nx, self.ng, self.np_ = nx, ng, np_
        self.on_iteration = on_iteration
        self.construct("controldl_iteration", {})

    def get_n_in(self) -> int:
        return ca.nlpsol_n_out()

    def get_n_out(self) -> int:
        return 1

    def get_name_in(self, i: int) -> str:
        return ca.nlpsol_out(i)

    def get_name_out(self, i: int) -> str:
        return "ret"

    def get_sparsity_in(self, i: int) -> ca.Sparsity:
        name = ca.nlpsol_out(i)
        if name == "f":
            return ca.Sparsity.scalar()
        if name in ("x", "lam_x"):
            return ca.Sparsity.dense(self.nx)
        if name in ("g", "lam_g"):
            return ca.Sparsity.dense(self.ng)
        if name == "lam_p":
            return ca.Sparsity.dense(self.np_)
        return ca.Sparsity(0, 0)

    def eval(self, arg: Any) -> list[int]:
        return [int(bool(self.on_iteration(arg)))]
