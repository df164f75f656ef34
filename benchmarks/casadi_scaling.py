"""Scaling of the CasADi direct method: NLP build time and time per IPOPT iteration.

For each transcription (single, multiple) × Hessian (auto, exact, gauss-newton,
limited-memory) × N (ring points) × L (layers) × expand × codegen, at width 3, horizon 5,
l2 1e-3, readout_l2 ``--readout-l2`` (default 1e-3, the default problem's), this builds
the NLP and runs ``--max-iter`` IPOPT iterations from the shared initialization (seed 0;
the tolerance is set so low that IPOPT does not stop earlier), and records:

- ``build_s`` / ``build_cpu_s``: building the NLP and the IPOPT solver object (wall, CPU),
  CasADi's C code generation and compilation included when ``codegen`` is on (the
  compiler's own CPU time, in child processes, is counted and also shown as
  ``compiler_cpu_s``);
- ``per_iter_ms`` / ``per_iter_cpu_ms``: the IPOPT run divided by its iterations;
- ``total_s``: build plus the iterations run;
- ``iterations``, ``ipopt_status``, ``n_variables``, ``n_constraints``, ``expand``,
  ``codegen``, ``work`` (gradient-evaluation equivalents).

``--setup`` measures the setup on the default problem (600 ring points, width 3, L = 20):
the transcriptions with their default Hessian, expand false/true × codegen false/true;
with ``--tol 1e-8`` (the solver's default) ``total_s`` is a whole solve.

``--cap`` measures where the direct method's cap lies (``controldl.solvers.direct.
DIRECT_CAP``, docs/mnist.md): for MNIST's conv problem (the train defaults: 8 channels,
14 × 14, 4 layers) by single shooting, MNIST's dense ResNet (width 785, 4 layers) and the
ring (width 3, 20 layers) by multiple shooting, against N (``--cap-n``), it records the
build time, the time per IPOPT iteration (``--max-iter`` of them), the peak memory of the
process (``peak_rss_gb``) and the size the solver estimates before building
(``estimate_gb``, ``estimate_gflop``), the cap lifted for the measurement.

Each point runs in its own subprocess with a timeout (``--timeout``), so one slow or
memory-hungry configuration is reported as ``"timeout"`` instead of stopping the sweep.
The result is printed as JSON (a list of records), also written to ``--out`` if given.

Examples::

    python benchmarks/casadi_scaling.py --n 200 --layers 20 --max-iter 20
    python benchmarks/casadi_scaling.py --setup --transcriptions single --tol 1e-8 \
        --max-iter 1000
    python benchmarks/casadi_scaling.py --n 100 200 500 1000 --layers 10 20 50 \\
        --hessians limited-memory --max-iter 10 --out scaling.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

TRANSCRIPTIONS = ("single", "multiple")
HESSIANS = ("auto", "exact", "gauss-newton", "limited-memory")


def _children_cpu() -> float:
    """CPU seconds of this process's finished child processes (the C compiler)."""
    t = os.times()
    return t.children_user + t.children_system


