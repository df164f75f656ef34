"""An epoch of Li & Hao's discrete MSA against an epoch of BinaryConnect, in one process:
JSON on stdout.

Both train the same binary ResNet on MNIST (60,000 images, dense, width 784, ``--layers``
layers, float32, batches of 100, 600 iterations per epoch) and both iterations are one
forward and one backward pass: BinaryConnect's (Adam on the latent weights, the
straight-through sign) and the discrete MSA's (the costates and ``M``, the moving
average, the closed-form maximization, Adam on ``b`` and the readout). Only the compiled
training steps are timed, with the host work of each solver's loop (its per-iteration
arguments and the read-back of its report); the per-epoch evaluations are left out, as
they are the same forward pass for both.

Timing on a shared machine is noisy: the two run in alternating rounds of ``--steps``
iterations, and each keeps the smallest seconds per iteration over ``--rounds`` rounds;
the ratio of those, and an epoch's estimate (600 times it), are reported; so are the
smallest CPU seconds (all threads) per iteration and their ratio, which a loaded machine
disturbs less than the wall clock, and the load average at the end.

    python benchmarks/discrete_epoch.py --rounds 5 --steps 60
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import jax
import numpy as np

import controldl as cdl
from controldl import parallel
from controldl.problem import discrete as D
from controldl.problem import init_params
from controldl.solvers import gd as G
from controldl.solvers.base import Monitor, Stopping, training_arrays
from controldl.solvers.epochs import Epochs
from controldl.solvers.pmp import discrete as DM

BATCH = 100


def binaryconnect(problem: cdl.Problem, params: Any, lr: float) -> Any:
    """A function running ``k`` BinaryConnect iterations from where the last call ended,
    as gradient descent's loop runs them (the compiled step, its report read back)."""
    form = problem.formulation
    solver = G.GradientDescent("adam", lr=lr, batch_size=BATCH, dtype="float32")
    X0, Y, y, _ = training_arrays(problem, np.float32, BATCH, None)
    order = Epochs.of(problem, BATCH).order
    state = [params._replace(A=D.latent(form, params.A)), None, 0]
    state[1] = G._compiled_init(solver, 0, state[0])
    step = G._compiled_step(form, solver, 0, (state[0], X0, Y, y,
                                              parallel.device_array(order.rows(0))))

    def run(k: int) -> None:
        for _ in range(k):
            rows = parallel.device_array(order.rows(state[2]))
            state[0], state[1], out = step(state[0], state[1], X0, Y, y, rows)
            np.asarray(out)
            state[2] += 1

    return run


def discrete_msa(problem: cdl.Problem, params: Any, lr: float) -> Any:
    """The same for the discrete MSA (its compiled iteration, knobs, key and report)."""
    form = problem.formulation
    loop = DM._Loop.build(DM.DiscreteMSA(lr=lr, batch_size=BATCH, dtype="float32"),
                          problem, params, Monitor(Stopping()))
    s = loop.start
    state = [s.params, (s.ema, s.ema_weight), s.opt_state, 0]

    def run(k: int) -> None:
        for _ in range(k):
            i = state[3]
            state[0], state[1], state[2], info = loop.step(form, *state[:3], loop.knobs(i),
                                                           *loop.arrays, loop.rows(i))
            jax.device_get(tuple(info))
            state[3] = i + 1

    return run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--lr", type=float, default=0.01)
    args = p.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    data = cdl.data.mnist()
    problem = cdl.Problem(data, controls="binary", width=784, layers=args.layers,
                          horizon=float(args.layers), loss="cross_entropy", l2=0.0)
    params = init_params(problem.formulation, seed=0, dtype=np.float32)
    runs = {"binaryconnect": binaryconnect(problem, params, args.lr),
            "discrete-msa": discrete_msa(problem, params, args.lr)}
    for run in runs.values():  # compiled and warm before the clock
        run(3)
    best = {k: float("inf") for k in runs}
    cpu = {k: float("inf") for k in runs}
    rounds: list[dict[str, Any]] = []
    for _ in range(args.rounds):
        row = {}
        for label, run in runs.items():
            t, c = time.perf_counter(), time.process_time()
            run(args.steps)
            row[label] = {"wall_s": (time.perf_counter() - t) / args.steps,
                          "cpu_s": (time.process_time() - c) / args.steps}
            best[label] = min(best[label], row[label]["wall_s"])
            cpu[label] = min(cpu[label], row[label]["cpu_s"])
        rounds.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    epoch = data.n_train // BATCH
    print(json.dumps({
        "problem": repr(problem), "batch_size": BATCH, "iterations_per_epoch": epoch,
        "s_per_iteration": best, "s_per_epoch": {k: v * epoch for k, v in best.items()},
        "msa_over_binaryconnect": best["discrete-msa"] / best["binaryconnect"],
        "cpu_s_per_iteration": cpu,
        "msa_over_binaryconnect_cpu": cpu["discrete-msa"] / cpu["binaryconnect"],
        "rounds": rounds, "load_average": os.getloadavg(),
        "devices": str(jax.devices()[0].platform)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
