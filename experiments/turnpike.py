"""Turnpike study: the settings of Esteve, Geshkovski, Pighin & Zuazua, measured as they
state them, for the ``inside`` dynamics (homogeneous in the parameters) and the ResNet.

Claims tested ("Large-time asymptotics in deep learning"):

1. L² problem (no running term): ``E(T) ≤ C/T`` — a bound; we report ``E(T)``,
   ``T·E(T)``, the slopes between horizons and the fitted slope over the longest ones
   against −1, check ``J_T`` non-increasing (the padding certificate), and the λ ↔ T
   correspondence (exact for ``inside``).
2. Tracking problem (squared loss on ±1 targets through a fixed projector, running term):
   the exponential turnpike ``‖θ_T(t)‖ + dist(x_T(t), steady set) ≤ C(e^{−μt} +
   e^{−μ(T−t)})`` with ``C, μ`` independent of ``T``: μ fitted per horizon in absolute
   time must agree across the longest horizons.

Every horizon is solved to a stationarity tolerance (L-BFGS, finishing where needed),
started from the cheapest of the θ = 0 padded, the t/T-rescaled and the cold start, and
certified against its predecessor (``controldl.studies.turnpike.sweep``).
"""

from __future__ import annotations

import shutil
import sys

import matplotlib.pyplot as plt
import numpy as np

import controldl as cdl
from controldl.plotting import turnpike as plots
from controldl.studies import turnpike as tp
from experiments import common

NAME = "turnpike"


def sizes(quick: bool) -> dict:
    if quick:
        return dict(n=30, tracking=[1.0, 2.0], l2_horizons=[1.0, 2.0], step=0.5, lam_layers=4,
                    lam_horizons=[1.0, 2.0], tol=1e-6, n_boot=10)
    return dict(n=80, tracking=[2.0, 4.0, 8.0, 12.0, 16.0], l2_horizons=[1.0, 2.0, 4.0, 8.0],
                step=0.25, lam_layers=8, lam_horizons=[1.0, 2.0, 4.0, 8.0], tol=1e-6,
                n_boot=100)


TRACKING = dict(loss="squared", running=1.0, l2=1e-2, train_readout=False, width=3)
L2_ONLY = dict(loss="logistic", running=0.0, l2=1e-3, readout_l2=1e-3, width=3)
L2_SQUARED = {**L2_ONLY, "loss": "squared"}  # zero error reachable: T·θ_T(sT) can converge
SWEEPS = {  # name: (problem options, projector)
    "tracking_inside": ({**TRACKING, "model": "inside"}, "coordinate"),
    "tracking_resnet": ({**TRACKING, "model": "resnet"}, "coordinate"),
    "l2_resnet": ({**L2_ONLY, "model": "resnet"}, "init"),
    "l2_inside": ({**L2_ONLY, "model": "inside"}, "init"),
    "l2sq_resnet": ({**L2_SQUARED, "model": "resnet"}, "init"),
    "l2sq_inside": ({**L2_SQUARED, "model": "inside"}, "init"),
}
QUICK_SWEEPS = ("tracking_inside", "l2_resnet", "l2sq_inside")  # the code paths, cheaply


def _solver() -> cdl.GradientDescent:
    return cdl.GradientDescent("lbfgs", grad_tol=1e-7)


def _run_sweep(run: common.Run, data: cdl.Dataset, name: str, S: dict, seed: int) -> tuple:
    options, projector = SWEEPS[name]
    horizons = S["tracking"] if name.startswith("tracking") else S["l2_horizons"]
    problem = cdl.Problem(data, layers=1, horizon=1.0, **options)
    where = run.out / f"sweep-{name}-seed{seed}"
    shutil.rmtree(where, ignore_errors=True)  # an earlier run of this experiment
    result = tp.sweep(problem, horizons, _solver(), options=tp.SweepOptions(
        tol=S["tol"], projector=projector, n_boot=S["n_boot"], seed=seed, finish_iter=10000,
        extend=()),  # the horizons are the study's; experiments/turnpike_rates.py goes longer
        step=S["step"], out=where, max_iter=5000, log=run.log)
    if seed == run.seeds[0]:
        for fig_name, fig in (("profiles", plots.profiles_figure(result.report)),
                              ("error_vs_horizon", plots.error_vs_horizon_figure(result.report)),
                              ("controls", plots.controls_figure(result.solutions))):
            run.save_figure(fig, f"{fig_name}_{name}.png")
        if result.report.get("rate_per_horizon"):
            run.save_figure(plots.rates_figure(result.report), f"rates_{name}.png")
    return result.report, where.name


