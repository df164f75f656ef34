"""The counts and diagnostics quoted in docs/solvers.md that are not timings: JSON on stdout.

Deterministic on one machine (no wall time in them), so a loaded machine gives the same
figures as a quiet one:

- ``gap``: at the L-BFGS stationary points (``grad_tol`` 1e-9) of the default problem
  (600 ring points, a quarter held out, width 3, L = 20, T = 5) and of a 40-point ring
  (width 3, L = 4, T = 2): the inner ascent from ``θ_k`` recorded by one iteration
  (``tol = 0``), and ``controldl.hamiltonian_gap`` from ``θ_k`` alone and from eight
  starts at scale 1, for basic MSA's ``H_t`` and E-MSA's ``H̃_t`` (ρ = 1);
- ``inner_near_stationarity``: E-MSA's inner evaluations and rejected line-search
  trials per iteration, warm-started at the default problem's L-BFGS point and from the
  initialization (what an inner tolerance would save);
- ``certificate``: the direct method's costates = multipliers certificate on the test
  suite's 16-point ring (multiple shooting, exact Hessian) at a converged exit and at two
  acceptable exits forced by loose acceptable tolerances;
- ``work``: L-BFGS's iterations and work on the default problem (``controldl compare``'s
  row: ``grad_tol`` 1e-4), ``pmp-newton``'s work in the 290 iterations of its row there,
  and E-MSA's work and inner evaluations per iteration on breast
  cancer at width 30 (``benchmarks/pmp_iteration.py``'s problem);
- ``zero_start``: Li et al.'s toy problem (``experiments/li_sin.py``, data seed 0) from
  their exact zero start: the spread of the final states over the coordinates (0 in the
  invariant symmetric subspace) after 20, 100 and 500 iterations of E-MSA and Adagrad,
  and E-MSA's largest cost rise, in float64 and float32 (why the experiment perturbs the
  start).

    python benchmarks/pmp_diagnostics.py                # everything (a few minutes)
    python benchmarks/pmp_diagnostics.py --only gap,certificate
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import jax
import numpy as np

import controldl as cdl
from controldl import data as D

PARTS = ("gap", "inner_near_stationarity", "certificate", "work", "zero_start")


def default_problem() -> cdl.Problem:
    return cdl.Problem(D.train_test_split(D.ring(600, seed=0), 0.25, seed=0))


def small_ring() -> cdl.Problem:
    return cdl.Problem(D.ring(40, seed=0), width=3, layers=4, horizon=2.0, l2=1e-3,
                       readout_l2=1e-3)


def stationary_point(problem: cdl.Problem) -> cdl.Solution:
    sol = cdl.solve(problem, cdl.GradientDescent("lbfgs", grad_tol=1e-9), max_iter=20_000)
    assert sol.status == "converged", sol.status
    return sol


def gap(problem: cdl.Problem) -> dict[str, Any]:
    """The recorded inner ascent and the probe's lower bounds at an L-BFGS point."""
    point = stationary_point(problem)
    out: dict[str, Any] = {"stationarity": point.stats["stationarity"]}
    for name, solver in (("msa", cdl.MSA(tol=0.0)), ("emsa", cdl.EMSA(rho=1.0, tol=0.0))):
        one = cdl.solve(problem, solver, init=point, max_iter=0)
        local = cdl.hamiltonian_gap(problem, point, solver, starts=0)
        probed = cdl.hamiltonian_gap(problem, point, solver, starts=8, scale=1.0)
        out[name] = {"inner_ascent_max": max(one.stats["inner_ascent"]),
                     "local_max": max(local.layers), "probed_max": max(probed.layers),
                     "probed_argmax_layer": int(np.argmax(probed.layers)),
                     "probed_readout": probed.readout}
    return out


def inner_near_stationarity() -> dict[str, Any]:
    problem = default_problem()
    point = stationary_point(problem)
    out: dict[str, Any] = {"stationarity": point.stats["stationarity"]}
    for label, init in (("at_lbfgs_point", point), ("from_init", None)):
        sol = cdl.solve(problem, cdl.EMSA(tol=0.0, patience=None), init=init, max_iter=3)
        out[label] = [{k: h.get(k) for k in ("inner_evaluations", "rejected", "stationarity")}
                      for h in sol.history[1:]]
    return out


