"""One E-MSA iteration against one Adam step, in one process: JSON on stdout.

- ``breast_cancer``: sklearn's breast cancer (30 features, standardized, 70 % = 398
  training points), width 30, L = 10, T = 5, l2 = readout_l2 = 1e-3: seconds per E-MSA
  iteration (the paper's defaults: 10 inner L-BFGS iterations, ρ = 1) and per Adam step,
  and their ratio (issue 12's bar: at most 30);
- ``widths``: the same at widths 3, 10, 30, 64 on a ring padded to the width (N = 400,
  L = 10), with the fitted log-log slope of the time per iteration (bar: at most 2.2);
- ``compile``: the first compilation of E-MSA's iteration and of Adam's step, each
  measured after clearing every compile cache, in both orders.

Timing on a shared machine is noisy: the solvers run in alternating rounds (Adam
``--adam-steps`` steps, then E-MSA ``--emsa-iters`` iterations), each round gives the
median time per step from the solve's history (compiled, so without compilation), and
the figure kept is the smallest over ``--rounds`` rounds, for each solver.

    python benchmarks/pmp_iteration.py --rounds 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from typing import Any

import jax
import numpy as np

import controldl as cdl
from controldl import data as D
from controldl.solvers.base import clear_compile_caches


def _sklearn_breast_cancer(seed: int) -> cdl.Dataset:
    from sklearn import datasets

    X, y = datasets.load_breast_cancer(return_X_y=True)
    data = D.classification(X, y, {"name": "breast_cancer", "source": "scikit-learn"})
    return D.standardize(D.train_test_split(data, 0.3, seed=seed))


def _median_step(sol: cdl.Solution) -> float:
    """Median seconds between consecutive history entries, the first step left out."""
    t = [b["time_s"] - a["time_s"] for a, b in zip(sol.history[1:-1], sol.history[2:],
                                                   strict=True)]
    return statistics.median(t)


def solvers() -> dict[str, cdl.Solver]:
    """E-MSA with the paper's defaults and Adam (lr 0.01), neither stopping early."""
    return {"emsa": cdl.EMSA(tol=0.0, patience=None),
            "adam": cdl.GradientDescent("adam", lr=0.01, grad_tol=0.0)}


def per_step(problem: cdl.Problem, args: argparse.Namespace) -> dict[str, Any]:
    """The smallest over rounds of the median seconds per iteration, per solver, and the
    E-MSA / Adam ratio; also E-MSA's inner evaluations and work per iteration."""
    steps = {"emsa": args.emsa_iters, "adam": args.adam_steps}
    best = {k: float("inf") for k in steps}
    emsa = None
    for solver in solvers().values():  # compile outside the rounds
        cdl.solve(problem, solver, max_iter=2)
    for _ in range(args.rounds):
        for label, solver in solvers().items():
            sol = cdl.solve(problem, solver, max_iter=steps[label])
            best[label] = min(best[label], _median_step(sol))
            emsa = sol if label == "emsa" else emsa
    hist = emsa.history
    return {"s_per_iteration": best, "emsa_over_adam": best["emsa"] / best["adam"],
            "emsa_inner_evaluations": hist[1]["inner_evaluations"],
            "emsa_work_per_iteration": (hist[-1]["work"] - hist[0]["work"])
            / (len(hist) - 1)}


def compile_times() -> dict[str, Any]:
    """First compile of each solver after clearing the caches, in both orders."""
    problem = cdl.Problem(_sklearn_breast_cancer(0), width=30, layers=10, horizon=5.0,
                          l2=1e-3, readout_l2=1e-3)
    out: dict[str, Any] = {}
    for order in (("adam", "emsa"), ("emsa", "adam")):
        times = {}
        for label in order:
            clear_compile_caches()
            times[label] = cdl.solve(problem, solvers()[label], max_iter=1).compile_time_s
        out["then".join(order)] = {**times, "emsa_over_adam": times["emsa"] / times["adam"]}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--emsa-iters", type=int, default=6)
    ap.add_argument("--adam-steps", type=int, default=100)
    ap.add_argument("--widths", default="3,10,30,64")
    args = ap.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    result: dict[str, Any] = {"settings": {**vars(args), "jax": jax.__version__,
                                           "platform": jax.devices()[0].platform}}
    result["compile"] = compile_times()
    bc = cdl.Problem(_sklearn_breast_cancer(0), width=30, layers=10, horizon=5.0,
                     l2=1e-3, readout_l2=1e-3)
    result["breast_cancer"] = {"n_train": bc.data.n_train, **per_step(bc, args)}
    widths = [int(w) for w in args.widths.split(",")]
    sweep = {}
    for w in widths:
        ring = cdl.Problem(D.ring(400, seed=0), width=w, layers=10, horizon=5.0, l2=1e-3,
                           readout_l2=1e-3)
        sweep[str(w)] = per_step(ring, args)
        print(f"  width {w}: {sweep[str(w)]['s_per_iteration']}", file=sys.stderr)
    logw = np.log(np.asarray(widths, float))
    slopes = {k: float(np.polyfit(logw, np.log([sweep[str(w)]["s_per_iteration"][k]
                                                for w in widths]), 1)[0])
              for k in ("emsa", "adam")}
    result["widths"] = {"per_width": sweep, "loglog_slope": slopes}
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
