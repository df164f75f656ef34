"""Run several solvers on the same problem from the same initialization and report.

A solver is named by a *spec* string ``name[:key=value[:key=value…]]``, parsed by
:mod:`controldl.solvers.options` (the same parser as :func:`controldl.solve`):

- ``gd:optimizer=adam:lr=0.03``, ``msa``, ``emsa:rho=1``, ``casadi:transcription=multiple``;
- any optax optimizer name is short for gradient descent with it: ``adam``, ``sgd``,
  ``lbfgs``, ``adam:lr=0.1``;
- ``from=LABEL`` warm-starts from the solution of an earlier spec of the same run
  (``casadi:from=adam`` polishes Adam's solution with IPOPT); the row's times and work
  include its predecessor's, and its curve starts where the predecessor ended;
- ``max_iter=K`` overrides the iteration limit for that solver alone;
- ``label=TEXT`` names the row (default: the spec itself);
- ``until=target`` stops the row also at the common target as it stands when the row
  starts (:data:`TARGET_FACTOR` × the lowest final cost of the rows before it): for a
  solver that reaches a good cost fast but converges slowly (``pmp-newton``).

Fairness: every row that is not warm-started starts from
:func:`controldl.problem.init_params` with the same seed, on the same training data; every
solver stops at one common stationarity tolerance ``tol`` (the measure
:func:`controldl.stationarity`) or at the time cap; every row is timed **cold**: JAX's and
controldl's in-process compile caches are cleared before it, so its compile time does not
depend on what ran before it in the process.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import signal
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from controldl import solvers
from controldl.io import atomic_directory, jsonable, marked, write_json
from controldl.problem import Problem
from controldl.solution import Solution, input_paths, load, problem_record
from controldl.solvers.base import COMMON_TOL, clear_compile_caches
from controldl.solvers.options import Spec, parse_spec, solver_name

PMP_CHOICES: tuple[str, ...] = ("pmp-newton", "emsa")
"""The Pontryagin row of the default line-up: the first of these that is installed."""

DEFAULT_SPECS: tuple[str, ...] = ("adam", "lbfgs", "{pmp}:until=target:label={pmp}",
                                  "casadi:from=adam")
"""The default line-up (``{pmp}`` is the first installed of :data:`PMP_CHOICES`): gradient
descent with Adam, the strongest first-order baseline (L-BFGS), a Pontryagin solver, and
IPOPT polishing Adam's solution (its times include Adam's). Chosen, on the default ring
problem only, so that the bare ``controldl compare`` fits in 45 s on 2 cores with every row
at the tolerance or at the common target. The Pontryagin row stops at the common target
(``until=target``): ``pmp-newton`` reaches it in a few hundred iterations, but its
stationarity falls sublinearly (about 1e-4 only after 3000 iterations), so it would spend
the whole time cap short of the tolerance. One flag away (``--solvers``): see
:data:`LEFT_OUT_NOTE`."""

LEFT_OUT_NOTE: str = (
    "Not in the default line-up, one flag away (`--solvers`): Li et al.'s published `emsa` "
    "and `msa` (with the paper's ρ = 1, E-MSA oscillates on this problem and was still at "
    "cost 0.018, 2.4 × the best, after 60 s; basic MSA's cost rises), plain `sgd`, which "
    "does not reach the tolerance within the time cap (its stationarity is still about 4e-3 "
    "after 5000 iterations on the default problem), and `casadi` from the shared "
    "initialization (as long as Adam and the polish together, and it stops at another "
    "local minimum: cost 0.0083 against 0.0075). `pmp-newton` stops at the common target, "
    "not at the tolerance, which it approaches sublinearly.")
"""What the report of a default comparison says about the solvers it leaves out."""

DISCRETE_SPECS: tuple[str, ...] = ("adam", "discrete-msa")
"""The default line-up of a problem with binary or ternary controls: gradient descent with
Adam (the straight-through estimator) and Li & Hao's discrete MSA (the other solvers
refuse a discrete set)."""

DEFAULT_MAX_TIME: float = 25.0
"""The default time cap of each row, in seconds (compilation included)."""


@dataclasses.dataclass(frozen=True)
class DatasetComparison:
    """``controldl compare``'s defaults for one built-in dataset, where their flags are
    not given: the line-up, the subset of the training split, the model, the epochs of
    the rows that iterate over the data and the time cap of each row (the problem's and
    the solvers' own per-dataset defaults, :data:`controldl.problem.DATASET_DEFAULTS`,
    apply as in ``train``). ``chosen`` says what they were chosen on, ``left_out`` what
    the line-up leaves out and why (the report quotes it)."""

    specs: tuple[str, ...]
    n_samples: int | None
    model: str | None
    epochs: int | None
    max_time: float
    chosen: str
    left_out: str


DATASET_COMPARISONS: dict[str, DatasetComparison] = {
    "mnist": DatasetComparison(
        specs=("adam", "emsa:rho=0.03", "lbfgs:max_iter=100000:label=lbfgs"),
        n_samples=5120, model="conv", epochs=1, max_time=150.0,
        chosen="so that the comparison finishes in minutes on a 2-core CPU: a stratified "
               "twelfth of MNIST's training images (40 batches of 128 an epoch; the whole "
               "test split), the conv model with train's MNIST defaults, one epoch for "
               "Adam and E-MSA (ρ = 0.03, Li et al.'s MNIST value), L-BFGS on the full "
               "batch until the time cap (a full-batch iteration is an epoch), each row "
               "capped at 150 s",
        left_out="Not in the MNIST line-up: the direct method (casadi), beyond its cap on "
                 "this problem (its estimate and the largest subset it takes are above); "
                 "SGD and Adagrad, which Li et al. compare too (experiments/li_mnist.py), "
                 "one flag away (--solvers)."),
}
"""The per-dataset line-ups (:class:`DatasetComparison`), by dataset name."""

TARGET_FACTOR: float = 1.1
"""Without a given target cost, the target is this factor times the lowest final cost."""

__all__ = ["Comparison", "DEFAULT_SPECS", "Row", "Spec", "compare", "default_specs",
           "parse_spec", "parse_specs", "table_markdown", "write_report"]


def default_specs(problem: Problem | None = None) -> list[str]:
    """The default line-up: every spec of :data:`DEFAULT_SPECS` whose solver is available
    (:data:`DISCRETE_SPECS` for a problem with discrete controls)."""
    have = set(solvers.available())
    if problem is not None and problem.formulation.discrete:
        return [s for s in DISCRETE_SPECS if solver_name(s.split(":", 1)[0]) in have]
    pmp = next((name for name in PMP_CHOICES if name in have), None)
    specs = [s.format(pmp=pmp) for s in DEFAULT_SPECS if pmp is not None or "{pmp}" not in s]
    return [s for s in specs if solver_name(s.split(":", 1)[0]) in have]


def parse_solver_name(spec: str) -> str:
    """The registered solver a spec names (``gd`` for an optax optimizer)."""
    return solver_name(spec.split(":", 1)[0])


@dataclasses.dataclass(frozen=True)
class Row:
    """One solver's line of the comparison. Times are seconds from the start of the row's
    own solve plus ``predecessor_time_s`` (a warm start's chain, compilation included),
    compilation included; ``compile_time_s`` and ``run_time_s`` are the row's own solve
    (its compilation and the rest, as are ``wall_time_s`` and ``seconds_per_iteration``),
    so that ``compile_time_s + run_time_s + predecessor_time_s = total_time_s``; the
    predecessors' own compilation is ``predecessor_compile_time_s``;
    work is in gradient-evaluation equivalents (``None`` where the solver does not count
    it). ``*_to_target`` / ``*_to_tol``: first recorded iterate at or below the target
    cost / the tolerance (``None``: not reached). ``tol_from_final``: the solver records no
    stationarity per iteration, so the time to the tolerance is that of the final iterate
    (an upper bound)."""

    solver: str
    status: str
    cost: float
    stationarity: float | None
    train_accuracy: float | None
    test_accuracy: float | None
    iterations: int
    compile_time_s: float
    run_time_s: float
    wall_time_s: float
    predecessor: str | None
    predecessor_time_s: float
    predecessor_compile_time_s: float
    total_time_s: float
    work: float | None
    seconds_per_iteration: float | None
    time_to_target_s: float | None
    iterations_to_target: int | None
    work_to_target: float | None
    time_to_tol_s: float | None
    iterations_to_tol: int | None
    work_to_tol: float | None
    tol_from_final: bool

    def asdict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class _Offset:
    """What a warm-started row adds to its own clock and work: its predecessors'."""

    def __init__(self, sol: Solution) -> None:
        ws = sol.warm_start
        self.label = None if ws is None else ws.label
        self.time = 0.0 if ws is None else float(ws.wall_time_s)
        self.compile = 0.0 if ws is None else float(ws.compile_time_s)
        self.work = 0.0 if ws is None or ws.work is None else float(ws.work)
        self.work_known = ws is None or ws.work is not None

    def work_at(self, entry: dict[str, Any]) -> float | None:
        w = entry.get("work")
        return None if w is None or not self.work_known else self.work + float(w)


def _first(history: list[dict[str, Any]], test: Callable[[dict[str, Any]], bool]
           ) -> dict[str, Any] | None:
    return next((h for h in history if test(h)), None)


def _hit(h: dict[str, Any], key: str, bound: float) -> bool:
    v = h.get(key)
    return v is not None and math.isfinite(v) and v <= bound


def make_row(label: str, sol: Solution, target: float, tol: float | None) -> Row:
    """The :class:`Row` of solution ``sol`` against ``target`` and ``tol``."""
    off = _Offset(sol)
    hit = _first(sol.history, lambda h: _hit(h, "cost", target))
    reached = None if tol is None else _first(sol.history, lambda h: _hit(h, "stationarity", tol))
    recorded = any(h.get("stationarity") is not None for h in sol.history)
    from_final = (tol is not None and reached is None and not recorded and sol.history != []
                  and sol.stationarity is not None and sol.stationarity <= tol)
    if from_final:
        reached = {**sol.history[-1], "time_s": sol.wall_time_s}
    total = sol.wall_time_s + off.time
    work = sol.work
    return Row(
        solver=label, status=str(sol.status), cost=sol.cost["total"],
        stationarity=sol.stationarity, train_accuracy=sol.train_accuracy,
        test_accuracy=sol.test_accuracy, iterations=sol.iterations,
        compile_time_s=sol.compile_time_s, run_time_s=sol.wall_time_s - sol.compile_time_s,
        wall_time_s=sol.wall_time_s, predecessor=off.label, predecessor_time_s=off.time,
        predecessor_compile_time_s=off.compile, total_time_s=total,
        work=None if work is None or not off.work_known else work + off.work,
        seconds_per_iteration=((sol.wall_time_s - sol.compile_time_s) / sol.iterations
                               if sol.iterations else None),
        time_to_target_s=None if hit is None else hit["time_s"] + off.time,
        iterations_to_target=None if hit is None else hit["iteration"],
        work_to_target=None if hit is None else off.work_at(hit),
        time_to_tol_s=None if reached is None else reached["time_s"] + off.time,
        iterations_to_tol=None if reached is None else reached["iteration"],
        work_to_tol=None if reached is None else off.work_at(reached),
        tol_from_final=from_final)


@dataclasses.dataclass
class Comparison:
    """The solutions of one comparison, in the order run, the common target cost and the
    common stationarity tolerance; ``specs`` every spec of the run and ``settings`` the
    keyword arguments of :func:`compare` that every row shares; ``interrupted``: a signal
    stopped the run, and the rows of :attr:`pending` have not run."""

    problem: Problem
    solutions: dict[str, Solution]
    target: float
    target_rule: str
    tol: float | None = None
    specs: tuple[str, ...] = ()
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    interrupted: bool = False

    @property
    def pending(self) -> list[str]:
        """The labels of the specs that have no solution (an interrupted comparison)."""
        return [p.label for p in map(parse_spec, self.specs) if p.label not in self.solutions]

    def rows(self) -> list[Row]:
        """One :class:`Row` per solver, in the order run."""
        return [make_row(k, s, self.target, self.tol) for k, s in self.solutions.items()]

    def histories(self) -> dict[str, list[dict[str, Any]]]:
        """Every row's history on the comparison's clock: a warm-started row's times and
        work shifted by its predecessors', so that its curve starts where they ended."""
        out = {}
        for label, sol in self.solutions.items():
            off = _Offset(sol)
            out[label] = [{**h, "time_s": h["time_s"] + off.time, "work": off.work_at(h)}
                          for h in sol.history]
        return out

    def ranking(self, key: str) -> list[tuple[str, float]]:
        """``(label, value)`` of the rows that reached ``key`` (``time_to_target_s`` or
        ``time_to_tol_s``), fastest first."""
        done = [(r.solver, getattr(r, key)) for r in self.rows() if getattr(r, key) is not None]
        return sorted(done, key=lambda lv: lv[1])

    @property
    def exit_code(self) -> int:
        """0 when every solve completed, else the worst :attr:`Solution.exit_code`."""
        codes = [s.exit_code for s in self.solutions.values()]
        return max(codes, default=0)

    def table(self) -> str:
        """The comparison as a Markdown table (:func:`table_markdown`), as ``controldl
        compare`` prints it."""
        return table_markdown(self)

    def save(self, out: str | Path, figures: bool = True) -> Path:
        """Write the report directory ``out`` as ``controldl compare --out`` does
        (:func:`write_report`: ``results.json``, ``table.md``, ``report.md``, figures and
        every solution); returns its path."""
        return write_report(self, out, figures=figures)

    def __repr__(self) -> str:
        return (f"Comparison({', '.join(self.solutions)}; target {self.target:.5g}, "
                f"tol {self.tol}) — .table() for the table, .save(DIR) for the report")


def parse_specs(specs: Sequence[str]) -> list[Spec]:
    """Every spec parsed, the labels unique and each ``from=`` naming an earlier row."""
    parsed = [parse_spec(s) for s in specs]
    labels = [p.label for p in parsed]
    if len(set(labels)) != len(labels):
        raise ValueError(f"solver labels must be unique, got {', '.join(labels)}")
    for i, p in enumerate(parsed):
        if p.warm_from is not None and p.warm_from not in labels[:i]:
            raise ValueError(f"{p.label!r} warm-starts from {p.warm_from!r}, which is not an "
                             "earlier solver of this comparison")
    return parsed


def _with_tolerance(spec: Spec, tol: float | None) -> Any:
    """The spec's solver, its own convergence tolerance set to the common ``tol`` (unless
    the spec sets it), for a solver that declares one (``Solver.tolerance_option``)."""
    solver = spec.make()
    option = getattr(type(solver), "tolerance_option", None)
    if tol is None or option is None or option in spec.options:
        return solver
    return dataclasses.replace(solver, **{option: tol})


def _row_target(spec: Spec, target_cost: float | None, done: dict[str, Solution]
                ) -> float | None:
    """The target a row stops at: the given ``target_cost``; for an ``until=target`` row
    without one, :data:`TARGET_FACTOR` × the lowest final cost of the rows ``done``."""
    if target_cost is not None or not spec.until_target:
        return target_cost
    return _factor_of_lowest_final(done)


def _factor_of_lowest_final(solutions: dict[str, Solution]) -> float | None:
    """:data:`TARGET_FACTOR` × the lowest finite final cost of ``solutions`` (``None``
    without one)."""
    finals = [s.cost["total"] for s in solutions.values() if math.isfinite(s.cost["total"])]
    return TARGET_FACTOR * min(finals) if finals else None


def compare(problem: Problem, specs: Sequence[str] | None = None, *, seed: int = 0,
            init_scheme: str = "normal", max_iter: int | None = None,
            epochs: int | None = None, max_time: float | None = DEFAULT_MAX_TIME,
            target_cost: float | None = None,
            tol: float | None = COMMON_TOL, cold: bool = True, progress: bool = False,
            log: Any = None, done: Mapping[str, Solution] | None = None,
            signals: tuple[int, ...] = (signal.SIGINT,)) -> Comparison:
    """Solve ``problem`` with every spec (see the module docstring) and collect the results.

    Every solver stops at the common stationarity tolerance ``tol``, at ``max_time``
    seconds or at ``target_cost`` when given; ``epochs`` limits every row whose solver
    iterates over the data (:meth:`~controldl.solvers.base.Solver.iterations_per_epoch`)
    to that many passes, unless its spec sets ``max_iter`` (the others keep their
    limit). ``target_cost`` is also the target of the
    time-to-target column; without it the target is :data:`TARGET_FACTOR` × the lowest
    final cost of the run. ``cold``: clear the compile caches before each row (see the
    module docstring); ``False`` lets a row reuse what an earlier one compiled.

    ``done``: the solutions of rows an interrupted comparison finished
    (:func:`finished_rows`), by label: they are kept, the other rows run. ``signals``
    (default Ctrl-C) stop the row that runs: :class:`CompareInterrupted` (a
    ``KeyboardInterrupt``) then carries the comparison of the rows that finished.
    """
    spec_list = [str(s) for s in (default_specs(problem) if not specs else specs)]
    parsed = parse_specs(spec_list)
    for p in parsed:  # every refusal (a control set, a size) before any row runs
        p.make().check_problem(problem)
    done = dict(done or {})
    unknown = sorted(set(done) - {p.label for p in parsed})
    if unknown:
        raise ValueError(f"finished rows {', '.join(unknown)} are not solvers of this "
                         "comparison")
    settings = dict(seed=seed, init_scheme=init_scheme, max_iter=max_iter, epochs=epochs,
                    max_time=max_time, target_cost=target_cost, tol=tol, cold=cold)
    solutions: dict[str, Solution] = {}
    for p in parsed:
        if p.label in done:
            solutions[p.label] = done[p.label]
            continue
        try:
            solutions[p.label] = _run_row(problem, p, solutions, settings, progress, signals)
        except KeyboardInterrupt:  # SolveInterrupted too: the row did not finish
            raise CompareInterrupted(_comparison(problem, solutions, spec_list, settings,
                                                 interrupted=True), p.label) from None
        if log is not None:
            log(f"{p.label}: {solutions[p.label].summary()}")
    return _comparison(problem, solutions, spec_list, settings)


def _run_row(problem: Problem, p: Spec, solutions: dict[str, Solution],
             settings: dict[str, Any], progress: bool, signals: tuple[int, ...]) -> Solution:
    """The solve of row ``p`` (the rows before it in ``solutions``)."""
    solver = _with_tolerance(p, settings["tol"])
    if settings["cold"]:
        clear_compile_caches()
    epochs = settings["epochs"]
    by_epochs = (epochs is not None and p.max_iter is None
                 and solver.iterations_per_epoch(problem) is not None)
    return solvers.solve(problem, solver, init=solutions.get(p.warm_from),
                         seed=settings["seed"], init_scheme=settings["init_scheme"],
                         epochs=epochs if by_epochs else None,
                         max_iter=(None if by_epochs else p.max_iter if p.max_iter is not None
                                   else settings["max_iter"]),
                         max_time=settings["max_time"], tol=settings["tol"],
                         progress=progress, signals=signals,
                         target_cost=_row_target(p, settings["target_cost"], solutions))


def _comparison(problem: Problem, solutions: dict[str, Solution], specs: list[str],
                settings: dict[str, Any], interrupted: bool = False) -> Comparison:
    target_cost = settings["target_cost"]
    if target_cost is not None:
        target, rule = target_cost, "the given target cost"
    else:
        lowest = _factor_of_lowest_final(solutions)
        target = math.nan if lowest is None else lowest
        rule = f"{TARGET_FACTOR:g} × the lowest final cost of this run"
    return Comparison(problem, solutions, target, rule, settings["tol"], tuple(specs),
                      settings, interrupted)


class CompareInterrupted(KeyboardInterrupt):
    """Raised by :func:`compare` when a signal stopped it: a ``KeyboardInterrupt`` that
    carries ``comparison``, the rows that finished (``interrupted`` set), and the label
    of the row that was running (``row``)."""

    def __init__(self, comparison: Comparison, row: str) -> None:
        super().__init__(f"comparison interrupted during row {row!r}")
        self.comparison = comparison
        self.row = row


def finished_rows(out: str | Path, problem: Problem, specs: Sequence[str] | None = None,
                  **settings: Any) -> dict[str, Solution]:
    """The solutions of the rows that the interrupted comparison in ``out`` finished, for
    ``compare(..., done=...)``: ``out`` must hold an incomplete comparison of the same
    problem (record and training data), the same specs (default: the default line-up)
    and the same settings (the keyword arguments of :func:`compare` given here: ``seed``,
    ``init_scheme``, ``max_iter``, ``max_time``, ``target_cost``, ``tol``, ``cold``).

    Raises:
        ValueError: (one line) no comparison in ``out``, a complete one, or one run
            otherwise (the differences named).
    """
    out = Path(out)
    try:
        results = json.loads((out / "results.json").read_text())
    except (OSError, ValueError):
        raise ValueError(f"{out} holds no comparison to resume (no readable "
                         "results.json)") from None
    if not results.get("interrupted"):
        raise ValueError(f"{out} holds a complete comparison: nothing to resume (run "
                         "without --resume to run it again)")
    spec_list = [str(s) for s in (default_specs(problem) if not specs else specs)]
    diffs = [] if results.get("specs") == spec_list else [
        f"solvers {','.join(results.get('specs') or [])}"]
    saved = results.get("settings", {})
    diffs += [f"{k} {saved.get(k)}" for k, v in settings.items()
              if jsonable(saved.get(k)) != jsonable(v)]
    if jsonable(problem_record(problem)) != results.get("problem"):
        diffs.append("another problem")
    if diffs:
        raise ValueError(f"{out} was run with other settings ({'; '.join(diffs)}): give the "
                         "flags it was run with to resume it")
    rows = {}
    for row in results.get("rows", []):
        sol = load(out / "solutions" / _safe(row["solver"]))
        if not np.array_equal(sol.problem.data.X_train, problem.data.X_train):
            raise ValueError(f"{out}: row {row['solver']!r} was solved on other data")
        rows[row["solver"]] = sol
    return rows


# --------------------------------------------------------------------------- the report


def _fmt(v: Any, spec: str = ".4g") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    if spec == "s":
        return str(v)
    return format(v, spec)


COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("solver", "solver", "s"), ("status", "status", "s"), ("cost", "final cost", ".5g"),
    ("stationarity", "stationarity", ".1e"), ("train_accuracy", "train acc", ".3f"),
    ("test_accuracy", "test acc", ".3f"), ("iterations", "iterations", "d"),
    ("work", "work [grad evals]", ".0f"), ("compile_time_s", "compile [s]", ".2f"),
    ("run_time_s", "run excl. compile [s]", ".2f"),
    ("predecessor_time_s", "predecessor [s]", ".2f"), ("total_time_s", "total [s]", ".2f"),
    ("time_to_target_s", "time to target [s]", ".2f"),
    ("time_to_tol_s", "time to tol [s]", ".2f"),
)
"""The table's columns: ``(Row field, heading, format)``."""


