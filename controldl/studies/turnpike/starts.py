r"""Starts of a horizon, priced by their cost, and the padding certificate.

Candidates for horizon ``T'`` (``L'`` layers) from the solution of the previous horizon
``T`` (``L`` layers):

- ``padded`` (:func:`pad_controls`): the previous controls kept in *absolute* time and
  ``L' − L`` layers with ``θ = 0`` appended at the end (fixed step only). On a fixed-step
  grid a layer with ``θ = 0`` is the identity (``inside`` always; ``resnet`` when
  ``σ(0) = 0``), so the padded trajectory is the previous one, frozen after ``T``.
- ``rescaled`` (:func:`interpolate_controls`): the previous controls as functions of
  ``s = t/T``, resampled on ``L'`` layers and multiplied by ``T/T'``.
- ``cold``: the shared initialization (:func:`controldl.problem.init_params`).

:func:`price_starts` evaluates ``J_{T'}`` at every candidate; the sweep keeps the cheapest.
With a frozen readout every candidate carries the same fixed projector
(:func:`fixed_projector`).

The padding certificate (:func:`padding_bound`). With fixed ``h``, ``L' − L = (T' − T)/h``,
padding changes only two terms of ``J``: the running sum gains ``L' − L`` copies of the
frozen final error, ``γ·h·Σ_{t=L+1}^{L'} E(t) = γ·(T' − T)·E_T(T)`` with
``E_T(T) = (1/N) Σ_i ℓ(z_i(L), y_i)``; the smoothness term gains the jump to zero,
``(α/(2h))·‖θ_{L−1}‖²``. The terminal, l2, l1 and readout terms are unchanged. So

``J_{T'}^* ≤ J_{T'}(padded) = J_T + γ·(T' − T)·E_T(T) + (α/(2h))·‖θ_{L−1}‖²``,

which is ``J_{T'} ≤ J_T`` without running and smoothness terms.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from controldl import problem as P
from controldl.problem import Params, Problem

START_KINDS: tuple[str, ...] = ("padded", "rescaled", "cold")
PROJECTORS: tuple[str, ...] = ("init", "coordinate")
INTERPOLATION_METHODS: tuple[str, ...] = ("linear", "constant")


class StartPrice(NamedTuple):
    """One candidate start of a horizon: its ``kind``, the cost ``J`` there, its params."""

    kind: str
    cost: float
    params: Params


def padding_applicable(problem: Problem) -> str | None:
    """``None`` when a ``θ = 0`` layer is the identity for this model, else the reason."""
    form = problem.formulation
    if form.model == "inside":
        return None
    if form.model == "resnet" and form.activation in ("tanh", "relu", "identity"):
        return None
    if form.model == "resnet":
        return f"resnet with σ = {form.activation}: σ(0) ≠ 0, a θ = 0 layer is not the identity"
    return f"{form.model}: a θ = 0 layer is not the identity"


def same_step(h0: float, h1: float) -> bool:
    """Whether two grids share the step (to round-off), so that one pads into the other."""
    return math.isclose(h0, h1, rel_tol=1e-12, abs_tol=0.0)


def pad_controls(params: Params, new_layers: int) -> Params:
    """``params`` with ``new_layers − L`` layers of ``θ = 0`` appended (absolute time kept);
    the readout is kept. ``new_layers`` must be ≥ L."""
    A, b, W, c = (np.asarray(v, np.float64) for v in params)
    L, d = b.shape
    if new_layers < L:
        raise ValueError(f"cannot pad {L} layers into {new_layers}")
    extra = new_layers - L
    return Params(np.concatenate([A, np.zeros((extra, d, d))]),
                  np.concatenate([b, np.zeros((extra, d))]), W.copy(), c.copy())


def interpolate_controls(params: Params, new_layers: int, method: str = "linear",
                         scale: float = 1.0) -> Params:
    """Controls resampled on ``new_layers`` layers as functions of ``s = t/T``, times
    ``scale``; the readout is kept.

    Layer ``k`` of ``L`` is attached to the midpoint ``s_k = (k + ½)/L``. ``linear``:
    linear interpolation in ``s`` between midpoints (constant beyond the first and last);
    ``constant``: the old layer containing the new midpoint. Both are the identity when
    ``new_layers = L`` and exact for a control constant in time.
    """
    if (not isinstance(new_layers, int | np.integer) or isinstance(new_layers, bool)
            or new_layers < 1):
        raise ValueError(f"new_layers must be an integer >= 1, got {new_layers!r}")
    if method not in INTERPOLATION_METHODS:
        raise ValueError(f"unknown interpolation {method!r}; expected "
                         f"{' or '.join(INTERPOLATION_METHODS)}")
    A, b, W, c = (np.asarray(v, np.float64) for v in params)
    L = A.shape[0]
    s_old = (np.arange(L) + 0.5) / L
    s_new = (np.arange(new_layers) + 0.5) / new_layers
    flat = np.concatenate([A.reshape(L, -1), b.reshape(L, -1)], axis=1)  # (L, d² + d)
    if method == "constant":
        new = flat[np.minimum(np.floor(s_new * L).astype(int), L - 1)]
    elif L == 1:
        new = np.repeat(flat, new_layers, axis=0)
    else:
        new = np.stack([np.interp(s_new, s_old, col) for col in flat.T], axis=1)
    new = float(scale) * new
    d2 = A.shape[1] * A.shape[2]
    return Params(new[:, :d2].reshape(new_layers, *A.shape[1:]),
                  new[:, d2:].reshape(new_layers, *b.shape[1:]), W.copy(), c.copy())


def fixed_projector(problem: Problem, kind: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The readout of a frozen-readout sweep. ``init``: ``None`` (the shared random
    initialization's ``W``, ``c = 0``); ``coordinate``: ``W = [I_m | 0]`` (m, d), ``c = 0``,
    i.e. ``z = (x_1, …, x_m)``: the tracking term pulls the first m state coordinates to
    the targets (leia fixes a projector from an earlier training instead)."""
    if kind not in PROJECTORS:
        raise ValueError(f"unknown projector {kind!r}; expected {' or '.join(PROJECTORS)}")
    if kind == "init":
        return None
    m, d = problem.n_outputs, problem.width
    if m > d:
        raise ValueError(f"the coordinate projector needs width >= outputs ({d} < {m})")
    return np.eye(m, d), np.zeros(m)


