"""Every figure: the data carried through the layers, decision regions, a deformed grid,
the controls ``θ_t`` over time, and cost / accuracy / stationarity histories. Functions
return a ``matplotlib.figure.Figure``; :func:`save_solution_figures` writes the PNGs of a
solution atomically.

States of width d ≤ 2 are drawn as they are (1-D as a strip, 2-D). A classifier's states
of width d ≥ 3 are drawn in the readout's frame (:func:`readout_frame`): the vertical axis
is along the readout's direction ``W``, so its separating plane ``W x + c = 0`` is
horizontal and the last layer shows the classes apart; the other axes are the principal
directions of the final states ``x(L)`` orthogonal to it (3-D for d = 3, 2-D beyond).
A regression's wider states are projected on the principal directions of ``x(L)``. The
same frame serves every layer, so the panels are comparable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator, ScalarFormatter

from controldl.io import OUTPUT_RECORDS, atomic_directory, marked, write_json
from controldl.solution import Solution

CLASS_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                "#7f7f7f", "#bcbd22", "#17becf")


def states(solution: Solution, X: np.ndarray | None = None) -> np.ndarray:
    """``x(0..L)`` (L+1, N, d) of the inputs ``X`` (default: the training inputs):
    :meth:`Solution.states <controldl.solution.Solution.states>`."""
    return solution.states(solution.problem.data.X_train if X is None else X)


def outputs(solution: Solution, X: np.ndarray) -> np.ndarray:
    """``z = W x(L) + c`` (N, m) of the inputs ``X``: :meth:`Solution.outputs
    <controldl.solution.Solution.outputs>`."""
    return solution.outputs(X)


def _colors(solution: Solution, y: np.ndarray) -> Any:
    if solution.problem.formulation.task == "classification":
        return [CLASS_COLORS[int(k) % len(CLASS_COLORS)] for k in y]
    return np.asarray(y).reshape(len(y), -1)[:, 0]


def _default_layers(L: int, count: int = 6) -> list[int]:
    return sorted(set(np.linspace(0, L, min(count, L + 1)).round().astype(int).tolist()))


def _principal(points: np.ndarray, count: int) -> np.ndarray:
    """(d, count) orthonormal principal directions of ``points`` (N, d), centred."""
    _, _, vt = np.linalg.svd(points - points.mean(axis=0), full_matrices=False)
    return vt[:count].T


def readout_direction(solution: Solution) -> np.ndarray | None:
    """The unit vector (d,) along which the readout separates the classes: ``W/‖W‖`` for a
    binary classifier (m = 1), the top right singular vector of the centred rows of ``W``
    for K > 2 classes (the direction along which the class scores differ most). ``None``
    for regression or a zero readout."""
    form = solution.problem.formulation
    W = np.asarray(solution.params.W, float)
    if form.task != "classification" or np.allclose(W, 0):
        return None
    w = W[0] if W.shape[0] == 1 else _principal(W, 1)[:, 0]
    return w / np.linalg.norm(w)


def readout_frame(solution: Solution, final_states: np.ndarray) -> np.ndarray | None:
    """The (d, k) orthonormal frame the states are drawn in (k = 3 for d = 3, else 2),
    ``None`` when they are drawn as they are (d ≤ 2, or a regression of width ≤ 3).

    For a classifier of width d ≥ 3 the last column is :func:`readout_direction` ``ŵ``
    (the vertical axis: the plane ``W x + c = 0`` of a binary readout is the horizontal
    plane at height ``-c/‖W‖``); the others are the principal directions of the final
    states ``final_states`` (N, d) projected orthogonally to ``ŵ``. For a regression of
    width d > 3: the two principal directions of the final states."""
    d = final_states.shape[-1]
    w = readout_direction(solution)
    if d <= 2 or (w is None and d <= 3):
        return None
    if w is None:
        return _principal(final_states, 2)
    k = 3 if d == 3 else 2
    rest = final_states - np.outer(final_states @ w, w)
    others = _principal(rest, k - 1)
    others = others - np.outer(w, w @ others)  # exactly orthogonal to ŵ
    others, _ = np.linalg.qr(others)
    return np.concatenate([others, w[:, None]], axis=1)


def layers_figure(solution: Solution, layers: Sequence[int] | None = None) -> Figure:
    """The training data carried through the layers: one panel per chosen layer, in the
    frame of :func:`readout_frame` (3-D panels for a width-3 classifier, the vertical axis
    along ``W``). A binary readout's separating line or plane ``W x + c = 0`` is drawn in
    the last panel."""
    form = solution.problem.formulation
    L, d = form.layers, form.width
    layers = _default_layers(L) if layers is None else list(layers)
    bad = [t for t in layers if not 0 <= t <= L]
    if bad:
        raise ValueError(f"layer {bad[0]} is outside 0..{L}")
    xs = states(solution)
    color = _colors(solution, solution.problem.data.y_train)
    basis = readout_frame(solution, xs[-1])
    pts_all = xs if basis is None else xs @ basis
    k = pts_all.shape[-1]
    binary = form.task == "classification" and form.n_outputs == 1
    n = len(layers)
    cols = min(n, 3)
    rows = int(np.ceil(n / cols))
    fig = plt.figure(figsize=(4.2 * cols, 3.9 * rows))
    for i, t in enumerate(layers):
        pts = pts_all[t]
        if k == 3:
            ax = fig.add_subplot(rows, cols, i + 1, projection="3d")
            ax.scatter(pts[:, 0], pts[:, 1], pts[:, 2], c=color, s=6, depthshade=False)
            ax.view_init(elev=8, azim=-60)
            _tidy_3d(ax)
            if t == L and binary:
                _boundary_plane(ax, solution, pts)
        else:
            ax = fig.add_subplot(rows, cols, i + 1)
            if k == 1:
                jitter = np.random.default_rng(0).uniform(-0.5, 0.5, len(pts))
                ax.scatter(pts[:, 0], jitter, c=color, s=6)
                ax.set_yticks([])
            else:
                ax.scatter(pts[:, 0], pts[:, 1], c=color, s=6)
                if t == L and binary:
                    _boundary_line(ax, solution, basis, pts)
            ax.set_aspect("equal", adjustable="datalim")
        ax.set_title(f"layer {t}" + (" (input)" if t == 0 else ""))
    if basis is None:
        what = f"states in R^{d}"
    elif readout_direction(solution) is not None:
        what = "vertical axis along the readout W"
    else:
        what = "PCA of the states"
    fig.suptitle(f"Data through the layers ({form.model}, width {d}, L = {L}, T = "
                 f"{form.horizon:g}; {what})")
    fig.tight_layout()
    return fig


def _tidy_3d(ax: Any) -> None:
    """At most three ticks per axis of a 3-D panel, in small print: the depth axis is
    foreshortened, and more labels run into one another."""
    for axis in (ax.xaxis, ax.yaxis, ax.zaxis):
        axis.set_major_locator(MaxNLocator(3))
    ax.tick_params(labelsize=7, pad=0)


def _boundary_line(ax: Any, solution: Solution, basis: np.ndarray | None,
                   pts: np.ndarray) -> None:
    """``W x + c = 0`` in a 2-D panel: the line itself for d = 2 (``basis`` None); in the
    readout's frame (d > 3) the horizontal line at height ``-c/‖W‖``."""
    w, c = np.asarray(solution.params.W[0], float), float(solution.params.c[0])
    if np.allclose(w, 0):
        return
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    if basis is not None:
        ax.axhline(-c / np.linalg.norm(w), color="k", ls="--", lw=1)
    elif abs(w[1]) > abs(w[0]):
        xx = np.linspace(lo[0], hi[0], 2)
        ax.plot(xx, -(w[0] * xx + c) / w[1], "k--", lw=1)
    else:
        yy = np.linspace(lo[1], hi[1], 2)
        ax.plot(-(w[1] * yy + c) / w[0], yy, "k--", lw=1)