def table_markdown(comparison: Comparison) -> str:
    """The comparison as a Markdown table (:data:`COLUMNS`)."""
    lines = ["| " + " | ".join(c[1] for c in COLUMNS) + " |",
             "|" + "|".join("---" for _ in COLUMNS) + "|"]
    for row in comparison.rows():
        cells = []
        for key, _, spec in COLUMNS:
            text = _fmt(getattr(row, key), spec)
            if key == "time_to_tol_s" and row.tol_from_final and text != "—":
                text = "≤ " + text
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(comparison: Comparison, out: str | Path, figures: bool = True, *,
                 overwrite: bool = False) -> Path:
    """Write ``results.json``, ``table.md``, ``report.md``, ``figures/*.png`` and every
    solution under ``solutions/LABEL`` to ``out``, atomically. ``out`` must be new, empty
    or a previous comparison; anything else only with ``overwrite``
    (:func:`controldl.io.check_output`)."""
    rows = comparison.rows()

    def write(tmp: Path) -> None:
        for label, sol in comparison.solutions.items():
            sol.save(tmp / "solutions" / _safe(label))
        results = marked("comparison", {
            "problem": problem_record(comparison.problem),
            "target_cost": comparison.target, "target_rule": comparison.target_rule,
            "tol": comparison.tol, "timing": "cold", "rows": [r.asdict() for r in rows],
            "ranking": {k: comparison.ranking(k)
                        for k in ("time_to_target_s", "time_to_tol_s")},
            "specs": list(comparison.specs), "settings": comparison.settings,
            "interrupted": comparison.interrupted, "pending": comparison.pending})
        write_json(tmp / "results.json", results)
        table = table_markdown(comparison)
        (tmp / "table.md").write_text(table + "\n")
        figs = _figures(comparison, tmp) if figures and comparison.solutions else []
        (tmp / "report.md").write_text(_report(comparison, rows, table, figs))

    return atomic_directory(out, write, kind="comparison", overwrite=overwrite,
                            keep=input_paths(comparison.problem))


