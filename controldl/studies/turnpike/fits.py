r"""Fits of a sweep that mean what Esteve et al. state.

- :func:`error_vs_horizon`: ``E(T)``, ``T·E(T)``, the slopes between successive horizons
  ``log(E_{k+1}/E_k) / log(T_{k+1}/T_k)`` and a least-squares slope of ``log E`` against
  ``log T`` over the *longest* horizons only. The theorem is a bound, ``E(T) ≤ C/T``:
  slope −1 is the bound's, not a prediction; ``T·E(T)`` staying bounded is what it says.
- :func:`fit_two_arc`: ``v(t) ≈ C₁ e^{−μt} + C₂ e^{−μ(T−t)} + f`` in absolute time over
  the *whole* horizon (``scipy.optimize.least_squares`` on ``log v``, every parameter
  positive), with a 95 % interval for ``μ`` from a moving-block bootstrap of the log
  residuals. Kept for comparison: over the whole horizon it mixes the entry transients,
  second transients and the floor with weights that change with T, and its μ drifts (docs/
  turnpike.md). The sweep measures μ with :func:`controldl.studies.turnpike.arcs.fit_arc`.
- :func:`rate_agreement`: the spread ``max μ / min μ − 1`` over the longest horizons.
- :func:`control_gap_to_longest`: ``‖θ_T(t) − θ_{T_max}(t)‖`` at the same absolute ``t``.
- :func:`rescaled_controls_convergence`: ``u_T(s) = T·θ_T(sT)`` on a common ``s`` grid
  and the ``L²(0, 1)`` distance between successive horizons.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import optimize

from controldl.problem import Params


def _slope(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.polyfit(x, y, 1)[0])


def error_vs_horizon(horizons: Sequence[float], errors: Sequence[float], longest: int = 3
                     ) -> dict[str, Any]:
    """``E(T)`` against ``T`` (definitions in the module docstring); ``horizons`` are the
    converged ones, ascending."""
    T = np.asarray(horizons, float)
    E = np.asarray(errors, float)
    out: dict[str, Any] = {"horizons": T.tolist(), "errors": E.tolist(),
                           "T_times_E": (T * E).tolist(), "successive_slopes": [],
                           "slope": None, "fit_horizons": [], "bound_slope": -1.0}
    pos = E > 0
    for k in range(len(T) - 1):
        if pos[k] and pos[k + 1]:
            out["successive_slopes"].append(
                {"from": T[k], "to": T[k + 1],
                 "slope": math.log(E[k + 1] / E[k]) / math.log(T[k + 1] / T[k])})
    use = np.flatnonzero(pos)[-longest:]
    if len(use) >= 2:
        out["slope"] = _slope(np.log(T[use]), np.log(E[use]))
        out["fit_horizons"] = T[use].tolist()
        TE = T[use] * E[use]
        out["T_times_E_nonincreasing_over_fit"] = bool(np.all(np.diff(TE) <= 1e-12 * TE[:-1]))
    else:
        out["note"] = "needs at least 2 converged horizons with a positive error"
    return out


def _two_arc(p: np.ndarray, t: np.ndarray, T: float) -> np.ndarray:
    c1, c2, mu, f = np.exp(np.clip(p, -700.0, 700.0))  # log-parameters; no overflow
    return c1 * np.exp(-mu * t) + c2 * np.exp(-mu * (T - t)) + f


def _fit_log(t: np.ndarray, v: np.ndarray, T: float, starts: list[np.ndarray] | None = None
             ) -> np.ndarray:
    """Best of a few starts of ``least_squares`` on ``log model − log v``."""
    logv = np.log(v)
    best, best_cost = None, math.inf
    if starts is None:
        starts = [np.log([max(v[0] - v.min(), 1e-12), max(v[-1] - v.min(), 1e-12), mu0,
                          max(v.min(), 1e-12)]) for mu0 in (0.3, 1.0, 3.0)]
    for p0 in starts:
        res = optimize.least_squares(lambda p: np.log(_two_arc(p, t, T)) - logv, p0,
                                     method="trf", x_scale=1.0, max_nfev=2000)
        if res.cost < best_cost:
            best, best_cost = res.x, res.cost
    return best


def fit_two_arc(times: Sequence[float], values: Sequence[float], horizon: float,
                n_boot: int = 100, block: int | None = None, seed: int = 0) -> dict[str, Any]:
    """Fit ``v(t) = C₁e^{−μt} + C₂e^{−μ(T−t)} + f`` to a profile in absolute time.

    Returns ``rate`` (μ), ``c1``, ``c2``, ``floor``, ``ci95`` for μ from a moving-block
    bootstrap (``n_boot`` resamples, blocks of ``block`` points, default ``⌈n^{1/3}⌉``,
    at least 2), and ``rms_log_residual``. Needs at least 5 positive points.
    """
    t = np.asarray(times, float)
    v = np.asarray(values, float)
    keep = np.isfinite(v) & (v > 0)
    t, v = t[keep], v[keep]
    n = len(t)
    out: dict[str, Any] = {"horizon": float(horizon), "rate": None, "ci95": None,
                           "model": "C1·exp(−μt) + C2·exp(−μ(T−t)) + floor", "n_points": n}
    if n < 5:
        out["note"] = "needs at least 5 positive points"
        return out
    p = _fit_log(t, v, horizon)
    resid = np.log(v) - np.log(_two_arc(p, t, horizon))
    c1, c2, mu, f = np.exp(p)
    out.update(rate=float(mu), c1=float(c1), c2=float(c2), floor=float(f),
               rms_log_residual=float(np.sqrt(np.mean(resid ** 2))))
    if n_boot < 2:
        return out
    b = block or max(2, math.ceil(n ** (1 / 3)))
    rng = np.random.default_rng(seed)
    fitted = _two_arc(p, t, horizon)
    rates = []
    for _ in range(n_boot):
        starts = rng.integers(0, n - b + 1, size=math.ceil(n / b))
        r = np.concatenate([resid[s:s + b] for s in starts])[:n]
        rates.append(math.exp(_fit_log(t, fitted * np.exp(r), horizon, [p])[2]))
    out["ci95"] = [float(np.percentile(rates, 2.5)), float(np.percentile(rates, 97.5))]
    out["block"] = b
    out["n_boot"] = n_boot
    return out


def rate_agreement(rates: Sequence[dict[str, Any]], longest: int = 3, tolerance: float = 0.2
                   ) -> dict[str, Any]:
    """``max μ / min μ − 1`` over the ``longest`` horizons with a fitted rate; ``agree``
    when it is at most ``tolerance``."""
    have = [r for r in rates if r.get("rate") is not None and r["rate"] > 0]
    use = sorted(have, key=lambda r: r["horizon"])[-longest:]
    out: dict[str, Any] = {"horizons": [r["horizon"] for r in use],
                           "rates": [r["rate"] for r in use], "tolerance": tolerance,
                           "spread": None, "agree": None}
    if len(use) == longest:
        mus = np.array(out["rates"])
        out["spread"] = float(mus.max() / mus.min() - 1.0)
        out["agree"] = bool(out["spread"] <= tolerance)
    return out


def _controls(params: Params) -> np.ndarray:
    A, b = np.asarray(params.A, float), np.asarray(params.b, float)
    return np.concatenate([A.reshape(A.shape[0], -1), b], axis=1)


def control_gap_to_longest(solutions: dict[float, Params], steps: dict[float, float]
                           ) -> dict[float, dict[str, Any]]:
    """``‖θ_T(t_k) − θ_{T_max}(t_k)‖`` for the layers ``k`` of every horizon on the
    longest one's grid (fixed step: the same ``t_k``); ``None`` where the steps differ."""
    T_max = max(solutions)
    ref = _controls(solutions[T_max])
    out: dict[float, dict[str, Any]] = {}
    for T, params in sorted(solutions.items()):
        if not math.isclose(steps[T], steps[T_max], rel_tol=1e-12):
            out[T] = {"gaps": None, "note": "different steps: no common absolute times"}
            continue
        th = _controls(params)
        gaps = np.linalg.norm(th - ref[: len(th)], axis=1)
        half = max(len(gaps) // 2, 1)
        out[T] = {"gaps": gaps.tolist(), "max_first_half": float(gaps[:half].max())}
    return out


def rescaled_controls_convergence(solutions: dict[float, Params], grid_points: int = 200
                                  ) -> dict[str, Any]:
    """``u_T(s) = T·θ_T(sT)`` (piecewise constant in ``s``) on ``grid_points`` midpoints of
    ``[0, 1]``, and ``‖u_{T_k} − u_{T_{k+1}}‖_{L²(0,1)}`` for successive horizons, also
    relative to ``‖u_{T_{k+1}}‖``."""
    s = (np.arange(grid_points) + 0.5) / grid_points
    curves = {}
    for T, params in sorted(solutions.items()):
        th = _controls(params)
        idx = np.minimum(np.floor(s * len(th)).astype(int), len(th) - 1)
        curves[T] = T * th[idx]
    Ts = sorted(curves)
    pairs = []
    for a, b in zip(Ts[:-1], Ts[1:], strict=True):
        dist = float(np.sqrt(np.mean(np.sum((curves[a] - curves[b]) ** 2, axis=1))))
        size = float(np.sqrt(np.mean(np.sum(curves[b] ** 2, axis=1))))
        pairs.append({"from": a, "to": b, "distance": dist,
                      "relative": dist / size if size > 0 else None})
    dists = [p["distance"] for p in pairs]
    return {"pairs": pairs, "decreasing": bool(np.all(np.diff(dists) < 0)) if dists else None,
            "definition": "L²(0,1) distance of u_T(s) = T·θ_T(sT) between successive T"}
