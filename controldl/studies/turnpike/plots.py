"""Figures of a horizon sweep (:mod:`controldl.turnpike`).

- :func:`profiles_figure`: the profiles of every horizon overlaid, log scale, against the
  time ``t`` (top row) and the rescaled time ``t/T`` (bottom row): ``‖θ_t‖``, the state
  speed, the distance of the states to their final configuration and the running error.
  The exponential fit of the longest horizon is drawn dashed over its profile.
- :func:`error_vs_horizon_figure`: the terminal training error against ``T`` (log-log)
  with the fitted power law, its 95 % band and the slope −1 for reference.
- :func:`controls_heatmap_figure`: every entry of ``(A_t, b_t)`` over ``(t, entry)``, one
  panel per horizon (linear colours, or symmetric-log ones where the layer norms span
  more than a factor 30).

:func:`save_figures` writes ``profiles.png``, ``error_vs_horizon.png`` and
``controls_heatmap.png`` atomically. Figures are built from the report dictionary
(``turnpike.json``) and, for the heat maps, the solutions.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import Normalize, SymLogNorm  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from controldl.solution import Solution, atomic_directory  # noqa: E402

PROFILE_PANELS: tuple[tuple[str, str, str], ...] = (
    ("control_norms", "control_times", "‖θ_t‖ = ‖(A_t, b_t)‖"),
    ("state_speeds", "control_times", "state speed RMS‖(x(t+h) − x(t))/h‖"),
    ("state_distances", "times", "RMS‖x(t) − x(T)‖"),
    ("running_errors", "times", "running error (1/N)Σℓ(Wx(t)+c, y)"),
)
FIT_OF_PANEL = {"control_norms": "control_decay", "running_errors": "running_error_decay"}


def _horizon_colors(n: int) -> list[Any]:
    cmap = plt.get_cmap("viridis")
    return [cmap(v) for v in (np.linspace(0.0, 0.9, n) if n > 1 else [0.3])]


def profiles_figure(report: Mapping[str, Any]) -> Figure:
    """Every horizon's profiles (log scale) against ``t`` and against ``t/T``."""
    entries = sorted(report["horizons"], key=lambda e: e["horizon"])
    colors = _horizon_colors(len(entries))
    n = len(PROFILE_PANELS)
    fig, axes = plt.subplots(2, n, figsize=(4.3 * n, 7.6), squeeze=False)
    longest = entries[-1] if entries else None
    for col, (key, tkey, title) in enumerate(PROFILE_PANELS):
        for e, color in zip(entries, colors, strict=True):
            t = np.asarray(e[tkey], float)
            v = np.asarray(e[key], float)
            if key == "state_distances":  # zero at t = T by definition
                t, v = t[:-1], v[:-1]
            v = np.where(v > 0, v, np.nan)
            T = float(e["horizon"])
            label = f"T = {T:g} (L = {e['layers']})"
            axes[0, col].plot(t, v, color=color, lw=1.4, label=label)
            axes[1, col].plot(t / T, v, color=color, lw=1.4, label=label)
        fit_key = FIT_OF_PANEL.get(key)
        if longest is not None and fit_key and longest.get(fit_key, {}).get("rate") is not None:
            fit = longest[fit_key]
            lo, hi = fit["window"]
            tt = np.linspace(lo, hi, 50)
            ci = fit["ci95"]
            ci_text = "" if ci is None else f" [{ci[0]:.2g}, {ci[1]:.2g}]"
            axes[0, col].plot(tt, np.exp(fit["intercept"] - fit["rate"] * tt), "k--", lw=1,
                              label=f"fit μ = {fit['rate']:.3g}{ci_text}")
        axes[0, col].set_title(title, fontsize=10)
        axes[0, col].set_xlabel("t")
        axes[1, col].set_xlabel("t / T")
        for ax in axes[:, col]:
            ax.set_yscale("log")
            ax.grid(alpha=0.3, which="both")
    axes[0, 0].legend(fontsize=7)  # the horizons (and the fit of ‖θ_t‖)
    for ax in axes[0, 1:]:
        fits = [(h, lab) for h, lab in zip(*ax.get_legend_handles_labels(), strict=True)
                if lab.startswith("fit")]
        if fits:
            ax.legend(*zip(*fits, strict=True), fontsize=7)
    cfg = report.get("config", {})
    prob = cfg.get("problem", {})
    terms = ", ".join(f"{k} {prob[k]:g}" for k in ("l2", "l1", "smooth", "running",
                                                    "readout_l2") if prob.get(k))
    fig.suptitle(f"Turnpike profiles ({cfg.get('solver', {}).get('label', '')}; "
                 f"{terms or 'no regularization'}; fixed {cfg.get('fixed', '?')})")
    fig.tight_layout()
    return fig


