"""Turnpike study: long horizons with and without the running term.

Claims tested (Esteve, Geshkovski, Pighin & Zuazua, "Large-time asymptotics in deep
learning"):

1. With the L² penalty alone, the optimal terminal training error decays like O(1/T):
   the least-squares slope of log E(T) against log T is about −1.
2. With a running (integral) loss, the controls and the running error decay
   exponentially inside the horizon, ‖θ(t)‖ ≲ C·e^{−μt} (the turnpike), whereas with the
   L² penalty alone the controls are spread over the whole horizon.

Both sweeps go through ``controldl.turnpike.sweep`` (each horizon warm-started from the
previous one, the step h fixed so every horizon discretizes the same ODE) and the fits
are the library's (``fit_power_law``, ``fit_exponential_rate``); the figures come from
``controldl.turnpike_plots`` plus one overlay of the two sweeps.
"""

from __future__ import annotations

import shutil
import sys

import common
import matplotlib.pyplot as plt
import numpy as np

import controldl as cdl
from controldl import turnpike as tp
from controldl import turnpike_plots

NAME = "turnpike"


def sizes(quick: bool) -> dict:
    if quick:
        return dict(n=80, horizons=[1.0, 2.0], step=0.5, iters=60, running=1.0,
                    l2=1e-3, readout_l2=1e-3)
    return dict(n=300, horizons=[1.0, 2.0, 4.0, 8.0, 16.0], step=0.5, iters=400, running=1.0,
                l2=1e-3, readout_l2=1e-3)