def measure(transcription: str, hessian: str, n: int, layers: int, max_iter: int,
            expand: str, codegen: bool = False, readout_l2: float = 1e-3,
            tol: float = 1e-14) -> dict[str, Any]:
    """One point of the grid, in this process."""
    import jax

    import controldl as cdl

    jax.config.update("jax_enable_x64", True)
    from controldl.solvers.base import Monitor, Stopping

    problem = cdl.Problem(cdl.data.ring(n, seed=0), width=3, layers=layers, horizon=5.0,
                          l2=1e-3, readout_l2=readout_l2)
    solver = cdl.make_solver(
        "casadi", transcription=transcription, hessian=hessian, tol=tol, expand=expand,
        codegen=codegen, ipopt_options=(("acceptable_iter", "0"),))
    params = cdl.init_params(problem.formulation, seed=0)
    t0, c0, k0 = time.perf_counter(), time.process_time(), _children_cpu()
    result = solver.run(problem, params, Monitor(Stopping(max_iter)))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    compiler_cpu = _children_cpu() - k0  # the C compiler's processes (codegen)
    cpu += compiler_cpu
    st = result.stats
    its = max(int(st["iter_count"]), 1)
    build_cpu = cpu - st["solve_cpu_time_s"]
    return {
        "transcription": transcription, "hessian": hessian, "n": n, "layers": layers,
        "width": 3, "iterations": int(st["iter_count"]), "ipopt_status": st["ipopt_status"],
        "build_s": round(st["build_time_s"], 4), "build_cpu_s": round(build_cpu, 4),
        "per_iter_ms": round(1e3 * st["solve_time_s"] / its, 3),
        "per_iter_cpu_ms": round(1e3 * st["solve_cpu_time_s"] / its, 3),
        "total_s": round(wall, 3), "total_cpu_s": round(cpu, 3),
        "n_variables": st["n_variables"], "n_constraints": st["n_constraints"],
        "expand": st["expand"], "codegen": st["codegen"], "hessian_resolved": st["hessian"],
        "work": round(st["work"], 2), "objective": st["nlp_objective"],
        "compiler_cpu_s": round(compiler_cpu, 3),
    }


