"""Every figure: the data carried through the layers, decision regions, a deformed grid,
and cost / accuracy histories. Functions return a ``matplotlib.figure.Figure``;
:func:`save_solution_figures` writes the PNGs of a solution atomically.

States of width d ≤ 3 are drawn as they are (1-D as a strip, 2-D, 3-D); wider states are
projected on the two principal directions of the final states ``x(L)`` (the same
projection for every layer, so the panels are comparable).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from controldl import problem as P  # noqa: E402
from controldl.solution import Solution, atomic_directory  # noqa: E402

CLASS_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                "#7f7f7f", "#bcbd22", "#17becf")


def states(solution: Solution, X: np.ndarray | None = None) -> np.ndarray:
    """``x(0..L)`` (L+1, N, d) of the inputs ``X`` (default: the training inputs)."""
    form = solution.problem.formulation
    X = solution.problem.data.X_train if X is None else X
    params = P.Params(*(jnp.asarray(v) for v in solution.params))
    X0 = P.embed(form, jnp.asarray(X, jnp.float64))
    return np.asarray(P.trajectory(form, params, X0))


def outputs(solution: Solution, X: np.ndarray) -> np.ndarray:
    """``z = W x(L) + c`` (N, m) of the inputs ``X``."""
    form = solution.problem.formulation
    params = P.Params(*(jnp.asarray(v) for v in solution.params))
    return np.asarray(P.predict(form, params, P.embed(form, jnp.asarray(X, jnp.float64))))


def _colors(solution: Solution, y: np.ndarray) -> Any:
    if solution.problem.formulation.task == "classification":
        return [CLASS_COLORS[int(k) % len(CLASS_COLORS)] for k in y]
    return np.asarray(y).reshape(len(y), -1)[:, 0]


def _default_layers(L: int, count: int = 6) -> list[int]:
    return sorted(set(np.linspace(0, L, min(count, L + 1)).round().astype(int).tolist()))


def _projection(xs: np.ndarray) -> np.ndarray | None:
    """A (d, 2) orthonormal basis of the top principal directions of ``x(L)`` when d > 3."""
    d = xs.shape[-1]
    if d <= 3:
        return None
    final = xs[-1] - xs[-1].mean(axis=0)
    _, _, vt = np.linalg.svd(final, full_matrices=False)
    return vt[:2].T


def layers_figure(solution: Solution, layers: Sequence[int] | None = None) -> Figure:
    """The training data carried through the layers: one panel per chosen layer.

    In the last panel of a 2-D (or 3-D) state space the readout's decision boundary
    ``W x + c = 0`` is drawn for binary problems.
    """
    form = solution.problem.formulation
    L, d = form.layers, form.width
    layers = _default_layers(L) if layers is None else list(layers)
    bad = [t for t in layers if not 0 <= t <= L]
    if bad:
        raise ValueError(f"layer {bad[0]} is outside 0..{L}")
    xs = states(solution)
    color = _colors(solution, solution.problem.data.y_train)
    basis = _projection(xs)
    three_d = d == 3
    n = len(layers)
    cols = min(n, 3)
    rows = int(np.ceil(n / cols))
    fig = plt.figure(figsize=(4.2 * cols, 3.9 * rows))
    for k, t in enumerate(layers):
        x = xs[t]
        if three_d:
            ax = fig.add_subplot(rows, cols, k + 1, projection="3d")
            ax.scatter(x[:, 0], x[:, 1], x[:, 2], c=color, s=6, depthshade=False)
        else:
            ax = fig.add_subplot(rows, cols, k + 1)
            if d == 1:
                jitter = np.random.default_rng(0).uniform(-0.5, 0.5, len(x))
                ax.scatter(x[:, 0], jitter, c=color, s=6)
                ax.set_yticks([])
            else:
                pts = x @ basis if basis is not None else x
                ax.scatter(pts[:, 0], pts[:, 1], c=color, s=6)
                if (t == L and basis is None and form.n_outputs == 1
                        and form.task == "classification"):
                    _boundary_line(ax, solution.params.W[0], float(solution.params.c[0]), pts)
            ax.set_aspect("equal", adjustable="datalim")
        ax.set_title(f"layer {t}" + (" (input)" if t == 0 else ""))
    what = "PCA of the states" if basis is not None else f"states in R^{d}"
    fig.suptitle(f"Data through the layers ({form.model}, width {d}, L = {L}, T = "
                 f"{form.horizon:g}; {what})")
    fig.tight_layout()
    return fig


def _boundary_line(ax: Any, w: np.ndarray, c: float, pts: np.ndarray) -> None:
    if np.allclose(w, 0):
        return
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    if abs(w[1]) > abs(w[0]):
        xx = np.linspace(lo[0], hi[0], 2)
        ax.plot(xx, -(w[0] * xx + c) / w[1], "k--", lw=1)
    else:
        yy = np.linspace(lo[1], hi[1], 2)
        ax.plot(-(w[1] * yy + c) / w[0], yy, "k--", lw=1)


def decision_regions_figure(solution: Solution, resolution: int = 200) -> Figure | None:
    """Decision regions in input space (n = 1 or 2), training points as dots and test
    points as crosses. ``None`` for inputs of more than two dimensions."""
    form = solution.problem.formulation
    data = solution.problem.data
    n = form.n_inputs
    if n > 2:
        return None
    X = data.X_train
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
        z = outputs(solution, grid)
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
                   edgecolors="none", label="train")
        if data.has_test:
            ax.scatter(data.X_test[:, 0], data.X_test[:, 1], c=_colors(solution, data.y_test),
                       marker="x", s=14, label="test")
            ax.legend(loc="upper right")
        ax.set_aspect("equal")
    acc = "" if solution.train_accuracy is None else f", train acc {solution.train_accuracy:.3f}"
    ax.set_title(f"Decision regions{acc}")
    fig.tight_layout()
    return fig


def deformed_grid_figure(solution: Solution, lines: int = 13, layers: Sequence[int] | None = None
                         ) -> Figure | None:
    """How the flow deforms a grid of the input plane: the grid lines carried to chosen
    layers (n = 2 only; 3-D states drawn in 3-D, wider states projected as in
    :func:`layers_figure`)."""
    form = solution.problem.formulation
    if form.n_inputs != 2:
        return None
    L, d = form.layers, form.width
    layers = [0, L // 2, L] if layers is None else list(layers)
    X = solution.problem.data.X_train
    lo, hi = X.min(axis=0), X.max(axis=0)
    u = np.linspace(0, 1, 120)
    segs = []
    for s in np.linspace(0, 1, lines):
        segs.append(np.stack([lo[0] + s * (hi[0] - lo[0]) + 0 * u, lo[1] + u * (hi[1] - lo[1])], 1))
        segs.append(np.stack([lo[0] + u * (hi[0] - lo[0]), lo[1] + s * (hi[1] - lo[1]) + 0 * u], 1))
    pts = np.concatenate(segs)
    xs_grid = states(solution, pts)
    xs_data = states(solution)
    basis = _projection(xs_data)
    color = _colors(solution, solution.problem.data.y_train)
    fig = plt.figure(figsize=(4.3 * len(layers), 4.2))
    for k, t in enumerate(layers):
        g = xs_grid[t].reshape(len(segs), len(u), d)
        x = xs_data[t]
        if d == 3:
            ax = fig.add_subplot(1, len(layers), k + 1, projection="3d")
            for seg in g:
                ax.plot(seg[:, 0], seg[:, 1], seg[:, 2], color="0.5", lw=0.5)
            ax.scatter(x[:, 0], x[:, 1], x[:, 2], c=color, s=4, depthshade=False)
        else:
            ax = fig.add_subplot(1, len(layers), k + 1)
            if basis is not None:
                g, x = g @ basis, x @ basis
            for seg in g:
                ax.plot(seg[:, 0], seg[:, 1], color="0.5", lw=0.5)
            ax.scatter(x[:, 0], x[:, 1], c=color, s=4)
            ax.set_aspect("equal", adjustable="datalim")
        ax.set_title(f"layer {t}")
    fig.suptitle("A grid of the input plane carried by the flow")
    fig.tight_layout()
    return fig


def history_figure(histories: Mapping[str, Sequence[Mapping[str, Any]]],
                   title: str = "") -> Figure:
    """Cost against iteration and against wall time (log scale; time includes
    compilation), and training accuracy against iteration, one line per run."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for label, hist in histories.items():
        if not hist:
            continue
        it = np.array([h["iteration"] for h in hist])
        t = np.array([h["time_s"] for h in hist])
        cost = np.array([np.nan if h["cost"] is None else h["cost"] for h in hist], float)
        axes[0].plot(it, cost, label=label)
        axes[1].plot(t, cost, label=label)
        acc = [h.get("train_accuracy") for h in hist]
        if any(a is not None for a in acc):
            axes[2].plot(it, [np.nan if a is None else a for a in acc], label=label)
    for ax, xl in zip(axes, ("iteration", "wall time [s] (compilation included)", "iteration"),
                      strict=True):
        ax.set_xlabel(xl)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("cost J")
    axes[1].set_ylabel("cost J")
    axes[2].set_ylabel("training accuracy")
    for ax in axes[:2]:
        if any(ax.get_lines()):
            ys = np.concatenate([ln.get_ydata() for ln in ax.get_lines()])
            if np.nanmin(ys) > 0:
                ax.set_yscale("log")
            # A run that blows up (cost far above every start) would squash the others:
            # the axis stops at twice the highest starting cost.
            starts = [ln.get_ydata()[0] for ln in ax.get_lines() if len(ln.get_ydata())]
            top = 2.0 * np.nanmax(starts) if starts else np.nan
            if np.isfinite(top) and np.nanmax(ys) > top:
                ax.set_ylim(top=top)
    # Wall time: linear up to 1 s, logarithmic beyond (runs from milliseconds to minutes),
    # starting at 0 (no negative ticks).
    axes[1].set_xscale("symlog", linthresh=1.0)
    axes[1].set_xlim(left=0.0)
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def save_solution_figures(solution: Solution, directory: str | Path,
                          layers: Sequence[int] | None = None) -> list[Path]:
    """Write ``layers.png``, ``decision_regions.png``, ``deformed_grid.png`` (when the
    input is 2-D) and ``history.png`` to ``directory`` (atomically). Returns the paths."""
    figures = {
        "layers.png": layers_figure(solution, layers),
        "decision_regions.png": decision_regions_figure(solution),
        "deformed_grid.png": deformed_grid_figure(solution),
        "history.png": history_figure({solution.solver.get("label", solution.solver["name"]):
                                       solution.history}),
    }
    names = [k for k, f in figures.items() if f is not None]

    def write(tmp: Path) -> None:
        for name in names:
            figures[name].savefig(tmp / name, dpi=110)

    try:
        target = atomic_directory(directory, write)
    finally:
        for f in figures.values():
            if f is not None:
                plt.close(f)
    return [target / n for n in names]