def _boundary_plane(ax: Any, solution: Solution, pts: np.ndarray) -> None:
    """The horizontal plane ``W x + c = 0`` (height ``-c/‖W‖``) in a 3-D readout frame."""
    w, c = np.asarray(solution.params.W[0], float), float(solution.params.c[0])
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    g0, g1 = np.meshgrid(np.linspace(lo[0], hi[0], 2), np.linspace(lo[1], hi[1], 2))
    ax.plot_surface(g0, g1, np.full_like(g0, -c / np.linalg.norm(w)), color="0.5", alpha=0.25)


def solver_label(solution: Solution) -> str:
    """The name a figure gives a solution's solver: its label in a comparison, else its
    name."""
    return str(solution.solver.get("label", solution.solver.get("name", "solver")))


class InputPlane(NamedTuple):
    """A plane of the input space ``R^n`` where a figure of the inputs is drawn:
    ``x = origin + basis @ (u, v)``, ``basis`` (n, 2) orthonormal. For n = 2 the plane
    itself (origin 0, the identity); for n > 2 the plane through the mean of the training
    inputs spanned by their two principal directions (``axes`` names them)."""

    origin: np.ndarray
    basis: np.ndarray
    axes: tuple[str, str]

    def coordinates(self, X: np.ndarray) -> np.ndarray:
        """``(u, v)`` (N, 2) of inputs ``X`` (N, n): their orthogonal projection."""
        return (np.asarray(X, float) - self.origin) @ self.basis

    def points(self, uv: np.ndarray) -> np.ndarray:
        """The inputs (N, n) at plane coordinates ``uv`` (N, 2)."""
        return self.origin + uv @ self.basis.T