def certificate() -> dict[str, Any]:
    """tests/test_casadi.py's small problem: ring(seed=3) with its SMALL options."""
    sys.path.insert(0, "tests")
    from test_casadi import run, small_problem  # the test's own problem and runner

    from controldl.solvers.direct import CasadiDirect

    problem = small_problem()
    runs = {"converged": CasadiDirect(transcription="multiple", tol=1e-10)}
    for acc, viol in (("1e-3", "1e-4"), ("1e-1", "1e-2")):
        runs[f"acceptable_tol_{acc}"] = CasadiDirect(transcription="multiple", ipopt_options=(
            ("tol", "1e-30"), ("acceptable_tol", acc), ("acceptable_iter", "1"),
            ("acceptable_constr_viol_tol", viol)))
    return {label: run(problem, solver).stats["costate_multiplier_certificate"]
            for label, solver in runs.items()}


def work() -> dict[str, Any]:
    lbfgs = cdl.solve(default_problem(), cdl.GradientDescent("lbfgs", grad_tol=1e-4),
                      max_iter=10_000)
    newton = cdl.solve(default_problem(), cdl.make_solver("pmp-newton"), max_iter=290)
    sys.path.insert(0, "benchmarks")
    from pmp_iteration import _sklearn_breast_cancer

    bc = cdl.Problem(_sklearn_breast_cancer(0), width=30, layers=10, horizon=5.0, l2=1e-3,
                     readout_l2=1e-3)
    emsa = cdl.solve(bc, cdl.EMSA(tol=0.0, patience=None), max_iter=6)
    per = np.diff([h["work"] for h in emsa.history])
    return {"lbfgs_default": {"status": lbfgs.status, "iterations": lbfgs.iterations,
                              "work": lbfgs.work,
                              "work_per_iteration": lbfgs.work / lbfgs.iterations},
            "pmp_newton_default_290": {"status": newton.status, "iterations": newton.iterations,
                                       "cost": newton.cost["total"], "work": newton.work},
            "emsa_breast_cancer": {
                "work_per_iteration": per.tolist(),
                "inner_evaluations": [h.get("inner_evaluations") for h in emsa.history[1:]]}}


def zero_start() -> dict[str, Any]:
    sys.path.insert(0, ".")
    from experiments import li_sin

    problem = cdl.Problem(li_sin.sine_data(0, 100, 100), width=li_sin.WIDTH,
                          layers=li_sin.LAYERS, horizon=li_sin.HORIZON, l2=li_sin.L2,
                          loss="squared", train_readout=False)
    start = li_sin.perturbed_start(problem.formulation, 0)
    zero = start._replace(A=np.zeros_like(start.A), b=np.zeros_like(start.b))
    out: dict[str, Any] = {}
    for dtype in li_sin.DTYPES:
        for label in ("emsa", "adagrad"):
            solver = li_sin.solvers(dtype)[label]
            spread = {k: li_sin.asymmetry(problem, cdl.solve(problem, solver, init=zero,
                                                             max_iter=k).params)
                      for k in (20, 100, 500)}
            rec: dict[str, Any] = {"spread": spread}
            if label == "emsa":
                hist = cdl.solve(problem, solver, init=zero, max_iter=500).history
                cost = np.asarray([h["cost"] for h in hist])
                rise = cost[1:] / cost[:-1]
                rec["largest_rise"] = {"iteration": hist[int(np.argmax(rise)) + 1]["iteration"],
                                       "factor": float(np.max(rise))}
            out[f"{dtype}_{label}"] = rec
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(PARTS),
                        help=f"comma-separated parts of {PARTS}")
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    parts = [p for p in args.only.split(",") if p]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown parts {unknown}; choose from {PARTS}")
    out: dict[str, Any] = {"backend": jax.default_backend()}
    if "gap" in parts:
        out["gap"] = {"default_problem": gap(default_problem()), "ring40": gap(small_ring())}
    if "inner_near_stationarity" in parts:
        out["inner_near_stationarity"] = inner_near_stationarity()
    if "certificate" in parts:
        out["certificate"] = certificate()
    if "work" in parts:
        out["work"] = work()
    if "zero_start" in parts:
        out["zero_start"] = zero_start()
    json.dump(out, sys.stdout, indent=1, default=float)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