def _lambda_check(data: cdl.Dataset, S: dict, model: str) -> dict:
    """Fixed layers: the T sweep at λ₀ against T = 1 at λ₀/T (the same problem for
    ``inside``)."""
    L, lam0 = S["lam_layers"], L2_ONLY["l2"]
    problem = cdl.Problem(data, layers=L, horizon=1.0, **{**L2_ONLY, "model": model})
    options = tp.SweepOptions(tol=S["tol"], n_boot=5, finish_iter=10000)
    by_T = tp.sweep(problem, S["lam_horizons"], _solver(), options=options, fixed="layers",
                    layers=L, max_iter=5000).report["horizons"]
    by_lam = tp.lambda_sweep(problem, [lam0 / T for T in S["lam_horizons"]], _solver(),
                             options, max_iter=5000)
    return {"model": model, "layers": L, "pairs": [
        {"horizon": e["horizon"], "l2": r["l2"], "E_T_sweep": e["terminal_error"],
         "E_lambda_sweep": r["terminal_error"], "J_T_sweep": e["cost"]["total"],
         "status": [e["status"], r["status"]]} for e, r in zip(by_T, by_lam, strict=True)]}


def _summary(name: str, rep: dict) -> dict:
    evh = rep["error_vs_horizon"]
    costs = [e["cost"]["total"] for e in rep["horizons"]]
    out = {
        "horizons": [{k: e[k] for k in ("horizon", "layers", "status", "stationarity",
                                         "terminal_error", "T_times_E", "iterations",
                                         "wall_time_s")}
                     | {"cost": e["cost"]["total"], "start": e["start"]["chosen"]}
                     for e in rep["horizons"]],
        "all_converged": all(e["status"] == "converged" for e in rep["horizons"]),
        "certificate": {k: rep["certificate"][k] for k in ("holds", "worst_violation")},
        "J_nonincreasing": bool(np.all(np.diff(costs) <= 1e-12 * np.abs(costs[:-1]))),
        "error_vs_horizon": evh, "excluded": rep["excluded"],
        "rescaled_controls": rep.get("rescaled_controls"),
    }
    if rep.get("rate_per_horizon"):
        keys = ("horizon", "rate", "ci95", "model", "single_rate", "rates")
        out["rate_per_horizon"] = [{k: r[k] for k in keys} for r in rep["rate_per_horizon"]]
        out["verdict"] = rep["verdict"]
        out["control_rate_per_horizon"] = [{k: r[k] for k in keys}
                                           for r in rep["control_rate_per_horizon"]]
        out["control_verdict"] = rep["component_verdicts"]["control_norms"]
        out["control_gap_to_longest"] = [{"horizon": g["horizon"],
                                          "max_first_half": g.get("max_first_half")}
                                         for g in rep["control_gap_to_longest"]]
    else:
        out["drift"] = rep.get("drift")
    return out


def _overlay(reports: dict) -> plt.Figure:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for k, (name, rep) in enumerate(reports.items()):
        T = np.array([e["horizon"] for e in rep["horizons"]])
        E = np.array([e["terminal_error"] for e in rep["horizons"]])
        ax = axes[0] if name.startswith("l2") else axes[1]
        ax.loglog(T, E, "o-", color=f"C{k}", label=name)
        ax.loglog(T, E[0] * T[0] / T, ":", color=f"C{k}", lw=1)
    axes[0].set(title="L² problem: E(T), dotted: C/T through the first", xlabel="T",
                ylabel="E(T)")
    axes[1].set(title="tracking problem: E(T)", xlabel="T", ylabel="E(T)")
    for ax in axes:
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _rows(summaries: dict) -> list[list]:
    rows = []
    for name, s in summaries.items():
        evh = s["error_vs_horizon"]
        mus = ", ".join(f"{r['horizon']:g}: {common.fmt(r['rate'], '.3f')}"
                        for r in s.get("rate_per_horizon") or [])
        mus_c = ", ".join(f"{r['horizon']:g}: {common.fmt(r['rate'], '.3f')}"
                          for r in s.get("control_rate_per_horizon") or [])
        rows.append([name, common.fmt(s["all_converged"]),
                     common.fmt(s["certificate"]["holds"]),
                     common.fmt(s["certificate"]["worst_violation"], ".2e"),
                     common.fmt(s["J_nonincreasing"]), common.fmt(evh.get("slope"), ".2f"),
                     ", ".join(f"{h['horizon']:g}: {h['T_times_E']:.3g}"
                               for h in s["horizons"]),
                     mus or "—", (s.get("verdict") or {}).get("summary", "—"),
                     mus_c or "—", (s.get("control_verdict") or {}).get("summary", "—"),
                     ", ".join(f"{q['from']:g}→{q['to']:g}: {q['distance']:.3g}"
                               for q in (s["rescaled_controls"] or {}).get("pairs", []))])
    return rows