def body(run: common.Run) -> None:
    S = sizes(run.quick)
    sweeps = {"l2": dict(running=0.0), "running": dict(running=S["running"])}
    out: dict[str, dict] = {}
    reports: dict[tuple[str, int], dict] = {}
    for seed in run.seeds:
        data = cdl.data.ring(S["n"], seed=seed)
        for key, extra in sweeps.items():
            problem = cdl.Problem(data, width=3, l2=S["l2"], readout_l2=S["readout_l2"],
                                  **extra)
            where = run.out / f"sweep-{key}-seed{seed}"
            if (where / tp.REPORT_NAME).is_file():
                shutil.rmtree(where)  # an earlier run of this experiment: start afresh
            result = tp.sweep(problem, S["horizons"], common.training_solver(run.quick)[0],
                              fixed="step", step=S["step"], out=where, max_iter=S["iters"],
                              seed=seed, log=run.log)
            rep = result.report
            reports[(key, seed)] = rep
            if seed == run.seeds[0]:
                run.save_figure(turnpike_plots.profiles_figure(rep), f"profiles_{key}.png")
                run.save_figure(turnpike_plots.error_vs_horizon_figure(rep),
                                f"error_vs_horizon_{key}.png")
                run.save_figure(turnpike_plots.controls_heatmap_figure(result.solutions),
                                f"controls_heatmap_{key}.png")
            T = np.array([e["horizon"] for e in rep["horizons"]])
            E = np.array([e["terminal_error"] for e in rep["horizons"]])
            tail = T >= T.max() / 4  # the longest horizons only
            out.setdefault(key, {})[str(seed)] = {
                "error_vs_horizon_slope_long": tp.fit_power_law(T[tail], E[tail]),
                "problem": {"width": 3, "l2": S["l2"], "readout_l2": S["readout_l2"],
                            "running": extra["running"], "n": S["n"]},
                "error_vs_horizon_slope": rep["error_vs_horizon_slope"],
                "control_decay_rate": rep["control_decay_rate"],
                "running_error_decay_rate": rep["running_error_decay_rate"],
                "horizons": [{k: e[k] for k in ("horizon", "layers", "step", "status",
                                                "iterations", "wall_time_s",
                                                "terminal_error", "train_accuracy")}
                             | {"cost": e["cost"]["total"]} for e in rep["horizons"]],
                "sweep_directory": where.name,
            }

    # Overlay: the terminal error against T, and the control profile of the longest T.
    seed0 = run.seeds[0]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for k, key in enumerate(sweeps):
        rep = reports[(key, seed0)]
        T = np.array([e["horizon"] for e in rep["horizons"]])
        E = np.array([e["terminal_error"] for e in rep["horizons"]])
        slope = rep["error_vs_horizon_slope"]["slope"]
        axes[0].loglog(T, E, "o-", color=f"C{k}",
                       label=f"{key} (slope {slope:.2f})" if slope is not None else key)
        longest = max(rep["horizons"], key=lambda e: e["horizon"])
        rate = (longest["control_decay"] or {}).get("rate")
        axes[1].semilogy(longest["control_times"], longest["control_norms"], color=f"C{k}",
                         label=f"{key}, T = {longest['horizon']:g}"
                               + ("" if rate is None else f" (μ = {rate:.2f})"))
    ref = reports[("l2", seed0)]["horizons"][-1]
    axes[0].loglog(T, ref["terminal_error"] * ref["horizon"] / T, "k:", lw=1, label="slope −1")
    axes[0].set_xlabel("horizon T")
    axes[0].set_ylabel("terminal training error")
    axes[1].set_xlabel("t")
    axes[1].set_ylabel("‖θ_t‖")
    for ax in axes:
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle(f"Turnpike: L² penalty alone against a running loss (seed {seed0})")
    fig.tight_layout()
    run.save_figure(fig, "overlay.png")

    run.write_json({"sizes": S, "sweeps": out,
                    "solver": common.training_solver(run.quick)[1]})

    rows = []
    for key in sweeps:
        for seed in run.seeds:
            rep = reports[(key, seed)]
            sl = rep["error_vs_horizon_slope"]
            cd = rep["control_decay_rate"] or {}
            rd = rep["running_error_decay_rate"] or {}
            ci = lambda f: "" if not f or f.get("ci95") is None else (  # noqa: E731
                f" [{f['ci95'][0]:.2f}, {f['ci95'][1]:.2f}]")
            sl_long = out[key][str(seed)]["error_vs_horizon_slope_long"]
            rows.append([key, seed, common.fmt(sl.get("slope"), ".2f") + ci(sl),
                         common.fmt(sl_long.get("slope"), ".2f") + ci(sl_long),
                         common.fmt(cd.get("rate"), ".3f") + ci(cd),
                         common.fmt(rd.get("rate"), ".3f") + ci(rd),
                         ", ".join(f"{e['horizon']:g}: {e['terminal_error']:.3g}"
                                   for e in rep["horizons"])])
    table = common.md_table(["sweep", "seed", "slope of log E(T) vs log T [95 % CI]",
                             "same, T ≥ T_max/4",
                             "control decay rate μ (longest T)",
                             "running-error decay rate (longest T)",
                             "terminal error by T"], rows)
    settings = (f"ring({S['n']}), ResNet width 3, tanh, logistic loss, l2 = {S['l2']:g}, "
                f"readout_l2 = {S['readout_l2']:g}; running weight γ = {S['running']:g} in the "
                f"'running' sweep, 0 in the 'l2' sweep; horizons {S['horizons']} with the step "
                f"h = {S['step']:g} fixed (L = T/h); {common.training_solver(run.quick)[1]}, "
                f"{S['iters']} iterations per "
                "horizon, each warm-started from the previous horizon (controls interpolated "
                "in t/T and rescaled by T_prev/T). Exponential fits leave out the last quarter "
                "of the horizon (the final transient).")
    figs = [("overlay.png", "Terminal error against T, and the control profile of the "
                            "longest horizon, for both sweeps"),
            ("profiles_l2.png", "Profiles, L² penalty alone"),
            ("profiles_running.png", "Profiles with the running loss"),
            ("error_vs_horizon_l2.png", "Terminal error against T with the fitted power law "
                                        "(L² alone)"),
            ("controls_heatmap_running.png", "Controls over the horizon (running loss)")]
    run.write_markdown(common.experiment_markdown(
        "Turnpike study", "E(T) = O(1/T) with the L² penalty alone; exponential decay of "
        "the controls and the running error inside the horizon with a running loss.",
        settings, table, figs, run))


def main(argv: list[str] | None = None) -> int:
    return common.main_wrapper(NAME, __doc__, body, argv, default_seeds=(0,),
                               quick_seeds=(0,))


if __name__ == "__main__":
    sys.exit(main())
