"""Time to a target cost: E-MSA against Adam, same problem, same initialization, same run.

For every problem and seed the data and the shared initialization come from the seed;
E-MSA (default options) and Adam with each learning rate of the grid
{0.003, 0.01, 0.03, 0.1} solve the same problem from the same start, one after the other
in this process, each stopped at the target cost (or at its iteration / time budget).

Times come from the solution history: ``time_s`` of the first entry at or below the
target counts from the start of the solve, compilation included; subtracting
``compile_time_s`` gives the time without compilation. A configuration (solver options,
formulation, shapes) compiles once per process: later seeds reuse it, so the cold
"with compilation" time of every seed adds the compile time measured at its first seed.
The best Adam is the learning rate with the shortest time among those that reached the
target (chosen separately with and without compilation).

Printed JSON, per problem: the target, per-seed records (iterations, seconds per
iteration, compile time, times to target, the ratios E-MSA / best Adam without and with
compilation) and medians over the seeds. ``ratio < 1``: E-MSA is faster.

Usage::

    python benchmarks/msa_vs_adam.py                 # three problems, 3 seeds
    python benchmarks/msa_vs_adam.py --quick         # one seed, smaller budgets
    python benchmarks/msa_vs_adam.py --problems ring --seeds 5 --out ring.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from typing import Any

import jax

import controldl as cdl
from controldl import problem as P
from controldl.solvers.msa import EMSA

jax.config.update("jax_enable_x64", True)

LR_GRID = (0.003, 0.01, 0.03, 0.1)


def make_problem(name: str, seed: int) -> tuple[cdl.Problem, str, float]:
    """(problem, init scheme, target cost) of a benchmark problem for one seed."""
    if name == "ring600":  # the acceptance problem
        data = cdl.data.ring(600, seed=seed)
        return cdl.Problem(data, width=3, layers=20, horizon=5.0, l2=1e-3), "normal", 0.01
    if name == "ring":
        data = cdl.data.ring(1000, seed=seed)
        return cdl.Problem(data, width=3, layers=20, horizon=5.0, l2=1e-3), "normal", 0.01
    if name == "spiral":
        data = cdl.data.spiral(1000, seed=seed)
        return cdl.Problem(data, width=3, layers=50, horizon=10.0), "normal", 0.2
    if name == "sine":  # Li et al.'s flat start: every control and the readout zero
        data = cdl.data.sine(1000, seed=seed)
        return cdl.Problem(data, width=3, layers=20, horizon=5.0), "zeros", 0.05
    raise ValueError(f"unknown problem {name!r}; expected ring600, ring, spiral or sine")


PROBLEMS = {
    "ring600": "ring N=600, width 3, L=20, T=5, l2=1e-3, logistic; target 0.01",
    "ring": "ring N=1000, width 3, L=20, T=5, l2=1e-3, logistic; target 0.01",
    "spiral": "spiral N=1000, width 3, L=50, T=10, logistic; target 0.2",
    "sine": "sin(x) regression N=1000, width 3, L=20, T=5, squared loss, flat start "
            "(all controls zero); target 0.05",
}


def run_one(problem: cdl.Problem, solver: cdl.Solver, seed: int, scheme: str, target: float,
            max_iter: int, max_time: float) -> dict[str, Any]:
    """Solve once; the time and iterations to the target from the history."""
    sol = cdl.solve(problem, solver, seed=seed, init_scheme=scheme, target_cost=target,
                    max_iter=max_iter, max_time=max_time)
    hit = next((e for e in sol.history if e["cost"] <= target), None)
    last = sol.history[-1]
    iters = max(last["iteration"], 1)
    per_iter = max(last["time_s"] - sol.compile_time_s, 0.0) / iters
    out = {
        "status": sol.status,
        "reached": hit is not None,
        "iterations": hit["iteration"] if hit else None,
        "time_s": hit["time_s"] if hit else None,
        "time_excl_compile_s": hit["time_s"] - sol.compile_time_s if hit else None,
        "compile_s": sol.compile_time_s,
        "s_per_iteration": per_iter,
        "final_cost": sol.cost["total"],
        "iterations_run": sol.iterations,
    }
    if "rejected" in sol.stats:
        out["rejected_trials"] = sol.stats["rejected"]
    return out


def best(runs: dict[str, dict[str, Any]], key: str) -> tuple[str | None, float | None]:
    reached = {k: r[key] for k, r in runs.items() if r["reached"]}
    if not reached:
        return None, None
    k = min(reached, key=reached.get)
    return k, reached[k]


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b <= 0:
        return None
    return a / b


def median(values: list[Any]) -> float | None:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.median(values) if values else None


def bench_problem(name: str, seeds: list[int], lrs: tuple[float, ...], max_iter_emsa: int,
                  max_iter_adam: int, max_time: float, log: Any) -> dict[str, Any]:
    compile_first: dict[str, float] = {}
    records = []
    for seed in seeds:
        problem, scheme, target = make_problem(name, seed)
        # What every solver shares is built before any clock starts: the initialization
        # and the data on the device (their first call in a process compiles small
        # programs, which would otherwise be charged to whichever solver runs first).
        P.init_params(problem.formulation, seed=seed, scheme=scheme)
        problem.initial_states(), problem.targets()
        runs: dict[str, dict[str, Any]] = {}
        solvers = {"emsa": (EMSA(), max_iter_emsa)}
        solvers.update({f"adam_lr{lr:g}": (cdl.GradientDescent("adam", lr=lr), max_iter_adam)
                        for lr in lrs})
        for label, (solver, max_iter) in solvers.items():
            r = run_one(problem, solver, seed, scheme, target, max_iter, max_time)
            compile_first.setdefault(label, r["compile_s"])
            r["compile_first_s"] = compile_first[label]
            r["time_cold_s"] = (r["time_excl_compile_s"] + compile_first[label]
                                if r["reached"] else None)
            runs[label] = r
            print(f"  {name} seed {seed} {label}: reached={r['reached']} "
                  f"it={r['iterations']} t_excl={r['time_excl_compile_s']} "
                  f"compile={r['compile_s']:.2f} s/it={r['s_per_iteration']:.2e}",
                  file=log, flush=True)
        adam = {k: v for k, v in runs.items() if k.startswith("adam")}
        lr_excl, t_excl = best(adam, "time_excl_compile_s")
        lr_cold, t_cold = best(adam, "time_cold_s")
        emsa = runs["emsa"]
        records.append({
            "seed": seed,
            "runs": runs,
            "best_adam_excl_compile": lr_excl,
            "best_adam_incl_compile": lr_cold,
            "ratio_excl_compile": ratio(emsa["time_excl_compile_s"], t_excl),
            "ratio_incl_compile": ratio(emsa["time_cold_s"], t_cold),
            "iteration_ratio": ratio(emsa["iterations"],
                                     adam[lr_excl]["iterations"] if lr_excl else None),
        })
    emsa_runs = [r["runs"]["emsa"] for r in records]
    best_adam_runs = [r["runs"][r["best_adam_excl_compile"]] for r in records
                      if r["best_adam_excl_compile"]]
    return {
        "problem": PROBLEMS[name],
        "target_cost": make_problem(name, seeds[0])[2],
        "seeds": seeds,
        "median": {
            "ratio_excl_compile": median([r["ratio_excl_compile"] for r in records]),
            "ratio_incl_compile": median([r["ratio_incl_compile"] for r in records]),
            "emsa_iterations": median([r["iterations"] for r in emsa_runs]),
            "best_adam_iterations": median([r["iterations"] for r in best_adam_runs]),
            "emsa_s_per_iteration": median([r["s_per_iteration"] for r in emsa_runs]),
            "best_adam_s_per_iteration": median([r["s_per_iteration"]
                                                 for r in best_adam_runs]),
            "emsa_time_excl_compile_s": median([r["time_excl_compile_s"] for r in emsa_runs]),
            "best_adam_time_excl_compile_s": median([r["time_excl_compile_s"]
                                                     for r in best_adam_runs]),
        },
        "compile_s": compile_first,
        "emsa_reached": sum(r["reached"] for r in emsa_runs),
        "records": records,
    }


def machine() -> dict[str, Any]:
    dev = jax.devices()[0]
    return {"backend": jax.default_backend(), "device": getattr(dev, "device_kind", str(dev)),
            "cpu_count": os.cpu_count(), "load_average": list(os.getloadavg()),
            "platform": platform.platform(), "python": platform.python_version(),
            "jax": jax.__version__}


def warm_up() -> None:
    """One iteration of each method on a 10-point problem, so that the process's one-time
    costs (imports, JAX's first dispatches, the tracing of shared library code; about
    1–1.5 s on the development machine) are not charged to whichever solver the
    benchmark happens to measure first."""
    tiny = cdl.Problem(cdl.data.ring(10, seed=0), width=2, layers=2)
    cdl.solve(tiny, EMSA(), max_iter=1)
    cdl.solve(tiny, cdl.GradientDescent("adam"), max_iter=1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--problems", default="ring600,ring,spiral,sine",
                   help="comma-separated subset of ring600, ring, spiral, sine (default all)")
    p.add_argument("--seeds", type=int, default=3, help="number of seeds (default 3)")
    p.add_argument("--quick", action="store_true",
                   help="one seed, Adam grid {0.01, 0.1}, smaller budgets")
    p.add_argument("--max-time", type=float, default=60.0,
                   help="time budget per solve in seconds, compilation included (default 60)")
    p.add_argument("--out", default=None, help="also write the JSON to this file")
    args = p.parse_args(argv)
    names = [s.strip() for s in args.problems.split(",") if s.strip()]
    for name in names:
        if name not in PROBLEMS:
            p.error(f"unknown problem {name!r}; expected one of {', '.join(PROBLEMS)}")
    if args.seeds < 1:
        p.error("--seeds must be >= 1")
    seeds = [0] if args.quick else list(range(args.seeds))
    lrs = (0.01, 0.1) if args.quick else LR_GRID
    max_time = min(args.max_time, 30.0) if args.quick else args.max_time
    max_iter_emsa, max_iter_adam = (300, 2000) if args.quick else (1000, 5000)
    t0 = time.perf_counter()
    warm_up()
    result = {"machine": machine(), "lr_grid": list(lrs),
              "emsa_options": EMSA().options(), "problems": {}}
    for name in names:
        print(f"{name}: {PROBLEMS[name]}", file=sys.stderr, flush=True)
        result["problems"][name] = bench_problem(name, seeds, lrs, max_iter_emsa,
                                                 max_iter_adam, max_time, sys.stderr)
    result["wall_time_s"] = time.perf_counter() - t0
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
