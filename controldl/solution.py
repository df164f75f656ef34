"""The result of a solve, and its directory format (``arrays.npz`` + ``meta.json``).

The format is a public contract (``docs/design.md``); other tools read it. Writes are atomic: the
directory is assembled under a temporary name beside the target and renamed into place
(:func:`controldl.io.atomic_directory`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from controldl import problem as P
from controldl.data import Dataset
from controldl.io import atomic_directory, jsonable, marked, write_json
from controldl.problem import FORMULATION_KEYS, Params, Problem, discrete
from controldl.status import Status

SOLUTION_FILES: tuple[str, ...] = ("arrays.npz", "meta.json")
"""The files of a solution directory."""
CHECKPOINT_DIRECTORY = "checkpoint"
"""Where a solution directory keeps the checkpoint it carries
(:mod:`controldl.solvers.checkpoint`)."""

STATUS_MESSAGES: dict[str, str] = {s.value: s.message for s in Status}
"""Every status a solver may report, with what to do next."""


def solver_family(name: str) -> str:
    """``gd``, ``pmp`` or ``direct``: the family whose hints fit solver ``name``."""
    if name in ("casadi",) or name.startswith("casadi"):
        return "direct"
    if name in ("msa", "emsa", "discrete-msa") or name.startswith("pmp"):
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


class WarmStart(NamedTuple):
    """The predecessor of a warm-started solve, so that comparisons can add its cost.

    ``wall_time_s``, ``compile_time_s`` and ``work`` (gradient-evaluation equivalents,
    ``None`` when the predecessor did not count it) are totals over the predecessor and its
    own chain of warm starts; ``label`` is its solver label, ``directory`` where it was
    loaded from (``None`` for an in-memory solution).
    """

    label: str
    directory: str | None
    wall_time_s: float
    compile_time_s: float
    work: float | None

    @classmethod
    def of(cls, predecessor: Solution, directory: str | None = None) -> WarmStart:
        """The record of a warm start from ``predecessor`` (its chain included)."""
        before = predecessor.warm_start
        work = predecessor.work
        if before is not None:
            work = None if work is None or before.work is None else work + before.work
        return cls(
            label=str(predecessor.solver.get("label", predecessor.solver.get("name", ""))),
            directory=directory,
            wall_time_s=predecessor.wall_time_s + (before.wall_time_s if before else 0.0),
            compile_time_s=predecessor.compile_time_s + (before.compile_time_s if before
                                                         else 0.0),
            work=work)


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
        stationarity: :func:`controldl.stationarity` at ``params``, the first-order measure
            shared by every solver.
        warm_start: the predecessor of a warm-started solve (:class:`WarmStart`), else
            ``None``.
        checkpoint: the solver's state to continue from
            (:class:`controldl.solvers.checkpoint.Checkpoint`): set on an interrupted solve
            and on a solve with checkpointing; :meth:`save` writes it to ``checkpoint/``.
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
    stationarity: float | None = None
    warm_start: WarmStart | None = None
    checkpoint: Any = None

    @property
    def work(self) -> float | None:
        """Gradient-evaluation equivalents spent by this solve (``None`` when the solver
        does not count them): the last history entry's ``work``."""
        counted = [h["work"] for h in self.history if h.get("work") is not None]
        return float(counted[-1]) if counted else None

    def states(self, X: Any) -> np.ndarray:
        """The trajectory ``x(0..L)`` (L+1, N, d) of inputs ``X`` (N, n) through the layers."""
        form, X = self.problem.formulation, self._inputs(X)
        return np.asarray(P.trajectory(form, self._jax_params(), P.embed(form, X)))

    def outputs(self, X: Any) -> np.ndarray:
        """The readout ``z = W x(L) + c`` (N, m) of inputs ``X`` (N, n)."""
        form, X = self.problem.formulation, self._inputs(X)
        return np.asarray(P.predict(form, self._jax_params(), P.embed(form, X)))

    def predict(self, X: Any) -> np.ndarray:
        """Predicted labels (N,) for classification (``z > 0`` for one output, ``argmax z``
        for K), the outputs ``z`` (N, m) for regression."""
        z = self.outputs(X)
        if self.problem.formulation.task != "classification":
            return z
        return (z[:, 0] > 0).astype(np.int64) if z.shape[1] == 1 else np.argmax(z, axis=1)

    def accuracy(self, X: Any, y: Any) -> float:
        """The fraction of labels ``y`` (N,) that :meth:`predict` gets right on ``X``."""
        if self.problem.formulation.task != "classification":
            raise ValueError("accuracy is for classification; this solution is a regression")
        y = np.asarray(y)
        pred = self.predict(X)
        if y.shape != pred.shape:
            raise ValueError(f"y has shape {y.shape} but X gives {pred.shape[0]} predictions")
        return float(np.mean(pred == y))

    def _inputs(self, X: Any) -> Any:
        import jax.numpy as jnp

        X = np.asarray(X, np.float64)
        n = self.problem.formulation.n_inputs
        image = self.problem.formulation.image_shape
        if X.ndim == 1 and n == 1:
            X = X[:, None]
        if image is not None and X.ndim == 4 and X.shape[1:] == tuple(image):
            X = X.reshape(len(X), -1)
        if X.ndim != 2 or X.shape[1] != n:
            want = f"(N, {n})" if image is None else f"(N, {', '.join(map(str, image))})"
            raise ValueError(f"X must have shape {want}, got {X.shape}")
        if not np.all(np.isfinite(X)):
            raise ValueError("X contains NaN or infinity")
        return jnp.asarray(X, jnp.asarray(self.params.A).dtype)

    def _jax_params(self) -> Params:
        import jax.numpy as jnp

        return Params(*(jnp.asarray(v) for v in self.params))

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
        """Converged or at the target cost (:attr:`Status.succeeded`)."""
        try:
            return Status(self.status).succeeded
        except ValueError:
            return False

    @property
    def completed(self) -> bool:
        """The solve ended by a stopping rule or a limit (:attr:`Status.completed`)."""
        try:
            return Status(self.status).completed
        except ValueError:
            return False

    def summary(self) -> str:
        """One paragraph for a terminal."""
        acc = "" if self.train_accuracy is None else f", train acc {self.train_accuracy:.4f}"
        if self.test_accuracy is not None:
            acc += f", test acc {self.test_accuracy:.4f}"
        returned = ""
        st = self.stats
        if st.get("returned") == "best" and st.get("best_iteration") != st.get("last_iteration"):
            returned = (f" Returned the best iterate (iteration {st['best_iteration']}), not the "
                        f"last (iteration {st['last_iteration']}, cost {st['last_cost']:.6g}).")
        name = self.solver.get("label") or self.solver.get("name", "solver")
        return (f"{name}: {self.status} after {self.iterations} iterations in "
                f"{self.wall_time_s:.2f} s (compile {self.compile_time_s:.2f} s); "
                f"cost {self.cost['total']:.6g}{acc}. {self.message}{returned}")

    def meta(self) -> dict[str, Any]:
        """The contents of ``meta.json`` (marked as a ``solution`` output,
        :func:`controldl.io.marked`)."""
        return jsonable(marked("solution", {
            "problem": problem_record(self.problem),
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
            "stationarity": self.stationarity,
            "work": self.work,
            "warm_start": None if self.warm_start is None else self.warm_start._asdict(),
            "devices": self.stats.get("devices"),
            "versions": self.versions,
        }))

    def arrays(self) -> dict[str, np.ndarray]:
        """The contents of ``arrays.npz``; for discrete controls also their signs
        ``A_sign`` (int8, the shape of ``A``) and scales ``A_scale`` (L,), with
        ``A = A_scale[t]·A_sign[t]`` exactly."""
        out = {k: np.asarray(v) for k, v in self.params._asdict().items()}
        form = self.problem.formulation
        if form.discrete:
            out.update(A_sign=discrete.signs(form, self.params.A),
                       A_scale=discrete.scales(form))
        out.update(data_arrays(self.problem))
        return out

    def save(self, directory: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write ``arrays.npz`` and ``meta.json`` to ``directory``, atomically.

        ``directory`` must be new, empty or a previous solution directory (its
        ``meta.json`` says so); anything else (a directory of other files, a file) is
        replaced only with ``overwrite``, and a directory that holds the problem's data
        file never (:func:`controldl.io.check_output`).

        Raises:
            ValueError: the directory may not be written (one line saying why).
        """
        meta = self.meta()
        arrays = self.arrays()

        def write(tmp: Path) -> None:
            np.savez_compressed(tmp / "arrays.npz", **arrays)
            write_json(tmp / "meta.json", meta)
            if self.checkpoint is not None:
                self.checkpoint.write(tmp / CHECKPOINT_DIRECTORY)

        return atomic_directory(directory, write, kind="solution", overwrite=overwrite,
                                keep=input_paths(self.problem))


def input_paths(problem: Problem) -> tuple[str, ...]:
    """The files ``problem`` was read from (its data file, when it came from one): an
    output directory that holds one of them is never replaced."""
    path = problem.data.source.get("path")
    return (str(path),) if path else ()


def problem_record(problem: Problem) -> dict[str, Any]:
    """The ``problem`` entry of ``meta.json``: every formulation key, the task, the sizes,
    the step and the data source."""
    form = problem.formulation
    record = {k: getattr(form, k) for k in FORMULATION_KEYS}
    record.update(task=form.task, n_classes=form.n_classes, n_inputs=form.n_inputs,
                  n_outputs=form.n_outputs, step=form.h, data=problem.data.source)
    if form.discrete:
        record["control_scale"] = {"rule": discrete.SCALE_RULE, "value": discrete.scale(form)}
    return record


def data_arrays(problem: Problem) -> dict[str, np.ndarray]:
    """The data arrays of ``arrays.npz``: ``X_train``, ``y_train`` (and the test split)."""
    data = problem.data
    out = {"X_train": data.X_train, "y_train": data.y_train}
    if data.has_test:
        out.update(X_test=data.X_test, y_test=data.y_test)
    return out


RECORD_KEYS: tuple[str, ...] = ("task", "model", "activation", "width", "layers", "horizon",
                               "loss", "l2", "l1", "smooth", "running", "readout_l2",
                               "train_readout")
"""The formulation keys every ``problem`` record holds (a record without one is refused,
never completed with a default). Keys added to the formulation later (``terminal``, the
bounds, the conv model's) default, when absent, to the value that leaves them out, as the
record's writer had them."""


def problem_from_record(record: Any, arrays: dict[str, np.ndarray], where: Any) -> Problem:
    """The problem of a :func:`problem_record` and its :func:`data_arrays` (read from
    ``where``, named in errors).

    Raises:
        ValueError: the record is missing or lacks one of :data:`RECORD_KEYS`, or an
            array is missing.
    """
    if not isinstance(record, dict):
        raise ValueError(f"{where}: no problem record (the 'problem' entry is missing)")
    absent = [k for k in RECORD_KEYS if k not in record]
    if absent:
        raise ValueError(f"{where}: the problem record has no {', '.join(absent)}")
    missing = [k for k in ("X_train", "y_train") if k not in arrays]
    if missing:
        raise ValueError(f"{where}: missing array(s) {', '.join(missing)}")
    task = record["task"]
    data = Dataset(
        X_train=arrays["X_train"], y_train=arrays["y_train"],
        X_test=arrays.get("X_test"), y_test=arrays.get("y_test"),
        task=task, n_classes=record.get("n_classes") if task == "classification" else None,
        source=record.get("data", {}),
    )
    return Problem(data, **{k: record[k] for k in FORMULATION_KEYS if k in record})


def load(directory: str | os.PathLike) -> Solution:
    """Read a solution directory written by :meth:`Solution.save` (or any tool that
    follows the format). The path of one of its files (``arrays.npz``, ``meta.json``)
    names the directory too."""
    directory = Path(directory)
    if directory.name in SOLUTION_FILES and directory.is_file():
        directory = directory.parent
    meta_path, arrays_path = directory / "meta.json", directory / "arrays.npz"
    if directory.is_file():
        raise ValueError(f"{str(directory)!r} is a file; a solution is the directory that "
                         f"holds {' and '.join(SOLUTION_FILES)}")
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
    missing = [k for k in ("A", "b", "W", "c") if k not in arrays]
    if missing:
        raise ValueError(f"{arrays_path}: missing array(s) {', '.join(missing)}")
    problem = problem_from_record(meta.get("problem") if isinstance(meta, dict) else None,
                                  arrays, meta_path)
    params = Params(*(arrays[k] for k in ("A", "b", "W", "c")))
    expected = problem.formulation.param_shapes()
    for k, shape in expected.items():
        if getattr(params, k).shape != shape:
            raise ValueError(f"{arrays_path}: {k} has shape {getattr(params, k).shape}, "
                             f"expected {shape} from meta.json")
    _check_discrete(problem, arrays, arrays_path)
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
        versions=meta.get("versions", {}), stationarity=meta.get("stationarity"),
        warm_start=_warm_start(meta.get("warm_start")),
    )


def _check_discrete(problem: Problem, arrays: dict[str, np.ndarray], where: Any) -> None:
    """A discrete solution's ``A`` is exactly ``A_scale[t]·A_sign[t]`` (when the signs
    are saved) and lies in the set."""
    form = problem.formulation
    if not form.discrete:
        return
    s = discrete.signs(form, arrays["A"])
    if "A_sign" in arrays:
        expected = np.asarray(arrays["A_scale"], np.float64).reshape(
            (-1,) + (1,) * (s.ndim - 1)) * arrays["A_sign"].astype(np.float64)
        if not np.array_equal(arrays["A_sign"], s) or not np.array_equal(expected,
                                                                          arrays["A"]):
            raise ValueError(f"{where}: A is not A_scale·A_sign ({form.controls} controls)")


def _warm_start(record: Any) -> WarmStart | None:
    """A :class:`WarmStart` from its ``meta.json`` record (``None`` when absent)."""
    if not isinstance(record, dict):
        return None
    try:
        return WarmStart(**{k: record.get(k) for k in WarmStart._fields})
    except TypeError:
        return None
