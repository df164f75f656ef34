"""Long runs lose nothing: interruption, periodic checkpoints and resumption.

A **checkpoint** is the state of a solve *before* iteration ``k`` is computed: the
solver's own state (a pytree of arrays and numbers: the current iterate, the optimizer's
state, …), the history of iterations ``0..k-1``, the elapsed time, the stopping rules,
the solver's record (name and options) and the problem (formulation and data), so that a
checkpoint directory alone is enough to continue. Resuming replays iteration ``k`` from
that state, so a deterministic solver continues exactly as if it had not stopped.

The directory (written atomically, :func:`controldl.io.atomic_directory`):

- ``state.npz``: the solver state's flattened leaves ``leaf_00000``, ``leaf_00001``, …
  (``jax.tree.flatten`` order) and the data arrays (``X_train``, ``y_train``, …);
- ``state.json``: ``format``, ``iteration``, ``solver``, ``problem`` (as in
  ``meta.json``), ``stopping``, ``history``, ``elapsed_s``, ``compile_time_s``,
  ``warm_start``, ``treedef`` (the state's structure, checked on restore) and ``leaves``
  (shape and dtype of each).

A solver that can resume (:attr:`~controldl.solvers.base.Solver.resumable`) offers its
state once per iteration (:meth:`controldl.solvers.base.Monitor.snapshot`) and, when
resumed, restores it with :meth:`Checkpoint.restore` from a template of the same
structure.

**Interruption** is cooperative: :class:`Interrupt` is a signal handler that only sets a
flag; the :class:`~controldl.solvers.base.Monitor` reports ``interrupted`` at the next
recorded iteration (between compiled steps, or at IPOPT's next iteration callback), and
the solve raises :class:`SolveInterrupted` with its solution (that status, the best
iterate, the checkpoint of its last state). A second signal while the first is pending
raises a plain ``KeyboardInterrupt`` at once, and so does a signal while the solve
compiles before its first iteration (the compilation runs in a worker thread so that the
main thread can act on it: :func:`controldl.compilation.interruptible`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from controldl import solution as S
from controldl.io import atomic_directory, jsonable, marked, write_json
from controldl.problem import Problem

FORMAT = 1
"""The version of the checkpoint directory format."""
SUBDIRECTORY = S.CHECKPOINT_DIRECTORY
"""Where a solution directory (or ``controldl train --out``) keeps its checkpoint."""
STATE_JSON, STATE_NPZ = "state.json", "state.npz"
STOPPING_KEYS: tuple[str, ...] = ("max_iter", "max_time", "target_cost", "tol")
"""The stopping rules a checkpoint records (the fields of ``Stopping``)."""


class Interrupt:
    """A signal handler that records the first signal and asks the solve to stop at its
    next iteration; a second signal raises ``KeyboardInterrupt`` immediately, and so does
    the first while ``immediate`` is set (while the solve compiles before its first
    iteration: nothing to save yet, and a compilation may take minutes)."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self.immediate = False

    def __call__(self, signum: int, frame: Any) -> None:
        first = self.signal is None
        self.signal = signum if first else self.signal
        if not first or self.immediate:
            raise KeyboardInterrupt

    @property
    def requested(self) -> bool:
        return self.signal is not None

    @contextlib.contextmanager
    def installed(self, signals: tuple[int, ...]) -> Iterator[Interrupt]:
        """Install this handler for ``signals`` while the block runs (the previous
        handlers are restored after it). Outside the main thread Python cannot install
        handlers: nothing is installed there."""
        if not signals or threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.signal(s, self) for s in signals}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


class SolveInterrupted(KeyboardInterrupt):
    """Raised by ``solve`` when a signal stopped it: a ``KeyboardInterrupt`` (so a loop of
    solves stops as Ctrl-C should), which carries what the solve did: ``solution`` has
    status ``interrupted``, the best iterate so far and, for a resumable solver, the
    checkpoint of its last state (``solution.checkpoint``, ``solve(resume=...)``)."""

    def __init__(self, solution: S.Solution) -> None:
        super().__init__(f"solve interrupted at iteration {solution.iterations}")
        self.solution = solution


