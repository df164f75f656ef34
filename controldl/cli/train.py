"""``controldl train``: one problem, one solver, one solution directory."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from controldl import distributed, solvers
from controldl.cli import common
from controldl.problem import DEFAULTS
from controldl.solvers import solve

HELP = "solve one problem with one solver and save the solution directory"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help=HELP,
        description=f"{HELP} (arrays.npz + meta.json). Defaults: {DEFAULTS.describe()}, "
                    "gradient descent with Adam, the common stationarity tolerance --tol: "
                    "the same problem as a bare `controldl compare`.",
        epilog=common.EXIT_CODES)
    common.add_problem_flags(p)
    names = solvers.available()
    p.add_argument("--solver", default="gd", choices=names,
                   help=f"{', '.join(names)}: gd (optax), msa / emsa (Li et al.'s "
                        "Pontryagin algorithms), pmp-newton (layer-wise trust-region Newton "
                        "on the augmented Hamiltonian), casadi (IPOPT) (default gd)")
    common.add_stopping_flags(p)
    common.add_solver_option_flags(p)
    p.add_argument("--out", default="runs/train", help="solution directory (default runs/train)")
    p.add_argument("--plot", action="store_true", help="also write the figures to OUT/figures")
    p.add_argument("--processes", type=common.positive_int, default=1,
                   help="run the solve as this many jax.distributed processes on this "
                        "machine (the samples sharded over the devices of all of them; "
                        "process 0 writes OUT); on a cluster start one command per host "
                        f"with {distributed.COORDINATOR}, {distributed.NUM_PROCESSES} and "
                        f"{distributed.PROCESS_ID} instead (docs/scale.md) (default 1)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    in_group = distributed.initialize_from_env()  # before any JAX computation
    problem = common.problem_from_args(args)
    solver = common.solver_from_args(args)
    if args.processes > 1 and not in_group:  # the checks above ran once, here: launch
        return distributed.launch(args.argv, args.processes)
    import jax

    writer = jax.process_index() == 0
    kwargs = common.solve_kwargs(args)
    print(f"problem: {problem.describe()}", flush=True)
    common_tol = bool(args.tol) and type(solver).tolerance_option is not None
    print(f"solver: {solver.label()}, "
          + (f"stationarity tolerance {args.tol:g}" if common_tol
             else "its own convergence test"), flush=True)
    for note in common.problem_notes(problem):
        print(note, file=sys.stderr, flush=True)
    solution = solve(problem, solver, **kwargs)
    if writer:
        out = solution.save(Path(args.out))
        if args.plot:
            from controldl import plotting

            plotting.save_solution_figures(solution, out / "figures")
    print(solution.summary())
    if writer:
        print(f"saved to {out}")
    return solution.exit_code