def cold_start(problem: Problem, seed: int, scheme: str, projector: str) -> Params:
    """The shared initialization, with the fixed projector's readout when one is set."""
    params = Params(*(np.asarray(v, np.float64) for v in
                      P.init_params(problem.formulation, seed=seed, scheme=scheme)))
    fixed = fixed_projector(problem, projector)
    return params if fixed is None else params._replace(W=fixed[0], c=fixed[1])


@jax.jit
def _cost_jit(form: P.Formulation, params: Params, X0: jax.Array, Y: jax.Array) -> jax.Array:
    return P.cost(form, params, X0, Y)


def cost_at(problem: Problem, params: Params) -> float:
    """``J`` of ``problem`` at ``params`` (float64, compiled once per structure and shape)."""
    jp = Params(*(jnp.asarray(v, jnp.float64) for v in params))
    jp = P.project(problem.formulation, jp)
    return float(_cost_jit(problem.formulation, jp, problem.initial_states(),
                           problem.targets()))


def price_starts(problem: Problem, candidates: dict[str, Params]) -> list[StartPrice]:
    """Every candidate's cost ``J`` on ``problem``, cheapest first (non-finite last)."""
    prices = [StartPrice(k, cost_at(problem, p), p) for k, p in candidates.items()]
    return sorted(prices, key=lambda s: (not math.isfinite(s.cost), s.cost))


