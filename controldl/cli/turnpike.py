"""``controldl turnpike``: a resumable sweep over horizons with turnpike diagnostics.

Writes ``OUT/T=<T>/`` (one solution directory per horizon, each saved as it finishes),
``OUT/turnpike.json`` (profiles and fits, rewritten after each horizon) and
``OUT/figures/`` (profiles, error against horizon, control heat maps) at the end.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from controldl.cli import common

HELP = "sweep over horizons: terminal error against T, turnpike profiles and fits"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "turnpike", help=HELP,
        description=HELP + ". Each horizon is warm-started from the previous one (controls "
                           "interpolated in rescaled time t/T) and saved as it finishes; "
                           "--resume skips the horizons already saved in --out.")
    common.add_problem_flags(p)
    g = p.add_argument_group("sweep")
    g.add_argument("--horizons", required=True, metavar="T1,T2,...",
                   help="comma-separated horizons T > 0, e.g. 1,2,4,8,16 (solved ascending)")
    g.add_argument("--fixed", choices=("step", "layers"), default="step",
                   help="step: L = round(T/h) with h = --step; layers: L = --layers for "
                        "every T, h = T/L (default step)")
    g.add_argument("--step", type=common.finite_float, default=None, metavar="H",
                   help="the fixed step h of --fixed step (default 0.25)")
    g.add_argument("--out", required=True, metavar="DIR", help="the sweep directory")
    g.add_argument("--resume", action="store_true",
                   help="load the horizons already saved in --out instead of solving them")
    g.add_argument("--no-warm-start", action="store_true",
                   help="start every horizon from the shared initialization")
    g.add_argument("--interpolation", choices=("linear", "constant"), default="linear",
                   help="how controls are carried to the next grid in t/T (default linear)")
    g.add_argument("--no-rescale", action="store_true",
                   help="do not multiply the warm start's controls by T_prev/T")
    g.add_argument("--tail-fraction", type=common.nonneg_float, default=0.25,
                   help="final fraction of each horizon left out of the exponential fits "
                        "(default 0.25)")
    g.add_argument("--no-plots", action="store_true", help="do not draw the figures")
    p.add_argument("--solver", default="gd", choices=("gd", "msa", "emsa", "casadi"),
                   help="gd (optax), msa / emsa (Pontryagin), casadi (IPOPT) (default gd)")
    common.add_stopping_flags(p)
    common.add_solver_option_flags(p)
    # --layers means the fixed number of layers here (only with --fixed layers), and the
    # single-problem --horizon does not apply: detect whether they were given.
    p.set_defaults(run=run, layers=None, horizon=None)
    for action in p._actions:
        if "--layers" in action.option_strings:
            action.help = "the fixed number of layers L of --fixed layers (default 20)"
        elif "--horizon" in action.option_strings:
            action.help = "not used by a sweep (each horizon of --horizons sets its own)"


def run(args: argparse.Namespace) -> int:
    from controldl import turnpike
    from controldl.problem import Problem

    horizons = turnpike.parse_horizons(args.horizons)
    if args.horizon is not None:
        raise common.CLIError("--horizon is a single-problem flag; a sweep takes --horizons")
    if args.fixed == "step":
        if args.layers is not None:
            raise common.CLIError("--layers sets the fixed number of layers of --fixed layers; "
                                  "with --fixed step give --step")
        step, layers = (turnpike.DEFAULT_STEP if args.step is None else args.step), None
    else:
        if args.step is not None:
            raise common.CLIError("--step applies to --fixed step; with --fixed layers give "
                                  "--layers")
        step, layers = None, (20 if args.layers is None else args.layers)
    if not args.tail_fraction < 1:
        raise common.CLIError(f"--tail-fraction must be in [0, 1), got {args.tail_fraction}")
    grid = turnpike.horizon_grid(horizons, args.fixed, step, layers)
    # Build (and so validate) everything before anything is written.
    options = common.formulation_options(args)
    options.update(layers=grid[0][1], horizon=grid[0][0])
    problem = Problem(common.dataset_from_args(args), **options)
    solver = common.solver_from_args(args)
    kwargs = common.solve_kwargs(args)
    init = kwargs.pop("init")
    progress = kwargs.pop("progress")
    out = Path(args.out)
    t0 = time.perf_counter()
    result = turnpike.sweep(
        problem, horizons, solver, fixed=args.fixed, step=step, layers=layers, out=out,
        resume=args.resume, warm_start=not args.no_warm_start,
        interpolation=args.interpolation, rescale=not args.no_rescale, init=init,
        tail_fraction=args.tail_fraction,
        progress=progress, log=lambda s: print(s, file=sys.stderr, flush=True), **kwargs)
    swept = time.perf_counter() - t0
    figures = []
    if not args.no_plots:
        from controldl import turnpike_plots

        figures = turnpike_plots.save_figures(result, out / "figures")
    rep = result.report
    slope = rep["error_vs_horizon_slope"]
    mu = rep["control_decay_rate"]
    drawn = f", figures in {time.perf_counter() - t0 - swept:.1f} s" if figures else ""
    print(f"{len(result.solved)} horizon(s) solved, {len(result.loaded)} loaded, in "
          f"{swept:.1f} s{drawn}")
    for e in rep["horizons"]:
        print(f"  T={e['horizon']:g}  L={e['layers']}  terminal error {e['terminal_error']:.4g}"
              f"  cost {e['cost']['total']:.5g}  {e['status']}")
    print("error vs horizon slope: " + _fmt(slope, "slope"))
    print(f"control decay rate (T={mu['horizon']:g}, t ≤ {mu['window'][1]:g}): "
          + _fmt(mu, "rate"))
    mu_e = rep["running_error_decay_rate"]
    print("running error decay rate: " + _fmt(mu_e, "rate"))
    print(f"saved to {out}" + (f" (figures in {out / 'figures'})" if figures else ""))
    return 0


def _fmt(fit: dict, key: str) -> str:
    if fit is None or fit.get(key) is None:
        return "n/a" + (f" ({fit['note']})" if fit and fit.get("note") else "")
    ci = fit.get("ci95")
    ci_text = "" if ci is None else f" (95% CI {ci[0]:.3g} .. {ci[1]:.3g})"
    return f"{fit[key]:.3g}{ci_text}"