class Snapshot(NamedTuple):
    """A solver's state before iteration ``iteration``, as offered by the solver, with the
    length of the history then and the elapsed and compile times."""

    iteration: int
    state: Any
    n_history: int
    elapsed_s: float
    compile_time_s: float


class Checkpoint(NamedTuple):
    """A saved solver state and everything needed to continue from it (see the module
    docstring). ``leaves`` are the state's flattened leaves as NumPy arrays; ``treedef``
    the string of its structure."""

    iteration: int
    leaves: tuple[np.ndarray, ...]
    treedef: str
    solver: dict[str, Any]
    problem: Problem
    stopping: dict[str, Any]
    history: list[dict[str, Any]]
    elapsed_s: float
    compile_time_s: float
    warm_start: S.WarmStart | None

    def restore(self, template: Any) -> Any:
        """The saved state in the structure of ``template`` (a pytree like the one the
        solver offered): NumPy arrays where the template has arrays (same shape and
        dtype), Python numbers where it has numbers."""
        leaves, treedef = jax.tree.flatten(template)
        if str(treedef) != self.treedef or len(leaves) != len(self.leaves):
            raise CorruptCheckpoint(
                f"corrupt checkpoint: its solver state ({len(self.leaves)} leaves) does not "
                f"have the structure this solver and problem keep ({len(leaves)} leaves; "
                f"saved structure {self.treedef[:80]}…)")
        out = []
        for i, (t, v) in enumerate(zip(leaves, self.leaves, strict=True)):
            if isinstance(t, bool | int | float):
                if v.shape != ():
                    raise CorruptCheckpoint(f"corrupt checkpoint: leaf {i} has shape "
                                            f"{v.shape}, the solver keeps a number there")
                out.append(type(t)(v.item()))
                continue
            if tuple(np.shape(t)) != v.shape or np.dtype(t.dtype) != v.dtype:
                raise CorruptCheckpoint(
                    f"corrupt checkpoint: leaf {i} has shape {v.shape} and dtype {v.dtype}, "
                    f"the solver keeps {tuple(np.shape(t))} {np.dtype(t.dtype)} there")
            out.append(v)
        return jax.tree.unflatten(treedef, out)

    def write(self, directory: str | Path) -> Path:
        """Write this checkpoint to ``directory`` atomically (:func:`write`)."""
        return write(directory, self)


class Context(NamedTuple):
    """What a checkpoint records besides the solver's state: the problem, the solution's
    ``solver`` record (name, label, options, seed, init), the stopping rules (the fields
    of ``Stopping``) and the warm-start record."""

    problem: Problem
    solver: dict[str, Any]
    stopping: dict[str, Any]
    warm_start: S.WarmStart | None


@dataclasses.dataclass
class LongRun:
    """The interruption and checkpointing of one solve (held by its ``Monitor``).

    ``interrupt`` is set by a signal; ``resumed`` is the checkpoint the solve continues
    from (``None``: a fresh solve); with ``directory`` and ``every_s`` the latest
    snapshot is written to ``directory`` at most every ``every_s`` seconds of wall clock.
    ``context`` is what a checkpoint needs besides the state."""

    interrupt: Interrupt = dataclasses.field(default_factory=Interrupt)
    resumed: Checkpoint | None = None
    directory: Path | None = None
    every_s: float | None = None
    context: Context | None = None
    latest: Snapshot | None = None
    last_write: float = dataclasses.field(default_factory=time.perf_counter)
    written: int = 0

    def __post_init__(self) -> None:
        if self.every_s is not None and not (math.isfinite(self.every_s)
                                             and self.every_s > 0):
            raise ValueError(f"checkpoint_every_s must be a number > 0, got {self.every_s!r}")
        if self.every_s is not None and self.directory is None:
            raise ValueError("checkpoint_every_s needs a checkpoint directory")

    def offer(self, snapshot: Snapshot, history: list[dict[str, Any]]) -> None:
        """Keep ``snapshot`` as the latest state; write it when a checkpoint is due."""
        self.latest = snapshot
        if self.every_s is None or time.perf_counter() - self.last_write < self.every_s:
            return
        write(self.directory, self.checkpoint(history))
        self.last_write = time.perf_counter()
        self.written += 1

    def checkpoint(self, history: list[dict[str, Any]]) -> Checkpoint | None:
        """The :class:`Checkpoint` of the latest snapshot (``None`` before any)."""
        snap = self.latest
        if snap is None or self.context is None:
            return None
        c = self.context
        leaves, treedef = jax.tree.flatten(jax.device_get(snap.state))
        return Checkpoint(snap.iteration, tuple(np.asarray(v) for v in leaves), str(treedef),
                          c.solver, c.problem, c.stopping, list(history[:snap.n_history]),
                          snap.elapsed_s, snap.compile_time_s, c.warm_start)


