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

Fits (:mod:`~controldl.studies.turnpike.fits`, and for tracking problems the arc fits,
the verdict and the truncation check of :mod:`~controldl.studies.turnpike.arcs` and
:mod:`~controldl.studies.turnpike.starts`) use the horizons that converged and passed the
certificate; the others are listed in ``excluded`` with the reason. A tracking problem
whose verdict over the requested horizons is not ``exponential`` gets longer horizons
(:func:`_extend`). ``OUT/T=<T>/``
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
from controldl.studies.turnpike import arcs, fits, grid, starts
from controldl.studies.turnpike.profiles import profiles, steady_set

REPORT_NAME = "turnpike.json"
DEFAULT_TOL = 1e-6


def _declared(default: Any, help: str, flag: str | None = None) -> Any:
    """A field of :class:`SweepOptions` whose help (and command-line flag) is declared with
    it: ``controldl turnpike`` builds the flag, its default and its help from here."""
    meta = {"help": help, "flag": flag}
    if isinstance(default, tuple | arcs.ArcRule):
        return dataclasses.field(default_factory=lambda: default, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


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
        n_boot: bootstrap resamples of each arc fit.
        seed, init_scheme: the shared initialization of the ``cold`` start.
        arc_rule: the window and model rule of the arc fits
            (:class:`~controldl.studies.turnpike.arcs.ArcRule`).
        rate_tolerance: the largest ``max μ / min μ − 1`` over the ``fit_longest`` horizons
            that the verdict calls T-independent.
        extend: multiples of the longest requested horizon to add (ascending) when the
            verdict over the requested horizons is not ``exponential`` (or compared fewer
            than ``fit_longest`` of them); ``()``: never.
        extend_budget: the added horizons may take at most this many times the wall time
            of the requested ones; each is predicted, before it starts, as the previous
            horizon's time times the ratio of their layer counts, and skipped (with the
            longer ones) when the prediction exceeds what is left.
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
    arc_rule: arcs.ArcRule = _declared(arcs.ArcRule(), "the arc fits' window and model rule")
    rate_tolerance: float = _declared(
        0.2, "the largest spread max μ / min μ − 1 over the longest horizons that the verdict "
             "calls T-independent", "--rate-tolerance")
    extend: tuple[float, ...] = _declared(
        (2.0, 4.0), "multiples of the longest requested horizon added when the verdict over "
                    "the requested horizons is not 'exponential' (2,4: T = 32, 64 after 16); "
                    "'none': never", "--extend")
    extend_budget: float = _declared(
        3.0, "the added horizons may take at most this many times the requested ones' wall "
             "time (each predicted from the previous one's time and layer count)",
        "--extend-budget")

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
        if not (self.rate_tolerance > 0 and math.isfinite(self.rate_tolerance)):
            raise ValueError(f"rate_tolerance must be a finite number > 0, got "
                             f"{self.rate_tolerance!r}")
        if any(not (m > 1 and math.isfinite(m)) for m in self.extend) or list(
                self.extend) != sorted(set(self.extend)):
            raise ValueError(f"extend must be ascending distinct multiples > 1 of the longest "
                             f"horizon, got {', '.join(f'{m:g}' for m in self.extend)}")
        if not (self.extend_budget >= 0 and math.isfinite(self.extend_budget)):
            raise ValueError(f"extend_budget must be a finite number >= 0, got "
                             f"{self.extend_budget!r}")

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


RATE_PROFILES: dict[str, tuple[str, str]] = {
    "turnpike_distances": ("control_times", "rate_per_horizon"),
    "control_norms": ("control_times", "control_rate_per_horizon"),
    "steady_state_distances": ("times", "distance_rate_per_horizon"),
}
"""The profiles whose arcs are fitted: the theorem's sum (the verdict's quantity) and its two
terms; their times and the report key of their per-horizon fits."""


def _rate_rows(fitted: list[arcs.ArcFit]) -> list[dict[str, Any]]:
    return [{"horizon": f.horizon, "rate": f.rate, "ci95": f.ci95, "model": f.model,
             "single_rate": f.single_rate, "rates": f.rates, "fit": f.to_json()}
            for f in fitted]