def error_vs_horizon_figure(report: Mapping[str, Any]) -> Figure:
    """Terminal training error against the horizon, log-log, with the fitted power law
    ``E = e^a·T^s``, its 95 % confidence band (for the slope, through the data's mean
    log T) and the slope −1 drawn through the same point."""
    entries = sorted(report["horizons"], key=lambda e: e["horizon"])
    T = np.array([e["horizon"] for e in entries], float)
    E = np.array([e["terminal_error"] for e in entries], float)
    fig, ax = plt.subplots(figsize=(5.8, 4.6))
    ax.loglog(T, E, "o", color="C0", label="terminal training error")
    fit = report.get("error_vs_horizon_slope") or {}
    if fit.get("slope") is not None:
        used = np.asarray(fit["horizons"], float)
        tt = np.geomspace(used.min(), used.max(), 50)
        logt = np.log(tt)
        center = float(np.mean(np.log(used)))
        y_center = fit["intercept"] + fit["slope"] * center
        ci = fit.get("ci95")
        label = f"fit slope {fit['slope']:.3g}"
        if ci is not None:
            label += f" (95% CI {ci[0]:.3g} .. {ci[1]:.3g})"
            lo = np.exp(y_center + np.minimum(ci[0] * (logt - center), ci[1] * (logt - center)))
            hi = np.exp(y_center + np.maximum(ci[0] * (logt - center), ci[1] * (logt - center)))
            ax.fill_between(tt, lo, hi, color="C1", alpha=0.15, lw=0)
        ax.loglog(tt, np.exp(fit["intercept"] + fit["slope"] * logt), "-", color="C1",
                  label=label)
        ax.loglog(tt, np.exp(y_center - (logt - center)), ":", color="0.4",
                  label="slope −1 (reference)")
    ax.set_xlabel("horizon T")
    ax.set_ylabel("terminal training error")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax.set_title("Terminal error against the horizon")
    fig.tight_layout()
    return fig


def controls_heatmap_figure(solutions: Mapping[float, Solution], scale: str = "auto",
                            linear_fraction: float = 1e-3, dynamic_range: float = 30.0
                            ) -> Figure:
    """Every entry of ``θ_t = (A_t, b_t)`` as a heat map over ``(t, entry)``, one panel
    per horizon; rows ``A[i,j]`` then ``b[i]``; a colour scale symmetric about 0 per panel.

    ``scale``: ``"linear"``; ``"symlog"`` (logarithmic in ``|θ|``, linear within
    ``linear_fraction·max|θ|`` of zero), which keeps the small controls of a turnpike arc
    visible next to the large ones of a transient; ``"auto"``: symlog for a panel whose
    layer norms ``‖θ_t‖`` span more than ``dynamic_range`` (max/min), linear otherwise.
    """
    if scale not in ("auto", "linear", "symlog"):
        raise ValueError(f"scale must be auto, linear or symlog, got {scale!r}")
    items = sorted(solutions.items())
    n = len(items)
    cols = min(n, 3)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(5.0 * cols, 3.6 * rows), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    for ax, (T, sol) in zip(axes.ravel(), items, strict=False):
        A, b = np.asarray(sol.params.A), np.asarray(sol.params.b)
        L, d = b.shape
        M = np.concatenate([A.reshape(L, d * d), b], axis=1).T  # (d² + d, L)
        vmax = float(np.max(np.abs(M))) or 1.0
        norms = np.sqrt(np.sum(M ** 2, axis=0))
        log_scale = scale == "symlog" or (
            scale == "auto" and norms.max() > dynamic_range * max(norms.min(), 1e-300))
        if log_scale:
            norm = SymLogNorm(linthresh=linear_fraction * vmax, vmin=-vmax, vmax=vmax, base=10)
            ticks = sorted([sgn * vmax * f for sgn in (-1, 1) for f in (1.0, 0.1, 0.01)] + [0])
        else:
            norm = Normalize(vmin=-vmax, vmax=vmax)
            ticks = [-vmax, -vmax / 2, 0.0, vmax / 2, vmax]
        im = ax.imshow(M, aspect="auto", cmap="RdBu_r", norm=norm,
                       extent=(0.0, float(T), d * d + d - 0.5, -0.5), interpolation="nearest")
        names = [f"A{i + 1}{j + 1}" for i in range(d) for j in range(d)]
        names += [f"b{i + 1}" for i in range(d)]
        if len(names) <= 24:
            ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.set_xlabel("t")
        ax.set_title(f"T = {T:g} (L = {L})" + (", symlog colours" if log_scale else ""),
                     fontsize=10)
        bar = fig.colorbar(im, ax=ax, ticks=ticks)
        bar.ax.set_yticklabels([f"{v:.2g}" for v in ticks], fontsize=7)
    fig.suptitle("Controls θ_t over the horizon")
    fig.tight_layout()
    return fig


def save_figures(result: Any, directory: str | Path) -> list[Path]:
    """Write ``profiles.png``, ``error_vs_horizon.png`` and ``controls_heatmap.png`` of a
    :class:`~controldl.turnpike.TurnpikeResult` to ``directory`` (atomically)."""
    figures = {
        "profiles.png": profiles_figure(result.report),
        "error_vs_horizon.png": error_vs_horizon_figure(result.report),
        "controls_heatmap.png": controls_heatmap_figure(result.solutions),
    }

    def write(tmp: Path) -> None:
        for name, fig in figures.items():
            fig.savefig(tmp / name, dpi=110)

    try:
        target = atomic_directory(directory, write)
    finally:
        for fig in figures.values():
            plt.close(fig)
    return [target / name for name in figures]