def body(run: common.Run) -> None:
    S = sizes(run.quick)
    summaries: dict[str, dict] = {}
    reports: dict[str, dict] = {}
    seed = run.seeds[0]
    data = cdl.data.ring(S["n"], seed=seed)
    for name in QUICK_SWEEPS if run.quick else SWEEPS:
        rep, where = _run_sweep(run, data, name, S, seed)
        reports[name] = rep
        summaries[name] = _summary(name, rep) | {"sweep_directory": where}
    lam = [_lambda_check(data, S, model)
           for model in (("inside",) if run.quick else ("inside", "resnet"))]
    run.save_figure(_overlay(reports), "overlay.png")
    run.write_json({"sizes": S, "sweeps": summaries, "lambda_vs_horizon": lam,
                    "solver": "gd/lbfgs (grad_tol 1e-7), L-BFGS finish to the tolerance"})
    table = common.md_table(["sweep", "all converged", "certificate holds",
                             "worst J_T' − bound", "J_T non-increasing",
                             "slope of log E, longest 3", "T·E(T) by T",
                             "μ by T (arc fit, where one rate fits)", "verdict",
                             "μ of ‖θ_t‖ alone by T", "its verdict",
                             "‖u_T − u_T'‖, u_T(s) = T·θ_T(sT)"],
                            _rows(summaries))
    lam_rows = [[x["model"], f"{p['horizon']:g}", f"{p['l2']:.3g}",
                 f"{p['E_T_sweep']:.6g}", f"{p['E_lambda_sweep']:.6g}"]
                for x in lam for p in x["pairs"]]
    table += "\n\n" + common.md_table(["model", "T (λ₀ = 1e-3)", "λ₀/T at T = 1",
                                       "E, T sweep", "E, λ sweep"], lam_rows)
    settings = (f"ring({S['n']}, seed {seed}), width 3, tanh; step h = {S['step']:g} "
                f"fixed (L = T/h); tolerance {S['tol']:g} on controldl.stationarity; "
                "tracking: squared loss on ±1 targets, running γ = 1, l2 = 1e-2, readout "
                "frozen at W = [1 0 0], c = 0; L² problem: logistic loss, l2 = 1e-3, "
                "readout_l2 = 1e-3 (l2sq: the same with the squared loss on ±1 targets); "
                "λ ↔ T: L = "
                f"{S['lam_layers']} layers fixed. The machine was shared (2 cores).")
    figs = [("overlay.png", "E(T) of every sweep with C/T for reference"),
            ("rates_tracking_inside.png", "μ per horizon (inside, tracking)"),
            ("profiles_tracking_inside.png", "Profiles in t and t/T (inside, tracking)"),
            ("error_vs_horizon_l2_resnet.png", "E(T) and T·E(T), L² problem (resnet)")]
    run.write_markdown(common.experiment_markdown(
        "Turnpike study", "E(T) ≤ C/T for the L² problem; exponential turnpike with a "
        "T-independent rate μ for the tracking problem (Esteve et al.).",
        settings, table, figs, run))


def main(argv: list[str] | None = None) -> int:
    return common.main_wrapper(NAME, __doc__, body, argv, default_seeds=(0,),
                               quick_seeds=(0,))


if __name__ == "__main__":
    sys.exit(main())