def _figures(comparison: Comparison, tmp: Path) -> list[str]:
    from controldl import plotting

    (tmp / "figures").mkdir()
    marks = {"target": comparison.target, "tolerance": comparison.tol}
    accepted = inspect.signature(plotting.history_figure).parameters
    marks = {k: v for k, v in marks.items() if k in accepted}  # when the figure draws them
    fig = plotting.history_figure(comparison.histories(), title=repr(comparison.problem),
                                  **marks)
    fig.savefig(tmp / "figures" / "cost_history.png", dpi=110)
    plotting.plt.close(fig)
    figs = ["figures/cost_history.png"]
    finite = [s for s in comparison.solutions.values() if math.isfinite(s.cost["total"])]
    if not finite:
        return figs
    best = min(finite, key=lambda s: s.cost["total"])
    for name, maker in (("decision_regions", plotting.decision_regions_figure),
                        ("layers", plotting.layers_figure)):
        f = maker(best)
        if f is not None:
            f.savefig(tmp / "figures" / f"best_{name}.png", dpi=110)
            figs.append(f"figures/best_{name}.png")
            plotting.plt.close(f)
    return figs


def _safe(label: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in label)


def _ranking_line(comparison: Comparison, key: str, what: str) -> str:
    ranked = comparison.ranking(key)
    if not ranked:
        return f"- By {what}: no solver reached it."
    order = ", ".join(f"{i}. {label} ({t:.2f} s)" for i, (label, t) in enumerate(ranked, 1))
    return f"- By {what}: **{ranked[0][0]}** wins — {order}."


