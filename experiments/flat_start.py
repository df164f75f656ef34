"""Li et al.'s flat start: regression of sin(x) on [−π, π] from all-zero controls.

Claim tested (Li, Chen, Tai & E, "Maximum principle based algorithms for deep learning",
JMLR 2018): when every control and the readout start at zero, the cost landscape is flat
around the start (the costates vanish, so the gradient with respect to every layer's
controls is zero), and gradient methods linger on the plateau, whereas E-MSA, which
maximizes each layer's augmented Hamiltonian with its curvature, leaves it in a few
iterations. Measured: cost against iteration and against wall time, and the iterations
and seconds each solver needs to bring the cost below fixed fractions of its starting
value, over several data seeds.

Everything goes through ``controldl.compare.compare`` with ``init_scheme="zeros"``.
"""

from __future__ import annotations

import sys

import numpy as np

import controldl as cdl
from controldl import plotting
from controldl.compare import compare
from experiments import common

NAME = "flat_start"
FRACTIONS = (0.5, 0.3, 0.2)


def sizes(quick: bool) -> dict:
    if quick:
        return dict(n=60, width=2, layers=5, horizon=2.0, l2=1e-4, gd=150, pmp=15, lbfgs=40,
                    max_time=300.0)
    return dict(n=200, width=2, layers=10, horizon=4.0, l2=1e-4, gd=3000, pmp=150, lbfgs=300,
                max_time=300.0)


def specs(S: dict) -> list[str]:
    return [f"sgd:lr=0.1:max_iter={S['gd']}:label=sgd",
            f"adam:lr=0.01:max_iter={S['gd']}:label=adam",
            f"lbfgs:max_iter={S['lbfgs']}:label=lbfgs",
            f"msa:max_iter={S['pmp']}:label=msa",
            f"emsa:max_iter={S['pmp']}:label=emsa"]


def crossings(history: list[dict], start: float) -> dict[str, dict]:
    """For each fraction f: the first iteration and time with cost ≤ f·start."""
    out = {}
    for f in FRACTIONS:
        hit = next((h for h in history if h["cost"] is not None and h["cost"] <= f * start),
                   None)
        out[str(f)] = {"iteration": None if hit is None else hit["iteration"],
                       "time_s": None if hit is None else hit["time_s"]}
    return out


