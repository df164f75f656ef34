"""``J`` and ``∇J`` through the CasADi transcription, for tests and diagnostics."""

from __future__ import annotations

from typing import Any

import casadi as ca
import numpy as np

from controldl.problem import Params, Problem
from controldl.solvers.direct.solver import CasadiDirect


def _reduced_gradient(gw: np.ndarray, Jg: Any, n_dyn: int, states: slice) -> np.ndarray:
    """``∇_w f + J_dynᵀ λ`` with ``J_xᵀ λ = −∇_x f``: the gradient of the NLP's objective
    along the manifold where the dynamics hold (the states eliminated)."""
    Jg = np.asarray(ca.densify(Jg), np.float64)
    lam = np.linalg.solve(Jg[:n_dyn, states].T, -gw[states])
    return gw + Jg[:n_dyn].T @ lam


def cost_and_gradient(problem: Problem, params: Params, **options: Any) -> tuple[float, Params]:
    """``J`` and ``∇J`` at ``params`` evaluated through the CasADi transcription built with
    ``options`` (a :class:`CasadiDirect`'s fields).

    Single shooting: ``∇J`` is the NLP gradient mapped back to ``(A, b, W, c)`` (with the
    L1 split, the derivative along the part that is nonzero). Multiple shooting: the states
    are simulated and ``∇J`` is the reduced gradient ``∇_θ f − J_θᵀ (J_xᵀ)⁻¹ ∇_x f`` of
    the equality-constrained NLP. The readout's gradient is zero when it is frozen.
    """
    params = Params(*(np.asarray(v, np.float64) for v in params))
    tr = CasadiDirect(**options).build(problem, params)
    lay, bl = tr.layout, tr.layout.blocks()
    fg = ca.Function("fg", [tr.w, tr.p], [tr.f, ca.gradient(tr.f, tr.w), ca.jacobian(tr.g,
                                                                                      tr.w)])
    f, gw, Jg = fg(tr.w0, tr.p0)
    gw = np.asarray(gw, np.float64).ravel()
    if lay.states:
        gw = _reduced_gradient(gw, Jg, tr.n_dynamics, bl.states)
    ctrl = gw[bl.controls]
    if lay.split:
        theta, P_ = lay.pack_theta(params.A, params.b), lay.n_theta
        ctrl = np.where(theta > 0, ctrl[:P_], np.where(theta < 0, -ctrl[P_:],
                                                       0.5 * (ctrl[:P_] - ctrl[P_:])))
    gA, gb = lay.unpack_theta(ctrl)
    if lay.readout:
        gW, gc = lay.unpack_readout(gw[bl.readout])
    else:
        gW, gc = np.zeros_like(params.W), np.zeros_like(params.c)
    return float(f), Params(gA, gb, gW, gc)
