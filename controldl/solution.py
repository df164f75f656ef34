"""The result of a solve, and its directory format (``arrays.npz`` + ``meta.json``).

The format is a public contract (DESIGN.md); other tools read it. Writes are atomic: the
directory is assembled under a temporary name beside the target and renamed into place.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from controldl.data import Dataset
from controldl.problem import FORMULATION_KEYS, Params, Problem
from controldl.status import Status

STATUS_MESSAGES: dict[str, str] = {s.value: s.message for s in Status}
"""Every status a solver may report, with what to do next."""


def solver_family(name: str) -> str:
    """``gd``, ``pmp`` or ``direct``: the family whose hints fit solver ``name``."""
    if name in ("casadi",) or name.startswith("casadi"):
        return "direct"
    if name in ("msa", "emsa") or name.startswith("pmp"):
        return "pmp"
    return "gd" if name == "gd" else ""


def versions() -> dict[str, str]:
    """Versions of Python and of the numerical libraries, for ``meta.json``."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("controldl", "jax", "jaxlib", "optax", "casadi", "numpy", "scipy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


@dataclasses.dataclass(eq=False)
class Solution:
    """What a solver returns.

    Attributes:
        problem: the problem solved (formulation and data).
        params: controls ``A`` (L, d, d), ``b`` (L, d) and readout ``W`` (m, d), ``c`` (m,),
            as NumPy arrays.
        solver: ``{"name": ..., "options": {...}}``.
        status: one of :data:`STATUS_MESSAGES`; ``message`` says what to do next.
        cost: every cost term and ``total`` at ``params``.
        train_accuracy, test_accuracy: classification only (``None`` otherwise).
        iterations: iterations performed.
        wall_time_s: the whole solve; ``compile_time_s`` the part spent compiling/building.
        history: ``[{iteration, time_s, cost, train_accuracy}, ...]``; ``time_s`` counts from
            the start of the solve, compilation included.
        stats: solver-specific diagnostics (PMP residuals, IPOPT status, ...).
    """

    problem: Problem
    params: Params
    solver: dict[str, Any]
    status: str
    cost: dict[str, float]
    train_accuracy: float | None
    test_accuracy: float | None
    iterations: int
    wall_time_s: float
    compile_time_s: float
    history: list[dict[str, Any]]
    stats: dict[str, Any] = dataclasses.field(default_factory=dict)
    versions: dict[str, str] = dataclasses.field(default_factory=versions)

    @property
    def message(self) -> str:
        """The status's message and the next step that fits this solver."""
        try:
            return Status(self.status).describe(solver_family(self.solver.get("name", "")))
        except ValueError:
            return str(self.status)

    @property
    def exit_code(self) -> int:
        """What the CLI returns for this solve (:attr:`Status.exit_code`)."""
        try:
            return Status(self.status).exit_code
        except ValueError:
            return 1

    @property
    def succeeded(self) -> bool:
        return self.status in ("converged", "target_reached")

    def summary(self) -> str:
        """One paragraph for a terminal."""
        acc = "" if self.train_accuracy is None else f", train acc {self.train_accuracy:.4f}"
        if self.test_accuracy is not None:
            acc += f", test acc {self.test_accuracy:.4f}"
        return (f"{self.solver['name']}: {self.status} after {self.iterations} iterations in "
                f"{self.wall_time_s:.2f} s (compile {self.compile_time_s:.2f} s); "
                f"cost {self.cost['total']:.6g}{acc}. {self.message}")

    def meta(self) -> dict[str, Any]:
        """The contents of ``meta.json``."""
        form = self.problem.formulation
        problem = {k: getattr(form, k) for k in FORMULATION_KEYS}
        problem.update(task=form.task, n_classes=form.n_classes, n_inputs=form.n_inputs,
                       n_outputs=form.n_outputs, step=form.h, data=self.problem.data.source)
        return jsonable({
            "problem": problem,
            "solver": self.solver,
            "status": self.status,
            "message": self.message,
            "cost": self.cost,
            "train_accuracy": self.train_accuracy,
            "test_accuracy": self.test_accuracy,
            "iterations": self.iterations,
            "wall_time_s": self.wall_time_s,
            "compile_time_s": self.compile_time_s,
            "history": self.history,
            "stats": self.stats,
            "devices": self.stats.get("devices"),
            "versions": self.versions,
        })

    def arrays(self) -> dict[str, np.ndarray]:
        """The contents of ``arrays.npz``."""
        data = self.problem.data
        out = {k: np.asarray(v) for k, v in self.params._asdict().items()}
        out.update(X_train=data.X_train, y_train=data.y_train)
        if data.has_test:
            out.update(X_test=data.X_test, y_test=data.y_test)
        return out

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``arrays.npz`` and ``meta.json`` to ``directory``, atomically."""
        meta = self.meta()
        arrays = self.arrays()

        def write(tmp: Path) -> None:
            np.savez(tmp / "arrays.npz", **arrays)
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2, allow_nan=False))

        return atomic_directory(directory, write)


def atomic_directory(directory: str | os.PathLike, write: Any) -> Path:
    """Call ``write(tmp)`` on a fresh temporary directory beside ``directory``, then rename
    it to ``directory`` (replacing an existing one). On any error nothing is left behind."""
    target = Path(directory).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        write(tmp)
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            old.rmdir()
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def jsonable(x: Any) -> Any:
    """Convert NumPy/JAX scalars and arrays to JSON; non-finite floats become ``None``
    (other objects, paths included, become their ``str``)."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [jsonable(v) for v in x]
    if isinstance(x, bool | np.bool_):
        return bool(x)
    if isinstance(x, int | np.integer):
        return int(x)
    if isinstance(x, float | np.floating):
        return float(x) if math.isfinite(x) else None
    if hasattr(x, "shape") and hasattr(x, "tolist"):
        return jsonable(np.asarray(x).tolist())
    if x is None or isinstance(x, str):
        return x
    return str(x)


