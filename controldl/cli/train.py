"""``controldl train``: one problem, one solver, one solution directory."""

from __future__ import annotations

import argparse
from pathlib import Path

from controldl.cli import common
from controldl.solvers import solve

HELP = "solve one problem with one solver and save the solution directory"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help=HELP, description=HELP + " (arrays.npz + meta.json).")
    common.add_problem_flags(p)
    p.add_argument("--solver", default="gd", choices=("gd", "msa", "emsa", "casadi"),
                   help="gd (optax), msa / emsa (Pontryagin), casadi (IPOPT) (default gd)")
    common.add_stopping_flags(p)
    common.add_solver_option_flags(p)
    p.add_argument("--out", default="runs/train", help="solution directory (default runs/train)")
    p.add_argument("--plot", action="store_true", help="also write the figures to OUT/figures")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    problem = common.problem_from_args(args)
    solver = common.solver_from_args(args)
    solution = solve(problem, solver, **common.solve_kwargs(args))
    out = solution.save(Path(args.out))
    if args.plot:
        from controldl import plotting

        plotting.save_solution_figures(solution, out / "figures")
    print(solution.summary())
    print(f"saved to {out}")
    return 0