def done_when(gd_iterations: int, lipschitz_bound: float | None) -> dict[str, Any]:
    """Issue 4's acceptance run: 200 ring points, width 3, L = 20, T = 5, l2 1e-3,
    readout_l2 1e-2; gradient descent (Adam), then the CasADi solver with its default
    options warm-started from it. Stationarity and costs are checked with JAX, the
    Lipschitz constants with numpy, independently of IPOPT."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    import controldl as cdl
    from controldl import problem as P

    problem = cdl.Problem(cdl.data.ring(200, seed=0), width=3, layers=20, horizon=5.0,
                          l2=1e-3, readout_l2=1e-2, lipschitz_bound=lipschitz_bound)
    form = problem.formulation
    gd = cdl.solve(problem, cdl.GradientDescent("adam", lr=0.01), max_iter=gd_iterations)
    t0, c0 = time.perf_counter(), time.process_time()
    sol = cdl.solve(problem, cdl.make_solver("casadi"), init=gd, max_iter=1000)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    X0, Y = problem.initial_states(), problem.targets()
    g = jax.grad(lambda q: P.cost(form, q, X0, Y))(P.Params(*map(jnp.asarray, sol.params)))
    st = sol.stats
    return {
        "problem": "ring 200, width 3, L 20, T 5, l2 1e-3, readout_l2 1e-2"
                   + (f", lipschitz_bound {lipschitz_bound}" if lipschitz_bound else ""),
        "gd_iterations": gd_iterations, "gd_cost": gd.cost["total"],
        "casadi_cost": sol.cost["total"], "status": sol.status,
        "ipopt_status": st["ipopt_status"], "iterations": sol.iterations,
        "hessian": st["hessian"], "transcription": st["transcription"],
        "gradient_norm_jax": float(np.sqrt(sum(float(jnp.sum(v ** 2)) for v in g))),
        "whole_run_s": round(wall, 3), "whole_run_cpu_s": round(cpu, 3),
        "build_s": round(st["build_time_s"], 3),
        "ipopt_s": round(st["solve_time_s"], 3), "ipopt_cpu_s": round(st["solve_cpu_time_s"], 3),
        "per_iter_ms": round(1e3 * st["time_per_iteration_s"], 3),
        "per_iter_cpu_ms": round(1e3 * st["solve_cpu_time_s"] / max(sol.iterations, 1), 3),
        "lipschitz_max": float(np.max(P.lipschitz_constants(form, sol.params))),
        "lipschitz_max_raw": st.get("lipschitz_max_raw"),
        "lipschitz_form": st.get("lipschitz_form"),
    }


CAP_KINDS = ("mnist-conv-single", "mnist-dense-multiple", "ring-multiple")


def cap_problem(kind: str, n: int):
    """The problem and solver of one ``--cap`` kind with N = ``n``."""
    import controldl as cdl
    from controldl.problem import DATASET_DEFAULTS

    if kind == "ring-multiple":
        problem = cdl.Problem(cdl.data.ring(n, seed=0), width=3, layers=20, horizon=5.0)
        return problem, cdl.make_solver("casadi", transcription="multiple")
    data = cdl.data.mnist(n_samples=n, seed=0)
    if kind == "mnist-conv-single":
        problem = cdl.Problem(data, model="conv", **DATASET_DEFAULTS["mnist"].conv)
        return problem, cdl.make_solver("casadi")
    problem = cdl.Problem(data, layers=4, horizon=2.0)
    return problem, cdl.make_solver("casadi", transcription="multiple",
                                    hessian="limited-memory")


def measure_cap(kind: str, n: int, max_iter: int) -> dict[str, Any]:
    """One ``--cap`` point in this process: build, ``max_iter`` IPOPT iterations, peak
    memory, and the estimate made before building (the cap lifted)."""
    import math
    import resource

    import jax

    jax.config.update("jax_enable_x64", True)
    import controldl as cdl
    from controldl.solvers.base import Monitor, Stopping
    from controldl.solvers.direct import size

    problem, solver = cap_problem(kind, n)
    est = size.estimate(problem, solver.transcription, solver.resolve_hessian(problem))
    size.DIRECT_CAP = size.DirectCap(math.inf, math.inf)  # measure beyond it
    params = cdl.init_params(problem.formulation, seed=0)
    t0 = time.perf_counter()
    result = solver.run(problem, params, Monitor(Stopping(max_iter)))
    st = result.stats
    its = max(int(st["iter_count"]), 1)
    return {"kind": kind, "n": n, "hessian": st["hessian"], "iterations": its,
            "build_s": round(st["build_time_s"], 3),
            "per_iter_s": round(st["solve_time_s"] / its, 3),
            "total_s": round(time.perf_counter() - t0, 3),
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 3),
            "estimate_gb": round(est.memory_bytes / 1e9, 3),
            "estimate_gflop": round(est.evaluation_flops / 1e9, 3),
            "n_variables": st["n_variables"], "n_constraints": st["n_constraints"]}


def run_cap(args: argparse.Namespace) -> list[dict[str, Any]]:
    records = []
    for kind in args.cap_kinds:
        for n in args.cap_n[kind]:
            cmd = [sys.executable, __file__, "--cap-one", kind, str(n), "--max-iter",
                   str(args.max_iter)]
            base = {"kind": kind, "n": n}
            try:
                out = subprocess.run(cmd, capture_output=True, text=True,
                                     timeout=args.timeout,
                                     env={**os.environ, "JAX_PLATFORMS": "cpu"})
                lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
                rec = (json.loads(lines[-1]) if out.returncode == 0 and lines else
                       {**base, "error": f"exit {out.returncode}: "
                        + ((out.stderr or "").strip().splitlines() or [""])[-1][:200]})
            except subprocess.TimeoutExpired:
                rec = {**base, "error": f"timeout after {args.timeout:g} s"}
            records.append(rec)
            print(json.dumps(rec), file=sys.stderr, flush=True)
    return records


def run_point(args: argparse.Namespace, transcription: str, hessian: str, n: int,
              layers: int, expand: str, codegen: str) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--one", transcription, hessian, str(n), str(layers),
           "--max-iter", str(args.max_iter), "--expand", expand, "--codegen", codegen,
           "--readout-l2", str(args.readout_l2), "--tol", str(args.tol)]
    base = {"transcription": transcription, "hessian": hessian, "n": n, "layers": layers,
            "width": 3, "expand": expand, "codegen": codegen}
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout,
                             env={**os.environ, "JAX_PLATFORMS": "cpu"})
    except subprocess.TimeoutExpired:
        return {**base, "error": f"timeout after {args.timeout:g} s"}
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        tail = (out.stderr or out.stdout).strip().splitlines()[-1:] or ["no output"]
        return {**base, "error": f"exit {out.returncode}: {tail[0][:200]}"}
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[100, 200, 500, 1000],
                        help="numbers of ring points (default: 100 200 500 1000)")
    parser.add_argument("--layers", type=int, nargs="+", default=[10, 20, 50],
                        help="numbers of layers (default: 10 20 50)")
    parser.add_argument("--transcriptions", nargs="+", default=list(TRANSCRIPTIONS),
                        choices=TRANSCRIPTIONS)
    parser.add_argument("--hessians", nargs="+", default=list(HESSIANS[1:]), choices=HESSIANS)
    parser.add_argument("--max-iter", type=int, default=20,
                        help="IPOPT iterations per point (default: 20)")
    parser.add_argument("--expand", nargs="+", default=["auto"],
                        choices=("auto", "true", "false"),
                        help="the solver's expand option(s) (default: auto)")
    parser.add_argument("--codegen", nargs="+", default=["false"], choices=("false", "true"),
                        help="the solver's codegen option(s) (default: false)")
    parser.add_argument("--readout-l2", type=float, default=1e-3,
                        help="readout_l2 of the problem (default: 1e-3)")
    parser.add_argument("--tol", type=float, default=1e-14,
                        help="IPOPT's tolerance (default 1e-14: run all --max-iter iterations)")
    parser.add_argument("--setup", action="store_true",
                        help="the setup measurement on the default problem (see above)")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds allowed per point (default: 300)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--done-when", action="store_true",
                        help="run issue 4's acceptance checks instead of the grid")
    parser.add_argument("--gd-iterations", type=int, default=2000,
                        help="Adam iterations before the warm start (--done-when)")
    parser.add_argument("--one", nargs=4, metavar=("TRANSCRIPTION", "HESSIAN", "N", "L"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--cap", action="store_true",
                        help="measure where the direct method's cap lies (see above)")
    parser.add_argument("--cap-kinds", nargs="+", default=list(CAP_KINDS), choices=CAP_KINDS)
    parser.add_argument("--cap-n", type=int, nargs="+", default=None,
                        help="N of every --cap kind (default: 25 50 100 200 400 for MNIST's "
                             "conv, 10 20 40 for its dense multiple shooting, 2000 8000 "
                             "32000 for the ring)")
    parser.add_argument("--cap-one", nargs=2, metavar=("KIND", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cap_one:
        print(json.dumps(measure_cap(args.cap_one[0], int(args.cap_one[1]), args.max_iter)))
        return 0
    if args.cap:
        default = {"mnist-conv-single": [25, 50, 100, 200, 400],
                   "mnist-dense-multiple": [10, 20, 40], "ring-multiple": [2000, 8000, 32000]}
        args.cap_n = {k: args.cap_n or default[k] for k in CAP_KINDS}
        records = run_cap(args)
        text = json.dumps({"machine": {"cpus": os.cpu_count(), "platform": sys.platform},
                           "max_iter": args.max_iter, "cap": records}, indent=1)
        print(text)
        if args.out is not None:
            args.out.write_text(text + "\n")
        return 0
    if args.max_iter < 1:
        parser.error("--max-iter must be >= 1")
    if any(v < 2 for v in args.n) or any(v < 1 for v in args.layers):
        parser.error("--n must be >= 2 and --layers >= 1")
    if args.done_when:
        out = [done_when(args.gd_iterations, None), done_when(args.gd_iterations, 0.9)]
        print(json.dumps(out, indent=1))
        return 0
    if args.one:
        tr, hs, n, layers = args.one
        print(json.dumps(measure(tr, hs, int(n), int(layers), args.max_iter, args.expand[0],
                                 args.codegen[0] == "true", args.readout_l2, args.tol)))
        return 0
    if args.setup:
        args.n, args.layers, args.hessians = [600], [20], ["auto"]
        args.expand, args.codegen = ["false", "true"], ["false", "true"]
    records = []
    grid = itertools.product(args.n, args.layers, args.transcriptions, args.hessians,
                             args.expand, args.codegen)
    for n, layers, tr, hs, expand, codegen in grid:
        rec = run_point(args, tr, hs, n, layers, expand, codegen)
        records.append(rec)
        print(json.dumps(rec), file=sys.stderr, flush=True)
    text = json.dumps({"machine": {"cpus": os.cpu_count(), "platform": sys.platform},
                       "max_iter": args.max_iter, "results": records}, indent=1)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
