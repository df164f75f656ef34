"""What every experiment shares: the command line, the output directory, JSON and markdown
writers, seeds, and a few measurements built on the library's public functions.

An experiment is a module ``experiments/<name>.py`` with a ``main(argv) -> int``; it is run
from the repository's root as ``python -m experiments.<name> --out DIR [--quick]
[--seeds 0,1,2]`` and writes ``DIR/results.json``, ``DIR/summary.md`` and ``DIR/*.png``.
Bad arguments end with argparse's one-line error and exit code 2. Importing a module
changes no global setting: :func:`main_wrapper`, the program's start, chooses float64 and
matplotlib's file backend.

Nothing here restates a formula of the problem: predictions and accuracies come from
:class:`controldl.Solution` (``predict``, ``accuracy``, ``outputs``, ``states``), Lipschitz
constants and Jacobians from :mod:`controldl.problem`.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import matplotlib
import matplotlib.pyplot as plt
import numpy as np

import controldl as cdl
from controldl import compilation, plotting
from controldl import problem as P
from controldl.io import write_json

FIGURE_DPI = 80


# --------------------------------------------------------------------------- command line


def _seed_list(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.replace(" ", "").split(",") if s != ""]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"seeds must be comma-separated integers >= 0, got {text!r}") from None
    if not seeds or any(s < 0 for s in seeds):
        raise argparse.ArgumentTypeError(f"seeds must be integers >= 0, got {text!r}")
    return seeds


def parser(doc: str | None, default_seeds: Sequence[int] = (0, 1, 2),
           quick_seeds: Sequence[int] = (0,)) -> argparse.ArgumentParser:
    """The command line every experiment accepts (``--out``, ``--quick``, ``--seeds``,
    ``--jax-cache``); an experiment may add its own flags."""
    first = (doc or "").strip().split("\n\n")[0]
    p = argparse.ArgumentParser(description=first,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path,
                   help="output directory (created; files in it are replaced)")
    p.add_argument("--quick", action="store_true",
                   help="small sizes, a few seconds to a minute (also a test)")
    p.add_argument("--seeds", nargs="+", type=_seed_list, default=None, metavar="S",
                   help=f"seeds, e.g. 0,1,2 or 0 1 2 (default {','.join(map(str, default_seeds))};"
                        f" with --quick {','.join(map(str, quick_seeds))})")
    p.add_argument("--jax-cache", default=None, metavar="DIR|off",
                   help="JAX's persistent compilation cache (default: $CONTROLDL_CACHE_DIR, "
                        "else the user cache directory, as for the command line); 'off' "
                        "compiles everything afresh. It only shortens compilation; results "
                        "do not depend on it.")
    p.set_defaults(_default_seeds=list(default_seeds), _quick_seeds=list(quick_seeds))
    return p


class Run:
    """One experiment's run: its options, output directory, clock and writers."""

    def __init__(self, name: str, args: argparse.Namespace) -> None:
        self.name = name
        self.args = args
        self.quick: bool = bool(args.quick)
        if args.seeds is None:
            seeds = args._quick_seeds if self.quick else args._default_seeds
        else:
            seeds = [s for group in args.seeds for s in group]
        self.seeds: list[int] = list(dict.fromkeys(seeds))
        self.out: Path = Path(args.out)
        self.start = time.perf_counter()
        self.cpu_start = time.process_time()
        self.jax_cache = configure_jax_cache(args.jax_cache)
        self.figures: list[str] = []

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def cpu_time(self) -> float:
        """CPU seconds of this process (all threads) since the start of the run."""
        return time.process_time() - self.cpu_start

    def log(self, message: str) -> None:
        print(f"[{self.name} {self.elapsed():7.1f}s] {message}", file=sys.stderr, flush=True)

    def path(self, name: str) -> Path:
        self.out.mkdir(parents=True, exist_ok=True)
        return self.out / name

    def save_figure(self, fig: Any, name: str, dpi: int = FIGURE_DPI) -> str:
        """Write ``fig`` as ``OUT/name`` (PNG) and close it; returns the file name."""
        if fig is None:
            return ""
        fig.savefig(self.path(name), dpi=dpi)
        plt.close(fig)
        self.figures.append(name)
        return name

    def write_json(self, results: dict[str, Any], name: str = "results.json") -> Path:
        """``results`` plus the run's settings, as JSON (non-finite numbers become null)."""
        body = {"experiment": self.name, "quick": self.quick, "seeds": self.seeds,
                "elapsed_s": self.elapsed(), "cpu_time_s": self.cpu_time(),
                "jax_persistent_cache": self.jax_cache,
                "versions": cdl.solution.versions(), "figures": self.figures, **results}
        return write_json(self.path(name), body, indent=1)

    def write_markdown(self, text: str, name: str = "summary.md") -> Path:
        path = self.path(name)
        path.write_text(text.rstrip() + "\n")
        return path


