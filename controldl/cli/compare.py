"""``controldl compare``: the same problem, several solvers, the same initialization."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from controldl.cli import common
from controldl.problem import DEFAULTS

HELP = "compare solvers on one problem: a table, figures and a short report"


def register(sub: argparse._SubParsersAction) -> None:
    from controldl.compare import DEFAULT_MAX_TIME, default_specs

    p = sub.add_parser(
        "compare", help=HELP,
        description=f"{HELP}. Defaults: {DEFAULTS.describe()}; solvers "
                    f"{', '.join(default_specs())}; every solver stops at "
                    f"the common stationarity tolerance --tol or after {DEFAULT_MAX_TIME:g} s. "
                    "Each row is timed cold (compile caches cleared before it).",
        epilog=common.EXIT_CODES)
    common.add_problem_flags(p)
    p.add_argument("--solvers", default=None, metavar="SPEC,SPEC,...",
                   help="solver specs name[:key=value...], e.g. adam:lr=0.03, emsa, "
                        "casadi:transcription=multiple, casadi:from=adam (warm start from an "
                        f"earlier row). Default: {','.join(default_specs())}; plain sgd is "
                        "left out (it does not reach the tolerance in time), and so is casadi "
                        "from the shared start (slower than adam + polish, and it stops at "
                        "another local minimum)")
    common.add_stopping_flags(p)
    p.set_defaults(max_time=None)  # DEFAULT_MAX_TIME, or the dataset's (DATASET_COMPARISONS)
    for action in p._actions:
        if "--max-time" in action.option_strings:
            action.help = (f"time limit of each solver in seconds, compilation included "
                           f"(default {DEFAULT_MAX_TIME:g})")
    p.add_argument("--out", default="runs/compare",
                   help="output directory (default runs/compare)")
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
    from controldl.compare import compare, default_specs, parse_specs, table_markdown, write_report

    if args.warm_start is not None:
        raise common.CLIError("compare starts every solver from the same initialization; "
                              "use a spec with from=LABEL to warm-start one from another")
    own = dataset_comparison(args)
    problem = common.problem_from_args(args)
    specs = [s for s in (args.solvers or "").split(",") if s.strip()] or (
        list(own.specs) if own is not None else None)
    if specs is not None:
        specs = [common.spec_with_dataset_defaults(s, common.dataset_defaults(args),
                                                   problem.data.n_train) for s in specs]
    parse_specs(specs or default_specs())  # every spec checked before anything runs
    kw = common.solve_kwargs(args)
    kw.pop("init")
    print(f"problem: {problem.describe()}", file=sys.stderr, flush=True)
    for note in common.problem_notes(problem):
        print(note, file=sys.stderr, flush=True)
    comparison = compare(problem, specs, log=lambda m: print(m, file=sys.stderr), **kw)
    out = write_report(comparison, args.out, figures=not args.no_figures)
    print(table_markdown(comparison))
    print(f"\nreport: {out / 'report.md'}")
    return comparison.exit_code
