"""``controldl compare``: the same problem, several solvers, the same initialization."""

from __future__ import annotations

import argparse
import sys

from controldl.cli import common

HELP = "compare solvers on one problem: a table, figures and a short report"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare", help=HELP,
        description=HELP + ". Defaults: the built-in ring (600 points, a quarter held out), "
                           "width 3, L = 20, T = 5, l2 1e-3, every available solver.")
    common.add_problem_flags(p)
    p.set_defaults(width=3, horizon=5.0, l2=1e-3, test_fraction=0.25)
    p.add_argument("--solvers", default=None, metavar="SPEC,SPEC,...",
                   help="solver specs name[:key=value...], e.g. adam:lr=0.03, emsa, "
                        "casadi:transcription=multiple, casadi:from=adam (warm start from an "
                        "earlier row). Default: sgd, adam, lbfgs, msa, emsa, casadi, "
                        "casadi:from=adam (those installed)")
    common.add_stopping_flags(p)
    p.set_defaults(max_time=25.0)
    p.add_argument("--out", default="runs/compare",
                   help="output directory (default runs/compare)")
    p.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from controldl.compare import compare, table_markdown, write_report

    if args.warm_start is not None:
        raise common.CLIError("compare starts every solver from the same initialization; "
                              "use a spec with from=LABEL to warm-start one from another")
    problem = common.problem_from_args(args)
    specs = [s for s in (args.solvers or "").split(",") if s.strip()] or None
    kw = common.solve_kwargs(args)
    kw.pop("init")
    comparison = compare(problem, specs, log=lambda m: print(m, file=sys.stderr), **kw)
    out = write_report(comparison, args.out, figures=not args.no_figures)
    print(table_markdown(comparison))
    print(f"\nreport: {out / 'report.md'}")
    return 0