def write(directory: str | Path, ck: Checkpoint) -> Path:
    """Write ``ck`` to ``directory`` atomically (``state.npz`` + ``state.json``)."""
    arrays = {f"leaf_{i:05d}": v for i, v in enumerate(ck.leaves)}
    arrays.update(S.data_arrays(ck.problem))
    meta = jsonable(marked("checkpoint", {
        "format": FORMAT, "iteration": ck.iteration, "solver": ck.solver,
        "problem": S.problem_record(ck.problem), "stopping": ck.stopping,
        "history": ck.history, "elapsed_s": ck.elapsed_s,
        "compile_time_s": ck.compile_time_s,
        "warm_start": None if ck.warm_start is None else ck.warm_start._asdict(),
        "treedef": ck.treedef,
        "leaves": [{"shape": list(v.shape), "dtype": str(v.dtype)} for v in ck.leaves],
    }))

    def fill(tmp: Path) -> None:
        np.savez_compressed(tmp / STATE_NPZ, **arrays)
        write_json(tmp / STATE_JSON, meta, indent=1)

    return atomic_directory(directory, fill, kind="checkpoint",
                            keep=S.input_paths(ck.problem))


def locate(directory: str | Path) -> Path:
    """The checkpoint directory of ``directory``: itself when it holds ``state.json``,
    else its ``checkpoint/`` (a solution directory)."""
    directory = Path(directory)
    for candidate in (directory, directory / SUBDIRECTORY):
        if (candidate / STATE_JSON).is_file():
            return candidate
    if (directory / "meta.json").is_file():
        raise ValueError(f"{directory} is a solution without a checkpoint (its solver "
                         "cannot resume, or it ended before its first iteration): use "
                         "--warm-start to start from its parameters")
    raise ValueError(f"{directory} holds no checkpoint ({STATE_JSON} or "
                     f"{SUBDIRECTORY}/{STATE_JSON})")


STATE_KEYS: tuple[str, ...] = ("format", "iteration", "solver", "problem", "stopping",
                              "history", "elapsed_s", "compile_time_s", "treedef", "leaves")
"""What every ``state.json`` holds (``warm_start`` may be null)."""


class CorruptCheckpoint(ValueError):
    """A checkpoint that does not match its own record ("corrupt checkpoint: …")."""