def input_plane(solution: Solution) -> InputPlane | None:
    """The :class:`InputPlane` of a solution's figures of the input space (``None`` for 1-D
    inputs and for images)."""
    X = solution.problem.data.X_train
    if X.ndim != 2 or X.shape[1] < 2:
        return None
    if X.shape[1] == 2:
        return InputPlane(np.zeros(2), np.eye(2), ("x1", "x2"))
    X = np.asarray(X, float)
    return InputPlane(X.mean(axis=0), _principal(X, 2),
                      ("principal direction 1 of the inputs", "principal direction 2"))


def decision_regions_figure(solution: Solution, resolution: int = 200) -> Figure | None:
    """Decision regions in input space, training points as dots and test points as
    crosses (the legend says which marker is which, in grey: the colours are the
    classes). The title names the solver. For n = 1 the output along the line; for
    n = 2 the plane; for n > 2 the slice of input space through the inputs' mean spanned
    by their two principal directions (:func:`input_plane`), with the points projected
    onto it (the title says so). ``None`` only for images (the conv model has its own
    figures)."""
    form = solution.problem.formulation
    data = solution.problem.data
    n = form.n_inputs
    plane = input_plane(solution)
    if n > 1 and plane is None:
        return None
    X = data.X_train if n == 1 else plane.coordinates(data.X_train)
    lo, hi = X.min(axis=0), X.max(axis=0)
    pad = 0.1 * (hi - lo + 1e-12)
    lo, hi = lo - pad, hi + pad
    fig, ax = plt.subplots(figsize=(5.5, 5))
    if n == 1:
        grid = np.linspace(lo[0], hi[0], resolution)[:, None]
        z = outputs(solution, grid)
        ax.plot(grid[:, 0], z, "k-", lw=1.5, label="network output z")
        yplot = data.y_train if data.y_train.ndim == 1 else data.y_train[:, 0]
        ax.scatter(X[:, 0], yplot, c=_colors(solution, data.y_train), s=8, label="training data")
        ax.set_xlabel("x")
        ax.legend()
    else:
        g0, g1 = np.meshgrid(np.linspace(lo[0], hi[0], resolution),
                             np.linspace(lo[1], hi[1], resolution))
        grid = np.stack([g0.ravel(), g1.ravel()], axis=1)
        z = outputs(solution, plane.points(grid))
        if form.task == "classification":
            if form.n_outputs == 1:
                prob = 1.0 / (1.0 + np.exp(-np.clip(z[:, 0], -50, 50)))
                cs = ax.contourf(g0, g1, prob.reshape(g0.shape), levels=np.linspace(0, 1, 11),
                                 cmap="RdBu_r", alpha=0.6)
                ax.contour(g0, g1, z[:, 0].reshape(g0.shape), levels=[0.0], colors="k")
                fig.colorbar(cs, ax=ax, label="sigmoid(z)")
            else:
                label = np.argmax(z, axis=1).reshape(g0.shape)
                ax.contourf(g0, g1, label, levels=np.arange(form.n_outputs + 1) - 0.5,
                            colors=CLASS_COLORS[: form.n_outputs], alpha=0.35)
        else:
            cs = ax.contourf(g0, g1, z[:, 0].reshape(g0.shape), levels=20, cmap="viridis")
            fig.colorbar(cs, ax=ax, label="z")
        ax.scatter(X[:, 0], X[:, 1], c=_colors(solution, data.y_train), s=7,
                   edgecolors="none")
        if data.has_test:
            Xt = plane.coordinates(data.X_test)
            ax.scatter(Xt[:, 0], Xt[:, 1], c=_colors(solution, data.y_test), marker="x", s=14)
            ax.legend(handles=[Line2D([], [], ls="", marker="o", ms=4, color="0.35",
                                      label="train"),
                               Line2D([], [], ls="", marker="x", ms=5, color="0.35",
                                      label="test")], loc="upper right")
        ax.set_aspect("equal")
        ax.set_xlabel(plane.axes[0])
        ax.set_ylabel(plane.axes[1])
    acc = "" if solution.train_accuracy is None else f", train acc {solution.train_accuracy:.3f}"
    if solution.test_accuracy is not None:
        acc += f", test acc {solution.test_accuracy:.3f}"
    where = (f"\n(slice of R^{n} through the mean; points projected onto it)" if n > 2
             else "")
    ax.set_title(f"Decision regions: {solver_label(solution)}{acc}{where}", fontsize=10)
    fig.tight_layout()
    return fig