def _interrupted_lines(comparison: Comparison) -> list[str]:
    """The report's warning that a signal stopped the comparison (none otherwise)."""
    if not comparison.interrupted:
        return []
    return [f"**Interrupted**: {len(comparison.solutions)} of {len(comparison.specs)} rows "
            f"finished; not run: {', '.join(comparison.pending)}. The same command with "
            "`--resume` runs them (the rows below are kept).", ""]


def _dataset_lines(comparison: Comparison) -> list[str]:
    """On a dataset with its own line-up (:data:`DATASET_COMPARISONS`): what each row
    bought on it (test accuracy, time, iterations; E-MSA's iteration in Adam steps), the
    direct method's size against its cap, and what the line-up leaves out."""
    problem = comparison.problem
    own = DATASET_COMPARISONS.get(problem.data.source.get("name", ""))
    if own is None:
        return []
    sols = comparison.solutions
    lines = [f"- On {problem.data.source['name']} ({problem.data.n_train} training images, "
             f"{len(problem.data.y_test) if problem.data.has_test else 0} test images):"]
    per_it = {label: _seconds_per_iteration(s) for label, s in sols.items()}
    for label, sol in sols.items():
        acc = "—" if sol.test_accuracy is None else f"{sol.test_accuracy:.4f}"
        lines.append(f"  - **{label}**: test accuracy {acc} after {sol.iterations} iterations "
                     f"in {sol.wall_time_s:.0f} s ({sol.compile_time_s:.0f} s compiling), "
                     f"{per_it[label]:.3g} s an iteration after compilation.")
    adam = next((lab for lab in sols if lab.split(":")[0] == "adam"), None)
    for label in sols:
        if label.split(":")[0] == "emsa" and adam is not None and per_it[adam] > 0:
            lines.append(f"  - One {label} iteration costs {per_it[label] / per_it[adam]:.0f} "
                         f"{adam} steps here: the price of its per-iteration progress.")
    lines.append(f"  - The direct method: {_direct_size(problem)}")
    lines.append(f"  - The defaults of this line-up were chosen {own.chosen}.")
    lines.append(f"  - {own.left_out}")
    return lines