def body(run: common.Run) -> None:
    S = sizes(run.quick)
    spec_list = specs(S)
    rows: list[dict] = []
    plateaus: list[float] = []
    for seed in run.seeds:
        data = cdl.data.train_test_split(cdl.data.sine(S["n"], seed=seed), 0.25, seed=seed)
        problem = cdl.Problem(data, width=S["width"], layers=S["layers"],
                              horizon=S["horizon"], l2=S["l2"])
        comp = compare(problem, spec_list, seed=seed, init_scheme="zeros",
                       max_time=S["max_time"])
        plateau = affine_plateau(problem)
        plateaus.append(plateau)
        for label, sol in comp.solutions.items():
            start = sol.history[0]["cost"]
            rec = common.solution_record(sol)
            rec.update(label=label, seed=seed, start_cost=start, plateau_cost=plateau,
                       crossings=crossings(sol.history, start),
                       seconds_per_iteration=((sol.wall_time_s - sol.compile_time_s)
                                              / sol.iterations if sol.iterations else None),
                       test_cost=_test_cost(sol))
            rows.append(rec)
            run.log(f"seed {seed} {label:6s}: cost {start:.4g} -> {rec['cost']:.4g} in "
                    f"{sol.iterations} it ({sol.wall_time_s:.1f} s), first below half: "
                    f"{rec['crossings']['0.5']}")
        if seed == run.seeds[0]:
            fig = plotting.history_figure({k: s.history for k, s in comp.solutions.items()},
                                          title=f"sin(x) from zero controls: {problem!r}")
            for ax in fig.axes[:2]:
                ax.axhline(plateau, color="k", lw=0.6, ls=":")
            run.save_figure(fig, "history.png")
            best = min(comp.solutions.values(), key=lambda s: s.cost["total"])
            run.save_figure(plotting.decision_regions_figure(best), "fit_best.png")
            run.save_figure(plotting.layers_figure(comp.solutions["emsa"]), "layers_emsa.png")

    summary = {}
    for name in dict.fromkeys(r["label"] for r in rows):
        mine = [r for r in rows if r["label"] == name]
        summary[name] = {
            "cost": common.stats([r["cost"] for r in mine]),
            "test_cost": common.stats([r["test_cost"] for r in mine]),
            "iterations": common.stats([r["iterations"] for r in mine]),
            "wall_time_s": common.stats([r["wall_time_s"] for r in mine]),
            "seconds_per_iteration": common.stats([r["seconds_per_iteration"] for r in mine]),
            **{f"iterations_to_{f}": common.stats([r["crossings"][str(f)]["iteration"]
                                                   for r in mine]) for f in FRACTIONS},
            **{f"seconds_to_{f}": common.stats([r["crossings"][str(f)]["time_s"]
                                                for r in mine]) for f in FRACTIONS},
            "reached": {str(f): sum(r["crossings"][str(f)]["iteration"] is not None
                                    for r in mine) for f in FRACTIONS},
        }
    run.write_json({"sizes": S, "specs": spec_list, "rows": rows, "summary": summary,
                    "fractions": list(FRACTIONS), "plateau_costs": plateaus,
                    "start_costs": [r["start_cost"] for r in rows if r["label"] == "sgd"]})

    n = len(run.seeds)
    table_rows = []
    for name, e in summary.items():
        cells = [name, common.pm(e["cost"], ".3g"), common.pm(e["test_cost"], ".3g"),
                 common.pm(e["iterations"], ".0f"), common.pm(e["wall_time_s"], ".2f")]
        for f in FRACTIONS:
            cells.append(f"{common.pm(e[f'iterations_to_{f}'], '.0f')} it / "
                         f"{common.pm(e[f'seconds_to_{f}'], '.2f')} s "
                         f"({e['reached'][str(f)]}/{n})")
        table_rows.append(cells)
    table = common.md_table(["solver", "final cost", "test cost", "iterations", "wall [s]"]
                            + [f"to {f:g}·J₀: iterations / seconds (reached)"
                               for f in FRACTIONS], table_rows)
    j0 = common.stats([r["start_cost"] for r in rows if r["label"] == rows[0]["label"]])
    table += (f"\n\nStarting cost J₀ = {common.pm(j0, '.3g')}; the plateau — the cost with the "
              f"controls still zero and the best affine readout, dotted in the figure — is "
              f"{common.pm(common.stats(plateaus), '.3g')} "
              f"(≈ {common.stats(plateaus)['mean'] / j0['mean']:.2f}·J₀): a method that is "
              "below 0.3·J₀ has left the plateau.")
    settings = (f"sine({S['n']}, seed s), a quarter held out; inputs scaled to [−1, 1]; "
                f"ResNet width {S['width']}, L = {S['layers']}, T = {S['horizon']:g}, tanh, "
                f"squared loss, l2 = {S['l2']:g}; every control and the readout zero at the "
                f"start (`init_scheme=\"zeros\"`); specs "
                + ", ".join(f"`{s}`" for s in spec_list)
                + f" (a safety limit of {S['max_time']:g} s each). Seconds include "
                  "compilation. "
                  "Mean ± standard deviation over seeds.")
    run.write_markdown(common.experiment_markdown(
        "Li et al.'s flat start", "From all-zero controls gradient methods linger on a "
        "plateau; E-MSA leaves it in a few iterations.", settings, table,
        [("history.png", "Cost against iteration and against wall time from zero controls"),
         ("fit_best.png", "The best fit of sin(x)"),
         ("layers_emsa.png", "E-MSA's states through the layers")], run))


def affine_plateau(problem: cdl.Problem) -> float:
    """The cost at the plateau: zero controls (so ``x(L) = x(0)``) and the least-squares
    affine readout of the embedded inputs, evaluated by the library
    (``controldl.solvers.evaluate``)."""
    f = problem.formulation
    X = problem.data.X_train
    design = np.hstack([X, np.ones((len(X), 1))])
    coef, *_ = np.linalg.lstsq(design, problem.data.y_train, rcond=None)  # (n+1, m)
    W = np.zeros((f.n_outputs, f.width))
    W[:, : f.n_inputs] = coef[:-1].T
    params = cdl.Params(np.zeros((f.layers, f.width, f.width)), np.zeros((f.layers, f.width)),
                        W, coef[-1])
    return cdl.solvers.evaluate(problem, params)[0]["total"]


def _test_cost(sol: cdl.Solution) -> float | None:
    """The terminal loss on the test split: the problem evaluated on the held-out points
    (``controldl.solvers.evaluate`` on a problem whose training split is the test split)."""
    data = sol.problem.data
    if not data.has_test:
        return None
    held = cdl.Dataset(data.X_test, data.y_test, task=data.task, n_classes=data.n_classes,
                       source=data.source)
    terms, _, _ = cdl.solvers.evaluate(sol.problem.replace(data=held), sol.params)
    return terms["terminal"]


def main(argv: list[str] | None = None) -> int:
    return common.main_wrapper(NAME, __doc__, body, argv)


if __name__ == "__main__":
    sys.exit(main())
