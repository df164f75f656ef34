r"""The horizon sweep: every horizon solved to a stated tolerance from the cheapest start,
certified against its predecessor, then measured.

For each horizon ``T`` (ascending):

1. the candidate starts (:mod:`~controldl.studies.turnpike.starts`: ``padded`` in
   absolute time with ``θ = 0``, ``rescaled`` in ``t/T``, ``cold``) are priced by ``J_T``
   and the cheapest is kept; a warm start records its predecessor (horizon, directory,
   wall time and the chain's wall time so far);
2. the solver runs from it; where the stationarity
   ``‖θ − Π(prox(θ − ∇f))‖`` (:func:`controldl.stationarity`) is still above ``tol``,
   L-BFGS (``GradientDescent("lbfgs")``) finishes from its result. The horizon is
   ``converged`` when the stationarity is at most ``tol``;
3. on a fixed-step grid the padding certificate
   ``J_{T'} ≤ J_T + γ(T' − T)·E_T(T) (+ (α/2h)‖θ_{L−1}‖²)`` is checked against the
   previous horizon; a violation marks the horizon ``failed``.

Fits (:mod:`~controldl.studies.turnpike.fits`) use the horizons that converged and passed
the certificate; the others are listed in ``excluded`` with the reason. ``OUT/T=<T>/``
holds each horizon's solution (saved as it finishes) and ``OUT/turnpike.json`` the report
(rewritten after each horizon); ``resume`` reloads the horizons already saved.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import controldl
from controldl.data import Dataset
from controldl.io import atomic_directory, check_output, jsonable, marked, output_kind, write_json
from controldl.problem import FORMULATION_KEYS, Params, Problem
from controldl.solution import Solution, input_paths, load
from controldl.solvers.base import Solver, solve
from controldl.status import Status
from controldl.studies.turnpike import fits, grid, starts
from controldl.studies.turnpike.profiles import profiles, steady_set

REPORT_NAME = "turnpike.json"
DEFAULT_TOL = 1e-6


@dataclasses.dataclass(frozen=True)
class SweepOptions:
    """How each horizon is started, solved and measured.

    Attributes:
        tol: the stationarity a horizon must reach to count as converged.
        finisher: the solver that finishes a horizon the first solver left above ``tol``
            (default ``GradientDescent("lbfgs", grad_tol=tol)``); ``finish_iter`` its
            iteration budget.
        start_kinds: the candidate starts priced for every horizon after the first.
        projector: the readout of a frozen-readout problem (``init`` or ``coordinate``,
            :func:`~controldl.studies.turnpike.starts.fixed_projector`).
        interpolation: how the ``rescaled`` start resamples in ``t/T``.
        fit_longest: how many of the longest converged horizons the fits use.
        n_boot: bootstrap resamples of each two-arc fit.
        seed, init_scheme: the shared initialization of the ``cold`` start.
    """

    tol: float = DEFAULT_TOL
    finisher: Solver | None = None
    finish_iter: int = 5000
    start_kinds: tuple[str, ...] = starts.START_KINDS
    projector: str = "init"
    interpolation: str = "linear"
    fit_longest: int = 3
    n_boot: int = 100
    seed: int = 0
    init_scheme: str = "normal"

    def __post_init__(self) -> None:
        if not (self.tol > 0 and math.isfinite(self.tol)):
            raise ValueError(f"tol must be a finite number > 0, got {self.tol!r}")
        unknown = set(self.start_kinds) - set(starts.START_KINDS)
        if unknown or not self.start_kinds:
            raise ValueError(f"start kinds must be among {', '.join(starts.START_KINDS)}, "
                             f"got {', '.join(self.start_kinds) or 'none'}")
        if self.projector not in starts.PROJECTORS:
            raise ValueError(f"projector must be {' or '.join(starts.PROJECTORS)}, "
                             f"got {self.projector!r}")
        if self.interpolation not in starts.INTERPOLATION_METHODS:
            raise ValueError(f"unknown interpolation {self.interpolation!r}")
        if self.fit_longest < 2:
            raise ValueError(f"fit_longest must be >= 2, got {self.fit_longest}")
        if self.finish_iter < 0:
            raise ValueError(f"finish_iter must be >= 0, got {self.finish_iter}")

    def finishing_solver(self) -> Solver:
        return self.finisher or controldl.GradientDescent("lbfgs", grad_tol=self.tol)


@dataclasses.dataclass
class TurnpikeResult:
    """What :func:`sweep` returns: ``report`` (``turnpike.json``), ``solutions``
    ``{T: Solution}``, the horizons ``solved`` and ``loaded`` in this call, ``out``."""

    report: dict[str, Any]
    solutions: dict[float, Solution]
    solved: list[float]
    loaded: list[float]
    out: Path | None


# --------------------------------------------------------------------------- one horizon


def _stage(solution: Solution, stationarity: float) -> dict[str, Any]:
    return {"solver": solution.solver.get("label", solution.solver.get("name")),
            "status": str(solution.status), "iterations": solution.iterations,
            "wall_time_s": solution.wall_time_s, "compile_time_s": solution.compile_time_s,
            "cost": solution.cost["total"], "stationarity": stationarity}


def solve_to_tolerance(problem: Problem, start: Params | None, solver: Solver,
                       options: SweepOptions, **solve_kwargs: Any) -> Solution:
    """``solver`` from ``start``, then the finisher where the stationarity is above
    ``options.tol``. The returned solution's status is ``converged`` when the final
    stationarity is at most ``tol`` (else the last stage's), its iterations and times add
    the stages, and ``stats`` holds ``stages`` and ``stationarity``."""
    first = solve(problem, solver, init=start, **solve_kwargs)
    s = controldl.stationarity(problem, first.params)
    stages, final = [_stage(first, s)], first
    finisher = options.finishing_solver()
    if not s <= options.tol and math.isfinite(first.cost["total"]) and options.finish_iter:
        kwargs = {k: v for k, v in solve_kwargs.items() if k in ("callback", "max_time")}
        final = solve(problem, finisher, init=first.params, max_iter=options.finish_iter,
                      **kwargs)
        s = controldl.stationarity(problem, final.params)
        stages.append(_stage(final, s))
    status = Status.CONVERGED if s <= options.tol else Status(final.status)
    if status is Status.CONVERGED and final.status not in (
            Status.CONVERGED, Status.MAX_ITER, Status.STALLED, Status.TARGET_REACHED):
        status = Status(final.status)
    offset = first.wall_time_s if final is not first else 0.0
    history = first.history + ([{**e, "time_s": e["time_s"] + offset} for e in final.history]
                               if final is not first else [])
    return dataclasses.replace(
        final, status=status, history=history,
        iterations=sum(st["iterations"] for st in stages),
        wall_time_s=sum(st["wall_time_s"] for st in stages),
        compile_time_s=sum(st["compile_time_s"] for st in stages),
        solver={**first.solver, "finisher": finisher.label() if final is not first else None},
        stats={**final.stats, "stages": stages, "stationarity": s, "tolerance": options.tol})


def _candidates(problem: Problem, previous: Solution | None, options: SweepOptions
                ) -> dict[str, Params]:
    cold = starts.cold_start(problem, options.seed, options.init_scheme, options.projector)
    if previous is None:
        return {"cold": cold}
    out: dict[str, Params] = {}
    L, prev = problem.layers, previous.problem
    kinds = options.start_kinds
    if ("padded" in kinds and starts.padding_applicable(problem) is None
            and starts.same_step(prev.h, problem.h) and L >= prev.layers):
        out["padded"] = starts.pad_controls(previous.params, L)
    if "rescaled" in kinds:
        out["rescaled"] = starts.interpolate_controls(
            previous.params, L, options.interpolation, prev.horizon / problem.horizon)
    if "cold" in kinds or not out:
        out["cold"] = cold
    return out


def _padding_record(problem: Problem, solution: Solution, next_problem: Problem | None
                    ) -> dict[str, Any]:
    """The bound this horizon gives the next one, or why there is none."""
    if next_problem is None:
        return {"padding_bound_next": None, "padding_reason": "last horizon"}
    why = starts.padding_applicable(problem)
    if why is None and not starts.same_step(problem.h, next_problem.h):
        why = f"steps differ ({problem.h:g} → {next_problem.h:g})"
    if why is not None:
        return {"padding_bound_next": None, "padding_reason": why}
    return {"padding_bound_next": starts.padding_bound(problem, solution.params,
                                                       solution.cost["total"],
                                                       next_problem.horizon),
            "padding_reason": None}


def _entry(T: float, problem: Problem, solution: Solution, start: dict[str, Any],
           source: str) -> dict[str, Any]:
    prof = profiles(problem, solution.params)
    stats = solution.stats
    s = stats.get("stationarity")
    if s is None:
        s = controldl.stationarity(problem, solution.params)
    return {
        "horizon": T, "layers": problem.layers, "step": problem.h,
        "directory": grid.horizon_dirname(T), "source": source,
        "status": str(solution.status), "solver_status": str(solution.status),
        "stationarity": s, "tolerance": stats.get("tolerance"),
        "converged": solution.status == Status.CONVERGED, "stages": stats.get("stages"),
        "start": start, "iterations": solution.iterations,
        "wall_time_s": solution.wall_time_s, "compile_time_s": solution.compile_time_s,
        "run_time_s": solution.wall_time_s - solution.compile_time_s, "cost": solution.cost,
        "train_accuracy": solution.train_accuracy, "test_accuracy": solution.test_accuracy,
        "T_times_E": T * prof.terminal_error, **prof.to_json(),
    }


# --------------------------------------------------------------------------- the report


def _excluded(entries: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict]]:
    used, excluded = [], []
    for e in entries:
        if e.get("failure"):
            excluded.append({"horizon": e["horizon"], "reason": e["failure"]})
        elif not e["converged"]:
            excluded.append({"horizon": e["horizon"], "reason":
                             f"not converged: {e['solver_status']}, stationarity "
                             f"{e['stationarity']:.3g} > tolerance {e['tolerance']}"})
        else:
            used.append(e)
    return used, excluded


def _certificate(entries: list[dict[str, Any]]) -> dict[str, Any]:
    pairs = [starts.certificate_pair(a, b) for a, b in zip(entries[:-1], entries[1:],
                                                            strict=True)]
    checked = [p for p in pairs if p["holds"] is not None]
    worst = max((p["violation"] for p in checked), default=None)
    return {"applicable": bool(checked), "holds": all(p["holds"] for p in checked)
            if checked else None, "worst_violation": worst, "pairs": pairs}


def _fits(problem: Problem, entries: list[dict[str, Any]], solutions: dict[float, Solution],
          options: SweepOptions) -> dict[str, Any]:
    used, excluded = _excluded(entries)
    evh = fits.error_vs_horizon([e["horizon"] for e in used],
                                [e["terminal_error"] for e in used], options.fit_longest)
    out: dict[str, Any] = {"excluded": excluded, "error_vs_horizon": evh,
                           "error_vs_horizon_slope": {"slope": evh["slope"],
                                                      "horizons": evh["fit_horizons"],
                                                      "bound_slope": -1.0}}
    steady = steady_set(problem)
    if steady.defined:
        rates = [fits.fit_two_arc(e["control_times"], e["turnpike_distances"], e["horizon"],
                                  n_boot=options.n_boot) for e in used]
        out["rate_per_horizon"] = [{"horizon": r["horizon"], "rate": r["rate"],
                                    "ci95": r["ci95"], "fit": r} for r in rates]
        out["rate_agreement"] = fits.rate_agreement(rates, options.fit_longest)
        controls = [fits.fit_two_arc(e["control_times"], e["control_norms"], e["horizon"],
                                     n_boot=options.n_boot) for e in used]
        out["control_rate_per_horizon"] = [{"horizon": r["horizon"], "rate": r["rate"],
                                            "ci95": r["ci95"], "fit": r} for r in controls]
        out["control_rate_agreement"] = fits.rate_agreement(controls, options.fit_longest)
    else:
        out["rate_per_horizon"] = None
        out["drift"] = [{"horizon": e["horizon"], "state_norm_at_T": e["state_norms"][-1],
                         "mean_margin_at_T": (e["mean_margins"] or [None])[-1]} for e in used]
    params = {e["horizon"]: solutions[e["horizon"]].params for e in used}
    if params:
        gaps = fits.control_gap_to_longest(params, {e["horizon"]: e["step"] for e in used})
        out["control_gap_to_longest"] = [{"horizon": T, **g} for T, g in gaps.items()]
        out["rescaled_controls"] = fits.rescaled_controls_convergence(params)
    return out


DEFINITIONS: dict[str, str] = {
    "stationarity": "‖θ − Π(prox_l1(θ − ∇f(θ)))‖₂ over controls and readout "
                    "(controldl.stationarity); converged when ≤ tolerance",
    "terminal_error": "E_T(T) = (1/N) Σ_i ℓ(W x_i(L) + c, y_i), the empirical risk at T",
    "T_times_E": "T·E_T(T); Esteve et al. bound it (E ≤ C/T) for the L² problem",
    "certificate": "J_{T'} ≤ J_T + γ(T'−T)·E_T(T) + (α/2h)‖θ_{L−1}‖² between successive "
                   "fixed-step horizons (the cost of the θ = 0 padded start)",
    "turnpike_distances": "‖θ_k‖ + RMS_i dist(x_i(t_k), {x : W x + c = y_i}), k = 0..L−1",
    "rate_per_horizon": "μ of C1·e^{−μt} + C2·e^{−μ(T−t)} + floor fitted to "
                        "turnpike_distances in absolute time; ci95 from a moving-block "
                        "bootstrap of the log residuals",
    "control_rate_per_horizon": "the same two-arc fit to control_norms ‖θ_k‖ alone",
    "compile_time_s": "the horizon's seconds spent compiling or building before its first "
                      "iteration (its stages summed); run_time_s: wall_time_s minus it",
    "rescaled_controls": "L²(0,1) distance of u_T(s) = T·θ_T(sT) between successive T",
}


def _config(problem: Problem, horizons: list[tuple[float, int]], solver: Solver,
            options: SweepOptions, fixed: str, step: float | None, solve_kwargs: dict
            ) -> dict[str, Any]:
    return {
        "horizons": [T for T, _ in horizons], "layers": [L for _, L in horizons],
        "fixed": fixed, "step": step,
        "solver": {"name": solver.name, "label": solver.label(), "options": solver.options()},
        "finisher": options.finishing_solver().label(), "finish_iter": options.finish_iter,
        "tolerance": options.tol, "start_kinds": list(options.start_kinds),
        "projector": options.projector, "interpolation": options.interpolation,
        "fit_longest": options.fit_longest, "solve": dict(solve_kwargs),
        "problem": {k: getattr(problem.formulation, k) for k in FORMULATION_KEYS
                    if k not in ("layers", "horizon")},
        "data": problem.data.source, "n_train": problem.data.n_train,
        "steady_set": steady_set(problem)._asdict(),
    }


# --------------------------------------------------------------------------- the sweep


def _prepare(problem: Problem | Dataset, problem_options: Mapping[str, Any] | None,
             solver: Solver) -> Problem:
    if isinstance(problem, Dataset):
        problem = Problem(problem, **dict(problem_options or {}))
    elif problem_options:
        problem = problem.replace(**dict(problem_options))
    if not isinstance(problem, Problem):
        raise ValueError(f"problem must be a controldl.Problem or Dataset, got "
                         f"{type(problem).__name__}")
    if not isinstance(solver, Solver):
        raise ValueError(f"solver must be a controldl solver, got {type(solver).__name__}")
    return problem


def _check_out(out_dir: Path | None, resume: bool, overwrite: bool, keep: tuple[str, ...]
               ) -> None:
    """``out_dir`` is new, empty or a sweep (:func:`controldl.io.check_output`); a sweep
    with solved horizons only with ``resume`` (or ``overwrite``, which starts afresh)."""
    if out_dir is None:
        return
    check_output(out_dir, "turnpike", overwrite=overwrite, keep=keep)
    if not resume and not overwrite and out_dir.is_dir():
        done = sorted(p.name for p in out_dir.glob("T=*") if p.is_dir())
        if done:
            raise ValueError(f"{out_dir} already holds a sweep ({', '.join(done)}): "
                             "continue it with resume (--resume), start afresh with "
                             "overwrite (--overwrite), or choose another output directory")


def _start_out(out_dir: Path | None, resume: bool, overwrite: bool, keep: tuple[str, ...],
               first_report: dict[str, Any]) -> None:
    """Put a fresh sweep directory holding ``turnpike.json`` (no horizon yet) in place of
    ``out_dir`` (atomically), unless ``resume`` continues the sweep there."""
    if out_dir is None or (resume and output_kind(out_dir) == "turnpike"):
        return
    atomic_directory(out_dir, lambda tmp: write_json(tmp / REPORT_NAME, first_report, indent=1),
                     kind="turnpike", overwrite=overwrite, keep=keep)


def _start_horizon(problem: Problem, previous: Solution | None, prev_entry: dict | None,
                   options: SweepOptions) -> tuple[Params, dict[str, Any]]:
    """The cheapest candidate start and its record (prices, predecessor)."""
    prices = starts.price_starts(problem, _candidates(problem, previous, options))
    best = prices[0]
    pred = None
    if best.kind != "cold" and prev_entry is not None:
        pred = {"horizon": prev_entry["horizon"], "directory": prev_entry["directory"],
                "wall_time_s": prev_entry["wall_time_s"],
                "chain_wall_time_s": prev_entry["chain_wall_time_s"]}
    return best.params, {"chosen": best.kind, "prices": {p.kind: p.cost for p in prices},
                         "predecessor": pred}


def _solve_horizon(prob: Problem, previous: Solution | None, prev_entry: dict | None,
                   solver: Solver, options: SweepOptions, target: Path | None,
                   solve_kwargs: dict) -> tuple[Solution, dict[str, Any]]:
    params, start = _start_horizon(prob, previous, prev_entry, options)
    solution = solve_to_tolerance(prob, params, solver, options, **solve_kwargs)
    solution.stats["start"] = start
    solution.stats["warm_start"] = start["predecessor"]
    if target is not None:
        solution.save(target)
    return solution, start


def _load_horizon(target: Path, prob: Problem) -> Solution:
    solution = load(target)
    why = _same_problem(solution.problem, prob)
    if why is not None:
        raise ValueError(f"{target} belongs to another problem ({why}); use another output "
                         "directory")
    return solution


def _finish_entry(entry: dict[str, Any], prev_entry: dict | None, solution: Solution,
                  prob: Problem, next_prob: Problem | None) -> None:
    """Chain time, the certificate against the previous horizon, the next bound."""
    pred = (entry["start"] or {}).get("predecessor")
    entry["chain_wall_time_s"] = entry["wall_time_s"] + (pred["chain_wall_time_s"]
                                                         if pred else 0.0)
    if prev_entry is not None:
        pair = starts.certificate_pair(prev_entry, entry)
        if pair["holds"] is False:
            entry["status"] = str(Status.FAILED)
            entry["failure"] = (f"padding certificate violated: J = {pair['cost']:.10g} > "
                                f"bound {pair['bound']:.10g} (by {pair['violation']:.3g})")
    entry.update(_padding_record(prob, solution, next_prob))


def sweep(problem: Problem | Dataset, horizons: Sequence[float], solver: Solver, *,
          options: SweepOptions | None = None, fixed: str = "step", step: float | None = None,
          layers: int | None = None, out: str | os.PathLike | None = None,
          resume: bool = False, problem_options: Mapping[str, Any] | None = None,
          log: Callable[[str], Any] | None = None, overwrite: bool = False,
          **solve_kwargs: Any) -> TurnpikeResult:
    """Solve ``problem`` for every horizon (ascending), as the module docstring says.

    ``fixed="step"``: ``L = round(T/step)`` (``step`` default 0.25); ``fixed="layers"``:
    ``L = layers`` for every ``T``. ``solve_kwargs`` go to :func:`controldl.solve` for the
    first solver (``max_iter``, ``max_time``, ``callback``…). Returns a
    :class:`TurnpikeResult` whose ``report`` is ``turnpike.json``. ``out`` must be new,
    empty or a sweep (continued with ``resume``); anything else, or a sweep to start
    afresh, only with ``overwrite`` (:func:`controldl.io.check_output`).
    """
    options = options or SweepOptions()
    problem = _prepare(problem, problem_options, solver)
    if "init" in solve_kwargs or "seed" in solve_kwargs or "init_scheme" in solve_kwargs:
        raise ValueError("the sweep chooses each start itself; give seed and init_scheme "
                         "in SweepOptions")
    hz = grid.horizon_grid(horizons, fixed, step, layers)
    problems = [problem.replace(layers=L, horizon=T) for T, L in hz]
    out_dir = None if out is None else Path(out)
    keep = input_paths(problem)
    _check_out(out_dir, resume, overwrite, keep)
    old = _old_entries(out_dir) if resume else {}
    config = _config(problem, hz, solver, options, fixed,
                     (step or grid.DEFAULT_STEP) if fixed == "step" else None, solve_kwargs)
    entries: list[dict[str, Any]] = []
    solutions: dict[float, Solution] = {}
    solved, loaded = [], []
    t0 = time.perf_counter()
    _start_out(out_dir, resume, overwrite, keep,
               _report(config, [], {}, problem, options, t0, len(hz), final=False))
    for k, ((T, L), prob) in enumerate(zip(hz, problems, strict=True)):
        target = None if out_dir is None else out_dir / grid.horizon_dirname(T)
        prev_entry = entries[-1] if entries else None
        previous = solutions[entries[-1]["horizon"]] if entries else None
        if resume and target is not None and target.is_dir():
            solution, source = _load_horizon(target, prob), "loaded"
            start = solution.stats.get("start") or old.get(grid.horizon_dirname(T), {}).get(
                "start")
            loaded.append(T)
        else:
            solution, start = _solve_horizon(prob, previous, prev_entry, solver, options,
                                             target, solve_kwargs)
            source = "solved"
            solved.append(T)
        solutions[T] = solution
        entry = _entry(T, prob, solution, start, source)
        _finish_entry(entry, prev_entry, solution, prob,
                      problems[k + 1] if k + 1 < len(problems) else None)
        entries.append(entry)
        if log:
            log(f"[{k + 1}/{len(hz)}] T={T:g} (L={L}): {entry['status']}, stationarity "
                f"{entry['stationarity']:.2e}, cost {entry['cost']['total']:.8g}, start "
                f"{(start or {}).get('chosen')}, {entry['wall_time_s']:.1f} s (compile "
                f"{entry['compile_time_s']:.1f} s); sweep "
                f"{time.perf_counter() - t0:.1f} s")
        if out_dir is not None:
            write_json(out_dir / REPORT_NAME, _report(config, entries, solutions,
                                                              problem, options, t0, len(hz),
                                                              final=False), indent=1)
    report = _report(config, entries, solutions, problem, options, t0, len(hz), final=True)
    if out_dir is not None:
        write_json(out_dir / REPORT_NAME, report, indent=1)
    return TurnpikeResult(jsonable(report), solutions, solved, loaded, out_dir)


def _report(config: dict, entries: list[dict], solutions: dict[float, Solution],
            problem: Problem, options: SweepOptions, t0: float, n: int, final: bool
            ) -> dict[str, Any]:
    """``turnpike.json``; the fits (with their bootstrap) only once the sweep is done."""
    rep = {**marked("turnpike", {}), "config": config, "definitions": DEFINITIONS,
           "horizons": entries,
           "certificate": _certificate(entries), "elapsed_s": time.perf_counter() - t0,
           "complete": len(entries) == n,
           "time_s": {"compile": sum(e["compile_time_s"] for e in entries),
                      "run": sum(e["run_time_s"] for e in entries)}}
    if final:
        rep.update(_fits(problem, entries, solutions, options))
    return rep


def _old_entries(out_dir: Path | None) -> dict[str, Any]:
    if out_dir is None or not (out_dir / REPORT_NAME).is_file():
        return {}
    try:
        old = json.loads((out_dir / REPORT_NAME).read_text())
        return {e["directory"]: e for e in old.get("horizons", [])}
    except (ValueError, KeyError, TypeError, AttributeError):
        return {}


def _same_problem(saved: Problem, expected: Problem) -> str | None:
    """Why a saved solution does not belong to this sweep (``None`` when it does)."""
    for k in FORMULATION_KEYS:
        a, b = getattr(saved.formulation, k), getattr(expected.formulation, k)
        if isinstance(b, float) and isinstance(a, int | float) and a is not None:
            if not math.isclose(float(a), b, rel_tol=1e-12, abs_tol=0.0):
                return f"{k} = {a!r}, this sweep has {b!r}"
        elif a != b:
            return f"{k} = {a!r}, this sweep has {b!r}"
    d0, d1 = saved.data, expected.data
    if (d0.X_train.shape != d1.X_train.shape or not np.array_equal(d0.X_train, d1.X_train)
            or not np.array_equal(np.asarray(d0.y_train), np.asarray(d1.y_train))):
        return "the training data differ"
    return None


def load_sweep(out: str | os.PathLike) -> tuple[dict[str, Any], dict[float, Solution]]:
    """Read ``turnpike.json`` and the solutions it lists from a sweep directory."""
    out = Path(out)
    path = out / REPORT_NAME
    if not path.is_file():
        raise ValueError(f"{out} is not a turnpike sweep: {REPORT_NAME} is missing")
    report = json.loads(path.read_text())
    solutions = {float(e["horizon"]): load(out / e["directory"]) for e in report["horizons"]}
    return report, solutions


def stderr_log(line: str) -> None:
    """A ``log`` for :func:`sweep` that prints each line to stderr."""
    print(line, file=sys.stderr, flush=True)
