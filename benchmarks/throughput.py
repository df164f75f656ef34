"""Throughput of the JAX solvers: samples·layers per second against the flop count.

For every solver, N and L (width d), one child process builds a ring of N points, runs a
few iterations and reports:

- ``seconds_per_iteration`` (compilation excluded, from the solve's own history),
- ``samples_layers_per_s`` = N·L / seconds per iteration,
- ``gflops`` achieved, counting one forward and one backward pass per iteration:
  forward ``2d² + 4d`` flops per sample and layer (matvec, bias, activation, residual
  update), backward ``4d² + 4d`` (the two products with ``A_t``: costate and control
  gradient) — ``6d² + 8d`` in all (MSA's inner maximization is extra and not counted),
- ``peak_memory_bytes``: the process's peak resident memory (CPU) or the device's peak
  bytes in use (GPU), and XLA's own estimate of the step's temporary memory,
- the two bounds of this device measured in the same process: dense matmul GFLOP/s and
  streaming bandwidth (GB/s); the ratios to them say how far from each roofline we are
  (with d = 3 the problem is bandwidth-bound, not flop-bound).

Usage::

    python benchmarks/throughput.py --n 1000,10000,100000,1000000 --layers 20,100
    python benchmarks/throughput.py --n 1000000 --layers 100 --checkpoint-every 10 \
        --layer-block 10

Prints one JSON document on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

CHILD = r"""
import json, resource, sys, time
import jax, jax.numpy as jnp
import controldl as cdl

jax.config.update("jax_enable_x64", True)
from controldl import problem as P
cfg = json.loads(sys.argv[1])
N, L, d, iters = cfg["n"], cfg["layers"], cfg["width"], cfg["iters"]
dev = jax.devices()[0]

def bounds():
    m = 2048 if dev.platform == "cpu" else 8192
    a = jnp.ones((m, m), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    t = time.perf_counter(); reps = 5
    for _ in range(reps):
        f(a).block_until_ready()
    flops = 2 * m**3 * reps / (time.perf_counter() - t)
    v = jnp.ones((64 * 2**20 // 8,), jnp.float64)
    g = jax.jit(lambda x: x * 1.0001 + 1.0)
    g(v).block_until_ready()
    t = time.perf_counter()
    for _ in range(reps):
        g(v).block_until_ready()
    bw = 2 * v.nbytes * reps / (time.perf_counter() - t)
    return flops / 1e9, bw / 1e9

data = cdl.data.ring(N, seed=0)
problem = cdl.Problem(data, width=d, layers=L, horizon=L / 4, l2=1e-3)
opts = dict(cfg["options"])
if cfg["dtype"] != "float64":
    opts["dtype"] = cfg["dtype"]
solver = cdl.make_solver(cfg["solver"], **opts)
sol = cdl.solve(problem, solver, max_iter=iters, seed=0)
hist = sol.history
steps = [b["time_s"] - a["time_s"] for a, b in zip(hist[:-1], hist[1:])]
steps = steps[1:] if len(steps) > 1 else steps
per_it = sorted(steps)[len(steps) // 2] if steps else float("nan")
flop_per_sl = 6 * d * d + 8 * d
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
if dev.platform != "cpu":
    stats = dev.memory_stats() or {}
    peak = stats.get("peak_bytes_in_use", peak)
gflops_bound, bw_bound = bounds()
achieved = N * L * flop_per_sl / per_it / 1e9
# Bytes a forward+backward pass must move at least: the states written and read twice.
itemsize = 8 if cfg["dtype"] == "float64" else 4
bytes_moved = 4 * N * L * d * itemsize
print(json.dumps({
    "solver": cfg["solver"], "options": opts, "n": N, "layers": L, "width": d,
    "dtype": cfg["dtype"], "device": f"{dev.platform}:{dev.device_kind}",
    "iterations": sol.iterations, "compile_time_s": sol.compile_time_s,
    "seconds_per_iteration": per_it, "samples_layers_per_s": N * L / per_it,
    "flops_per_sample_layer": flop_per_sl, "gflops": achieved,
    "matmul_gflops_bound": gflops_bound, "flop_ratio": achieved / gflops_bound,
    "bandwidth_gbs_bound": bw_bound,
    "bandwidth_ratio": bytes_moved / per_it / 1e9 / bw_bound,
    "peak_memory_bytes": peak, "cost": sol.cost["total"],
}))
"""


def _list(text: str, cast: type = int) -> list:
    try:
        return [cast(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=_list, default=[1000, 10000, 100000, 1000000])
    ap.add_argument("--layers", type=_list, default=[20, 100])
    ap.add_argument("--width", type=int, default=3)
    ap.add_argument("--solvers", type=lambda t: _list(t, str), default=["gd", "emsa"])
    ap.add_argument("--iters", type=int, default=6, help="iterations per measurement")
    ap.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    ap.add_argument("--checkpoint-every", type=int, default=None,
                    help="rematerialize gradient descent's forward pass in blocks of k layers")
    ap.add_argument("--layer-block", type=int, default=None,
                    help="build pmp-newton's layer models k layers at a time")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per measurement")
    args = ap.parse_args(argv)
    rows = []
    t0 = time.perf_counter()
    for solver in args.solvers:
        for L in args.layers:
            for n in args.n:
                options = {}
                if solver == "gd":
                    options = {"optimizer": "adam", "lr": 0.01}
                    if args.checkpoint_every:
                        options["checkpoint_every"] = args.checkpoint_every
                elif args.layer_block and solver == "pmp-newton":
                    options["layer_block"] = args.layer_block
                cfg = dict(solver=solver, n=n, layers=L, width=args.width, iters=args.iters,
                           dtype=args.dtype, options=options)
                try:
                    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cfg)],
                                          capture_output=True, text=True, timeout=args.timeout,
                                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
                except subprocess.TimeoutExpired:
                    rows.append({**cfg, "error": f"timed out after {args.timeout} s"})
                    continue
                if proc.returncode != 0:
                    tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
                    rows.append({**cfg, "error": tail[0]})
                else:
                    rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
                print(json.dumps(rows[-1]), file=sys.stderr)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(json.dumps({"rows": rows, "total_s": time.perf_counter() - t0,
                      "children_cpu_s": usage.ru_utime + usage.ru_stime}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