def _rates(used: list[dict[str, Any]], solutions: dict[float, Solution],
           options: SweepOptions) -> dict[str, Any]:
    """The check that no longer horizon's solution, cut to a shorter horizon, beats it; arc
    fits of every profile of :data:`RATE_PROFILES`; their verdicts (horizons whose solution
    a longer one beats are set aside)."""
    out: dict[str, Any] = {"truncation_check": starts.truncation_check(
        {e["horizon"]: solutions[e["horizon"]] for e in used})}
    beaten = {x["horizon"]: x["note"] for x in out["truncation_check"] if x["better"]}
    verdicts = {}
    for key, (times, name) in RATE_PROFILES.items():
        fitted = [arcs.fit_arc(e[times], e[key], e["horizon"], options.arc_rule,
                               options.n_boot, noise=options.tol) for e in used]
        out[name] = _rate_rows(fitted)
        verdicts[key] = arcs.verdict(fitted, options.fit_longest, options.rate_tolerance,
                                     options.arc_rule, beaten)
    out["rate_agreement"] = fits.rate_agreement(
        [{"horizon": r["horizon"], "rate": r["single_rate"]} for r in out["rate_per_horizon"]],
        options.fit_longest, options.rate_tolerance)
    out["verdict"] = {**verdicts.pop("turnpike_distances").to_json(),
                      "quantity": "turnpike_distances"}
    out["component_verdicts"] = {k: v.to_json() for k, v in verdicts.items()}
    return out


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
        out.update(_rates(used, solutions, options))
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
    "rate_per_horizon": "arc fit of turnpike_distances in absolute time "
                        "(controldl.studies.turnpike.arcs): window by levels (from half the "
                        "initial excess over the lowest value m down to 3m), one rate "
                        "a·e^{−μt} + b·e^{−μ(T−t)} + f against two rates by BIC; rate and "
                        "ci95 (moving-block bootstrap) only where one rate fits (model "
                        "one_rate), single_rate always",
    "control_rate_per_horizon": "the same arc fit to control_norms ‖θ_k‖ alone",
    "distance_rate_per_horizon": "the same arc fit to steady_state_distances alone",
    "rate_agreement": "max/min − 1 of single_rate (the one-rate fit, whether or not one rate "
                      "fits) over the longest horizons",
    "verdict": "exponential (one T-independent rate), not_single_exponential (two rates, a "
               "second transient, or a rate that depends on T) or no_arc, over the longest "
               "horizons, for turnpike_distances; component_verdicts: the same for its terms",
    "truncation_check": "J_T at the first L_T layers of a longer horizon's solution (a "
                        "feasible control for T); better: it is lower than J_T, so the T "
                        "solution is a local minimum, and the verdict sets it aside",
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


@dataclasses.dataclass
class _Run:
    """One sweep in progress: what every horizon needs, and what the horizons gave."""

    problem: Problem
    solver: Solver
    options: SweepOptions
    config: dict[str, Any]
    out_dir: Path | None
    resume: bool
    old: dict[str, Any]
    solve_kwargs: dict[str, Any]
    log: Callable[[str], Any] | None
    requested: list[float]
    t0: float = dataclasses.field(default_factory=time.perf_counter)
    entries: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    solutions: dict[float, Solution] = dataclasses.field(default_factory=dict)
    solved: list[float] = dataclasses.field(default_factory=list)
    loaded: list[float] = dataclasses.field(default_factory=list)

    def target(self, T: float) -> Path | None:
        return None if self.out_dir is None else self.out_dir / grid.horizon_dirname(T)

    def horizon(self, T: float, prob: Problem, next_prob: Problem | None, n: int) -> dict:
        """Solve (or, resuming, load) horizon ``T``; certify it; record its entry."""
        target, entries = self.target(T), self.entries
        prev_entry = entries[-1] if entries else None
        previous = self.solutions[prev_entry["horizon"]] if prev_entry else None
        if prev_entry is not None and prev_entry["padding_bound_next"] is None:
            prev_entry.update(_padding_record(previous.problem, previous, prob))
        if self.resume and target is not None and target.is_dir():
            solution, source = _load_horizon(target, prob), "loaded"
            start = solution.stats.get("start") or self.old.get(
                grid.horizon_dirname(T), {}).get("start")
            self.loaded.append(T)
        else:
            solution, start = _solve_horizon(prob, previous, prev_entry, self.solver,
                                             self.options, target, self.solve_kwargs)
            source = "solved"
            self.solved.append(T)
        self.solutions[T] = solution
        entry = _entry(T, prob, solution, start, source)
        entry["requested"] = T in self.requested
        _finish_entry(entry, prev_entry, solution, prob, next_prob)
        entries.append(entry)
        if self.log:
            self.log(f"[{len(entries)}/{n}] T={T:g} (L={prob.layers}): {entry['status']}, "
                     f"stationarity {entry['stationarity']:.2e}, cost "
                     f"{entry['cost']['total']:.8g}, start {(start or {}).get('chosen')}, "
                     f"{entry['wall_time_s']:.1f} s (compile {entry['compile_time_s']:.1f} s);"
                     f" sweep {time.perf_counter() - self.t0:.1f} s")
        self.write(final=False)
        return entry

    def report(self, final: bool, extension: dict[str, Any] | None = None) -> dict[str, Any]:
        return _report(self.config, self.entries, self.solutions, self.problem, self.options,
                       self.t0, self.requested, final, extension)

    def write(self, final: bool, extension: dict[str, Any] | None = None) -> dict[str, Any]:
        report = self.report(final, extension) if final or self.out_dir else {}
        if self.out_dir is not None:
            write_json(self.out_dir / REPORT_NAME, report, indent=1)
        return report