def load(directory: str | Path) -> Checkpoint:
    """Read the checkpoint of ``directory`` (a checkpoint or a solution directory).

    Raises:
        ValueError: no checkpoint there, an unreadable one, another format, or
            :class:`CorruptCheckpoint` when its files disagree with each other or lack a
            part (the problem, a leaf) — never a default in its place.
    """
    where = locate(directory)
    try:
        meta = json.loads((where / STATE_JSON).read_text())
        with np.load(where / STATE_NPZ, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as exc:
        raise ValueError(f"{where}: unreadable checkpoint ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise ValueError(f"{where}: checkpoint format {found!r}, this controldl reads "
                         f"format {FORMAT}")
    try:
        return _checkpoint(where, meta, arrays)
    except CorruptCheckpoint:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        detail = f"{type(exc).__name__}: {exc}" if isinstance(exc, KeyError) else str(exc)
        raise CorruptCheckpoint(f"corrupt checkpoint: {where}: {detail}") from None


def _leaves(where: Path, meta: dict[str, Any], arrays: dict[str, np.ndarray]
            ) -> tuple[np.ndarray, ...]:
    """The solver state's leaves, checked against the list in ``state.json``."""
    listed = meta["leaves"]
    saved = sorted(k for k in arrays if k.startswith("leaf_"))
    expected = [f"leaf_{i:05d}" for i in range(len(listed))]
    if saved != expected:
        raise CorruptCheckpoint(f"corrupt checkpoint: {where}: {STATE_JSON} lists "
                                f"{len(listed)} leaves of the solver state, {STATE_NPZ} "
                                f"holds {len(saved)}")
    for i, (record, name) in enumerate(zip(listed, expected, strict=True)):
        v = arrays[name]
        if list(v.shape) != list(record["shape"]) or str(v.dtype) != record["dtype"]:
            raise CorruptCheckpoint(
                f"corrupt checkpoint: {where}: leaf {i} has shape {v.shape} and dtype "
                f"{v.dtype}, {STATE_JSON} says {tuple(record['shape'])} {record['dtype']}")
    return tuple(arrays[name] for name in expected)


def _checkpoint(where: Path, meta: dict[str, Any], arrays: dict[str, np.ndarray]
                ) -> Checkpoint:
    missing = [k for k in STATE_KEYS if k not in meta]
    if missing:
        raise CorruptCheckpoint(f"corrupt checkpoint: {where}: {STATE_JSON} has no "
                                f"{', '.join(map(repr, missing))}")
    leaves = _leaves(where, meta, arrays)
    problem = S.problem_from_record(meta["problem"], arrays, STATE_JSON)
    nan = lambda v: math.nan if v is None else v  # noqa: E731
    history = [{k: nan(v) if k == "cost" else v for k, v in h.items()}
               for h in meta["history"]]
    return Checkpoint(int(meta["iteration"]), leaves, meta["treedef"], meta["solver"],
                      problem, {k: meta["stopping"].get(k) for k in STOPPING_KEYS},
                      history, float(meta["elapsed_s"]), float(meta["compile_time_s"]),
                      S._warm_start(meta.get("warm_start")))


def as_checkpoint(resume: Any) -> Checkpoint:
    """A :class:`Checkpoint` from a checkpoint, a solution that carries one or a
    directory."""
    if isinstance(resume, Checkpoint):
        return resume
    if isinstance(resume, S.Solution):
        if resume.checkpoint is None:
            raise ValueError("this solution carries no checkpoint (its solver cannot "
                             "resume): warm-start from it instead")
        return resume.checkpoint
    return load(resume)


def _tuples(value: Any) -> Any:
    """JSON lists back to the tuples of solver options (nested pairs included)."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def solver_of(ck: Checkpoint) -> Any:
    """The solver a checkpoint was written by, with its options."""
    from controldl.solvers.registry import solver_class

    cls = solver_class(ck.solver.get("name", ""))
    names = {f.name for f in dataclasses.fields(cls)}
    options = {k: _tuples(v) for k, v in ck.solver.get("options", {}).items() if k in names}
    return cls(**options)


def check_matches(ck: Checkpoint, problem: Problem, solver: Any) -> None:
    """Raise ``ValueError`` unless ``problem`` and ``solver`` are those of ``ck``."""
    if ck.solver.get("name") != solver.name:
        raise ValueError(f"the checkpoint was written by solver {ck.solver.get('name')!r}, "
                         f"not {solver.name!r}")
    if jsonable(solver.options()) != jsonable(ck.solver.get("options", {})):
        raise ValueError("the solver's options differ from the checkpoint's; resume with "
                         "the checkpoint's solver (checkpoint.solver_of)")
    mine, theirs = S.problem_record(problem), S.problem_record(ck.problem)
    mine.pop("data"), theirs.pop("data")
    data, saved = S.data_arrays(problem), S.data_arrays(ck.problem)
    same_data = data.keys() == saved.keys() and all(
        np.array_equal(data[k], saved[k]) for k in data)
    if jsonable(mine) != jsonable(theirs) or not same_data:
        raise ValueError("the problem differs from the checkpoint's (formulation or data)")
