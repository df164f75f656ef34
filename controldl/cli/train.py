"""``controldl train``: one problem, one solver, one solution directory."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any

from controldl import distributed
from controldl.cli import common, resume
from controldl.problem import DEFAULTS
from controldl.solution import input_paths
from controldl.solvers import checkpoint, solve
from controldl.solvers.memory import check_fits
from controldl.status import Status

HELP = "solve one problem with one solver and save the solution directory"
STOP_SIGNALS: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)
"""The signals that stop a solve of ``train`` at its next iteration (status interrupted,
the best iterate and a checkpoint saved, exit code 130)."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help=HELP,
        description=f"{HELP} (arrays.npz + meta.json). Defaults: {DEFAULTS.describe()}, "
                    "gradient descent with Adam, the common stationarity tolerance --tol: "
                    "the same problem as a bare `controldl compare`.",
        epilog=common.EXIT_CODES)
    common.add_problem_flags(p)
    p.add_argument("--solver", default="gd", type=common.solver_name, metavar="NAME",
                   help=common.SOLVER_HELP + " (default gd, with --optimizer adam)")
    common.add_stopping_flags(p)
    common.add_long_run_flags(p)
    common.add_solver_option_flags(p)
    p.add_argument("--out", default=None,
                   help="solution directory: new, empty or a previous solution, which is "
                        "replaced (default runs/train; with --resume, DIR)")
    common.add_overwrite_flag(p, "solution")
    p.add_argument("--plot", action="store_true", help="also write the figures to OUT/figures")
    p.add_argument("--processes", type=common.positive_int, default=1,
                   help="run the solve as this many jax.distributed processes on this "
                        "machine (the samples sharded over the devices of all of them; "
                        "process 0 writes OUT); on a cluster start one command per host "
                        f"with {distributed.COORDINATOR}, {distributed.NUM_PROCESSES} and "
                        f"{distributed.PROCESS_ID} instead (docs/scale.md) (default 1)")
    p.set_defaults(run=run, command_parser=p)


def _resumed(args: argparse.Namespace) -> tuple[Any, Any, dict[str, Any], Path]:
    """``(problem, solver, solve kwargs, default out)`` of ``--resume DIR``: the problem,
    the solver and the tolerance are the checkpoint's (a problem or solver flag given with
    another value is refused, :mod:`controldl.cli.resume`); the limits given override
    its."""
    where = checkpoint.locate(args.resume)
    ck = checkpoint.load(where)
    resume.check_given(args.command_parser, args.argv[1:], ck, args.solver_flags)
    kwargs = common.solve_kwargs(args)
    kwargs.update(init=None, tol=None, resume=ck)
    out = where.parent if where.name == checkpoint.SUBDIRECTORY else where
    return ck.problem, checkpoint.solver_of(ck), kwargs, out


def run(args: argparse.Namespace) -> int:
    in_group = distributed.initialize_from_env()  # before any JAX computation
    if args.resume is not None:
        problem, solver, kwargs, out_dir = _resumed(args)
        out_dir = Path(args.out) if args.out is not None else out_dir
    else:
        problem = common.problem_from_args(args)
        solver = common.solver_from_args(args, problem.data.n_train)
        kwargs, out_dir = common.solve_kwargs(args), Path(args.out or "runs/train")
    common.check_out(out_dir, "solution", args, input_paths(problem))
    if args.processes > 1 and not in_group:  # the checks above ran once, here: launch
        return distributed.launch(args.argv, args.processes)
    check_fits(problem, solver)  # each process (the launcher leaves the devices alone)
    import jax

    if args.resume is not None:
        print(f"resuming {solver.label()} at iteration {kwargs['resume'].iteration} "
              f"from {args.resume}", flush=True)
    writer = jax.process_index() == 0  # one process writes OUT and the checkpoints
    print(f"problem: {problem.describe()}", flush=True)
    tol = kwargs["resume"].stopping["tol"] if args.resume is not None else args.tol
    common_tol = bool(tol) and type(solver).tolerance_option is not None
    print(f"solver: {solver.label()}, "
          + (f"stationarity tolerance {tol:g}" if common_tol
             else "its own convergence test"), flush=True)
    for note in common.problem_notes(problem):
        print(note, file=sys.stderr, flush=True)
    every = args.checkpoint_every_s if writer else None
    try:
        solution = solve(problem, solver, **kwargs, signals=STOP_SIGNALS,
                         checkpoint_every_s=every, checkpoint_dir=None if every is None
                         else out_dir / checkpoint.SUBDIRECTORY)
    except checkpoint.SolveInterrupted as stop:  # saved below, exit code 130
        solution = stop.solution
    if not writer:  # process 0 writes
        print(solution.summary())
        return solution.exit_code
    out = solution.save(out_dir, overwrite=args.overwrite)
    if args.plot:
        from controldl import plotting

        plotting.save_solution_figures(solution, out / "figures")
    print(solution.summary())
    print(f"saved to {out}")
    if solution.status == Status.INTERRUPTED:
        kept = (f"resume with `controldl train --resume {out}`" if solution.checkpoint
                else "this solver keeps no checkpoint: warm-start from it")
        print(f"controldl: interrupted at iteration {solution.iterations}; the best iterate "
              f"is saved in {out}: {kept}", file=sys.stderr, flush=True)
    return solution.exit_code
