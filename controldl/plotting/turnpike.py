"""Figures of a horizon sweep (:mod:`controldl.studies.turnpike`), from ``turnpike.json``.

- :func:`error_vs_horizon_figure`: ``E(T)`` (log-log) with the bound ``C/T`` drawn through
  the largest ``T·E(T)`` of the converged horizons, the fitted slope over the longest ones,
  and ``T·E(T)``; excluded horizons hollow.
- :func:`profiles_figure`: per horizon, in absolute time ``t`` (top) and in ``t/T``
  (bottom): ``‖θ_t‖``, the distance to the steady set (or, without one, the mean margin),
  ``RMS‖x(t)‖``, and ``E(t)``; one colour per horizon.
- :func:`controls_figure`: ``θ_t`` entries as heat maps in ``t`` and in ``t/T``, one colour
  scale shared by every panel.
- :func:`rates_figure`: the arc fits of ``‖θ_T(t)‖ + dist`` per horizon
  (:mod:`controldl.studies.turnpike.arcs`): μ with its bootstrap interval where one rate
  fits, the one-rate fit hollow where it does not, both rates where two fit; the verdict in
  the title.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import SymLogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter, ScalarFormatter

from controldl.plotting.solution import save_figures as save_figure_files
from controldl.solution import Solution


def _colors(n: int) -> list[Any]:
    cmap = plt.get_cmap("viridis")
    return [cmap(v) for v in (np.linspace(0.0, 0.9, n) if n > 1 else [0.3])]


def _used(report: Mapping[str, Any]) -> set[float]:
    excluded = {x["horizon"] for x in report.get("excluded", [])}
    return {e["horizon"] for e in report["horizons"]} - excluded


def error_vs_horizon_figure(report: Mapping[str, Any]) -> Figure:
    """``E(T)`` and ``T·E(T)`` against ``T`` with the bound and the fitted slope."""
    entries = sorted(report["horizons"], key=lambda e: e["horizon"])
    used = _used(report)
    T = np.array([e["horizon"] for e in entries], float)
    E = np.array([e["terminal_error"] for e in entries], float)
    ok = np.array([t in used for t in T])
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10.5, 4.4))
    ax.loglog(T[ok], E[ok], "o", color="C0", label="E(T), converged")
    if (~ok).any():
        ax.loglog(T[~ok], E[~ok], "o", mfc="none", color="C3", label="excluded")
    if ok.any():
        C = float(np.max(T[ok] * E[ok]))
        tt = np.geomspace(T.min(), T.max(), 50)
        ax.loglog(tt, C / tt, ":", color="0.3", label=f"bound C/T, C = max T·E = {C:.3g}")
    evh = report.get("error_vs_horizon") or {}
    if evh.get("slope") is not None:
        fh = np.asarray(evh["fit_horizons"], float)
        Ef = np.array([E[list(T).index(t)] for t in fh])
        a = float(np.mean(np.log(Ef)) - evh["slope"] * np.mean(np.log(fh)))
        ax.loglog(fh, np.exp(a) * fh ** evh["slope"], "-", color="C1",
                  label=f"slope {evh['slope']:.2f} over T = {', '.join(f'{t:g}' for t in fh)}")
    ax.set(xlabel="horizon T", ylabel="E(T) = (1/N)Σℓ(z(T), y)", title="Risk at the horizon")
    _horizon_ticks(ax, T)
    bx.plot(T[ok], T[ok] * E[ok], "o-", color="C0")
    bx.set(xlabel="horizon T", ylabel="T·E(T)", title="T·E(T) (bounded under the theorem)")
    for axis in (ax, bx):
        axis.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _horizon_ticks(ax: Any, horizons: np.ndarray) -> None:
    """Label a log horizon axis at the horizons themselves, in plain numbers (matplotlib's
    minor labels read "2×10⁰" on an axis shorter than a decade)."""
    ax.set_xticks(horizons)
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())


def _panels(entries: list[dict[str, Any]]) -> list[tuple[str, str, str, bool]]:
    steady = entries and entries[0].get("steady_state_distances") is not None
    second = (("steady_state_distances", "times", "RMS dist(x(t), steady set)", True)
              if steady else ("mean_margins", "times", "mean margin", False))
    return [("control_norms", "control_times", "‖θ_t‖ (θ̄ = 0)", True), second,
            ("state_norms", "times", "RMS‖x(t)‖", False),
            ("running_errors", "times", "E(t)", True)]


def profiles_figure(report: Mapping[str, Any]) -> Figure:
    """Profiles in absolute time (top row) and in ``t/T`` (bottom row)."""
    entries = sorted(report["horizons"], key=lambda e: e["horizon"])
    panels = _panels(entries)
    fig, axes = plt.subplots(2, len(panels), figsize=(4.2 * len(panels), 7.2), squeeze=False)
    for col, (key, tkey, title, log) in enumerate(panels):
        for e, color in zip(entries, _colors(len(entries)), strict=True):
            if e.get(key) is None:
                continue
            t, v, T = np.asarray(e[tkey], float), np.asarray(e[key], float), e["horizon"]
            if log:
                v = np.where(v > 0, v, np.nan)
            for row, x in ((0, t), (1, t / T)):
                axes[row, col].plot(x, v, color=color, lw=1.3, label=f"T = {T:g}")
        axes[0, col].set(title=title, xlabel="t")
        axes[1, col].set(xlabel="t / T")
        for ax in axes[:, col]:
            ax.set_yscale("log" if log else "linear")
            ax.grid(alpha=0.3, which="both")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("Profiles in absolute time (top) and in t/T (bottom)")
    fig.tight_layout()
    return fig


def controls_figure(solutions: Mapping[float, Solution]) -> Figure:
    """Every entry of ``(A_t, b_t)`` over ``t`` (top) and ``t/T`` (bottom), one symmetric
    log colour scale for all panels."""
    items = sorted(solutions.items())
    mats = []
    for _, sol in items:
        A, b = np.asarray(sol.params.A), np.asarray(sol.params.b)
        mats.append(np.concatenate([A.reshape(len(b), -1), b], axis=1).T)
    vmax = max(float(np.max(np.abs(M))) for M in mats) or 1.0
    norm = SymLogNorm(linthresh=1e-3 * vmax, vmin=-vmax, vmax=vmax, base=10)
    fig, axes = plt.subplots(2, len(items), figsize=(3.2 * len(items) + 1, 6), squeeze=False)
    im = None
    for k, ((T, _), M) in enumerate(zip(items, mats, strict=True)):
        for row, end in ((0, T), (1, 1.0)):
            im = axes[row, k].imshow(M, aspect="auto", cmap="RdBu_r", norm=norm,
                                     extent=(0.0, end, M.shape[0] - 0.5, -0.5),
                                     interpolation="nearest")
        axes[0, k].set(title=f"T = {T:g}", xlabel="t")
        axes[1, k].set(xlabel="t / T")
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8, label="θ entry (shared scale)")
    fig.suptitle("Controls: rows A_ij then b_i")
    return fig


def rates_figure(report: Mapping[str, Any]) -> Figure:
    """μ of every horizon against ``T``: filled with its 95 % block-bootstrap interval where
    one rate fits, hollow (the one-rate fit anyway) where it does not, and the two rates
    where two fit; the verdict in the title."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    labelled: set[str] = set()

    def point(T: float, mu: float, style: dict, label: str) -> None:
        ax.plot([T], [mu], linestyle="none", label=None if label in labelled else label,
                **style)
        labelled.add(label)

    for r in report.get("rate_per_horizon") or []:
        T = r["horizon"]
        if r["model"] == "one_rate":
            ci = r["ci95"] or [r["rate"], r["rate"]]
            ax.errorbar(T, r["rate"], yerr=[[r["rate"] - ci[0]], [ci[1] - r["rate"]]],
                        fmt="o", color="C0", capsize=3,
                        label=None if "one" in labelled else "one rate fits (95 % CI)")
            labelled.add("one")
            continue
        if r["single_rate"] is not None:
            point(T, r["single_rate"], dict(marker="o", mfc="none", color="C3"),
                  "one-rate fit where one rate does not fit")
        if r["model"] == "two_rates":
            for mu in r["rates"]:
                point(T, mu, dict(marker="^", color="C2"), "two rates μ₁, μ₂")
    rows = report.get("rate_per_horizon") or []
    tops = [v for r in rows for v in [*(r["ci95"] or []), *(r["rates"] or []) * (
        r["model"] == "two_rates"), r["single_rate"]] if v is not None]
    ax.set_ylim(0.0, 1.1 * max(tops, default=1.0))
    Ts = np.array([r["horizon"] for r in rows], float)
    if len(Ts):
        ax.set_xscale("log")
        ax.set_xlim(Ts.min() / 1.15, Ts.max() * 1.15)
        _horizon_ticks(ax, Ts)
    verdict = report.get("verdict") or {}
    ax.set_title("\n".join(textwrap.wrap(verdict.get("summary", ""), 70)), fontsize=8)
    ax.set(xlabel="horizon T", ylabel="μ of ‖θ_T(t)‖ + dist (entry arc)")
    ax.grid(alpha=0.3, which="both")
    if labelled:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def save_figures(result: Any, directory: str | Path) -> list[Path]:
    """Write the figures of a :class:`~controldl.studies.turnpike.TurnpikeResult` to
    ``directory`` (atomically); ``rates.png`` only where a steady set exists."""
    figures = {"error_vs_horizon.png": error_vs_horizon_figure(result.report),
               "profiles.png": profiles_figure(result.report),
               "controls.png": controls_figure(result.solutions)}
    if result.report.get("rate_per_horizon"):
        figures["rates.png"] = rates_figure(result.report)
    return save_figure_files(figures, directory)
