r"""Horizon sweeps and turnpike diagnostics (Esteve, Geshkovski, Pighin & Zuazua, "Large-time
asymptotics in deep learning").

A *sweep* solves the same problem for several horizons ``T`` and records, for each one,
profiles inside the horizon and the terminal training error; then it fits the two laws the
theory predicts:

- with the L² penalty ``(λ/2)·h·Σ‖θ_t‖²`` alone, the optimal terminal training error decays
  like ``O(1/T)``: :func:`fit_power_law` fits ``log E(T) = a + s·log T`` and reports the
  slope ``s`` (≈ −1 expected);
- with a running (integral) loss, the optimal controls and the running error decay
  exponentially inside the horizon, ``‖θ(t)‖ ≲ C·e^{−μ t}`` (the turnpike):
  :func:`fit_exponential_rate` fits ``log v(t) = a − μ·t``.

Grids. With a fixed step ``h``, horizon ``T`` gets ``L = round(T/h)`` layers (the actual
step is then ``T/L``); with a fixed number of layers ``L``, ``h = T/L``. Layer ``k`` acts on
``[k·h, (k+1)·h]``; the states ``x(k)`` sit at times ``t_k = k·h``, ``k = 0..L``.

Profiles of one solution (``N`` samples, final readout ``(W, c)``):

- ``control_norms[k] = ‖θ_k‖ = sqrt(‖A_k‖_F² + ‖b_k‖²)``, ``k = 0..L-1``, at ``t = k·h``.
  For a ResNet whose activation has ``σ(0) = 0`` (tanh, relu, identity) the steady
  control is ``θ̄ = 0`` (see :func:`steady_reference`), so this is ``‖θ_k − θ̄‖``.
- ``state_distances[k] = sqrt((1/N) Σ_i ‖x_i(k) − x_i(L)‖²)``, ``k = 0..L``: the RMS
  distance of the states to their *final configuration* (the steady problem has no
  minimizer for classification losses, see :func:`steady_reference`; this is the
  reference used instead). It is 0 at ``t = T`` by definition.
- ``state_speeds[k] = sqrt((1/N) Σ_i ‖(x_i(k+1) − x_i(k))/h‖²)``, ``k = 0..L-1``: how far
  the flow is from standing still (for a ResNet ``= RMS ‖σ(A_k x_i(k) + b_k)‖``, zero
  exactly at a steady state). Unlike the distance it needs no reference point, so it shows
  a final transient as clearly as the initial one.
- ``running_errors[k] = (1/N) Σ_i ℓ(W x_i(k) + c, y_i)``, ``k = 0..L`` (the final readout
  applied to every layer); ``running_misclassification[k]`` the fraction of wrong labels
  of the same readout (classification only).
- ``terminal_error = running_errors[L]``: the terminal training loss (the ``terminal``
  cost term); ``terminal_misclassification`` likewise.

Exponential fits (:func:`fit_exponential_rate`) exclude the final transient: they use the
times ``t ≤ (1 − tail_fraction)·T`` (default ``tail_fraction = 0.25``, so the first three
quarters of the horizon). They are made for every horizon; the headline rates in
``turnpike.json`` are those of the longest horizon, whose turnpike arc is longest.

Warm start. Horizon ``T`` starts from the previous horizon's solution, its controls
resampled in rescaled time ``s = t/T`` (:func:`interpolate_controls`) and multiplied by
``T_prev/T`` (``rescale``; the L²-optimal controls scale like ``1/T``), the readout kept.

Every horizon's solution is saved as ``OUT/T=<T:g>/`` (atomically, as it finishes) and
``OUT/turnpike.json`` is rewritten (atomically) after each horizon, so an interrupted sweep
loses nothing; ``resume=True`` loads the horizons already done instead of solving them
again and continues the warm-start chain from the last one loaded.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from controldl import problem as P
from controldl.data import Dataset
from controldl.problem import FORMULATION_KEYS, Params, Problem
from controldl.solution import Solution, _jsonable, load
from controldl.solvers.base import Solver, solve

FIXED_MODES: tuple[str, ...] = ("step", "layers")
DEFAULT_STEP: float = 0.25
DEFAULT_TAIL_FRACTION: float = 0.25
REPORT_NAME = "turnpike.json"
INTERPOLATION_METHODS: tuple[str, ...] = ("linear", "constant")


# --------------------------------------------------------------------------- grids


def parse_horizons(text: str) -> list[float]:
    """``"1,2,4"`` → ``[1.0, 2.0, 4.0]``; every horizon a finite number > 0, no repeats."""
    parts = [p.strip() for p in str(text).split(",")]
    if not any(parts):
        raise ValueError("--horizons is empty; give comma-separated numbers such as 1,2,4,8")
    values = []
    for p in parts:
        if not p:
            raise ValueError(f"--horizons has an empty entry: {text!r}")
        try:
            values.append(float(p))
        except ValueError:
            raise ValueError(f"--horizons expects comma-separated numbers, got {p!r}") from None
    return check_horizons(values)


def check_horizons(horizons: Sequence[float]) -> list[float]:
    """Validate horizons (finite, > 0, distinct) and return them sorted ascending."""
    try:
        values = [float(T) for T in horizons]
    except (TypeError, ValueError):
        raise ValueError(f"horizons must be numbers, got {horizons!r}") from None
    if not values:
        raise ValueError("at least one horizon is needed")
    for T in values:
        if not math.isfinite(T) or T <= 0:
            raise ValueError(f"every horizon must be a finite number > 0, got {T:g}")
    if len({f"{T:g}" for T in values}) != len(values):
        raise ValueError(f"horizons must be distinct, got {', '.join(f'{T:g}' for T in values)}")
    return sorted(values)


def horizon_grid(horizons: Sequence[float], fixed: str = "step", step: float | None = None,
                 layers: int | None = None) -> list[tuple[float, int]]:
    """``(T, L)`` for every horizon: ``fixed="step"``: ``L = round(T/h)`` (must be ≥ 1);
    ``fixed="layers"``: ``L`` given, ``h = T/L``."""
    horizons = check_horizons(horizons)
    if fixed == "step":
        if layers is not None:
            raise ValueError("layers applies to fixed='layers'; with fixed='step' give step")
        h = DEFAULT_STEP if step is None else float(step)
        if not math.isfinite(h) or h <= 0:
            raise ValueError(f"step must be a finite number > 0, got {step!r}")
        out = []
        for T in horizons:
            L = int(round(T / h))
            if L < 1:
                raise ValueError(f"horizon {T:g} with step {h:g} gives {T / h:.3g} layers; "
                                 "every horizon needs at least one layer (lower the step)")
            out.append((T, L))
        return out
    if fixed == "layers":
        if step is not None:
            raise ValueError("step applies to fixed='step'; with fixed='layers' give layers")
        if (not isinstance(layers, int | np.integer) or isinstance(layers, bool)
                or layers < 1):
            raise ValueError(f"layers must be an integer >= 1, got {layers!r}")
        return [(T, int(layers)) for T in horizons]
    raise ValueError(f"fixed must be one of {', '.join(FIXED_MODES)}, got {fixed!r}")


def horizon_dirname(T: float) -> str:
    """The directory of horizon ``T`` inside a sweep: ``T=<T:g>`` (``T=1``, ``T=0.5``)."""
    return f"T={T:g}"


# --------------------------------------------------------------------------- warm start


def interpolate_controls(params: Params, new_layers: int, method: str = "linear",
                         scale: float = 1.0) -> Params:
    """Controls resampled on ``new_layers`` layers as functions of the rescaled time
    ``s = t/T``; the readout ``(W, c)`` is kept.

    Layer ``k`` of ``L`` covers ``s ∈ [k/L, (k+1)/L]``; its control is attached to the
    midpoint ``s_k = (k + ½)/L``. ``linear``: every entry of ``(A, b)`` is interpolated
    linearly in ``s`` between midpoints (held constant before the first and after the last
    midpoint); ``constant``: layer ``j`` of the new grid takes the old layer that contains
    its midpoint (sample and hold, exact when ``new_layers`` is a multiple of ``L``). Both
    are exact for a control constant in time, and the identity when ``new_layers = L``.
    The resampled controls are multiplied by ``scale`` (see :func:`sweep`'s ``rescale``).
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
        idx = np.minimum(np.floor(s_new * L).astype(int), L - 1)
        new = flat[idx]
    elif L == 1:
        new = np.repeat(flat, new_layers, axis=0)
    else:
        new = np.stack([np.interp(s_new, s_old, col) for col in flat.T], axis=1)
    new = float(scale) * new
    d2 = A.shape[1] * A.shape[2]
    return Params(new[:, :d2].reshape(new_layers, *A.shape[1:]),
                  new[:, d2:].reshape(new_layers, *b.shape[1:]), W.copy(), c.copy())


# --------------------------------------------------------------------------- profiles


@functools.partial(jax.jit, static_argnums=0)
def _states_and_errors(form: P.Formulation, params: Params, X0: jax.Array, Y: jax.Array
                       ) -> tuple[jax.Array, jax.Array]:
    """The states ``x(0..L)`` (L+1, N, d) and the running errors (L+1,)."""
    xs = P.trajectory(form, params, X0)
    errors = jax.vmap(lambda x: P.mean_loss(form, params.W, params.c, x, Y))(xs)
    return xs, errors


def _rms_norm(diff: np.ndarray) -> np.ndarray:
    """``sqrt((1/N) Σ_i ‖diff_i‖²)`` over the sample axis 1 of (T, N, d)."""
    return np.sqrt(np.mean(np.sum(diff ** 2, axis=2), axis=1))


def profiles(problem: Problem, params: Params) -> dict[str, Any]:
    """The profiles of one solution inside its horizon (definitions in the module
    docstring): ``times`` (L+1), ``control_times`` (L), ``control_norms`` (L),
    ``state_speeds`` (L), ``state_distances`` (L+1), ``running_errors`` (L+1),
    ``running_misclassification`` (L+1, classification only, else ``None``),
    ``terminal_error``, ``terminal_misclassification``; plus ``steady_distances`` (L+1)
    where :func:`steady_reference` defines a steady state, else ``None``."""
    form = problem.formulation
    jparams = Params(*(jnp.asarray(v, jnp.float64) for v in params))
    xs, errors = _states_and_errors(form, jparams, problem.initial_states(), problem.targets())
    xs, errors = np.asarray(xs), np.asarray(errors)
    A, b, W, c = (np.asarray(v, np.float64) for v in params)
    L, h = form.layers, form.h
    out: dict[str, Any] = {
        "times": (np.arange(L + 1) * h).tolist(),
        "control_times": (np.arange(L) * h).tolist(),
        "control_norms": np.sqrt(np.sum(A ** 2, axis=(1, 2)) + np.sum(b ** 2, axis=1)).tolist(),
        "state_speeds": (_rms_norm(xs[1:] - xs[:-1]) / h).tolist(),
        "state_distances": _rms_norm(xs - xs[-1]).tolist(),
        "running_errors": errors.tolist(),
        "terminal_error": float(errors[-1]),
        "running_misclassification": None,
        "terminal_misclassification": None,
        "steady_distances": None,
    }
    if form.task == "classification":
        z = xs @ W.T + c  # (L+1, N, m)
        pred = (z[..., 0] > 0).astype(int) if form.n_outputs == 1 else np.argmax(z, axis=2)
        wrong = np.mean(pred != np.asarray(problem.data.y_train)[None, :], axis=1)
        out["running_misclassification"] = wrong.tolist()
        out["terminal_misclassification"] = float(wrong[-1])
    ref = steady_states(problem, Params(A, b, W, c), xs[-1])
    if ref is not None:
        out["steady_distances"] = _rms_norm(xs - ref).tolist()
    return out


# --------------------------------------------------------------------------- steady problem


def steady_reference(problem: Problem) -> dict[str, Any]:
    r"""What the steady (static) problem gives as a reference, and why.

    The steady problem of the canonical ResNet is
    ``min_{x̄, θ̄} (1/N) Σ_i ℓ(W x̄_i + c, y_i) + (λ/2)‖θ̄‖² (+ …)`` subject to
    ``f(x̄_i, θ̄) = x̄_i``, i.e. ``σ(Ā x̄_i + b̄) = 0`` for every sample.

    - ResNet with ``σ(0) = 0`` (tanh, relu, identity): ``θ̄ = 0`` makes *every* state
      steady and has the least control cost, so the steady control is ``θ̄ = 0`` and the
      reference of the control profile is ``‖θ_t − θ̄‖ = ‖θ_t‖``. The steady states then
      minimize the loss alone: for the ``squared`` loss the minimizers are the affine sets
      ``{x : W x + c = y_i}`` (attained, not unique; :func:`steady_states` takes the one
      nearest to each final state); for ``logistic``, ``cross_entropy`` and
      ``sigmoid_mse`` the infimum is approached only as ``x̄_i → ∞`` along ``W``: no
      steady state exists, and the profiles use the final configuration ``x(L)`` instead.
    - ResNet with sigmoid or softplus (``σ > 0`` everywhere): no state is steady for any
      control, so the steady problem is empty.
    - ``mlp``: the steady states are fixed points ``x̄ = σ(Ā x̄ + b̄)`` whose controls are
      not zero; not computed here.
    """
    form = problem.formulation
    if form.model != "resnet":
        return {"defined": False, "control": None, "states": None,
                "reason": "mlp: steady states are fixed points x = σ(Ax+b) with nonzero "
                          "controls; not computed"}
    if form.activation in ("sigmoid", "softplus"):
        return {"defined": False, "control": None, "states": None,
                "reason": f"σ = {form.activation} is > 0 everywhere: no state is steady"}
    if form.loss == "squared":
        return {"defined": True, "control": 0.0,
                "states": "nearest point of {x : W x + c = y_i} to each final state x_i(L)",
                "reason": "σ(0) = 0: θ̄ = 0 is the least-cost steady control; the squared "
                          "loss attains its minimum 0 on an affine set of steady states"}
    return {"defined": False, "control": 0.0, "states": None,
            "reason": f"σ(0) = 0: θ̄ = 0 is the steady control, but the {form.loss} loss has "
                      "no minimizer (its infimum is at infinity), so no steady state exists; "
                      "state distances are to the final configuration x(L)"}


def steady_states(problem: Problem, params: Params, final_states: np.ndarray
                  ) -> np.ndarray | None:
    """Steady states ``x̄_i`` (N, d) where :func:`steady_reference` defines them: for the
    squared loss, ``x̄_i = x_i(L) − W⁺ (W x_i(L) + c − y_i)`` (the nearest point with zero
    loss, ``W⁺`` the pseudo-inverse); ``None`` otherwise."""
    if not steady_reference(problem)["defined"]:
        return None
    W, c = np.asarray(params.W), np.asarray(params.c)
    Y = np.asarray(problem.targets())
    xL = np.asarray(final_states)
    residual = xL @ W.T + c - Y  # (N, m)
    return xL - residual @ np.linalg.pinv(W).T


# --------------------------------------------------------------------------- fits


def _linear_fit(x: np.ndarray, y: np.ndarray, confidence: float = 0.95) -> dict[str, Any]:
    """Ordinary least squares ``y ≈ a + s·x`` with the covariance of ``(a, s)``:
    ``cov = σ̂²·(XᵀX)⁻¹``, ``σ̂² = RSS/(n − 2)``; the interval is
    ``s ± t_{(1+confidence)/2, n−2}·sqrt(cov_ss)`` (``None`` with fewer than 3 points)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    n = len(x)
    X = np.stack([np.ones(n), x], axis=1)
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    a, s = float(coef[0]), float(coef[1])
    out: dict[str, Any] = {"intercept": a, "slope": s, "n_points": n, "stderr": None,
                           "ci95": None, "r2": None}
    if n >= 3:
        resid = y - X @ coef
        dof = n - 2
        sigma2 = float(resid @ resid) / dof
        cov = sigma2 * np.linalg.inv(X.T @ X)
        se = math.sqrt(max(cov[1, 1], 0.0))
        q = float(stats.t.ppf(0.5 + confidence / 2, dof))
        out["stderr"] = se
        out["ci95"] = [s - q * se, s + q * se]
        ss_tot = float(np.sum((y - y.mean()) ** 2))
        out["r2"] = 1.0 - float(resid @ resid) / ss_tot if ss_tot > 0 else None
    return out


def fit_power_law(horizons: Sequence[float], errors: Sequence[float]) -> dict[str, Any]:
    """Fit ``log E(T) = a + s·log T`` by least squares; ``s`` is the slope of the error
    against the horizon (≈ −1 for ``O(1/T)``), with its 95 % confidence interval from
    the fit covariance (t distribution, ``n − 2`` degrees of freedom). Non-positive
    errors are left out (reported in ``excluded``)."""
    T = np.asarray(horizons, float)
    E = np.asarray(errors, float)
    keep = np.isfinite(E) & (E > 0)
    if keep.sum() < 2:
        return {"slope": None, "ci95": None, "stderr": None, "intercept": None,
                "n_points": int(keep.sum()), "r2": None, "horizons": T[keep].tolist(),
                "excluded": T[~keep].tolist(),
                "note": "needs at least 2 horizons with a positive error"}
    fit = _linear_fit(np.log(T[keep]), np.log(E[keep]))
    fit.update(horizons=T[keep].tolist(), excluded=T[~keep].tolist(),
               model="log E(T) = intercept + slope·log T")
    return fit


def fit_exponential_rate(times: Sequence[float], values: Sequence[float], horizon: float,
                         tail_fraction: float = DEFAULT_TAIL_FRACTION) -> dict[str, Any]:
    """Fit ``log v(t) = a − μ·t`` on ``t ≤ (1 − tail_fraction)·T`` (the final transient
    left out) by least squares; returns ``rate`` = μ (positive for a decay) with its 95 %
    confidence interval from the fit covariance, and the ``window`` used. The residuals of
    neighbouring layers are correlated, so the interval is optimistic when the profile is
    not a clean exponential; read it with the plot."""
    if not 0 <= tail_fraction < 1:
        raise ValueError(f"tail_fraction must be in [0, 1), got {tail_fraction}")
    t = np.asarray(times, float)
    v = np.asarray(values, float)
    end = (1.0 - tail_fraction) * horizon
    keep = (t <= end + 1e-12 * max(horizon, 1.0)) & np.isfinite(v) & (v > 0)
    window = [0.0, float(end)]
    if keep.sum() < 3:
        return {"rate": None, "ci95": None, "stderr": None, "intercept": None,
                "n_points": int(keep.sum()), "r2": None, "window": window,
                "horizon": float(horizon),
                "note": "needs at least 3 layers with positive values in the window"}
    fit = _linear_fit(t[keep], np.log(v[keep]))
    ci = fit["ci95"]
    return {"rate": -fit["slope"], "ci95": None if ci is None else [-ci[1], -ci[0]],
            "stderr": fit["stderr"], "intercept": fit["intercept"],
            "n_points": fit["n_points"], "r2": fit["r2"], "window": window,
            "horizon": float(horizon), "model": "log v(t) = intercept − rate·t"}


# --------------------------------------------------------------------------- the sweep


@dataclasses.dataclass
class TurnpikeResult:
    """What :func:`sweep` returns.

    Attributes:
        report: the contents of ``turnpike.json``.
        solutions: ``{T: Solution}`` in ascending ``T``.
        solved: horizons solved in this call; ``loaded``: horizons loaded by ``resume``.
        out: the output directory (``None`` when nothing is saved).
    """

    report: dict[str, Any]
    solutions: dict[float, Solution]
    solved: list[float]
    loaded: list[float]
    out: Path | None


def _write_json_atomic(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(_jsonable(obj), f, indent=1, allow_nan=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _same_problem(saved: Problem, expected: Problem) -> str | None:
    """Why a saved solution does not belong to this sweep (``None`` when it does)."""
    for k in FORMULATION_KEYS:
        a, b = getattr(saved.formulation, k), getattr(expected.formulation, k)
        if isinstance(b, float) and isinstance(a, int | float) and a is not None:
            if not math.isclose(float(a), b, rel_tol=1e-12, abs_tol=0.0):
                return f"{k} = {a!r}, this sweep has {b!r}"
        elif a != b:
            return f"{k} = {a!r}, this sweep has {b!r}"
    d0, d1 = saved.data, expected.data
    if (d0.X_train.shape != d1.X_train.shape or not np.array_equal(d0.X_train, d1.X_train)
            or not np.array_equal(np.asarray(d0.y_train), np.asarray(d1.y_train))):
        return "the training data differ"
    return None


PROFILE_KEYS: tuple[str, ...] = (
    "times", "control_times", "control_norms", "state_speeds", "state_distances",
    "running_errors", "terminal_error", "running_misclassification",
    "terminal_misclassification", "steady_distances",
)


def _cached_profiles(previous: Mapping[str, Any] | None, solution: Solution
                     ) -> dict[str, Any] | None:
    """The profiles of ``solution`` from an earlier ``turnpike.json`` entry, if that entry
    describes the same saved solution (same iterations, wall time and cost)."""
    if not previous or any(k not in previous for k in PROFILE_KEYS):
        return None
    same = (previous.get("iterations") == solution.iterations
            and previous.get("wall_time_s") == solution.wall_time_s
            and (previous.get("cost") or {}).get("total") == solution.cost.get("total"))
    return {k: previous[k] for k in PROFILE_KEYS} if same else None


def _entry(T: float, problem: Problem, solution: Solution, source: str,
           tail_fraction: float, previous: Mapping[str, Any] | None = None
           ) -> dict[str, Any]:
    prof = _cached_profiles(previous, solution) or profiles(problem, solution.params)
    entry: dict[str, Any] = {
        "horizon": T, "layers": problem.layers, "step": problem.h,
        "directory": horizon_dirname(T), "source": source,
        "solver": solution.solver.get("label", solution.solver.get("name")),
        "status": solution.status, "iterations": solution.iterations,
        "wall_time_s": solution.wall_time_s, "cost": solution.cost,
        "train_accuracy": solution.train_accuracy, "test_accuracy": solution.test_accuracy,
    }
    entry.update(prof)
    entry["control_decay"] = fit_exponential_rate(prof["control_times"], prof["control_norms"],
                                                  T, tail_fraction)
    entry["running_error_decay"] = fit_exponential_rate(prof["times"], prof["running_errors"],
                                                        T, tail_fraction)
    return entry


def _fits(entries: list[dict[str, Any]]) -> dict[str, Any]:
    fits: dict[str, Any] = {
        "error_vs_horizon_slope": fit_power_law([e["horizon"] for e in entries],
                                                [e["terminal_error"] for e in entries]),
    }
    longest = max(entries, key=lambda e: e["horizon"]) if entries else None
    if longest is None:
        fits["control_decay_rate"] = None
        fits["running_error_decay_rate"] = None
    else:
        fits["control_decay_rate"] = longest["control_decay"]
        fits["running_error_decay_rate"] = longest["running_error_decay"]
    return fits


DEFINITIONS: dict[str, str] = {
    "terminal_error": "(1/N) Σ_i ℓ(W x_i(L) + c, y_i), the terminal training loss",
    "control_norms": "‖θ_k‖ = sqrt(‖A_k‖_F² + ‖b_k‖²) at t = k·h, k = 0..L-1",
    "state_distances": "sqrt((1/N) Σ_i ‖x_i(k) − x_i(L)‖²) at t = k·h, k = 0..L",
    "state_speeds": "sqrt((1/N) Σ_i ‖(x_i(k+1) − x_i(k))/h‖²), k = 0..L-1",
    "running_errors": "(1/N) Σ_i ℓ(W x_i(k) + c, y_i) with the final readout, k = 0..L",
    "steady_distances": "sqrt((1/N) Σ_i ‖x_i(k) − x̄_i‖²) to the steady states, where defined",
    "error_vs_horizon_slope": "least-squares slope of log terminal_error against log T",
    "control_decay_rate": "μ of log ‖θ_t‖ ≈ a − μ t on t ≤ (1 − tail_fraction)·T, longest T",
    "running_error_decay_rate": "μ of log running_error(t) ≈ a − μ t, same window",
    "ci95": "95 % interval from the least-squares covariance, t distribution, n − 2 dof",
}


def sweep(
    problem: Problem | Dataset,
    horizons: Sequence[float],
    solver: Solver,
    *,
    fixed: str = "step",
    step: float | None = None,
    layers: int | None = None,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    warm_start: bool = True,
    interpolation: str = "linear",
    rescale: bool = True,
    init: Any = None,
    tail_fraction: float = DEFAULT_TAIL_FRACTION,
    progress: bool = False,
    log: Callable[[str], Any] | None = None,
    heartbeat_s: float = 15.0,
    problem_options: Mapping[str, Any] | None = None,
    **solve_kwargs: Any,
) -> TurnpikeResult:
    """Solve ``problem`` for every horizon in ``horizons`` (ascending) and measure the
    turnpike diagnostics.

    Args:
        problem: the template problem (its ``layers`` and ``horizon`` are replaced per
            horizon), or a :class:`~controldl.data.Dataset` with ``problem_options``.
        horizons: the horizons ``T > 0`` (distinct; solved in ascending order).
        solver: any solver instance (``GradientDescent()``, ``EMSA()``, …).
        fixed: ``"step"`` (``L = round(T/step)``, ``step`` default 0.25) or ``"layers"``
            (``L = layers`` for every ``T``, ``h = T/L``).
        out: the sweep directory: ``OUT/T=<T>/`` per horizon (saved as each finishes,
            atomically) and ``OUT/turnpike.json`` (rewritten after each horizon).
            ``None``: nothing is written.
        resume: load the horizons already saved in ``out`` (checked to be the same
            problem) instead of solving them. Without it, an ``out`` that already holds
            horizon directories is refused.
        warm_start: start each horizon from the previous one's solution, its controls
            interpolated in rescaled time by :func:`interpolate_controls` (``interpolation``
            ``"linear"`` or ``"constant"``); ``False``: every horizon from the shared
            initialization.
        rescale: multiply the warm start's controls by ``T_prev/T``. Then
            ``T·θ(s)``, hence the flow in rescaled time ``dx/ds = T·σ(A x + b)``, is kept
            where σ is linear, and the L² cost ``h Σ‖θ_t‖² ≈ T ∫‖θ(s)‖² ds`` scales like
            ``1/T`` as for the optimal controls (Esteve et al.); without it the previous
            flow is run ``T/T_prev`` times too long, and the solver starts far out.
        init: warm start of the first horizon (``Solution``, directory or ``Params``; its
            controls are interpolated to the first grid).
        tail_fraction: the final part of each horizon left out of the exponential fits.
        progress: tqdm bar inside each solve (on a terminal) and progress lines; ``log``
            receives the lines (default: stderr when ``progress``), a heartbeat line at
            most every ``heartbeat_s`` seconds during a solve.
        solve_kwargs: passed to :func:`controldl.solve` (``max_iter``, ``max_time``,
            ``target_cost``, ``seed``, ``init_scheme``, ``callback``).

    Returns:
        a :class:`TurnpikeResult`; its ``report`` is what ``turnpike.json`` holds.
    """
    if isinstance(problem, Dataset):
        problem = Problem(problem, **dict(problem_options or {}))
    elif problem_options:
        problem = problem.replace(**dict(problem_options))
    if not isinstance(problem, Problem):
        raise ValueError(f"problem must be a controldl.Problem or Dataset, got "
                         f"{type(problem).__name__}")
    if not isinstance(solver, Solver):
        raise ValueError(f"solver must be a controldl solver, got {type(solver).__name__}")
    if "init" in solve_kwargs or "progress" in solve_kwargs:
        raise ValueError("pass init and progress to sweep itself")
    if interpolation not in INTERPOLATION_METHODS:
        raise ValueError(f"unknown interpolation {interpolation!r}; expected "
                         f"{' or '.join(INTERPOLATION_METHODS)}")
    if not 0 <= tail_fraction < 1:
        raise ValueError(f"tail_fraction must be in [0, 1), got {tail_fraction}")
    grid = horizon_grid(horizons, fixed, step, layers)
    problems = {T: problem.replace(layers=L, horizon=T) for T, L in grid}
    out_dir = None if out is None else Path(out)
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {str(out_dir)!r} exists and is not a directory")
    if out_dir is not None and not resume and out_dir.is_dir():
        done = sorted(p.name for p in out_dir.glob("T=*") if p.is_dir())
        if done:
            raise ValueError(f"{out_dir} already holds a sweep ({', '.join(done)}); pass "
                             "resume to continue it, or choose another output directory")
    first_init = None
    if init is not None:
        from controldl.solvers.base import as_params

        init_params = init.params if isinstance(init, Solution) else init
        if isinstance(init_params, str | os.PathLike):
            init_params = load(init_params).params
        if not isinstance(init_params, Params):
            raise ValueError(f"cannot warm-start from {type(init).__name__}")
        T0, L0 = grid[0]
        first_init = as_params(problems[T0], interpolate_controls(init_params, L0,
                                                                  interpolation))
    emit = log if log is not None else ((lambda s: print(s, file=sys.stderr, flush=True))
                                        if progress else None)
    max_iter = solve_kwargs.get("max_iter")
    max_iter = solver.default_max_iter if max_iter is None else max_iter
    user_callback = solve_kwargs.pop("callback", None)

    config = {
        "horizons": [T for T, _ in grid], "layers": [L for _, L in grid], "fixed": fixed,
        "step": (DEFAULT_STEP if step is None else float(step)) if fixed == "step" else None,
        "fixed_layers": int(layers) if fixed == "layers" else None,
        "solver": {"name": solver.name, "label": solver.label(), "options": solver.options()},
        "solve": {k: v for k, v in solve_kwargs.items()},
        "warm_start": warm_start, "interpolation": interpolation, "rescale": rescale,
        "tail_fraction": tail_fraction,
        "problem": {k: getattr(problem.formulation, k) for k in FORMULATION_KEYS
                    if k not in ("layers", "horizon")},
        "data": problem.data.source, "n_train": problem.data.n_train,
    }
    solutions: dict[float, Solution] = {}
    entries: list[dict[str, Any]] = []
    solved: list[float] = []
    loaded: list[float] = []
    start = time.perf_counter()
    previous: Params | None = None
    previous_T = math.nan

    def report() -> dict[str, Any]:
        return {"config": config, "steady_reference": steady_reference(problem),
                "definitions": DEFINITIONS, "horizons": entries, **_fits(entries),
                "elapsed_s": time.perf_counter() - start,
                "complete": len(entries) == len(grid)}

    # On resume, the profiles of loaded horizons are read back from turnpike.json (they
    # are recomputed when it is missing or describes another solution).
    old_entries: dict[str, Any] = {}
    if resume and out_dir is not None and (out_dir / REPORT_NAME).is_file():
        try:
            old = json.loads((out_dir / REPORT_NAME).read_text())
            old_entries = {e["directory"]: e for e in old.get("horizons", [])}
        except (ValueError, KeyError, TypeError, AttributeError):
            old_entries = {}

    for k, (T, L) in enumerate(grid, start=1):
        prob = problems[T]
        tag = f"[{k}/{len(grid)}] T={T:g} (L={L}, h={prob.h:g})"
        target = None if out_dir is None else out_dir / horizon_dirname(T)
        solution = None
        if resume and target is not None and target.is_dir():
            solution = load(target)
            why = _same_problem(solution.problem, prob)
            if why is not None:
                raise ValueError(f"{target} belongs to another problem ({why}); use another "
                                 "output directory")
            loaded.append(T)
            source = "loaded"
            if emit:
                emit(f"{tag}: loaded from {target} ({solution.status}, "
                     f"cost {solution.cost.get('total', math.nan):.6g})")
        else:
            if warm_start and previous is not None:
                scale = previous_T / T if rescale else 1.0
                warm = interpolate_controls(previous, L, interpolation, scale)
            else:
                warm = first_init if k == 1 else None
            callback = user_callback
            if emit:
                emit(f"{tag}: solving with {solver.label()} (up to {max_iter} iterations, "
                     f"{'warm start' if warm is not None else 'fresh initialization'}); "
                     f"sweep elapsed {time.perf_counter() - start:.1f} s")
                callback = _heartbeat(emit, tag, max_iter, heartbeat_s, user_callback)
            kwargs = dict(solve_kwargs)
            if callback is not None:
                kwargs["callback"] = callback
            solution = solve(prob, solver, init=warm, progress=progress, **kwargs)
            if target is not None:
                solution.save(target)
            solved.append(T)
            source = "solved"
        solutions[T] = solution
        previous = Params(*(np.asarray(v) for v in solution.params))
        previous_T = T
        entries.append(_entry(T, prob, solution, source, tail_fraction,
                              old_entries.get(horizon_dirname(T)) if source == "loaded"
                              else None))
        rep = report()
        if out_dir is not None:
            _write_json_atomic(out_dir / REPORT_NAME, rep)
        if emit and source == "solved":
            e = entries[-1]
            emit(f"{tag}: {solution.status} after {solution.iterations} iterations in "
                 f"{solution.wall_time_s:.1f} s; cost {solution.cost['total']:.6g}, terminal "
                 f"error {e['terminal_error']:.4g}; sweep elapsed "
                 f"{time.perf_counter() - start:.1f} s")
    rep = report()
    if out_dir is not None:
        _write_json_atomic(out_dir / REPORT_NAME, rep)
    return TurnpikeResult(report=_jsonable(rep), solutions=solutions, solved=solved,
                          loaded=loaded, out=out_dir)


def _heartbeat(emit: Callable[[str], Any], tag: str, max_iter: int, every_s: float,
               inner: Callable[[dict[str, Any]], Any] | None) -> Callable[[dict[str, Any]], Any]:
    """A solve callback that emits ``tag: iteration i of n, cost, time`` at most every
    ``every_s`` seconds, then calls ``inner``."""
    last = [time.perf_counter()]

    def callback(entry: dict[str, Any]) -> None:
        now = time.perf_counter()
        if now - last[0] >= every_s:
            last[0] = now
            emit(f"{tag}: iteration {entry['iteration']} of {max_iter}, cost "
                 f"{entry['cost']:.6g}, {entry['time_s']:.1f} s")
        if inner is not None:
            inner(entry)

    return callback


def load_sweep(out: str | os.PathLike) -> tuple[dict[str, Any], dict[float, Solution]]:
    """Read ``turnpike.json`` and the solutions it lists from a sweep directory."""
    out = Path(out)
    path = out / REPORT_NAME
    if not path.is_file():
        raise ValueError(f"{out} is not a turnpike sweep: {REPORT_NAME} is missing")
    report = json.loads(path.read_text())
    solutions = {float(e["horizon"]): load(out / e["directory"]) for e in report["horizons"]}
    return report, solutions
