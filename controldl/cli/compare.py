"""``controldl compare``: the same problem, several solvers, the same initialization."""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
from typing import Any

from controldl.cli import common
from controldl.problem import DEFAULTS

HELP = "compare solvers on one problem: a table, figures and a short report"


def register(sub: argparse._SubParsersAction) -> None:
    from controldl.compare import DEFAULT_MAX_TIME, DISCRETE_SPECS, default_specs

    p = sub.add_parser(
        "compare", help=HELP,
        description=f"{HELP}. Defaults: {DEFAULTS.describe()}; solvers "
                    f"{', '.join(default_specs())}; every solver stops at "
                    f"the common stationarity tolerance --tol or after {DEFAULT_MAX_TIME:g} s. "
                    "Each row is timed cold (compile caches cleared before it).",
        epilog=common.EXIT_CODES)
    common.add_problem_flags(p)
    p.add_argument("--solvers", action="append", default=None, metavar="SPEC,SPEC,...",
                   help="solver specs name[:key=value...] (a name of `controldl train "
                        "--solver`, i.e. a solver or an optax optimizer), e.g. adam:lr=0.03, "
                        "emsa, "
                        "casadi:transcription=multiple, casadi:from=adam (warm start from an "
                        f"earlier row). Default: {','.join(default_specs())} "
                        f"({','.join(DISCRETE_SPECS)} with --controls binary or ternary); "
                        "plain sgd is "
                        "left out (it does not reach the tolerance in time), and so is casadi "
                        "from the shared start (slower than adam + polish, and it stops at "
                        "another local minimum). Given more than once, the lists are "
                        "joined")
    common.add_stopping_flags(p)
    p.set_defaults(max_time=None)  # DEFAULT_MAX_TIME, or the dataset's (DATASET_COMPARISONS)
    for action in p._actions:
        if "--max-time" in action.option_strings:
            action.help = (f"time limit of each solver in seconds, compilation included "
                           f"(default {DEFAULT_MAX_TIME:g})")
    p.add_argument("--out", default="runs/compare",
                   help="output directory: new, empty or a previous comparison, which is "
                        "replaced (default runs/compare)")
    common.add_overwrite_flag(p, "comparison")
    p.add_argument("--resume", action="store_true",
                   help="continue the comparison in --out that a signal interrupted: the "
                        "rows it finished are kept, the others run (give the flags it was "
                        "run with: the problem, --solvers and the limits must be the same)")
    p.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    p.set_defaults(run=run)


def dataset_comparison(args: argparse.Namespace) -> Any:
    """The dataset's own comparison defaults (:data:`controldl.compare.DATASET_COMPARISONS`),
    applied to ``args`` where a flag is not given; ``None`` without any."""
    from controldl.compare import DATASET_COMPARISONS, DEFAULT_MAX_TIME

    own = None if args.data else DATASET_COMPARISONS.get(args.dataset or "")
    if own is not None:
        if args.n_samples is None:
            args.n_samples = own.n_samples
        if args.model is None:
            args.model = own.model
        if args.epochs is None and args.max_iter is None:
            args.epochs = own.epochs
    if args.max_time is None:
        args.max_time = own.max_time if own is not None else DEFAULT_MAX_TIME
    return own


def run(args: argparse.Namespace) -> int:
    from controldl.compare import (
        CompareInterrupted,
        compare,
        default_specs,
        finished_rows,
        parse_specs,
        table_markdown,
        write_report,
    )
    from controldl.solution import input_paths
    from controldl.solvers.memory import check_fits

    if args.warm_start is not None:
        raise common.CLIError("compare starts every solver from the same initialization; "
                              "use a spec with from=LABEL to warm-start one from another")
    own = dataset_comparison(args)
    problem = common.problem_from_args(args)
    specs = _specs(args.solvers)
    if specs is None and own is not None and not problem.formulation.discrete:
        specs = list(own.specs)  # (binary or ternary controls: the discrete line-up)
    if specs is not None:
        specs = [common.spec_with_dataset_defaults(s, common.dataset_defaults(args),
                                                   problem.data.n_train) for s in specs]
    for spec in parse_specs(specs or default_specs(problem)):  # checked before anything runs
        solver = spec.make()
        solver.check_problem(problem)
        check_fits(problem, solver)
    common.check_out(args.out, "comparison", args, input_paths(problem))
    kw = common.solve_kwargs(args)
    kw.pop("init")
    done = {}
    if args.resume:
        done = finished_rows(args.out, problem, specs, seed=kw["seed"],
                             init_scheme=kw["init_scheme"], max_iter=kw["max_iter"],
                             max_time=kw["max_time"], target_cost=kw["target_cost"],
                             tol=kw["tol"], cold=True, epochs=kw["epochs"])
    print(f"problem: {problem.describe()}", file=sys.stderr, flush=True)
    for note in common.problem_notes(problem):
        print(note, file=sys.stderr, flush=True)
    try:
        comparison = compare(problem, specs, log=lambda m: print(m, file=sys.stderr),
                             done=done, signals=(signal.SIGINT, signal.SIGTERM), **kw)
        stopped = None
    except CompareInterrupted as stop:  # the rows that finished are written below
        comparison, stopped = stop.comparison, stop.row
    out = write_report(comparison, args.out, figures=not args.no_figures,
                       overwrite=args.overwrite)
    print(table_markdown(comparison))
    print(f"\nreport: {out / 'report.md'}")
    if stopped is not None:
        again = shlex.join(["controldl", *args.argv, *([] if args.resume else ["--resume"])])
        print(f"controldl: interrupted during row {stopped!r}; the {len(comparison.solutions)} "
              f"row(s) that finished are in {out} (marked interrupted): `{again}` runs the "
              "rest", file=sys.stderr, flush=True)
        return 130
    return comparison.exit_code


def _specs(given: list[str] | None) -> list[str] | None:
    """The specs of every ``--solvers`` flag, joined (``None``: the default line-up)."""
    if given is None:
        return None
    text = ",".join(given)
    specs = [s.strip() for s in text.split(",")]
    if not any(specs) or not all(specs):
        raise common.CLIError(f"--solvers {text!r} names no solver (an empty spec); give "
                              "name[:key=value...] specs separated by commas, or leave "
                              "--solvers out for the default line-up")
    return specs