def sweep(problem: Problem | Dataset, horizons: Sequence[float], solver: Solver, *,
          options: SweepOptions | None = None, fixed: str = "step", step: float | None = None,
          layers: int | None = None, out: str | os.PathLike | None = None,
          resume: bool = False, problem_options: Mapping[str, Any] | None = None,
          log: Callable[[str], Any] | None = None, overwrite: bool = False,
          **solve_kwargs: Any) -> TurnpikeResult:
    """Solve ``problem`` for every horizon (ascending), as the module docstring says.

    ``fixed="step"``: ``L = round(T/step)`` (``step`` default 0.25); ``fixed="layers"``:
    ``L = layers`` for every ``T``. ``solve_kwargs`` go to :func:`controldl.solve` for the
    first solver (``max_iter``, ``max_time``, ``callback``…). For a tracking problem whose
    verdict over these horizons is not ``exponential``, longer horizons are added as
    ``options.extend`` and ``options.extend_budget`` say (:func:`_extend`). Returns a
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
    config = _config(problem, hz, solver, options, fixed,
                     (step or grid.DEFAULT_STEP) if fixed == "step" else None, solve_kwargs)
    run = _Run(problem, solver, options, config, out_dir, resume,
               _old_entries(out_dir) if resume else {}, solve_kwargs, log, [T for T, _ in hz])
    _start_out(out_dir, resume, overwrite, keep, run.report(final=False))
    for k, ((T, _), prob) in enumerate(zip(hz, problems, strict=True)):
        run.horizon(T, prob, problems[k + 1] if k + 1 < len(problems) else None, len(hz))
    extension = _extend(run, hz, fixed, step, layers)
    report = run.write(final=True, extension=extension)
    return TurnpikeResult(jsonable(report), run.solutions, run.solved, run.loaded, out_dir)


def _extend(run: _Run, hz: list[tuple[float, int]], fixed: str, step: float | None,
            layers: int | None) -> dict[str, Any] | None:
    """Longer horizons ``m·T_max`` (``m`` in ``options.extend``) when the verdict over the
    requested horizons is not ``exponential`` or judged fewer than ``fit_longest`` of them,
    within ``extend_budget`` times their wall time; ``None`` for a problem without a steady
    set or without ``extend``."""
    options = run.options
    if not options.extend or not steady_set(run.problem).defined:
        return None
    quick = dataclasses.replace(options, n_boot=0)
    used, _ = _excluded(run.entries)
    before = _rates(used, run.solutions, quick)["verdict"]
    T_max = hz[-1][0]
    wanted = [m * T_max for m in options.extend]
    rec: dict[str, Any] = {"multiples": list(options.extend), "candidates": wanted,
                           "verdict_before": {k: before[k] for k in ("kind", "summary")},
                           "added": [], "skipped": [], "spent_s": 0.0,
                           "budget_s": options.extend_budget * sum(
                               e["wall_time_s"] for e in run.entries)}
    if before["kind"] == "exponential" and len(before["horizons"]) >= options.fit_longest:
        rec["reason"] = "the requested horizons already agree: nothing added"
        return rec
    rec["reason"] = (f"the requested horizons gave: {before['summary']}"
                     if before["kind"] != "exponential" else
                     f"only {len(before['horizons'])} requested horizons could be compared "
                     f"(fewer than --fit-longest {options.fit_longest})")
    extra = grid.horizon_grid([T for T, _ in hz] + wanted, fixed, step, layers)[len(hz):]
    for k, (T, L) in enumerate(extra):
        last = run.entries[-1]
        target = run.target(T)
        saved = run.resume and target is not None and target.is_dir()
        predicted = 0.0 if saved else last["wall_time_s"] * L / last["layers"]
        left = rec["budget_s"] - rec["spent_s"]
        if predicted > left or not last["converged"]:
            why = (f"T = {last['horizon']:g} did not converge" if not last["converged"] else
                   f"predicted {predicted:.0f} s > {left:.0f} s left of the budget")
            rec["skipped"] += [{"horizon": T2, "reason": why} for T2, _ in extra[k:]]
            break
        entry = run.horizon(T, run.problem.replace(layers=L, horizon=T), None,
                            len(hz) + len(extra))
        rec["added"].append(T)
        rec["spent_s"] += 0.0 if saved else entry["wall_time_s"]
    return rec


def _report(config: dict, entries: list[dict], solutions: dict[float, Solution],
            problem: Problem, options: SweepOptions, t0: float, requested: list[float],
            final: bool, extension: dict[str, Any] | None = None) -> dict[str, Any]:
    """``turnpike.json``; the fits (with their bootstrap) only once the sweep is done."""
    done = {e["horizon"] for e in entries}
    rep = {**marked("turnpike", {}), "config": config, "definitions": DEFINITIONS,
           "horizons": entries,
           "certificate": _certificate(entries), "elapsed_s": time.perf_counter() - t0,
           "complete": all(T in done for T in requested),
           "time_s": {"compile": sum(e["compile_time_s"] for e in entries),
                      "run": sum(e["run_time_s"] for e in entries)}}
    if extension is not None:
        rep["extension"] = extension
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
