"""The solver interface and the single entry point :func:`solve`.

A solver is a small frozen dataclass whose fields are its options. It implements
:meth:`Solver.run`, which receives the problem, the initial parameters and a
:class:`Monitor`, and returns a :class:`RunResult`. :func:`solve` does everything common
to all solvers: the shared initialization or warm start, the clock, the history, the
progress meter, the stopping rules, and the final evaluation of every cost term and
accuracy on the returned parameters.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import math
import os
import signal
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import jax
import numpy as np

from controldl import parallel
from controldl import problem as P
from controldl.compilation import (  # noqa: F401 - COMPILED and signature: used from here
    COMPILED,
    RUN_ONCE_OPTIONS,
    signature,
)
from controldl.problem import Params, Problem
from controldl.solution import Solution, WarmStart
from controldl.solvers import checkpoint as C
from controldl.solvers import memory as M
from controldl.solvers.options import default_dtype
from controldl.status import Status


def compile_count() -> int:
    """How many programs :data:`COMPILED` has built in this process: a solve that reuses a
    compiled step leaves it unchanged."""
    return COMPILED.builds


COMMON_TOL: float = 1e-4
"""The common stationarity tolerance of ``controldl compare`` and ``train`` (on
:func:`controldl.stationarity`, ``‖∇J‖₂`` without l1 and constraints): reached by every
default solver of the comparison within its time cap on the default problem (measured
there, on the ring)."""


def clear_compile_caches() -> None:
    """Forget every compiled program of this process: JAX's caches, :data:`COMPILED` and
    the ``functools`` caches of the loaded ``controldl.solvers`` modules, so that the next
    solve compiles from scratch (a cold timing; JAX's persistent cache on disk, when
    enabled, is kept)."""
    jax.clear_caches()
    COMPILED.clear()
    for name, module in list(sys.modules.items()):
        if not name.startswith("controldl.solvers") or module is None:
            continue
        for value in list(vars(module).values()):
            if callable(getattr(value, "cache_clear", None)) and hasattr(value, "cache_info"):
                value.cache_clear()


def training_arrays(problem: Problem, dtype: Any, batch_size: int | None,
                    devices: int | None, pad: bool = True
                    ) -> tuple[jax.Array, Any, Any, Any]:
    """``(X0, Y, y, mesh)`` for the JAX solvers: the embedded training inputs ``X0``
    (N, d) and targets ``Y`` (N, m) in ``dtype``, the labels ``y`` (N,) (zeros for
    regression), placed on ``devices`` devices when given (samples sharded, see
    :mod:`controldl.parallel`; ``mesh`` is ``None`` otherwise). With several processes
    each process embeds only the rows its own devices hold and the arrays are global.
    With one process and N not a multiple of the devices, the samples are padded with
    weight-zero copies (``pad``; :func:`controldl.parallel.pad_samples`: ``Y`` and ``y``
    are then :class:`~controldl.parallel.Weighted`); a solver that cannot weigh its
    samples passes ``pad=False`` and N must divide. Checks that a mini-batch fits the data
    and splits evenly over the devices."""
    N = problem.data.n_train
    if batch_size is not None and batch_size > N:
        raise ValueError(f"batch_size {batch_size} exceeds the {N} training samples")
    mesh = parallel.data_mesh(devices)
    padded = parallel.padded_count(mesh, N) if pad and jax.process_count() == 1 else N
    if padded % (1 if mesh is None else mesh.devices.size):
        k = mesh.devices.size
        why = ("this solver does not pad the samples (gd, msa and emsa do)" if not pad
               else "several processes do not pad the samples")
        raise ValueError(f"{N} samples cannot be split evenly over {k} devices: {why}; use "
                         f"a number of training samples divisible by {k}")
    if batch_size is not None:
        parallel.check_divisible(mesh, batch_size, "samples per batch")
    rows = parallel.local_rows(mesh, N)
    X0 = problem.initial_states(dtype, rows=rows)
    Y = problem.targets(dtype, rows=rows)
    y = (problem.data.y_train[rows] if problem.formulation.task == "classification"
         else np.zeros(rows.stop - rows.start, np.int32))
    if padded != N:
        X0, Y, y = parallel.pad_samples(padded, np.asarray(X0), np.asarray(Y), np.asarray(y))
    else:
        y = parallel.device_array(y)
    return (*parallel.shard_samples(mesh, X0, Y, y, n=padded), mesh)


@dataclasses.dataclass(frozen=True)
class Stopping:
    """Common stopping rules: ``max_iter`` iterations, ``max_time`` seconds (from the start
    of the solve, compilation included), a cost at or below ``target_cost``, or a
    stationarity :func:`controldl.problem.stationarity_residual` at or below ``tol`` (the
    common tolerance; ``None``: each solver's own convergence test alone).

    A solve *diverges* when its cost becomes non-finite or exceeds
    ``DIVERGENCE_FACTOR · max(|J_0|, 1)``, ``J_0`` the first cost recorded.
    """

    max_iter: int = 1000
    max_time: float | None = None
    target_cost: float | None = None
    tol: float | None = None

    DIVERGENCE_FACTOR: ClassVar[float] = 100.0

    def divergence_threshold(self, first_cost: float) -> float:
        """The cost above which a solve that started at ``first_cost`` has diverged."""
        return self.DIVERGENCE_FACTOR * max(abs(first_cost), 1.0)

    def __post_init__(self) -> None:
        if self.tol is not None and not (math.isfinite(self.tol) and self.tol > 0):
            raise ValueError(f"tol must be a finite number > 0, got {self.tol!r}")
        if not isinstance(self.max_iter, int | np.integer) or self.max_iter < 0:
            raise ValueError(f"max_iter must be an integer >= 0, got {self.max_iter!r}")
        if self.max_time is not None and not (self.max_time > 0):
            raise ValueError(f"max_time must be > 0 seconds, got {self.max_time!r}")
        if self.target_cost is not None and not math.isfinite(self.target_cost):
            raise ValueError(f"target_cost must be finite, got {self.target_cost!r}")


@dataclasses.dataclass
class RunResult:
    """What :meth:`Solver.run` returns: the final parameters, a status (one of
    :data:`controldl.solution.STATUS_MESSAGES`), the iteration count and diagnostics."""

    params: Params
    status: str
    iterations: int
    stats: dict[str, Any] = dataclasses.field(default_factory=dict)


class Monitor:
    """The clock, history, progress meter and common stopping rules of one solve.

    Solvers call :meth:`record` once per iteration with the cost of the current iterate
    (and, where they have them, its ``stationarity`` and the cumulative ``work`` in
    gradient-evaluation equivalents: one forward plus one backward pass over the training
    set = 1); it returns a :class:`~controldl.status.Status` when the solve should stop
    (``diverged``, ``target_reached``, ``converged`` at the common tolerance,
    ``max_time``), else ``None``; a cost far above the start is divergence only with
    ``stop_on_growth`` (:attr:`Solver.stop_on_growth`). Time spent compiling or building
    is wrapped in
    ``with monitor.compiling():``.

    Long runs (:mod:`controldl.solvers.checkpoint`): a resumable solver offers its state
    before every iteration to :meth:`snapshot` and, when :attr:`resumed` is a checkpoint,
    continues from it (the clock, the compile time and the history continue from the
    checkpoint's); :meth:`record` returns ``interrupted`` once a signal was received.
    """

    def __init__(self, stopping: Stopping, progress: bool = False, label: str = "",
                 callback: Callable[[dict[str, Any]], Any] | None = None,
                 stop_on_growth: bool = True, long_run: C.LongRun | None = None,
                 per_epoch: int | None = None) -> None:
        self.stopping = stopping
        self.stop_on_growth = stop_on_growth
        self.long_run = long_run or C.LongRun()
        self.per_epoch = per_epoch
        resumed = self.long_run.resumed
        self.start = time.perf_counter() - (resumed.elapsed_s if resumed else 0.0)
        self.compile_time_s = resumed.compile_time_s if resumed else 0.0
        self.history: list[dict[str, Any]] = list(resumed.history) if resumed else []
        self.evaluation_time_s = float(self.history[-1].get("evaluation_time_s", 0.0)
                                       if self.history else 0.0)
        self.callback = callback
        self._bar = None
        self._label = label or "solve"
        if progress:
            from tqdm.auto import tqdm

            batches = per_epoch is not None and per_epoch > 1
            self._bar = tqdm(total=stopping.max_iter, desc=self._label,
                             unit="batch" if batches else "it",
                             disable=not sys.stderr.isatty() and progress != "always",
                             leave=False)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    @contextlib.contextmanager
    def compiling(self) -> Iterator[None]:
        """Time the block as compilation; before the first iteration a signal stops the
        solve at once (:attr:`controldl.solvers.checkpoint.Interrupt.immediate`)."""
        t0 = time.perf_counter()
        interrupt = self.long_run.interrupt
        interrupt.immediate = not self.history
        try:
            yield
        finally:
            interrupt.immediate = False
            self.compile_time_s += time.perf_counter() - t0

    @contextlib.contextmanager
    def evaluating(self) -> Iterator[None]:
        """Time spent on the history's full-data evaluations (a mini-batch run's full
        training cost and test accuracy): counted in ``evaluation_time_s``, which the
        history entries of a run that iterates over the data carry (cumulative), so that
        a learning curve can be drawn against the training time alone."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.evaluation_time_s += time.perf_counter() - t0

    @property
    def resumed(self) -> C.Checkpoint | None:
        """The checkpoint this solve continues from (``None``: a fresh solve)."""
        return self.long_run.resumed

    def snapshot(self, iteration: int, state: Any) -> None:
        """The solver's state before ``iteration`` (a pytree that its resume restores);
        written to the checkpoint directory when one is due."""
        self.long_run.offer(C.Snapshot(int(iteration), state, len(self.history),
                                       self.elapsed(), self.compile_time_s), self.history)

    def out_of_time(self) -> bool:
        return self.stopping.max_time is not None and self.elapsed() >= self.stopping.max_time

    def epoch(self, iteration: int) -> float | None:
        """``iteration / per_epoch``: the epochs done before ``iteration`` (``None`` when
        the solver's iterations are no passes over the data)."""
        return None if self.per_epoch is None else iteration / self.per_epoch

    def poll(self, iteration: int) -> Status | None:
        """Between two recorded iterations (a mini-batch run records the full cost once
        per epoch): advance the progress bar to ``iteration`` and return ``interrupted``
        once a signal was received or ``max_time`` once the time is up, else ``None``."""
        self._progress(iteration)
        if self.long_run.interrupt.requested:
            return Status.INTERRUPTED
        if self.out_of_time():
            return Status.MAX_TIME
        return None

    def _progress(self, iteration: int, cost: float | None = None) -> None:
        """The bar at ``iteration`` (batches, and the epoch in its description when an
        epoch has several), with the last recorded cost."""
        bar = self._bar
        if bar is None:
            return
        if self.per_epoch is not None and self.per_epoch > 1:
            epochs = -(-self.stopping.max_iter // self.per_epoch)
            epoch = min(iteration // self.per_epoch + 1, max(epochs, 1))
            bar.set_description_str(f"{self._label} epoch {epoch}/{epochs}", refresh=False)
        if cost is not None:
            bar.set_postfix(cost=f"{cost:.4g}", refresh=False)
        bar.update(int(iteration) - bar.n)

    def record(self, iteration: int, cost: float, train_accuracy: float | None = None,
               at: float | None = None, **extra: Any) -> str | None:
        """Append the entry of ``iteration`` (its ``time_s`` is ``at``, seconds since the
        start, when the solver knows it better than the clock now: an iteration computed
        with others in one call) and return the status that stops the solve, if any."""
        cost = float(cost)
        entry = {"iteration": int(iteration), "time_s": self.elapsed() if at is None else at,
                 "cost": cost,
                 "train_accuracy": None if train_accuracy is None else float(train_accuracy)}
        if self.per_epoch is not None:
            entry["epoch"] = self.epoch(int(iteration))
            entry["evaluation_time_s"] = self.evaluation_time_s
        entry.update(extra)
        self.history.append(entry)
        self._progress(int(iteration), cost)
        if self.callback is not None:
            self.callback(entry)
        return self._verdict(cost, entry.get("stationarity"))

    def _verdict(self, cost: float, stationarity: float | None) -> Status | None:
        stop = self.stopping
        if not math.isfinite(cost):
            return Status.DIVERGED
        if self.stop_on_growth and cost > stop.divergence_threshold(self.history[0]["cost"]):
            return Status.DIVERGED
        if stop.target_cost is not None and cost <= stop.target_cost:
            return Status.TARGET_REACHED
        if stop.tol is not None and stationarity is not None and stationarity <= stop.tol:
            return Status.CONVERGED
        if self.long_run.interrupt.requested:
            return Status.INTERRUPTED
        if self.out_of_time():
            return Status.MAX_TIME
        return None

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


class Solver(abc.ABC):
    """The interface every solver implements. Subclasses are frozen dataclasses whose
    fields are their options (the CLI turns them into flags)."""

    name: ClassVar[str]
    default_max_iter: ClassVar[int] = 1000
    stop_on_growth: ClassVar[bool] = False
    """Whether a cost far above the start (:meth:`Stopping.divergence_threshold`) means
    divergence: true for solvers whose iterates should descend (gradient descent); an
    interior-point method's iterates may rise for a while."""
    resumable: ClassVar[bool] = False
    """Whether the solver offers its state to :meth:`Monitor.snapshot` and continues from
    :attr:`Monitor.resumed` (``solve(resume=...)``)."""
    tolerance_option: ClassVar[str | None] = None
    """The option that holds the solver's own stationarity tolerance, which ``compare``
    sets to the common one (``None``: the solver records ``stationarity`` and the
    :class:`Monitor` stops it, or it keeps its own test)."""

    def options(self) -> dict[str, Any]:
        return dataclasses.asdict(self) if dataclasses.is_dataclass(self) else {}

    def label(self) -> str:
        """A short human-readable name: the solver's name, or what it was named by
        (``adam`` for gradient descent with Adam)."""
        return self.name

    @classmethod
    def inapplicable(cls, options: dict[str, Any]) -> dict[str, str]:
        """``{option: why}``: the options a solver of this class does not have when built
        with ``options`` (the others at their defaults): gradient descent with L-BFGS has
        no learning rate. Setting one away from its default is refused by
        :func:`~controldl.solvers.options.check_options`; none by default."""
        return {}

    def memory_estimate(self, sizes: M.Sizes) -> M.MemoryEstimate | None:
        """What a solve of a problem of these sizes holds at its peak
        (:mod:`controldl.solvers.memory`), checked before anything is allocated;
        ``None``: not estimated (no check)."""
        return None

    controls: ClassVar[tuple[str, ...]] = ("real",)
    """The control sets (``Formulation.controls``) this solver solves; :meth:`check_problem`
    refuses the others."""

    def check_problem(self, problem: Problem) -> None:
        """Raise ``ValueError`` (one line) when this solver cannot solve ``problem``: here,
        a control set outside :attr:`controls` (a solver for real controls cannot
        maximize over a discrete set)."""
        sets = problem.formulation.controls
        if sets not in self.controls:
            raise ValueError(f"solver {self.name!r} solves controls={'/'.join(self.controls)}, "
                             f"not controls={sets}: {self.refusal(sets)}")

    def refusal(self, controls: str) -> str:
        """What to do instead when :meth:`check_problem` refuses ``controls``."""
        if controls == "real":
            return "use msa, emsa or gd for real controls"
        return ("the Hamiltonian's maximization over a discrete set is Li & Hao's "
                "discrete-msa; gradient descent (gd) uses the straight-through estimator")

    def iterations_per_epoch(self, problem: Problem) -> int | None:
        """Iterations in one pass over the training samples (``⌊N / batch_size⌋`` with
        mini-batches, 1 for a full-batch iteration: :mod:`controldl.solvers.epochs`);
        ``None`` where an iteration is no pass over the data (IPOPT's), so ``epochs``
        does not apply."""
        return None

    @abc.abstractmethod
    def run(self, problem: Problem, params: Params, monitor: Monitor) -> RunResult:
        """Minimize ``J`` from ``params``; call ``monitor.record`` every iteration and stop
        when it returns a status or after ``monitor.stopping.max_iter`` iterations."""


def warm_start_record(init: Any) -> tuple[Any, WarmStart | None]:
    """``(init, record)``: a solution directory loaded, and the :class:`WarmStart` record
    of a warm start from a :class:`Solution` (``None`` for raw ``Params``)."""
    from controldl.solution import load

    if isinstance(init, str | os.PathLike):
        directory = str(Path(init).resolve())
        init = load(Path(init))
        return init, WarmStart.of(init, directory)
    if isinstance(init, Solution):
        return init, WarmStart.of(init)
    return init, None


def as_params(problem: Problem, init: Any) -> Params:
    """Warm-start parameters from a :class:`Solution`, a solution directory or a
    :class:`Params`, checked against the problem's shapes. On a discrete formulation real
    values of ``A`` are kept as they are: ``discrete-msa`` projects them onto the set, the
    straight-through estimator takes them as its latent weights (so a warm start from the
    real initialization starts both from the network of the shared one)."""
    init, _ = warm_start_record(init)
    if isinstance(init, Solution):
        init = init.params
    if not isinstance(init, Params):
        raise ValueError(f"cannot warm-start from {type(init).__name__}; give a Solution, a "
                         "solution directory or Params")
    expected = problem.formulation.param_shapes()
    for k, shape in expected.items():
        got = tuple(np.shape(getattr(init, k)))
        if got != shape:
            raise ValueError(f"warm start: {k} has shape {got} but this problem needs {shape} "
                             "(width, layers and outputs must match)")
        if not np.all(np.isfinite(np.asarray(getattr(init, k)))):
            raise ValueError(f"warm start: {k} contains NaN or infinity")
    # real values on a discrete formulation are kept: discrete-msa projects them onto the
    # set, the straight-through estimator takes them as its latent weights
    return P.project(problem.formulation,
                     Params(*(parallel.device_array(v, np.float64) for v in init)))


def evaluate(problem: Problem, params: Params) -> tuple[dict[str, float], float | None,
                                                          float | None]:
    """Every cost term, the training accuracy and the test accuracy at ``params``
    (accuracies ``None`` for regression; test accuracy ``None`` without a test split)."""
    return _evaluation(problem, params, with_stationarity=False)[:3]


def _evaluation(problem: Problem, params: Params, with_stationarity: bool
                ) -> tuple[dict[str, float], float | None, float | None, float | None]:
    """:func:`evaluate` and, with ``with_stationarity``, :func:`controldl.stationarity` at
    ``params`` (float64, in blocks of samples: :mod:`controldl.solvers.evaluation`;
    ``None`` when the cost is not finite)."""
    from controldl.solvers.evaluation import evaluation

    return evaluation(problem, params, with_stationarity)


def as_solver(solver: Any, options: dict[str, Any] | None = None) -> Solver:
    """A solver instance, or the solver a spec string names (``"adam:lr=0.03"``) with
    ``options`` (its dataclass fields) added; options beside an instance are refused."""
    options = options or {}
    if isinstance(solver, str):
        from controldl.solvers.options import solver_from_spec

        solver = solver_from_spec(solver, **options)
    elif options and isinstance(solver, Solver):
        raise ValueError(f"solver options ({', '.join(options)}) go with a solver named by a "
                         f"string (solve(problem, 'adam', lr=0.01)); this {solver.label()} "
                         "instance has its own: dataclasses.replace(solver, ...) changes them")
    if not isinstance(solver, Solver):
        raise ValueError(f"solver must be a controldl solver or a spec string such as "
                         f"'adam:lr=0.03', got {type(solver).__name__}")
    return solver


def solve(
    problem: Problem,
    solver: Solver,
    *,
    init: Any = None,
    seed: int = 0,
    init_scheme: str = "normal",
    max_iter: int | None = None,
    epochs: int | None = None,
    max_time: float | None = None,
    target_cost: float | None = None,
    tol: float | None = None,
    progress: bool = False,
    callback: Callable[[dict[str, Any]], Any] | None = None,
    resume: Any = None,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every_s: float | None = None,
    signals: tuple[int, ...] = (signal.SIGINT,),
    **options: Any,
) -> Solution:
    """Solve ``problem`` with ``solver`` and return a :class:`~controldl.Solution`.

    Args:
        problem: the canonical problem.
        solver: a solver instance (``GradientDescent()``, ``EMSA()``, ``CasadiDirect()``…)
            or a name or spec string as ``compare`` takes (``"adam"``, ``"adam:lr=0.03"``,
            ``"emsa"``; :func:`controldl.solvers.names`).
        init: warm start (a ``Solution``, a solution directory or ``Params``); otherwise the
            shared deterministic initialization :func:`controldl.problem.init_params` with
            ``seed`` and ``init_scheme`` (``"normal"`` or ``"zeros"``).
        max_iter, max_time, target_cost, tol: stopping rules (:class:`Stopping`;
            ``max_iter`` defaults to the solver's own default, ``tol`` is the common
            stationarity tolerance). ``max_iter`` and ``max_time`` count the whole run,
            the part before a resumed checkpoint included.
        epochs: instead of ``max_iter``, this many passes over the training samples
            (``epochs ×`` :meth:`Solver.iterations_per_epoch` iterations; the batches and
            what the history records: :mod:`controldl.solvers.epochs`).
        progress: show a progress bar (only on a terminal).
        callback: called with every history entry.
        resume: continue from a checkpoint (a :class:`~controldl.solvers.checkpoint.
            Checkpoint`, a solution that carries one, or a checkpoint or solution
            directory) with the solver's state; ``problem`` and ``solver`` must be the
            checkpoint's, and each stopping rule left ``None`` is the checkpoint's.
        checkpoint_dir, checkpoint_every_s: write the solver's state to
            ``checkpoint_dir`` every ``checkpoint_every_s`` seconds of wall clock
            (atomically), and attach the last state to the solution.
        signals: while the solve runs, these signals (default SIGINT, i.e. Ctrl-C) stop it
            at the next iteration and raise
            :class:`~controldl.solvers.checkpoint.SolveInterrupted` (a
            ``KeyboardInterrupt``) whose ``solution`` has status ``interrupted``, the best
            iterate so far and the checkpoint of its last state (``solution.checkpoint``);
            a second signal raises ``KeyboardInterrupt`` at once. ``()`` leaves the
            signal handlers alone.
        **options: the solver's options when it is named by a string:
            ``solve(problem, "adam", lr=0.01)`` is ``solve(problem, "adam:lr=0.01")``.

    Without ``tol`` each solver stops at its own convergence test (gradient descent at
    ``grad_tol`` 1e-9: a solve from the library runs to a tight tolerance unless told
    otherwise); ``controldl train`` and ``compare`` pass the common tolerance
    :data:`COMMON_TOL` (1e-4), the one every default solver of a comparison reaches.

    Raises:
        SolveInterrupted: a signal of ``signals`` stopped the solve (see above).
    """
    if not isinstance(problem, Problem):
        raise ValueError(f"problem must be a controldl.Problem, got {type(problem).__name__}")
    solver = as_solver(solver, options)
    solver.check_problem(problem)
    if not jax.config.jax_enable_x64 and _precision(solver, problem) != "float32":
        warnings.warn(FLOAT32_NOTE, UserWarning, stacklevel=2)
    with warnings.catch_warnings():  # said once above, not at every float64 array
        warnings.filterwarnings("ignore", message=JAX_TRUNCATION, category=UserWarning)
        return _solve(problem, solver, init, seed, init_scheme,
                      epochs_to_iterations(problem, solver, epochs, max_iter), max_time,
                      target_cost, tol, progress, callback, resume, checkpoint_dir,
                      checkpoint_every_s, signals)


def _precision(solver: Solver, problem: Problem) -> str | None:
    """The precision a JAX solver computes in (its ``dtype`` option, else the data's
    default: :func:`~controldl.solvers.options.default_dtype`); ``None`` for the others."""
    if not hasattr(solver, "dtype"):
        return None
    return solver.dtype or default_dtype(problem.data)


FLOAT32_NOTE = ("JAX's float64 is off, so this solve computes in float32 (and a "
                "tolerance meant for float64 may not be reached): call "
                "jax.config.update('jax_enable_x64', True) before anything else for float64, "
                "or give the solver dtype='float32' to choose float32")
"""The one warning of a solve in a process without ``jax_enable_x64`` (instead of JAX's
own, repeated for every float64 array)."""
JAX_TRUNCATION = "Explicitly requested dtype float64"
"""The start of JAX's warning when float64 is asked for without ``jax_enable_x64``."""


def _solve(problem: Problem, solver: Solver, init: Any, seed: int, init_scheme: str,
           max_iter: int | None, max_time: float | None, target_cost: float | None,
           tol: float | None, progress: bool, callback: Any, resume: Any,
           checkpoint_dir: Any, checkpoint_every_s: float | None,
           signals: tuple[int, ...]) -> Solution:
    """:func:`solve` once the solver is built (see there)."""
    rules = {"max_iter": max_iter, "max_time": max_time, "target_cost": target_cost,
             "tol": tol}
    if checkpoint_every_s is not None and not solver.resumable:
        raise ValueError(f"solver {solver.name!r} keeps no checkpoint: drop "
                         "checkpoint_every_s")
    M.check_fits(problem, solver)  # before anything is allocated
    start = _start(problem, solver, init, seed, init_scheme, rules, resume)
    long_run, monitor = _monitor(problem, solver, start, progress, callback,
                                 checkpoint_dir, checkpoint_every_s)
    with long_run.interrupt.installed(tuple(signals)):
        with monitor.compiling():  # one-time setup (small compiles) before the first iteration
            params = _initial_params(problem, start, init_scheme)
        try:
            result = solver.run(problem, params, monitor)
        finally:
            monitor.close()
    solution = _solution(problem, result, monitor, start, long_run,
                         keep_checkpoint=checkpoint_dir is not None)
    if solution.status == Status.INTERRUPTED and long_run.interrupt.requested:
        raise C.SolveInterrupted(solution)
    return solution


def epochs_to_iterations(problem: Problem, solver: Solver, epochs: Any,
                         max_iter: int | None) -> int | None:
    """``max_iter``, or ``epochs ×`` :meth:`Solver.iterations_per_epoch` iterations when
    ``epochs`` is given, checked: an integer ``epochs >= 0``, not given with ``max_iter``,
    for a solver whose iterations pass over the data."""
    if epochs is None:
        return max_iter
    if max_iter is not None:
        raise ValueError("give max_iter or epochs, not both")
    if isinstance(epochs, bool) or not isinstance(epochs, int | np.integer) or epochs < 0:
        raise ValueError(f"epochs must be an integer >= 0, got {epochs!r}")
    per_epoch = solver.iterations_per_epoch(problem)
    if per_epoch is None:
        raise ValueError(f"solver {solver.name!r} does not iterate over the data in epochs "
                         "(an iteration is not a pass over the samples): give max_iter")
    return int(epochs) * per_epoch


def _monitor(problem: Problem, solver: Solver, start: _Start, progress: bool,
             callback: Any, checkpoint_dir: Any, checkpoint_every_s: float | None
             ) -> tuple[C.LongRun, Monitor]:
    """The solve's :class:`~controldl.solvers.checkpoint.LongRun` (interruption, periodic
    checkpoints, the resumed checkpoint) and its :class:`Monitor`."""
    long_run = C.LongRun(
        resumed=start.resumed, every_s=checkpoint_every_s,
        directory=None if checkpoint_dir is None else Path(checkpoint_dir),
        context=C.Context(problem, start.record, dataclasses.asdict(start.stopping), start.warm))
    monitor = Monitor(start.stopping, progress=progress, label=solver.label(), callback=callback,
                      stop_on_growth=solver.stop_on_growth, long_run=long_run,
                      per_epoch=solver.iterations_per_epoch(problem))
    return long_run, monitor


def _initial_params(problem: Problem, start: _Start, init_scheme: str) -> Params:
    """The shared initialization (seed of the solver record, ``init_scheme``) or the warm
    start, checked against the problem."""
    if start.init is None:
        return P.init_params(problem.formulation, seed=start.record["seed"], scheme=init_scheme)
    return as_params(problem, start.init)


def _solution(problem: Problem, result: RunResult, monitor: Monitor, start: _Start,
              long_run: C.LongRun, keep_checkpoint: bool) -> Solution:
    """The :class:`~controldl.Solution` of a finished run: every cost term, the accuracies
    and the stationarity at the returned parameters (status ``diverged`` when the cost is
    not finite), and the checkpoint of the last state when interrupted or
    ``keep_checkpoint``."""
    wall = monitor.elapsed()
    result.stats.setdefault("devices", parallel.describe(None))
    if start.resumed is not None:
        result.stats["resumed_from_iteration"] = start.resumed.iteration
    final = Params(*(np.asarray(v, np.float64) for v in result.params))
    form = problem.formulation
    if form.discrete:  # α·s exactly, whatever the solver's precision; no stationarity
        final = P.discrete.exact(form, final)
        result.stats["zero_fraction"] = P.discrete.zero_fraction(final.A)
    terms, train_acc, test_acc, residual = _evaluation(problem, final,
                                                       with_stationarity=not form.discrete)
    status = result.status
    if not math.isfinite(terms["total"]):
        status = Status.DIVERGED
    keep = status == Status.INTERRUPTED or keep_checkpoint
    return Solution(
        problem=problem, params=final, solver=start.record,
        status=status, cost=terms, train_accuracy=train_acc, test_accuracy=test_acc,
        iterations=result.iterations, wall_time_s=wall, compile_time_s=monitor.compile_time_s,
        history=monitor.history, stats=result.stats,
        stationarity=residual,
        warm_start=start.warm, checkpoint=long_run.checkpoint(monitor.history) if keep else None,
    )


class _Start(NamedTuple):
    """How a solve starts: its stopping rules, the warm start (loaded) and its record,
    the solution's ``solver`` record and the checkpoint it resumes (or ``None``)."""

    stopping: Stopping
    init: Any
    warm: WarmStart | None
    record: dict[str, Any]
    resumed: C.Checkpoint | None


def _start(problem: Problem, solver: Solver, init: Any, seed: int, init_scheme: str,
           rules: dict[str, Any], resume: Any) -> _Start:
    """The start of a fresh, warm-started or resumed solve (a resumed one takes each
    stopping rule not given, the seed and the warm-start record from its checkpoint)."""
    if resume is None:
        stopping = Stopping(solver.default_max_iter if rules["max_iter"] is None
                            else rules["max_iter"], rules["max_time"], rules["target_cost"],
                            rules["tol"])
        init, warm = warm_start_record(init)
        record = {"name": solver.name, "label": solver.label(), "options": solver.options(),
                  "seed": seed, "init": "warm_start" if init is not None else init_scheme}
        return _Start(stopping, init, warm, record, None)
    resumed = _resumable(problem, solver, resume)
    stopping = Stopping(**{**resumed.stopping,
                           **{k: v for k, v in rules.items() if v is not None}})
    if stopping.max_iter < resumed.iteration:
        raise ValueError(f"max_iter {stopping.max_iter} is below the checkpoint's "
                         f"iteration {resumed.iteration}")
    record = {**resumed.solver, "options": solver.options()}
    record.setdefault("seed", seed)
    return _Start(stopping, None, resumed.warm_start, record, resumed)


def _resumable(problem: Problem, solver: Solver, resume: Any) -> C.Checkpoint:
    """The checkpoint of ``resume``, checked against ``problem`` and ``solver``."""
    if not solver.resumable:
        raise ValueError(f"solver {solver.name!r} cannot resume from a checkpoint: "
                         "warm-start from the saved solution instead")
    resumed = C.as_checkpoint(resume)
    C.check_matches(resumed, problem, solver)
    return resumed