def deformed_grid_figure(solution: Solution, lines: int = 13, layers: Sequence[int] | None = None
                         ) -> Figure | None:
    """How the flow deforms a grid of the input plane: the grid lines carried to chosen
    layers (in the frame of :func:`readout_frame`, as in :func:`layers_figure`). For
    n > 2 the grid lies in the plane of :func:`input_plane` (through the inputs' mean,
    along their two principal directions). ``None`` for 1-D inputs and images."""
    form = solution.problem.formulation
    plane = input_plane(solution)
    if plane is None:
        return None
    L = form.layers
    layers = [0, L // 2, L] if layers is None else list(layers)
    X = plane.coordinates(solution.problem.data.X_train)
    lo, hi = X.min(axis=0), X.max(axis=0)
    u = np.linspace(0, 1, 120)
    segs = []
    for s in np.linspace(0, 1, lines):
        segs.append(np.stack([lo[0] + s * (hi[0] - lo[0]) + 0 * u, lo[1] + u * (hi[1] - lo[1])], 1))
        segs.append(np.stack([lo[0] + u * (hi[0] - lo[0]), lo[1] + s * (hi[1] - lo[1]) + 0 * u], 1))
    pts = plane.points(np.concatenate(segs))
    xs_grid = states(solution, pts)
    xs_data = states(solution)
    basis = readout_frame(solution, xs_data[-1])
    if basis is not None:
        xs_grid, xs_data = xs_grid @ basis, xs_data @ basis
    k = xs_data.shape[-1]
    color = _colors(solution, solution.problem.data.y_train)
    fig = plt.figure(figsize=(4.3 * len(layers), 4.2))
    for i, t in enumerate(layers):
        g = xs_grid[t].reshape(len(segs), len(u), k)
        x = xs_data[t]
        if k == 3:
            ax = fig.add_subplot(1, len(layers), i + 1, projection="3d")
            for seg in g:
                ax.plot(seg[:, 0], seg[:, 1], seg[:, 2], color="0.5", lw=0.5)
            ax.scatter(x[:, 0], x[:, 1], x[:, 2], c=color, s=4, depthshade=False)
            ax.view_init(elev=8, azim=-60)
            _tidy_3d(ax)
        else:
            ax = fig.add_subplot(1, len(layers), i + 1)
            for seg in g:
                ax.plot(seg[:, 0], seg[:, 1], color="0.5", lw=0.5)
            ax.scatter(x[:, 0], x[:, 1], c=color, s=4)
            ax.set_aspect("equal", adjustable="datalim")
        ax.set_title(f"layer {t}")
    fig.suptitle("A grid of the input plane carried by the flow" if form.n_inputs == 2 else
                 f"A grid of a plane of R^{form.n_inputs} (through the inputs' mean, along "
                 "their principal directions) carried by the flow")
    fig.tight_layout()
    return fig


def labelled(runs: Any, what: str) -> dict[str, Any]:
    """``{label: run}`` from what a user passes a figure of several runs: a mapping (kept),
    one :class:`~controldl.solution.Solution`, or a sequence of them (each labelled by
    :func:`solver_label`, a repeated label numbered: ``adam``, ``adam (2)``)."""
    if isinstance(runs, Mapping):
        return dict(runs)
    if isinstance(runs, Solution):
        runs = [runs]
    if not isinstance(runs, Sequence) or isinstance(runs, str) or not all(
            isinstance(r, Solution) for r in runs):
        raise ValueError(f"{what} takes a Solution, a list of them or a dict {{label: ...}}, "
                         f"got {type(runs).__name__}")
    out: dict[str, Any] = {}
    for sol in runs:
        label, k = solver_label(sol), 2
        while label in out:
            label, k = f"{solver_label(sol)} ({k})", k + 1
        out[label] = sol
    return out


def _series(hist: Sequence[Mapping[str, Any]], key: str) -> np.ndarray:
    return np.array([np.nan if h.get(key) is None else h[key] for h in hist], float)


def history_figure(histories: Any, title: str = "", target: float | None = None,
                   tolerance: float | None = None) -> Figure:
    """One line per run: the cost ``J`` against the iteration and against the wall time
    (compilation included), the training accuracy (and the test accuracy, dashed, where
    the histories record it: then also against the wall time), and the stationarity
    ``‖θ − Π(prox(θ − ∇J))‖`` (:func:`controldl.stationarity`) when the histories record
    it. Learning curves of mini-batch runs are drawn against the **epoch** (passes over
    the training data: ``k / ⌊N/B⌋``, a full-batch iteration being one) instead of the
    iteration. ``target`` (a cost) is marked on the cost panels, ``tolerance`` (a
    stationarity) on the stationarity panel, as dashed horizontal lines. On the time axes
    the span before the first recorded iterate (compilation and setup) is shaded. The
    panels are laid out in rows of at most three (two rows of two for four).

    ``histories``: ``{label: history}`` (a history is a solution's ``history`` list),
    ``{label: Solution}``, one :class:`~controldl.solution.Solution` or a list of them
    (:func:`labelled`)."""
    histories = {k: v.history if isinstance(v, Solution) else v
                 for k, v in labelled(histories, "history_figure").items()}
    runs = {k: h for k, h in histories.items() if h}
    has_stat = tolerance is not None or any(
        h.get("stationarity") is not None for hist in runs.values() for h in hist)
    has_test = any(h.get("test_accuracy") is not None for hist in runs.values() for h in hist)
    x = "epoch" if _by_epoch(runs) else "iteration"
    panels = ["cost", "cost-time", "accuracy", *(["accuracy-time"] if has_test else []),
              *(["stationarity"] if has_stat else [])]
    fig, ax = _panel_grid(panels)
    for label, hist in runs.items():
        _history_lines(ax, label, hist, x)
    names = {"cost": (x, "cost J"), "cost-time": ("wall time [s] (compilation included)",
                                                  "cost J"),
             "accuracy": (x, "accuracy (test dashed)" if has_test else "training accuracy"),
             "accuracy-time": ("wall time [s] (compilation included)",
                               "accuracy (test dashed)"),
             "stationarity": (x, "stationarity (proximal gradient)")}
    for key, a in ax.items():
        a.set_xlabel(names[key][0])
        a.set_ylabel(names[key][1])
        a.grid(alpha=0.3)
    for key in ("cost", "cost-time"):
        _cost_axis(ax[key], target)
    times = [_series(h, "time_s") for h in runs.values()]
    for key in ("cost-time", "accuracy-time"):
        if key in ax:
            _time_axis(ax[key], max((np.nanmax(t) for t in times), default=0.0))
            start = min((np.nanmin(t) for t in times), default=0.0)
            if start > 0:  # before the first recorded iterate: compilation, setup
                ax[key].axvspan(0.0, start, color="0.92", zorder=0)
    if has_stat:
        _stationarity_axis(ax["stationarity"], tolerance)
    ax["cost"].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _panel_grid(panels: list[str]) -> tuple[Figure, dict[str, Any]]:
    """A figure with one axis per panel name, in rows of at most three (2 × 2 for four),
    about 5 × 4.2 inches each; ``{name: axis}``."""
    n = len(panels)
    cols = 2 if n == 4 else min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 4.2 * rows), squeeze=False)
    flat = list(axes.ravel())
    for extra in flat[n:]:
        fig.delaxes(extra)
    return fig, dict(zip(panels, flat[:n], strict=True))


