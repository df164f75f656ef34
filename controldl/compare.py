"""Run several solvers on the same problem from the same initialization and report.

A solver is named by a *spec* string ``name[:key=value[:key=value…]]``:

- ``gd:optimizer=adam:lr=0.03``, ``msa``, ``emsa:rho=1``, ``casadi:transcription=multiple``;
- any optax optimizer name is short for gradient descent with it: ``adam``, ``sgd``,
  ``lbfgs``, ``adam:lr=0.1``;
- ``from=LABEL`` warm-starts from the solution of an earlier spec of the same run
  (``casadi:from=adam`` polishes Adam's solution with IPOPT);
- ``max_iter=K`` overrides the iteration limit for that solver alone;
- ``label=TEXT`` names the row (default: the spec itself).

Every solver starts from :func:`controldl.problem.init_params` with the same seed unless
it is warm-started.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from controldl import solvers
from controldl.problem import Problem
from controldl.solution import Solution, _jsonable, atomic_directory

DEFAULT_SPECS: tuple[str, ...] = ("sgd", "adam", "lbfgs", "msa", "emsa", "casadi",
                                  "casadi:from=adam")


@dataclasses.dataclass(frozen=True)
class Spec:
    """A parsed solver spec."""

    label: str
    solver: str
    options: dict[str, Any]
    warm_from: str | None = None
    max_iter: int | None = None


def _convert(cls: type, key: str, text: str) -> Any:
    hints = typing.get_type_hints(cls)
    if key not in hints:
        names = ", ".join(f.name for f in dataclasses.fields(cls))
        raise ValueError(f"solver {cls.name!r} has no option {key!r} (options: {names})")
    from controldl.cli.common import _parser_for

    parse, repeat = _parser_for(hints[key])
    if text.lower() == "none":
        return None
    try:
        if repeat:
            return tuple(parse(item) for item in text.split(";") if item)
        return parse(text)
    except Exception as exc:
        raise ValueError(f"bad value {text!r} for option {key!r}: {exc}") from None


def parse_spec(text: str) -> Spec:
    """Parse ``name[:key=value…]`` (see the module docstring)."""
    parts = [p for p in text.strip().split(":") if p]
    if not parts:
        raise ValueError("empty solver spec")
    head, rest = parts[0], parts[1:]
    options: dict[str, Any] = {}
    if head in solvers._REGISTRY:
        name = head
    else:
        name = "gd"
        options["optimizer"] = head
    cls = solvers.solver_class(name)
    warm, max_iter, label = None, None, text
    for item in rest:
        if "=" not in item:
            raise ValueError(f"solver spec {text!r}: expected key=value, got {item!r}")
        key, value = (s.strip() for s in item.split("=", 1))
        if key == "from":
            warm = value
        elif key == "max_iter":
            try:
                max_iter = int(value)
            except ValueError:
                raise ValueError(f"solver spec {text!r}: max_iter must be an integer") from None
        elif key == "label":
            label = value
        else:
            options[key] = _convert(cls, key, value)
    cls(**options)  # validate now, before anything runs
    return Spec(label=label, solver=name, options=options, warm_from=warm, max_iter=max_iter)


def default_specs() -> list[str]:
    """The default line-up: every solver that is available."""
    have = set(solvers.available())
    return [s for s in DEFAULT_SPECS if parse_solver_name(s) in have]


def parse_solver_name(spec: str) -> str:
    head = spec.split(":", 1)[0]
    return head if head in solvers._REGISTRY else "gd"


@dataclasses.dataclass
class Comparison:
    """The solutions of one comparison, in the order run, and the reference target."""

    problem: Problem
    solutions: dict[str, Solution]
    target: float
    target_rule: str

    def rows(self) -> list[dict[str, Any]]:
        """One row per solver: final cost, accuracies, iterations, times, time to target."""
        out = []
        for label, s in self.solutions.items():
            hit = next((h for h in s.history
                        if h["cost"] is not None and h["cost"] <= self.target), None)
            out.append({
                "solver": label,
                "status": s.status,
                "cost": s.cost["total"],
                "train_accuracy": s.train_accuracy,
                "test_accuracy": s.test_accuracy,
                "iterations": s.iterations,
                "wall_time_s": s.wall_time_s,
                "compile_time_s": s.compile_time_s,
                "seconds_per_iteration": ((s.wall_time_s - s.compile_time_s) / s.iterations
                                          if s.iterations else None),
                "time_to_target_s": None if hit is None else hit["time_s"],
                "time_to_target_excl_compile_s": (None if hit is None
                                                  else hit["time_s"] - s.compile_time_s),
                "iterations_to_target": None if hit is None else hit["iteration"],
            })
        return out


def compare(problem: Problem, specs: Sequence[str] | None = None, *, seed: int = 0,
            init_scheme: str = "normal", max_iter: int | None = None,
            max_time: float | None = None, target_cost: float | None = None,
            progress: bool = False, log: Any = None) -> Comparison:
    """Solve ``problem`` with every spec (see the module docstring) and collect the results.

    ``target_cost`` stops each solver early and is the target of the time-to-target
    column; without it the target is 1.1 × the best final cost of the run.
    """
    specs = list(default_specs() if not specs else specs)
    parsed = [parse_spec(s) for s in specs]
    labels = [p.label for p in parsed]
    if len(set(labels)) != len(labels):
        raise ValueError(f"solver labels must be unique, got {', '.join(labels)}")
    for p in parsed:
        if p.warm_from is not None and p.warm_from not in labels[: labels.index(p.label)]:
            raise ValueError(f"{p.label!r} warm-starts from {p.warm_from!r}, which is not an "
                             "earlier solver of this comparison")
    solutions: dict[str, Solution] = {}
    for p in parsed:
        solver = solvers.make_solver(p.solver, **p.options)
        init = solutions[p.warm_from] if p.warm_from else None
        sol = solvers.solve(problem, solver, init=init, seed=seed, init_scheme=init_scheme,
                            max_iter=p.max_iter if p.max_iter is not None else max_iter,
                            max_time=max_time, target_cost=target_cost, progress=progress)
        solutions[p.label] = sol
        if log is not None:
            log(f"{p.label}: {sol.summary()}")
    finals = [s.cost["total"] for s in solutions.values() if math.isfinite(s.cost["total"])]
    if target_cost is not None:
        target, rule = target_cost, "the given target cost"
    else:
        target = 1.1 * min(finals) if finals else math.nan
        rule = "1.1 × the best final cost of this run"
    return Comparison(problem, solutions, target, rule)


def _fmt(v: Any, spec: str = ".4g") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    return format(v, spec) if isinstance(v, float) else str(v)


def table_markdown(comparison: Comparison) -> str:
    cols = [("solver", "solver", "s"), ("status", "status", "s"), ("cost", "final cost", ".5g"),
            ("train_accuracy", "train acc", ".4f"), ("test_accuracy", "test acc", ".4f"),
            ("iterations", "iterations", "d"), ("wall_time_s", "wall [s]", ".2f"),
            ("compile_time_s", "compile [s]", ".2f"),
            ("seconds_per_iteration", "s / iteration", ".2e"),
            ("time_to_target_s", "time to target [s]", ".2f")]
    lines = ["| " + " | ".join(c[1] for c in cols) + " |",
             "|" + "|".join("---" for _ in cols) + "|"]
    for row in comparison.rows():
        lines.append("| " + " | ".join(_fmt(row[k], f) if f != "s" else str(row[k])
                                       for k, _, f in cols) + " |")
    return "\n".join(lines)


def write_report(comparison: Comparison, out: str | Path, figures: bool = True) -> Path:
    """Write ``results.json``, ``table.md``, ``report.md``, ``figures/*.png`` and every
    solution under ``solutions/LABEL`` to ``out``, atomically."""
    rows = comparison.rows()
    problem = comparison.problem
    form = problem.formulation

    def write(tmp: Path) -> None:
        for label, sol in comparison.solutions.items():
            sol.save(tmp / "solutions" / _safe(label))
        results = {"problem": next(iter(comparison.solutions.values())).meta()["problem"]
                   if comparison.solutions else {},
                   "target_cost": comparison.target, "target_rule": comparison.target_rule,
                   "rows": rows}
        (tmp / "results.json").write_text(json.dumps(_jsonable(results), indent=2))
        table = table_markdown(comparison)
        (tmp / "table.md").write_text(table + "\n")
        figs = []
        if figures:
            from controldl import plotting

            (tmp / "figures").mkdir()
            fig = plotting.history_figure({k: s.history for k, s in comparison.solutions.items()},
                                          title=repr(problem))
            fig.savefig(tmp / "figures" / "cost_history.png", dpi=110)
            figs.append("figures/cost_history.png")
            plotting.plt.close(fig)
            best = min(comparison.solutions.values(), key=lambda s: s.cost["total"])
            for name, maker in (("decision_regions", plotting.decision_regions_figure),
                                ("layers", plotting.layers_figure)):
                f = maker(best)
                if f is not None:
                    f.savefig(tmp / "figures" / f"best_{name}.png", dpi=110)
                    figs.append(f"figures/best_{name}.png")
                    plotting.plt.close(f)
        (tmp / "report.md").write_text(_report(comparison, rows, table, figs, form))

    return atomic_directory(out, write)


def _safe(label: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in label)


def _report(comparison: Comparison, rows: list[dict[str, Any]], table: str, figs: list[str],
            form: Any) -> str:
    problem = comparison.problem
    src = problem.data.source
    lines = [
        "# Solver comparison",
        "",
        f"Problem: {form.model} with σ = {form.activation}, width {form.width}, "
        f"L = {form.layers}, T = {form.horizon:g} (h = {form.h:g}), loss {form.loss}; "
        f"l2 {form.l2:g}, l1 {form.l1:g}, smooth {form.smooth:g}, running {form.running:g}, "
        f"readout_l2 {form.readout_l2:g}. Data: {src.get('name', 'file')} with "
        f"{problem.data.n_train} training points"
        + (f" and {len(problem.data.X_test)} test points." if problem.data.has_test else "."),
        "",
        "Every solver starts from the same initialization (or warm-starts where its name "
        "says `from=`). Times count from the start of each solve and include compilation "
        f"(also shown on its own). The target for 'time to target' is {comparison.target:.5g} "
        f"({comparison.target_rule}).",
        "",
        table,
        "",
    ]
    finite = [r for r in rows if r["cost"] is not None and math.isfinite(r["cost"])]
    if finite:
        best = min(finite, key=lambda r: r["cost"])
        lines.append(f"- Lowest final cost: **{best['solver']}** ({best['cost']:.5g}).")
        reached = [r for r in rows if r["time_to_target_s"] is not None]
        if reached:
            fast = min(reached, key=lambda r: r["time_to_target_s"])
            lines.append(f"- First to the target: **{fast['solver']}** in "
                         f"{fast['time_to_target_s']:.2f} s ({fast['iterations_to_target']} "
                         "iterations).")
        missed = [r["solver"] for r in rows if r["time_to_target_s"] is None]
        if missed:
            lines.append(f"- Did not reach the target: {', '.join(missed)}.")
    for label, sol in comparison.solutions.items():
        if not sol.succeeded:
            lines.append(f"- {label}: {sol.status} — {sol.message}")
    lines.append("")
    for f in figs:
        lines += [f"![{Path(f).stem}]({f})", ""]
    return "\n".join(lines)
