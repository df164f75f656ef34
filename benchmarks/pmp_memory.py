"""Peak memory of E-MSA (or MSA), stored against bounded (``checkpoint_every``).

Each mode runs in a fresh process: the solver's iterations on a ring of N points
(``solver.run``, the loop ``controldl.solve`` calls; not ``solve``'s final float64
evaluation, which differentiates the plain forward pass), then the process's peak
resident memory (``resource.getrusage``, ``ru_maxrss``) and the compiled iteration's
own buffer accounting (XLA ``memory_analysis``) are printed as JSON with the
iterate, and the iterates of the two modes are compared. ``--plan-only`` compiles from
shapes alone (nothing allocated) and reports XLA's accounting for sizes that do not fit
the machine.

    python benchmarks/pmp_memory.py --n 100000 --layers 1000 --iterations 1
    python benchmarks/pmp_memory.py --n 100000 --layers 1000 --plan-only
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

CHILD = r"""
import json, resource, sys, time
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
import controldl as cdl
from controldl.solvers.base import Monitor, Stopping
from controldl.solvers.pmp.iteration import Config, batch_rows, compiled_run, one_iteration

cfg = json.loads(sys.argv[1])
problem = cdl.Problem(cdl.data.ring(cfg["n"], seed=0), width=cfg["width"],
                      layers=cfg["layers"], horizon=cfg["horizon"], l2=1e-3)
kind = cdl.EMSA if cfg["solver"] == "emsa" else cdl.MSA
solver = kind(inner_steps=cfg["inner_steps"], checkpoint_every=cfg["every"])
params = cdl.init_params(problem.formulation, seed=0)
layer, readout = solver.inner_solvers(problem)
config = Config(solver.extended, layer, readout, solver.inner_steps, None, cfg["every"])
f64 = jax.numpy.float64
N, d, m = cfg["n"], problem.width, problem.n_outputs
shape = lambda *s: jax.ShapeDtypeStruct(s, f64)  # noqa: E731
args = (jax.tree.map(lambda a: shape(*a.shape), params),
        jax.tree.map(lambda a: shape(*a.shape), solver.knobs(f64)),
        shape(N, d), shape(N, m), jax.ShapeDtypeStruct((N,), jax.numpy.int32),
        batch_rows(None, 0, 1, None), one_iteration(f64))
t0 = time.perf_counter()
plan = compiled_run(problem.formulation, config, args).memory_analysis()
out = {"mode": "stored" if cfg["every"] is None else "bounded", "checkpoint_every": cfg["every"],
       "xla_temp_bytes": int(plan.temp_size_in_bytes), "compile_s": time.perf_counter() - t0}
if not cfg["plan_only"]:
    monitor = Monitor(Stopping(cfg["iterations"]))
    t0 = time.perf_counter()
    result = solver.run(problem, params, monitor)
    out["run_s"] = time.perf_counter() - t0
    out["costs"] = [h["cost"] for h in monitor.history]
    np.savez(cfg["save"], *[np.asarray(v) for v in result.params])
    out["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print("RESULT " + json.dumps(out), flush=True)
"""


def run_mode(cfg: dict) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cfg)], capture_output=True,
                          text=True, timeout=cfg["timeout"])
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        return {"mode": "stored" if cfg["every"] is None else "bounded",
                "error": f"exit {proc.returncode}: {proc.stderr.strip()[-400:]}"}
    return json.loads(lines[-1][7:])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--layers", type=int, default=1000)
    ap.add_argument("--width", type=int, default=3)
    ap.add_argument("--horizon", type=float, default=5.0)
    ap.add_argument("--solver", choices=("emsa", "msa"), default="emsa")
    ap.add_argument("--inner-steps", type=int, default=2)
    ap.add_argument("--iterations", type=int, default=1)
    ap.add_argument("--every", type=int, default=None,
                    help="checkpoint_every of the bounded mode (default ⌈√L⌉)")
    ap.add_argument("--modes", default="bounded,stored")
    ap.add_argument("--plan-only", action="store_true")
    ap.add_argument("--timeout", type=float, default=1800)
    a = ap.parse_args(argv)
    from controldl.solvers.pmp.checkpointed import default_every

    every = a.every or default_every(a.layers)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in a.modes.split(","):
            cfg = {"n": a.n, "layers": a.layers, "width": a.width, "horizon": a.horizon,
                   "solver": a.solver, "inner_steps": a.inner_steps,
                   "iterations": a.iterations, "every": every if mode == "bounded" else None,
                   "plan_only": a.plan_only, "timeout": a.timeout,
                   "save": str(Path(tmp) / f"{mode}.npz")}
            results[mode] = run_mode(cfg)
            print(json.dumps({"n": a.n, "layers": a.layers, "width": a.width,
                              "solver": a.solver, **results[mode]}), flush=True)
        files = [Path(tmp) / f"{m}.npz" for m in ("stored", "bounded")]
        if all(f.exists() for f in files):
            s, b = (np.load(f) for f in files)
            diff = max(float(np.max(np.abs(s[k] - b[k]))) for k in s.files)
            ratio = (results["bounded"]["peak_rss_bytes"]
                     / results["stored"]["peak_rss_bytes"])
            print(json.dumps({"max_abs_param_difference": diff,
                              "peak_rss_ratio_bounded_over_stored": ratio}), flush=True)


if __name__ == "__main__":
    main()
