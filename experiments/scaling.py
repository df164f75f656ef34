"""Scaling: time per iteration of each solver against the number of samples N and the
number of layers L.

Claim tested: every solver's iteration is linear in N and in L for gradient descent and
for MSA / E-MSA (one forward and one backward pass; the per-layer Hamiltonian
maximizations are independent given the states and costates), while the direct method's
iteration grows faster — single shooting with the exact Hessian assembles O(N·P²) work for
P controls (P ∝ L), and multiple shooting adds N·L·d state variables to the NLP.

Measured on the ring, width 3, T = 5, l2 = 1e-3: for each solver and size a short solve;
the time per iteration is the median time between consecutive entries of the solve's
history (compilation, CasADi's build and one-off first-call costs excluded; the mean
``(wall − compile) / iterations`` is kept in the JSON too). The log-log slopes are
least-squares fits (``scipy.stats.linregress``) with their standard errors. A solver
whose iterations in one solve take longer than the time budget is not run at larger
sizes (its row says so).
"""

from __future__ import annotations

import sys

import matplotlib.pyplot as plt
import numpy as np
from scipy import stats as sstats

import controldl as cdl
from experiments import common

NAME = "scaling"

SOLVERS = {  # label: (solver name, options, iterations)
    "adam": ("gd", {"optimizer": "adam", "lr": 0.03}, 200),
    "lbfgs": ("gd", {"optimizer": "lbfgs"}, 60),
    "msa": ("msa", {}, 30),
    "emsa": ("emsa", {}, 30),
    "casadi-single": ("casadi", {"hessian": "exact"}, 8),
    "casadi-multiple": ("casadi", {"transcription": "multiple", "hessian": "exact"}, 4),
}


def sizes(quick: bool) -> dict:
    if quick:
        return dict(N=[40, 80], L=[3, 6], base_N=40, base_L=3, budget_s=60.0, quick_iters=5,
                    solvers=["adam", "emsa", "casadi-single", "casadi-multiple"])
    return dict(N=[100, 400, 1600, 6400], L=[5, 10, 20, 40, 80], base_N=200, base_L=10,
                budget_s=40.0, quick_iters=None, solvers=list(SOLVERS))


def measure(label: str, N: int, L: int, seed: int, S: dict) -> dict:
    name, options, iters = SOLVERS[label]
    if S["quick_iters"]:
        iters = min(iters, S["quick_iters"])
    problem = cdl.Problem(cdl.data.ring(N, seed=seed), width=3, layers=L, horizon=5.0,
                          l2=1e-3)
    # The time limit counts compilation; it is only a safety net here.
    sol = cdl.solve(problem, cdl.make_solver(name, **options), seed=seed, max_iter=iters,
                    max_time=S["budget_s"] + 300.0)
    mean = ((sol.wall_time_s - sol.compile_time_s) / sol.iterations if sol.iterations
            else None)
    # The median time between consecutive history entries: robust to the one-off costs
    # of a first call (the mean above includes them).
    t = np.array([h["time_s"] for h in sol.history], float)
    k = np.array([h["iteration"] for h in sol.history], float)
    steps = np.diff(t)[1:] / np.maximum(np.diff(k)[1:], 1) if len(t) >= 3 else np.array([])
    per = float(np.median(steps)) if steps.size else mean
    return {"solver": label, "N": N, "L": L, "seed": seed, "iterations": sol.iterations,
            "wall_time_s": sol.wall_time_s, "compile_time_s": sol.compile_time_s,
            "seconds_per_iteration": per, "seconds_per_iteration_mean": mean,
            "status": sol.status}


def fit(xs: list[float], ys: list[float | None]) -> dict:
    pts = [(x, y) for x, y in zip(xs, ys, strict=True) if y is not None and y > 0]
    if len(pts) < 2:
        return {"slope": None, "stderr": None, "n_points": len(pts)}
    x, y = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    if len(pts) == 2:
        return {"slope": float((y[1] - y[0]) / (x[1] - x[0])), "stderr": None, "n_points": 2,
                "intercept": float(y[0] - (y[1] - y[0]) / (x[1] - x[0]) * x[0])}
    r = sstats.linregress(x, y)
    return {"slope": float(r.slope), "stderr": float(r.stderr), "intercept": float(r.intercept),
            "r2": float(r.rvalue ** 2), "n_points": len(pts),
            "slope_last_two": float((y[-1] - y[-2]) / (x[-1] - x[-2]))}