def _seconds_per_iteration(sol: Solution) -> float:
    """Seconds per iteration between the first and the last record, the records' own
    evaluations excluded (NaN without two records)."""
    h = sol.history
    if len(h) < 2 or h[-1]["iteration"] == h[0]["iteration"]:
        return math.nan
    spent = lambda e: e["time_s"] - (e.get("evaluation_time_s") or 0.0)  # noqa: E731
    return (spent(h[-1]) - spent(h[0])) / (h[-1]["iteration"] - h[0]["iteration"])


def _direct_size(problem: Problem) -> str:
    """The direct method's estimated size on ``problem`` against its cap."""
    if "casadi" not in solvers.available():
        return "not installed."
    from controldl.solvers.direct import size

    direct = solvers.make_solver("casadi")
    hessian = direct.resolve_hessian(problem)
    est = size.estimate(problem, direct.transcription, hessian)
    fit = size.largest_subset(problem, direct.transcription, hessian)
    within = (est.memory_bytes <= size.DIRECT_CAP.memory_bytes
              and est.evaluation_flops <= size.DIRECT_CAP.evaluation_flops)
    return (f"its NLP here ({est.describe()}) is {'within' if within else 'beyond'} its cap "
            f"({size.DIRECT_CAP.describe()}); it takes at most {fit:,} samples of this "
            "problem (--n-samples), where it can polish a gradient solution (casadi:from=adam).")