@jax.jit
def _final_error_jit(form: P.Formulation, params: Params, X0: jax.Array, Y: jax.Array
                     ) -> jax.Array:
    return P.mean_loss(form, params.W, params.c, P.final_state(form, params, X0), Y)


def final_error(problem: Problem, params: Params) -> float:
    """``E_T(T) = (1/N) Σ_i ℓ(W x_i(L) + c, y_i)``: the empirical risk at the horizon."""
    jp = Params(*(jnp.asarray(v, jnp.float64) for v in params))
    return float(_final_error_jit(problem.formulation, jp, problem.initial_states(),
                                  problem.targets()))


def padding_bound(problem: Problem, params: Params, cost: float, new_horizon: float) -> float:
    """``J_T + γ·(T' − T)·E_T(T) + (α/(2h))·‖θ_{L−1}‖²``: the cost of the padded start on
    ``T'`` (module docstring), from the horizon-``T`` solution ``params`` of cost ``cost``."""
    form = problem.formulation
    bound = float(cost)
    if form.running:
        bound += form.running * (new_horizon - form.horizon) * final_error(problem, params)
    if form.smooth:
        last = np.concatenate([np.ravel(params.A[-1]), np.ravel(params.b[-1])])
        bound += 0.5 * form.smooth / form.h * float(last @ last)
    return bound


def certificate_pair(previous: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """The certificate between two successive entries of a sweep: ``holds`` when
    ``J_{T'} ≤ bound`` up to round-off (relative 1e-9), and the ``violation`` ``J − bound``."""
    bound = previous.get("padding_bound_next")
    cost = current["cost"]["total"]
    out = {"from": previous["horizon"], "to": current["horizon"], "bound": bound,
           "cost": cost, "violation": None, "holds": None}
    if bound is None:
        out["reason"] = previous.get("padding_reason", "no bound")
        return out
    out["violation"] = cost - bound
    out["holds"] = bool(cost <= bound + 1e-9 * max(1.0, abs(bound)))
    return out


def truncate_controls(params: Params, layers: int) -> Params:
    """The first ``layers`` layers of ``params`` (the readout kept): on the same step, a
    feasible control of the shorter horizon ``layers·h``."""
    A, b, W, c = (np.asarray(v, np.float64) for v in params)
    if not 1 <= layers <= len(b):
        raise ValueError(f"cannot cut {len(b)} layers to {layers}")
    return Params(A[:layers].copy(), b[:layers].copy(), W.copy(), c.copy())


def truncation_check(solutions: dict[float, Any]) -> list[dict[str, Any]]:
    """For every horizon ``T`` of ``solutions`` (``{T: Solution}``): the lowest ``J_T`` at
    the first ``L_T`` layers of a longer horizon's solution on the same step (a feasible
    control for ``T``). ``better`` when it is below ``J_T`` beyond round-off (relative
    1e-9): the ``T`` solution is then a local, not a global, minimum, and a comparison of
    profiles across ``T`` compares different basins."""
    out = []
    for T, sol in sorted(solutions.items()):
        prob, J = sol.problem, float(sol.cost["total"])
        best: tuple[float, float] | None = None
        for T2, longer in sorted(solutions.items()):
            if T2 <= T or not same_step(longer.problem.h, prob.h):
                continue
            cut = cost_at(prob, truncate_controls(longer.params, prob.layers))
            if best is None or cut < best[1]:
                best = (T2, cut)
        row: dict[str, Any] = {"horizon": T, "cost": J, "from": None, "truncated_cost": None,
                               "better": False, "note": ""}
        if best is not None:
            better = best[1] < J - 1e-9 * max(1.0, abs(J))
            row.update({"from": best[0], "truncated_cost": best[1], "better": better})
            if better:
                row["note"] = (f"T = {T:g}: the first {prob.layers} layers of the T = "
                               f"{best[0]:g} solution cost {best[1]:.6g} < J = {J:.6g}: this "
                               "solution is a local minimum, not the best known")
        out.append(row)
    return out
