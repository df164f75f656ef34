"""The accelerator table: time per iteration of every JAX solver over N, L, width and
precision, against the device's bandwidth and flop bounds. Driven by benchmarks/gpu.sh.

One process, all configurations in turn (fresh compile each), within a time budget:
configurations that no longer fit are listed as skipped. Per row: seconds per iteration
(median over the iterations after the first, compilation excluded, from the solve's own
history), samples·layers per second, the flop rate counting one forward and one
backward pass (``6d² + 8d`` flops per sample and layer; the Pontryagin solvers' inner
maximizations are extra work not counted) and the bytes such a pass must move at least
(the states written and read twice, ``4·N·L·d`` words), each as a fraction of the
assumed peak below. Prints one JSON line per row, then a summary line.

First, MNIST's rows: Adam (lr 1e-3), E-MSA (ρ = 0.03, 10 inner L-BFGS steps) and
full-batch L-BFGS with experiments/li_mnist.py's problem and solvers (Li et al.'s
settings, 60,000 training images, batches of 128), float32, one epoch each (L-BFGS:
``--mnist-lbfgs-iters`` full-batch iterations, an epoch of gradient work each), from one
initialization. Per row: seconds per epoch of training (the records' own evaluations and
compilation excluded), compilation, the final cost and test accuracy. They count against
the time budget. ``--only mnist`` runs just these rows, ``--only ring`` just the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import time
from typing import Any

# Assumed peaks of one NVIDIA H200 SXM (vendor figures): HBM3e bandwidth 4.8 TB/s;
# FP64 34 TFLOP/s without tensor cores (67 with them); FP32 67 TFLOP/s without tensor
# cores. The solvers' small-width products do not use the tensor cores.
H200_BANDWIDTH_BYTES_S = 4.8e12
H200_FLOPS = {"float64": 34e12, "float32": 67e12}

SOLVERS = ("adam", "lbfgs", "emsa", "msa", "pmp-newton")
FULL = {"n": (10_000, 100_000, 1_000_000), "layers": (20, 100), "width": (3, 30),
        "dtype": ("float32", "float64")}
SMOKE = {"n": (256,), "layers": (4,), "width": (3,), "dtype": ("float32", "float64")}


def make(name: str, dtype: str) -> Any:
    import controldl as cdl
    from controldl.solvers.options import solver_from_spec

    if name == "adam":
        return cdl.GradientDescent("adam", lr=0.01, dtype=dtype)
    if name == "lbfgs":
        return cdl.GradientDescent("lbfgs", dtype=dtype)
    return solver_from_spec(f"{name}:dtype={dtype}")


def measure(name: str, n: int, layers: int, width: int, dtype: str, iters: int,
            max_time: float | None) -> dict[str, Any]:
    import controldl as cdl

    problem = cdl.Problem(cdl.data.ring(n, seed=0), width=width, layers=layers,
                          horizon=layers / 4, l2=1e-3)
    sol = cdl.solve(problem, make(name, dtype), max_iter=iters, max_time=max_time)
    times = [e["time_s"] for e in sol.history]
    diffs = [b - a for a, b in zip(times[:-1], times[1:], strict=True)]
    steps = sorted(diffs[1:] or diffs) or [math.nan]
    per_it = steps[len(steps) // 2]
    flops = (6 * width**2 + 8 * width) * n * layers / per_it
    words = 4 * n * layers * width * (8 if dtype == "float64" else 4)
    return {"seconds_per_iteration": per_it, "samples_layers_per_s": n * layers / per_it,
            "gflops": flops / 1e9, "flop_fraction": flops / H200_FLOPS[dtype],
            "bandwidth_fraction": words / per_it / H200_BANDWIDTH_BYTES_S,
            "iterations": sol.iterations, "compile_time_s": sol.compile_time_s,
            "cost": sol.cost["total"], "status": str(sol.status)}


MNIST_SOLVERS = ("adam", "emsa", "lbfgs")


def measure_mnist(name: str, n_samples: int | None, lbfgs_iters: int) -> dict[str, Any]:
    """One MNIST row of experiments/li_mnist.py (its problem and solver, seed 0, float32):
    ``name`` for one epoch (L-BFGS: ``lbfgs_iters`` full-batch iterations)."""
    import controldl as cdl
    from experiments import li_mnist

    problem = li_mnist.make_problem(cdl.data.mnist(n_samples=n_samples, seed=0))
    per_epoch = math.ceil(problem.data.n_train / li_mnist.BATCH)
    slv = dataclasses.replace(li_mnist.solver(name, 0, per_epoch), dtype="float32")
    limits = {"max_iter": lbfgs_iters} if name == "lbfgs" else {"epochs": 1}
    sol = cdl.solve(problem, slv, init=cdl.init_params(problem.formulation, seed=0),
                    **limits)
    spent = [e["time_s"] - (e.get("evaluation_time_s") or 0.0) for e in sol.history]
    its = sol.history[-1]["iteration"] - sol.history[0]["iteration"]
    per_it = (spent[-1] - spent[0]) / its if its else math.nan
    return {"seconds_per_epoch": per_it * (1 if name == "lbfgs" else per_epoch),
            "seconds_per_iteration": per_it, "iterations": sol.iterations,
            "compile_time_s": sol.compile_time_s, "wall_time_s": sol.wall_time_s,
            "cost": sol.cost["total"], "test_accuracy": sol.test_accuracy,
            "dtype": sol.stats.get("dtype"), "status": str(sol.status)}


def mnist_rows(a: argparse.Namespace) -> None:
    for name in MNIST_SOLVERS:
        row = {"dataset": "mnist", "solver": name, "n": a.mnist_n or 60_000,
               "dtype": "float32"}
        try:
            row.update(measure_mnist(name, a.mnist_n, a.mnist_lbfgs_iters))
        except Exception as exc:  # no MNIST files, out of memory
            row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        print(json.dumps(row), flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: proves the script runs")
    ap.add_argument("--budget-s", type=float, default=420.0)
    ap.add_argument("--iters", type=int, default=4)
    ap.add_argument("--max-time", type=float, default=None,
                    help="seconds per configuration, compilation included (default none)")
    ap.add_argument("--only", choices=("mnist", "ring", "all"), default="all")
    ap.add_argument("--mnist-n", type=int, default=None,
                    help="MNIST training images (default all 60,000; --smoke 256)")
    ap.add_argument("--mnist-lbfgs-iters", type=int, default=10)
    a = ap.parse_args(argv)
    if a.smoke and a.mnist_n is None:
        a.mnist_n, a.mnist_lbfgs_iters = 256, 3
    import jax

    jax.config.update("jax_enable_x64", True)
    grid = SMOKE if a.smoke else FULL
    device = jax.devices()[0]
    start = time.perf_counter()
    print(json.dumps({"device": f"{device.platform}:{device.device_kind}",
                      "assumed_peaks": {"bandwidth_bytes_s": H200_BANDWIDTH_BYTES_S,
                                        "flops": H200_FLOPS}}), flush=True)
    if a.only in ("mnist", "all"):
        mnist_rows(a)
    if a.only == "mnist":
        return
    done = skipped = 0
    # Largest sizes last within each precision and width, so a short budget keeps the
    # smaller rows of every solver.
    order = itertools.product(grid["dtype"], grid["width"], grid["layers"], grid["n"],
                              SOLVERS)
    for dtype, width, layers, n, name in order:
        row = {"solver": name, "n": n, "layers": layers, "width": width, "dtype": dtype}
        if time.perf_counter() - start > a.budget_s:
            skipped += 1
            print(json.dumps({**row, "skipped": "time budget"}), flush=True)
            continue
        try:
            row.update(measure(name, n, layers, width, dtype, a.iters, a.max_time))
            done += 1
        except Exception as exc:  # out of memory, or a solver refusing the size
            row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        print(json.dumps(row), flush=True)
    print(json.dumps({"rows_measured": done, "rows_skipped": skipped,
                      "total_s": time.perf_counter() - start}), flush=True)


if __name__ == "__main__":
    main()