_jsonable = jsonable  # the earlier private name, kept for callers


def load(directory: str | os.PathLike) -> Solution:
    """Read a solution directory written by :meth:`Solution.save` (or any tool that
    follows the format)."""
    directory = Path(directory)
    meta_path, arrays_path = directory / "meta.json", directory / "arrays.npz"
    if not directory.is_dir():
        raise ValueError(f"solution directory {str(directory)!r} does not exist")
    for p in (meta_path, arrays_path):
        if not p.is_file():
            raise ValueError(f"{directory} is not a solution directory: {p.name} is missing")
    try:
        meta = json.loads(meta_path.read_text())
        with np.load(arrays_path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as exc:
        raise ValueError(f"{directory}: unreadable solution ({exc})") from None
    missing = [k for k in ("A", "b", "W", "c", "X_train", "y_train") if k not in arrays]
    if missing:
        raise ValueError(f"{arrays_path}: missing array(s) {', '.join(missing)}")
    pm = meta.get("problem", {})
    task = pm.get("task", "classification")
    data = Dataset(
        X_train=arrays["X_train"], y_train=arrays["y_train"],
        X_test=arrays.get("X_test"), y_test=arrays.get("y_test"),
        task=task, n_classes=pm.get("n_classes") if task == "classification" else None,
        source=pm.get("data", {}),
    )
    problem = Problem(data, **{k: pm[k] for k in FORMULATION_KEYS if k in pm})
    params = Params(*(arrays[k] for k in ("A", "b", "W", "c")))
    L, d, m = problem.layers, problem.width, problem.n_outputs
    expected = {"A": (L, d, d), "b": (L, d), "W": (m, d), "c": (m,)}
    for k, shape in expected.items():
        if getattr(params, k).shape != shape:
            raise ValueError(f"{arrays_path}: {k} has shape {getattr(params, k).shape}, "
                             f"expected {shape} from meta.json")
    nan = lambda v: math.nan if v is None else float(v)  # noqa: E731
    return Solution(
        problem=problem, params=params,
        solver=meta.get("solver", {"name": "unknown", "options": {}}),
        status=meta.get("status", "unknown"),
        cost={k: nan(v) for k, v in meta.get("cost", {}).items()},
        train_accuracy=meta.get("train_accuracy"), test_accuracy=meta.get("test_accuracy"),
        iterations=int(meta.get("iterations", 0)),
        wall_time_s=float(meta.get("wall_time_s", 0.0)),
        compile_time_s=float(meta.get("compile_time_s", 0.0)),
        history=meta.get("history", []), stats=meta.get("stats", {}),
        versions=meta.get("versions", {}),
    )