def configure_jax_cache(where: str | None) -> str | None:
    """Turn on the persistent compilation cache as the command line does
    (:func:`controldl.enable_compilation_cache`: ``where`` a directory or ``off``, ``None``
    for ``$CONTROLDL_CACHE_DIR`` or the user cache directory)."""
    path = compilation.enable_compilation_cache(where)
    return None if path is None else str(path)


def configure_process() -> None:
    """The experiments' process settings: float64 and matplotlib's file backend (they
    write files only). Called once at the start of a run, never on import."""
    jax.config.update("jax_enable_x64", True)
    matplotlib.use("Agg")


def main_wrapper(name: str, doc: str | None, body: Callable[[Run], None],
                 argv: Sequence[str] | None = None, configure: Callable | None = None,
                 default_seeds: Sequence[int] = (0, 1, 2),
                 quick_seeds: Sequence[int] = (0,)) -> int:
    """Parse ``argv``, run ``body(run)``; a ``ValueError`` (a bad input) ends with one
    line on stderr and exit code 2, any other error with its traceback and exit code 1."""
    p = parser(doc, default_seeds, quick_seeds)
    if configure is not None:
        configure(p)
    args = p.parse_args(argv)
    configure_process()
    if args.out.exists() and not args.out.is_dir():
        p.error(f"--out {str(args.out)!r} exists and is not a directory")
    try:
        run = Run(name, args)
        run.log(f"start (quick={run.quick}, seeds={run.seeds}, out={run.out})")
        body(run)
        run.log("done")
    except ValueError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 2
    except Exception:
        traceback.print_exc()
        return 1
    finally:
        plt.close("all")
    return 0


# --------------------------------------------------------------------------- JSON, markdown