def _report(comparison: Comparison, rows: list[Row], table: str, figs: list[str]) -> str:
    tol = "none" if comparison.tol is None else f"{comparison.tol:g}"
    lines = [
        "# Solver comparison", "", *_interrupted_lines(comparison),
        f"Problem: {comparison.problem.describe()}.", "",
        "Every solver starts from the same initialization (or warm-starts where its name "
        "says `from=`; such a row's times and work include its predecessor's). Every row "
        "is timed cold: the compile caches are cleared before it. Times count from the "
        "start of each solve and include compilation, also shown on its own; 'run excl. "
        "compile' is the rest of the row's own solve, and 'predecessor' the whole time of "
        "the solves it warm-started from (total = compile + run + predecessor). Work is in "
        "gradient-evaluation equivalents (one forward "
        "and one backward pass over the training set = 1; '—' where a solver does not "
        "count it). Stationarity is `controldl.stationarity` at the returned parameters.",
        "",
        f"Target cost: {comparison.target:.5g} ({comparison.target_rule}). Common "
        f"stationarity tolerance: {tol}. A '≤' time to tolerance is the final iterate's "
        "(the solver does not record its stationarity per iteration).", "",
        table, "",
        _ranking_line(comparison, "time_to_target_s", "time to the target"),
        _ranking_line(comparison, "time_to_tol_s", "time to the tolerance"),
    ]
    if list(comparison.solutions) == default_specs():
        lines.append(f"- {LEFT_OUT_NOTE}")
    lines += _dataset_lines(comparison)
    missed = [r.solver for r in rows if r.time_to_target_s is None]
    if missed:
        lines.append(f"- Did not reach the target: {', '.join(missed)}.")
    for label, sol in comparison.solutions.items():
        if not sol.succeeded:
            lines.append(f"- {label}: {sol.status} — {sol.message}")
    lines.append("")
    for f in figs:
        lines += [f"![{Path(f).stem}]({f})", ""]
    return "\n".join(lines)