def _by_epoch(histories: Mapping[str, Sequence[Mapping[str, Any]]]) -> bool:
    """Whether every history records epochs and one of them is a mini-batch run (its
    epochs differ from its iterations)."""
    hists = list(histories.values())
    if not hists or not all(h.get("epoch") is not None for hist in hists for h in hist):
        return False
    return any(h["epoch"] != h["iteration"] for hist in hists for h in hist)


def _history_lines(ax: dict[str, Any], label: str, hist: Sequence[Mapping[str, Any]],
                   x: str) -> None:
    """One run's lines on the panels ``ax`` of :func:`history_figure` (``x``: the key of
    the horizontal axis, ``iteration`` or ``epoch``)."""
    xs, t, cost = _series(hist, x), _series(hist, "time_s"), _series(hist, "cost")
    few = {"marker": "o", "ms": 3} if len(hist) <= 3 else {}
    (line,) = ax["cost"].plot(xs, cost, label=label, **few)
    ax["cost-time"].plot(t, cost, label=label, **few)
    style = dict(color=line.get_color(), **few)
    train, test = _series(hist, "train_accuracy"), _series(hist, "test_accuracy")
    for key, xv in (("accuracy", xs), ("accuracy-time", t)):
        if key not in ax:
            continue
        if np.isfinite(train).any():  # where recorded (L-BFGS: every tenth iteration)
            ok = np.isfinite(train)
            ax[key].plot(xv[ok], train[ok], label=label, **style)
        if np.isfinite(test).any():
            ok = np.isfinite(test)
            ax[key].plot(xv[ok], test[ok], ls="--", label=f"{label} (test)", **style)
    if "stationarity" in ax:
        ax["stationarity"].plot(xs, _series(hist, "stationarity"), label=label, **few)