def fmt(v: Any, spec: str = ".4g") -> str:
    """A table cell: ``—`` for missing or non-finite values."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int | np.integer) and not spec.endswith(("f", "e", "%")):
        return str(int(v))
    if isinstance(v, int | float | np.integer | np.floating):
        return format(float(v), spec)
    return str(v)


def md_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(lines)


def stats(values: Iterable[Any]) -> dict[str, Any]:
    """Mean, standard deviation (n − 1), min and max of the finite values; ``n`` counts
    them, ``missing`` the others."""
    vals = [float(v) for v in values if v is not None]
    finite = np.array([v for v in vals if math.isfinite(v)], float)
    missing = sum(1 for v in values if v is None) if isinstance(values, list) else None
    if finite.size == 0:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0,
                "missing": missing}
    return {"mean": float(finite.mean()),
            "std": float(finite.std(ddof=1)) if finite.size > 1 else 0.0,
            "min": float(finite.min()), "max": float(finite.max()), "n": int(finite.size),
            "missing": missing}


def pm(s: dict[str, Any], spec: str = ".4g") -> str:
    """``mean ± std`` of a :func:`stats` dictionary."""
    if s.get("mean") is None:
        return "—"
    if s.get("n", 0) > 1:
        return f"{fmt(s['mean'], spec)} ± {fmt(s['std'], spec)}"
    return fmt(s["mean"], spec)


# --------------------------------------------------------------------------- measurements


def training_solver(quick: bool) -> tuple[cdl.Solver, str]:
    """The solver of the experiments that just need a trained network: L-BFGS (optax) in
    full runs; Adam in quick mode, whose step compiles in about half the time."""
    if quick:
        return cdl.GradientDescent("adam", lr=0.05), "Adam (optax, lr 0.05)"
    return cdl.GradientDescent("lbfgs"), "L-BFGS (optax)"


def solution_record(sol: cdl.Solution) -> dict[str, Any]:
    """The scalar results of one solve."""
    return {"solver": sol.solver.get("label", sol.solver["name"]), "status": sol.status,
            "cost": sol.cost["total"], "cost_terms": dict(sol.cost),
            "train_accuracy": sol.train_accuracy, "test_accuracy": sol.test_accuracy,
            "iterations": sol.iterations, "wall_time_s": sol.wall_time_s,
            "compile_time_s": sol.compile_time_s,
            "max_lipschitz": max_lipschitz(sol)}


def accuracy_on(sol: cdl.Solution, data: cdl.Dataset) -> float:
    """Accuracy of ``sol`` on the (training) points of another data set, e.g. fresh
    samples of the same distribution (:meth:`controldl.Solution.accuracy`)."""
    return sol.accuracy(data.X_train, data.y_train)


def max_lipschitz(sol: cdl.Solution) -> float:
    """``max_t h·‖A_t‖₂`` (:func:`controldl.problem.lipschitz_constants`); < 1 makes every
    residual layer invertible."""
    return float(np.max(P.lipschitz_constants(sol.problem.formulation, sol.params)))


def flow_jacobian_dets(sol: cdl.Solution, X: np.ndarray) -> np.ndarray:
    """``det ∂x(L)/∂x(0)`` at the embedded inputs ``X`` (N, n), the Jacobian of the whole
    network in ``R^d`` (:func:`controldl.problem.final_state` differentiated by JAX).
    A continuous injective map of ``R^d`` cannot have a Jacobian determinant of both
    signs, so a non-positive value where others are positive shows a fold."""
    form = sol.problem.formulation
    params = P.Params(*(jnp.asarray(v) for v in sol.params))
    X0 = P.embed(form, jnp.asarray(X, jnp.float64))
    flow = lambda x: P.final_state(form, params, x[None])[0]  # noqa: E731
    jac = jax.jit(jax.vmap(jax.jacfwd(flow)))
    out = [np.linalg.det(np.asarray(jac(X0[i:i + 2048]))) for i in range(0, len(X0), 2048)]
    return np.concatenate(out)


def grid_points(lo: float, hi: float, n: int) -> np.ndarray:
    """An ``n × n`` grid of ``[lo, hi]²`` as (n², 2) points."""
    g = np.linspace(lo, hi, n)
    g0, g1 = np.meshgrid(g, g)
    return np.stack([g0.ravel(), g1.ravel()], axis=1)


def singular_values_centred(x: np.ndarray) -> np.ndarray:
    """Singular values of the centred point cloud ``x`` (N, d), largest first, divided by
    ``sqrt(N)`` (the standard deviations along the principal axes)."""
    c = x - x.mean(axis=0)
    return np.linalg.svd(c, compute_uv=False) / math.sqrt(len(x))


def decision_panel(ax: Any, sol: cdl.Solution, lo: float = -1.25, hi: float = 1.25,
                   resolution: int = 160, points: tuple[np.ndarray, np.ndarray] | None = None,
                   wrong: np.ndarray | None = None, title: str = "") -> None:
    """Draw the decision regions of a binary classifier with 2-D inputs on ``ax``: the
    sign of the network's output on a grid, the boundary ``z = 0``, ``points`` coloured
    by label, and ``wrong`` points (misclassified) as red crosses."""
    g = np.linspace(lo, hi, resolution)
    g0, g1 = np.meshgrid(g, g)
    z = sol.outputs(np.stack([g0.ravel(), g1.ravel()], axis=1))[:, 0]
    ax.contourf(g0, g1, (z > 0).reshape(g0.shape).astype(float), levels=[-0.5, 0.5, 1.5],
                colors=["#cfe2f3", "#fde0c5"])
    ax.contour(g0, g1, z.reshape(g0.shape), levels=[0.0], colors="k", linewidths=0.8)
    if points is not None:
        X, y = points
        ax.scatter(X[:, 0], X[:, 1], c=[plotting.CLASS_COLORS[int(k)] for k in y], s=3,
                   edgecolors="none")
    if wrong is not None and len(wrong):
        ax.scatter(wrong[:, 0], wrong[:, 1], marker="x", c="red", s=14, linewidths=0.8)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)


def correct(sol: cdl.Solution, data: cdl.Dataset) -> np.ndarray:
    """Per point of ``data`` (training split): is ``sol``'s label right?
    (:meth:`controldl.Solution.predict`, the library's decision rule)."""
    return sol.predict(data.X_train) == np.asarray(data.y_train)


def misclassified(sol: cdl.Solution, data: cdl.Dataset) -> np.ndarray:
    """The points of ``data`` (training split) that ``sol`` labels wrongly."""
    return data.X_train[~correct(sol, data)]


def experiment_markdown(title: str, claim: str, settings: str, body: str,
                        figures: Sequence[tuple[str, str]], run: Run) -> str:
    """The summary page: the claim, the settings, the results and the figures."""
    lines = [f"# {title}", "", f"**Claim tested.** {claim}", "", f"**Settings.** {settings}",
             "", body.rstrip(), ""]
    for name, caption in figures:
        if name:
            lines += [f"![{caption}]({name})", "", f"*{caption}*", ""]
    listed = {name for name, _ in figures}
    others = [f for f in run.figures if f not in listed]
    if others:
        lines += ["Other figures: " + ", ".join(f"[{f}]({f})" for f in others) + ".", ""]
    mode = "quick (small sizes; not for conclusions)" if run.quick else "full"
    lines.append(f"Mode: {mode}; seeds {', '.join(map(str, run.seeds))}; "
                 f"{run.elapsed():.0f} s wall, {run.cpu_time():.0f} s CPU on this machine "
                 f"({os.cpu_count()} CPU cores, shared).")
    return "\n".join(lines)
