"""How far is a padded multi-device solve from the one-device solve?

600 ring points with a quarter held out leave 450 training points, which do not divide
over 4 devices: gradient descent, MSA and E-MSA pad them with weight-zero copies
(``controldl.parallel.pad_samples``). This script solves the same problem (width 3,
L = 5, T = 2, l2 1e-3, a running cost 0.2 and smoothness 0.01, so that every per-sample
sum appears) on one device and on ``--devices`` virtual CPU devices, with each solver,
and reports the relative difference of the final costs, the largest difference of the
recorded costs along the way, and both training accuracies and stationarities.

Usage (the virtual devices must be requested before JAX starts)::

    XLA_FLAGS=--xla_force_host_platform_device_count=4 python benchmarks/padding.py

Prints one JSON document on stdout.
"""

from __future__ import annotations

import argparse
import json

import jax


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=600)
    parser.add_argument("--devices", type=int, default=4)
    args = parser.parse_args()
    jax.config.update("jax_enable_x64", True)
    import controldl as cdl

    data = cdl.data.train_test_split(cdl.data.ring(args.n_samples, seed=3), 0.25, seed=3)
    problem = cdl.Problem(data, width=3, layers=5, horizon=2.0, l2=1e-3, running=0.2,
                          smooth=0.01)
    runs = {"adam": ("adam:lr=0.05", 30), "lbfgs": ("lbfgs", 15), "emsa": ("emsa", 6),
            "msa (mu = 1)": ("msa:mu=1", 4),
            "adam, batch 100": ("adam:lr=0.05:batch_size=100", 12)}
    out = {"n_train": data.n_train, "devices": args.devices,
           "padded_to": -(-data.n_train // args.devices) * args.devices, "solvers": {}}
    for label, (spec, iterations) in runs.items():
        one = cdl.solve(problem, spec, max_iter=iterations)
        many = cdl.solve(problem, spec, devices=args.devices, max_iter=iterations)
        cost = one.cost["total"]
        out["solvers"][label] = {
            "iterations": [one.iterations, many.iterations],
            "cost": [cost, many.cost["total"]],
            "relative_cost_difference": abs(many.cost["total"] - cost) / abs(cost),
            "largest_history_difference": max(abs(a["cost"] - b["cost"]) for a, b in
                                              zip(one.history, many.history, strict=True)),
            "train_accuracy": [one.train_accuracy, many.train_accuracy],
            "stationarity": [one.stationarity, many.stationarity],
        }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