def _stationarity_axis(ax: Any, tolerance: float | None) -> None:
    """Log scale where possible, the tolerance as a dashed line."""
    _log_if_positive(ax)
    if tolerance is not None and tolerance > 0:
        ax.set_yscale("log")
        if not any(np.isfinite(ln.get_ydata()).any() for ln in ax.get_lines()):
            ax.set_ylim(tolerance / 10, tolerance * 10)
    if tolerance is not None:
        ax.axhline(tolerance, color="k", ls="--", lw=1, label=f"tolerance {tolerance:g}")
        ax.legend(fontsize=8)


def _log_if_positive(ax: Any) -> None:
    ys = [ln.get_ydata() for ln in ax.get_lines()]
    ys = np.concatenate(ys) if ys else np.array([])
    if np.isfinite(ys).any() and np.nanmin(ys) > 0:
        ax.set_yscale("log")


def _cost_axis(ax: Any, target: float | None) -> None:
    """Log scale when every cost is positive; a run that blows up (cost far above every
    start) would squash the others, so the axis stops at twice the highest starting cost;
    the target as a dashed line."""
    lines = [ln for ln in ax.get_lines() if len(ln.get_ydata())]
    if lines:
        _log_if_positive(ax)
        ys = np.concatenate([ln.get_ydata() for ln in lines])
        top = 2.0 * np.nanmax([ln.get_ydata()[0] for ln in lines])
        if np.isfinite(top) and np.nanmax(ys) > top:
            ax.set_ylim(top=top)
    if target is not None:
        ax.axhline(target, color="k", ls="--", lw=1, label=f"target {target:g}")
        ax.legend(fontsize=8)


def _time_axis(ax: Any, longest: float) -> None:
    """Wall time from 0: linear for runs of at most 10 s, beyond that linear up to 1 s
    and logarithmic above (runs from milliseconds to minutes); plain tick labels."""
    if longest > 10.0:
        ax.set_xscale("symlog", linthresh=1.0)
    formatter = ScalarFormatter()
    formatter.set_scientific(False)
    ax.xaxis.set_major_formatter(formatter)
    ax.set_xlim(0.0, 1.05 * longest if longest > 0 else 1.0)


