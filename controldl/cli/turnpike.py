"""``controldl turnpike``: a resumable sweep over horizons with turnpike diagnostics.

Writes ``OUT/T=<T>/`` (one solution directory per horizon, each saved as it finishes),
``OUT/turnpike.json`` (rewritten after each horizon) and ``OUT/figures/`` at the end.
Exit code 0 when every horizon converged and the padding certificate held, 1 otherwise
(the results are still saved), 2 on bad input.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from pathlib import Path

from controldl.cli import common

TURNPIKE_TOL = 1e-6
"""The stationarity a horizon must reach to enter the fits."""

HELP = "sweep over horizons, each solved to a stationarity tolerance: E(T), certificate, μ"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "turnpike", help=HELP,
        description=HELP + ". Each horizon starts from the cheapest of the θ = 0 padded, "
                           "the t/T-rescaled and the cold start; L-BFGS finishes where the "
                           "solver stops above --tol; --resume reloads saved horizons.")
    common.add_problem_flags(p)
    g = p.add_argument_group("sweep")
    g.add_argument("--horizons", required=True, metavar="T1,T2,...",
                   help="comma-separated horizons T > 0, e.g. 2,4,8,16 (solved ascending)")
    g.add_argument("--fixed", choices=("step", "layers"), default="step",
                   help="step: L = round(T/h) with h = --step; layers: L = --layers for "
                        "every T, h = T/L (default step)")
    g.add_argument("--step", type=common.finite_float, default=None, metavar="H",
                   help="the fixed step h of --fixed step (default 0.25)")
    g.add_argument("--out", required=True, metavar="DIR",
                   help="the sweep directory: new, empty or a sweep (--resume continues it)")
    g.add_argument("--resume", action="store_true",
                   help="load the horizons already saved in --out instead of solving them")
    g.add_argument("--finish-iter", type=int, default=5000,
                   help="L-BFGS iterations to finish a horizon left above --tol "
                        "(0: no finish; default 5000)")
    g.add_argument("--starts", default="padded,rescaled,cold", metavar="KINDS",
                   help="candidate starts priced per horizon (default padded,rescaled,cold)")
    g.add_argument("--projector", choices=("init", "coordinate"), default="init",
                   help="readout of --frozen-readout: init (the random initialization) or "
                        "coordinate (W = [I | 0], c = 0) (default init)")
    g.add_argument("--interpolation", choices=("linear", "constant"), default="linear",
                   help="how the rescaled start resamples in t/T (default linear)")
    g.add_argument("--fit-longest", type=int, default=3,
                   help="number of longest converged horizons the fits use (default 3)")
    g.add_argument("--no-plots", action="store_true", help="do not draw the figures")
    _add_declared_flags(g)
    common.add_overwrite_flag(g, "turnpike sweep (a sweep is started afresh)")
    p.add_argument("--solver", default="gd", type=common.solver_name, metavar="NAME",
                   help=f"the first solver of every horizon: {common.SOLVER_HELP} (default gd)")
    common.add_stopping_flags(p, tol=TURNPIKE_TOL,
                              tol_meaning="the stationarity a horizon must reach to count "
                                          "as converged", epochs=False)
    common.add_solver_option_flags(p)
    p.set_defaults(run=run, layers=None, horizon=None)
    for action in p._actions:
        if "--layers" in action.option_strings:
            action.help = "the fixed number of layers L of --fixed layers (default 20)"
        elif "--horizon" in action.option_strings:
            action.help = "not used by a sweep (each horizon of --horizons sets its own)"


def _multiples(text: str) -> tuple[float, ...]:
    """``--extend``: ``none`` or comma-separated multiples > 1, e.g. ``2,4``."""
    if text.strip().lower() in ("none", "off", ""):
        return ()
    try:
        values = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'none' or multiples such as 2,4, got "
                                         f"{text!r}") from None
    if any(not (m > 1 and math.isfinite(m)) for m in values) or list(values) != sorted(
            set(values)):
        raise argparse.ArgumentTypeError(f"expected ascending distinct multiples > 1, got "
                                         f"{text!r}")
    return values


def _add_declared_flags(g: argparse._ArgumentGroup) -> None:
    """The flags of the :class:`SweepOptions` fields that declare one (their default and
    help come from the declaration)."""
    from controldl.studies.turnpike import SweepOptions

    defaults = SweepOptions()
    for field in dataclasses.fields(SweepOptions):
        flag = field.metadata.get("flag")
        if flag is None:
            continue
        default = getattr(defaults, field.name)
        if isinstance(default, tuple):
            shown, kind = ",".join(f"{m:g}" for m in default) or "none", _multiples
        else:
            shown, kind = f"{default:g}", common.nonneg_float
        g.add_argument(flag, dest=field.name, type=kind, default=default,
                       help=f"{field.metadata['help']} (default {shown})".replace("%", "%%"))


def _grid_args(args: argparse.Namespace) -> tuple[float | None, int | None]:
    if args.horizon is not None:
        raise common.CLIError("--horizon is a single-problem flag; a sweep takes --horizons")
    if args.warm_start is not None:
        raise common.CLIError("--warm-start does not apply: the sweep prices its own starts")
    if args.fixed == "step":
        if args.layers is not None:
            raise common.CLIError("--layers sets the fixed number of layers of --fixed "
                                  "layers; with --fixed step give --step")
        return (0.25 if args.step is None else args.step), None
    if args.step is not None:
        raise common.CLIError("--step applies to --fixed step; with --fixed layers give "
                              "--layers")
    return None, (20 if args.layers is None else args.layers)


def run(args: argparse.Namespace) -> int:
    from controldl.problem import Problem
    from controldl.solution import input_paths
    from controldl.studies import turnpike

    horizons = turnpike.parse_horizons(args.horizons)
    step, layers = _grid_args(args)
    grid = turnpike.horizon_grid(horizons, args.fixed, step, layers)
    options = common.formulation_options(args)
    options.update(layers=grid[0][1], horizon=grid[0][0])
    problem = Problem(common.dataset_from_args(args), **options)
    common.check_out(args.out, "turnpike", args, input_paths(problem))
    solver = common.solver_from_args(args)
    sweep_options = turnpike.SweepOptions(
        tol=args.tol, finish_iter=args.finish_iter,
        start_kinds=tuple(k.strip() for k in args.starts.split(",") if k.strip()),
        projector=args.projector, interpolation=args.interpolation,
        fit_longest=args.fit_longest, seed=args.seed, init_scheme=args.init,
        rate_tolerance=args.rate_tolerance, extend=args.extend,
        extend_budget=args.extend_budget)
    kwargs = {k: v for k, v in common.solve_kwargs(args).items()
              if k in ("max_iter", "max_time", "target_cost") and v is not None}
    out = Path(args.out)
    t0 = time.perf_counter()
    result = turnpike.sweep(problem, horizons, solver, options=sweep_options,
                            fixed=args.fixed, step=step, layers=layers, out=out,
                            resume=args.resume, log=turnpike.stderr_log,
                            overwrite=args.overwrite, **kwargs)
    swept = time.perf_counter() - t0
    if not args.no_plots:
        from controldl.plotting import turnpike as plots

        plots.save_figures(result, out / "figures")
    return _summary(result.report, len(result.solved), len(result.loaded), swept, out)


def _summary(rep: dict, solved: int, loaded: int, swept: float, out: Path) -> int:
    print(f"{solved} horizon(s) solved, {loaded} loaded, in {swept:.1f} s: the solves "
          f"compiled {rep['time_s']['compile']:.1f} s and ran {rep['time_s']['run']:.1f} s "
          f"(tolerance {rep['config']['tolerance']:g})")
    for e in rep["horizons"]:
        print(f"  T={e['horizon']:g}  L={e['layers']}  {e['status']:<10} stationarity "
              f"{e['stationarity']:.2e}  J {e['cost']['total']:.8g}  E(T) "
              f"{e['terminal_error']:.4g}  T·E {e['T_times_E']:.4g}  start "
              f"{(e['start'] or {}).get('chosen')}  compile {e['compile_time_s']:.2f} s  run "
              f"{e['run_time_s']:.2f} s" + ("" if e.get("requested", True) else "  (added)"))
    cert = rep["certificate"]
    if cert["applicable"]:
        print(f"padding certificate: {'holds' if cert['holds'] else 'VIOLATED'} (worst "
              f"J_T' − bound {cert['worst_violation']:.3g})")
    evh = rep["error_vs_horizon"]
    if evh["slope"] is not None:
        print(f"slope of log E against log T over T = {evh['fit_horizons']}: "
              f"{evh['slope']:.3g} (the theorem's bound E ≤ C/T has slope −1)")
    _print_rates(rep)
    for x in rep["excluded"]:
        print(f"  excluded T={x['horizon']:g}: {x['reason']}")
    print(f"saved to {out}")
    requested = {e["horizon"] for e in rep["horizons"] if e.get("requested", True)}
    pairs = [p for p in cert["pairs"] if p["to"] in requested]
    ok = (not any(x["horizon"] in requested for x in rep["excluded"])
          and all(p["holds"] is not False for p in pairs))
    return 0 if ok else 1


def _rate_text(r: dict) -> str:
    fit = r["fit"]
    after = ("" if fit["transient_time"] is None
             else f", after a second transient at t = {fit['transient_time']:g}")
    if r["model"] == "one_rate":
        ci = r["ci95"]
        return (f"{r['rate']:.3g}" + ("" if ci is None else f" [{ci[0]:.3g}, {ci[1]:.3g}]")
                + after)
    if r["model"] == "two_rates":
        return (f"two rates {r['rates'][0]:.3g} and {r['rates'][1]:.3g} (one rate would be "
                f"{r['single_rate']:.3g}){after}")
    return f"n/a ({fit['note']})"


def _print_rates(rep: dict) -> None:
    """The arc fits per horizon, the extension, and the verdict with its evidence."""
    if not rep.get("rate_per_horizon"):
        return
    print("rate μ of ‖θ_T(t)‖ + dist(x_T(t), steady set) on the entry arc, per horizon:")
    for r in rep["rate_per_horizon"]:
        print(f"  μ(T={r['horizon']:g}) = {_rate_text(r)}")
    ext = rep.get("extension")
    if ext and ext["added"]:
        print(f"added T = {', '.join(f'{T:g}' for T in ext['added'])} (not requested): "
              f"{ext['reason']}; {ext['spent_s']:.0f} s of a {ext['budget_s']:.0f} s budget")
    for x in (ext or {}).get("skipped", []):
        print(f"not added T = {x['horizon']:g}: {x['reason']}")
    v = rep["verdict"]
    print(f"verdict: {v['summary']}")
    for line in v["evidence"]:
        print(f"  - {line}")
    for key, name in (("control_norms", "‖θ_T(t)‖ alone"),
                      ("steady_state_distances", "dist(x_T(t), steady set) alone")):
        print(f"  {name}: {rep['component_verdicts'][key]['summary']}")