def body(run: common.Run) -> None:
    S = sizes(run.quick)
    records: list[dict] = []
    fits: dict[str, dict] = {}
    skipped: dict[str, list[str]] = {}
    for axis, values in (("N", S["N"]), ("L", S["L"])):
        for label in S["solvers"]:
            over = False
            for v in values:
                N = v if axis == "N" else S["base_N"]
                L = v if axis == "L" else S["base_L"]
                if over:
                    skipped.setdefault(label, []).append(f"{axis}={v}")
                    continue
                per_seed = [measure(label, N, L, seed, S) for seed in run.seeds]
                times = [r["seconds_per_iteration"] for r in per_seed
                         if r["seconds_per_iteration"] is not None]
                rec = {"axis": axis, "solver": label, "N": N, "L": L,
                       "seconds_per_iteration": float(np.median(times)) if times else None,
                       "runs": per_seed}
                records.append(rec)
                run.log(f"{label:16s} N={N:5d} L={L:3d}: "
                        f"{common.fmt(rec['seconds_per_iteration'], '.3e')} s/it "
                        f"({per_seed[0]['iterations']} it, {per_seed[0]['status']})")
                if max(r["wall_time_s"] - r["compile_time_s"] for r in per_seed) \
                        >= S["budget_s"]:
                    over = True
        for label in S["solvers"]:
            mine = [r for r in records if r["axis"] == axis and r["solver"] == label]
            fits.setdefault(label, {})[axis] = fit([r[axis] for r in mine],
                                                    [r["seconds_per_iteration"] for r in mine])

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, axis in zip(axes, ("N", "L"), strict=True):
        for k, label in enumerate(S["solvers"]):
            mine = [r for r in records if r["axis"] == axis and r["solver"] == label
                    and r["seconds_per_iteration"]]
            if not mine:
                continue
            x = np.array([r[axis] for r in mine], float)
            y = np.array([r["seconds_per_iteration"] for r in mine])
            f = fits[label][axis]
            tag = "" if f["slope"] is None else f" (slope {f['slope']:.2f})"
            color = f"C{k}"
            ax.loglog(x, y, "o-", color=color, label=label + tag, ms=4)
            if f["slope"] is not None and f.get("intercept") is not None:
                ax.loglog(x, np.exp(f["intercept"]) * x ** f["slope"], ":", color=color, lw=1)
        fixed = f"L = {S['base_L']}" if axis == "N" else f"N = {S['base_N']}"
        ax.set_xlabel(f"{axis} ({fixed})")
        ax.set_ylabel("seconds per iteration")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.suptitle("Time per iteration (compilation excluded), ring, width 3, T = 5")
    fig.tight_layout()
    run.save_figure(fig, "time_per_iteration.png")

    run.write_json({"sizes": S, "solvers": {k: {"solver": v[0], "options": v[1],
                                                "iterations": v[2]} for k, v in SOLVERS.items()},
                    "records": records, "fits": fits, "skipped_sizes": skipped})

    rows = []
    for label in S["solvers"]:
        f = fits[label]
        cell = lambda g: "—" if g["slope"] is None else (  # noqa: E731
            f"{g['slope']:.2f}" + ("" if g.get("stderr") is None else f" ± {g['stderr']:.2f}"))
        by_n = {r["N"]: r["seconds_per_iteration"] for r in records
                if r["axis"] == "N" and r["solver"] == label}
        by_l = {r["L"]: r["seconds_per_iteration"] for r in records
                if r["axis"] == "L" and r["solver"] == label}
        rows.append([label, cell(f["N"]), cell(f["L"]),
                     ", ".join(f"{n}: {common.fmt(t, '.2e')}" for n, t in by_n.items()),
                     ", ".join(f"{n}: {common.fmt(t, '.2e')}" for n, t in by_l.items()),
                     ", ".join(skipped.get(label, [])) or "—"])
    table = common.md_table(["solver", "slope in N", "slope in L", "s/it by N",
                             "s/it by L", "not run (over budget)"], rows)
    last = [[label, common.fmt(fits[label]["N"].get("slope_last_two"), ".2f"),
             common.fmt(fits[label]["L"].get("slope_last_two"), ".2f")]
            for label in S["solvers"]]
    table += ("\n\nSlopes between the two largest sizes measured (where a fixed per-iteration "
              "overhead matters least):\n\n"
              + common.md_table(["solver", "N", "L"], last))
    settings = (f"ring, width 3, T = 5, l2 = 1e-3; N in {S['N']} at L = {S['base_L']}, L in "
                f"{S['L']} at N = {S['base_N']}; iterations per solve: "
                + ", ".join(f"{k} {v[2] if not S['quick_iters'] else min(v[2], S['quick_iters'])}"
                            for k, v in SOLVERS.items() if k in S["solvers"])
                + f"; median over seeds {run.seeds}; a solver stops growing once the "
                  f"iterations of one solve take {S['budget_s']:g} s. Slopes: least squares "
                  "on log-log, ± standard error.")
    run.write_markdown(common.experiment_markdown(
        "Scaling of the time per iteration", "GD and (E-)MSA iterations are linear in N "
        "and L; the direct method's iterations grow faster.", settings, table,
        [("time_per_iteration.png", "Seconds per iteration against N and against L "
          "(dotted: the fitted power laws)")], run))


def main(argv: list[str] | None = None) -> int:
    return common.main_wrapper(NAME, __doc__, body, argv, default_seeds=(0,),
                               quick_seeds=(0,))


if __name__ == "__main__":
    sys.exit(main())