def _layer_norms(solution: Solution) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(t·h, ‖A_t‖_F, ‖b_t‖)`` of the layers t = 0..L-1 (the time a layer starts at)."""
    A, b = np.asarray(solution.params.A, float), np.asarray(solution.params.b, float)
    L = b.shape[0]
    t = np.arange(L) * (solution.problem.formulation.horizon / L)
    return t, np.sqrt((A.reshape(L, -1) ** 2).sum(axis=1)), np.linalg.norm(b, axis=1)


def controls_matrix(solution: Solution) -> tuple[np.ndarray, list[str]]:
    """Every entry of ``θ_t = (A_t, b_t)`` as an (entries, L) array, rows ``A[i,j]`` then
    ``b[i]``, and the row names."""
    A, b = np.asarray(solution.params.A, float), np.asarray(solution.params.b, float)
    L = b.shape[0]
    entries = A.reshape(L, -1)
    shape = A.shape[1:]
    if len(shape) == 4:  # conv kernels K[o, c, i, j]
        names = [f"K{o + 1}{c + 1}[{i},{j}]" for o in range(shape[0]) for c in range(shape[1])
                 for i in range(shape[2]) for j in range(shape[3])]
    elif len(shape) == 2:
        names = [f"A{i + 1}{j + 1}" for i in range(shape[0]) for j in range(shape[1])]
    else:
        names = [f"A{i + 1}" for i in range(shape[0])]
    names += [f"b{i + 1}" for i in range(b.shape[1])]
    return np.concatenate([entries, b], axis=1).T, names


def controls_figure(solutions: Any) -> Figure:
    """The controls of one or several solutions side by side, against the time ``t·h`` of
    each layer (so that solutions of different horizons share an axis). ``solutions``:
    one :class:`~controldl.solution.Solution`, a list of them or ``{label: Solution}``
    (:func:`labelled`).

    Top row: ``‖A_t‖_F`` and ``‖b_t‖`` of every solution (one line per label). Below, one
    heat map per solution (keyed by its label): every entry of ``θ_t`` over ``(t·h,
    entry)``, rows ``A[i,j]`` then ``b[i]``, on one colour scale symmetric about 0 shared
    by all the maps, so a smoother, sparser or smaller control shows as such."""
    solutions = labelled(solutions, "controls_figure")
    if not solutions:
        raise ValueError("controls_figure needs at least one solution")
    items = list(solutions.items())
    n = len(items)
    fig = plt.figure(figsize=(max(10.0, 4.2 * n), 7.6), layout="constrained")
    grid = fig.add_gridspec(2, max(n, 2), height_ratios=(1.0, 1.2))
    half = max(n, 2) // 2
    ax_a, ax_b = fig.add_subplot(grid[0, :half]), fig.add_subplot(grid[0, half:])
    mats = [controls_matrix(sol) for _, sol in items]
    vmax = max(float(np.max(np.abs(m))) for m, _ in mats) or 1.0
    for k, (label, sol) in enumerate(items):
        t, na, nb = _layer_norms(sol)
        style = {"marker": "o", "ms": 3} if len(t) <= 30 else {}
        ax_a.plot(t, na, label=label, **style)
        ax_b.plot(t, nb, label=label, **style)
        ax = fig.add_subplot(grid[1, k])
        M, names = mats[k]
        T = sol.problem.formulation.horizon
        im = ax.imshow(M, aspect="auto", cmap="RdBu_r", vmin=-vmax, vmax=vmax,
                       extent=(0.0, float(T), len(names) - 0.5, -0.5), interpolation="nearest")
        if len(names) <= 24:
            ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.set_xlabel("time t·h")
        ax.set_title(f"{label}: entries of θ_t (L = {M.shape[1]})", fontsize=9)
    fig.colorbar(im, ax=fig.axes[2:], shrink=0.9, label="θ entry")
    for ax, what in ((ax_a, "‖A_t‖_F"), (ax_b, "‖b_t‖")):
        ax.set_xlabel("time t·h")
        ax.set_ylabel(what)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Controls θ_t = (A_t, b_t) over the layers")
    return fig


def channels_figure(solution: Solution, count: int = 3, layers: Sequence[int] | None = None,
                    X: np.ndarray | None = None) -> Figure:
    """The conv model's state carried through the layers: for ``count`` images (one per
    class where possible, default the test inputs) a row per channel, a column per layer
    shown; every panel the C×H×W state's channel as a small image, one colour scale per
    image (symmetric about 0)."""
    form = solution.problem.formulation
    geo = form.geometry
    if geo is None:
        raise ValueError("channels_figure is for the conv model")
    data = solution.problem.data
    if X is None:
        X, y = (data.X_test, data.y_test) if data.has_test else (data.X_train, data.y_train)
        picks = [int(np.flatnonzero(y == k)[0]) for k in np.unique(y)[:count]]
        X = X[picks]
    X = np.asarray(X)[:count]
    xs = states(solution, X)  # (L+1, n, d)
    shown = _default_layers(form.layers) if layers is None else list(layers)
    C, H, W = geo.channels, geo.height, geo.width
    rows = len(X) * C
    fig, axes = plt.subplots(rows, len(shown), figsize=(1.1 * len(shown) + 0.6, 1.0 * rows),
                             squeeze=False, layout="constrained")
    for i in range(len(X)):
        imgs = xs[:, i].reshape(-1, C, H, W)
        vmax = float(np.max(np.abs(imgs[shown]))) or 1.0
        for c in range(C):
            for j, t in enumerate(shown):
                ax = axes[i * C + c, j]
                ax.imshow(imgs[t, c], cmap="RdBu_r", vmin=-vmax, vmax=vmax)
                ax.set_xticks([])
                ax.set_yticks([])
                if i * C + c == 0:
                    ax.set_title(f"t = {t}", fontsize=8)
                if j == 0:
                    ax.set_ylabel(f"#{i + 1} ch {c + 1}", fontsize=7)
    fig.suptitle("Channels of a few images through the layers", fontsize=10)
    return fig


def kernels_figure(solution: Solution) -> Figure:
    """The conv model's learned kernels: one panel per layer, the (C·k)×(C·k) mosaic of
    ``K_t[o, c]`` (rows: output channel o, columns: input channel c), one colour scale
    symmetric about 0 for all layers."""
    geo = solution.problem.formulation.geometry
    if geo is None:
        raise ValueError("kernels_figure is for the conv model")
    K = np.asarray(solution.params.A, float)  # (L, C, C, k, k)
    L, C, k = K.shape[0], geo.channels, geo.kernel_size
    mosaic = K.transpose(0, 1, 3, 2, 4).reshape(L, C * k, C * k)
    cols = min(L, 5)
    rows = -(-L // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.3 * cols + 0.8, 2.3 * rows),
                             squeeze=False, layout="constrained")
    vmax = float(np.max(np.abs(K))) or 1.0
    for t, ax in enumerate(axes.ravel()):
        ax.set_xticks([])
        ax.set_yticks([])
        if t >= L:
            ax.axis("off")
            continue
        im = ax.imshow(mosaic[t], cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        for e in range(1, C):
            ax.axhline(e * k - 0.5, color="k", lw=0.4)
            ax.axvline(e * k - 0.5, color="k", lw=0.4)
        ax.set_title(f"K_{t}", fontsize=9)
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8, label="kernel entry")
    fig.suptitle(f"Kernels K_t[o, c] ({C} channels, {k}×{k})", fontsize=10)
    return fig


def save_solution_figures(solution: Solution, directory: str | Path,
                          layers: Sequence[int] | None = None, *,
                          overwrite: bool = False) -> list[Path]:
    """Write ``layers.png``, ``decision_regions.png`` and ``deformed_grid.png`` (when the
    input is 1-D or 2-D), ``controls.png`` and ``history.png`` to ``directory``
    (atomically, with ``figures.json`` listing them); for the conv model ``channels.png``
    and ``kernels.png`` instead of the state and plane pictures. ``directory`` must be
    new, empty or earlier figures; anything else only with ``overwrite``
    (:func:`controldl.io.check_output`). Returns the paths."""
    label = solver_label(solution)
    if solution.problem.formulation.geometry is not None:
        figures = {"channels.png": channels_figure(solution, layers=layers),
                   "kernels.png": kernels_figure(solution),
                   "controls.png": controls_figure({label: solution}),
                   "history.png": history_figure({label: solution.history})}
        return save_figures(figures, directory, overwrite=overwrite)
    figures = {
        "layers.png": layers_figure(solution, layers),
        "decision_regions.png": decision_regions_figure(solution),
        "deformed_grid.png": deformed_grid_figure(solution),
        "controls.png": controls_figure({label: solution}),
        "history.png": history_figure({label: solution.history}),
    }
    return save_figures(figures, directory, overwrite=overwrite)


def save_figures(figures: dict[str, Figure | None], directory: str | Path, *,
                 overwrite: bool = False) -> list[Path]:
    """Save ``{file name: figure}`` (``None``: skipped) to ``directory`` as one
    ``figures`` output (:func:`controldl.io.atomic_directory`, ``figures.json`` lists
    them) and close them. Returns the paths."""
    names = [k for k, f in figures.items() if f is not None]

    def write(tmp: Path) -> None:
        for name in names:
            figures[name].savefig(tmp / name, dpi=110)
        write_json(tmp / OUTPUT_RECORDS["figures"], marked("figures", {"figures": names}))

    try:
        target = atomic_directory(directory, write, kind="figures", overwrite=overwrite)
    finally:
        for f in figures.values():
            if f is not None:
                plt.close(f)
    return [target / n for n in names]
