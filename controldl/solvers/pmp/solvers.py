"""The solver classes :class:`MSA` (Algorithm 1) and :class:`EMSA` (Algorithm 2) and the
outer loop they share, written as ``init`` / ``step`` / ``terminate`` over a typed state
(:class:`LoopState`), in the style of optimistix.

The loop keeps what the algorithms do: every iteration's new controls are taken (no
acceptance test, no momentum, no trust region). It stops with

- ``converged`` when the stationarity residual of the iterate is at most ``tol``
  (full batch);
- ``failed`` when an inner maximization returned non-finite controls (the iterate
  before it is kept; ``stats["message"]`` names the layers);
- ``diverged`` when the cost is non-finite or above ``DIVERGE_FACTOR`` times its start;
- ``stalled`` when the best cost has not improved for ``patience`` iterations (the
  oscillation of basic MSA; ``stats["cost_increases"]`` counts the iterations whose
  cost rose);
- ``max_iter``, ``max_time``, ``target_reached`` as every solver.

**Several iterations per dispatch.** The compiled program runs up to
:data:`~controldl.solvers.pmp.iteration.K_MAX` iterations on the device
(:func:`~controldl.solvers.pmp.iteration.run`) and returns each one's report; the host
records them in order and applies every rule above to each, so the history and the
stopping iteration are those of one iteration per call. The device ends a dispatch early
at an iteration where a rule it can check holds (the host still decides). The number per
dispatch grows until a dispatch takes :data:`DISPATCH_S` seconds: the host's share of the
time (the call, the transfer, the history) stays small. Within a dispatch the entries'
``time_s`` are spread evenly over its duration; ``max_time`` and interruptions are seen at
the end of a dispatch. With mini-batches the host passes the rows of every iteration's
batch (:class:`~controldl.solvers.epochs.Epochs`: a permutation per epoch), and a dispatch
ends before each iteration whose record evaluates the iterate on all the training data or
the test split, so that the host holds that iterate.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from typing import Any, ClassVar, NamedTuple

import jax
import numpy as np

from controldl import parallel
from controldl.problem import Params, Problem
from controldl.solvers import memory as M
from controldl.solvers.base import Monitor, RunResult, Solver, training_arrays
from controldl.solvers.epochs import Epochs, FullData, iterations_per_epoch
from controldl.solvers.options import (
    batch_seed_option,
    batch_size_option,
    check_options,
    devices_option,
    dtype_option,
    option,
    record_every_option,
    resolve_dtype,
)
from controldl.solvers.pmp import hamiltonian as H
from controldl.solvers.pmp import inner as I
from controldl.solvers.pmp import iteration as IT
from controldl.solvers.pmp.iteration import Config, StepInfo
from controldl.status import Status

DIVERGE_FACTOR = 1e3
"""A cost above this many times its starting value counts as ``diverged``."""
DISPATCH_S = 0.05
"""The duration one dispatch of several iterations aims at (seconds)."""


class LoopState(NamedTuple):
    """The host-side state of the outer loop: the iterate, the knobs (ρ may adapt),
    the iteration number, the work spent so far (gradient-evaluation equivalents), the
    first and best costs, where the best was, the previous cost and how often the cost
    rose."""

    params: Params
    knobs: H.Knobs
    iteration: int
    work: float
    first_cost: float
    best_cost: float
    best_iteration: int
    last_cost: float
    cost_increases: int


@dataclasses.dataclass(frozen=True)
class PontryaginSolver(Solver):
    """What MSA and E-MSA share: the inner maximizer, the stopping rules, mini-batches,
    precision and devices (options: the fields, declared with
    :func:`controldl.solvers.options.option`)."""

    inner: Any = option("auto", "the inner maximizer of every layer's Hamiltonian: auto "
                        "(L-BFGS, or proximal gradient where the layers have l1 or "
                        "constraints), lbfgs, newton-cg, dense-newton (tiny widths only) or "
                        "proximal-gradient; or an instance of controldl.solvers.pmp.inner's "
                        "strategies.")
    inner_steps: int = option(10, "iterations of the inner maximizer per layer and outer "
                              "iteration (the paper's 10).", low=1)
    tol: float = option(1e-8, "converged when the stationarity residual is at most tol (full "
                        "batch).", low=0)
    patience: int | None = option(100, "stalled when the best cost has not improved for this "
                                  "many iterations (None: never).", low=1)
    batch_size: int | None = batch_size_option()
    batch_seed: int = batch_seed_option()
    record_every: int | None = record_every_option()
    dtype: str | None = dtype_option()
    devices: int | None = devices_option()
    checkpoint_every: int | None = option(
        None, "bounded memory: keep the states only every this many layers and maximize "
        "each layer inside a backward sweep that recomputes them "
        "(controldl.solvers.pmp.checkpointed; O(N·d·(L/k + k)) instead of O(N·d·L), "
        "k ≈ √L best; the same iterates). None: store all states.", low=1)

    extended: ClassVar[bool] = False
    default_max_iter: ClassVar[int] = 500
    tolerance_option: ClassVar[str | None] = "tol"  # compare's common tolerance
    resumable: ClassVar[bool] = True  # the LoopState is the checkpoint

    def __post_init__(self) -> None:
        check_options(self)
        if self.inner != "auto":
            I.make_inner(self.inner)

    def label(self) -> str:
        return self.name

    def memory_estimate(self, sizes: M.Sizes) -> M.MemoryEstimate:
        """The states, costates and every layer's Hamiltonian terms over the batch (10
        copies of the stored layers; with ``checkpoint_every`` only those kept), the data,
        and the controls with the inner maximizers' copies of them (25: L-BFGS's pairs);
        the final evaluation's full-batch gradient after the run."""
        size = sizes.itemsize(self.dtype)
        return M.MemoryEstimate((
            *M.data_parts(sizes, size),
            M.params_part(sizes, 25, size, "the controls with the inner maximizers' copies"),
            M.states_part(sizes, 10, self.batch_size, self.checkpoint_every, size,
                          "the states, costates and Hamiltonian terms of every layer"),
            M.final_evaluation_part(sizes)))

    def iterations_per_epoch(self, problem: Problem) -> int:
        return iterations_per_epoch(problem.data.n_train, self.batch_size)

    def inner_solvers(self, problem: Problem) -> tuple[Any, Any]:
        """The strategies for the layers and for the readout."""
        form = problem.formulation
        constrained = H.has_layer_prox(form)
        if self.inner == "auto":
            layer = I.ProximalGradient() if constrained else I.LBFGS()
            return layer, I.LBFGS()
        chosen = I.make_inner(self.inner)
        if constrained and not isinstance(chosen, I.ProximalGradient):
            raise ValueError(f"inner solver {chosen.name!r} cannot respect l1 or constraints; "
                             "use inner='proximal-gradient' (or 'auto')")
        return chosen, chosen

    @abc.abstractmethod
    def knobs(self, dtype: Any) -> H.Knobs:
        """The traced numbers of the iteration (ρ, μ)."""

    def rho_growth(self) -> float:
        """The factor on ρ after an iteration whose cost rose (1: ρ fixed)."""
        return 1.0

    def run(self, problem: Problem, params: Params, monitor: Monitor) -> RunResult:
        loop = OuterLoop.build(self, problem, params, monitor)
        state = loop.init(params)
        if monitor.resumed is not None:
            state = loop.restore(monitor.resumed.restore(state))
        count, info, status = 1, None, None
        while status is None:
            monitor.snapshot(state.iteration, state)
            t0 = monitor.elapsed()
            out = loop.dispatch(state, count)
            state, info, status = loop.replay(state, out, t0)
            count = loop.next_count(state, out, monitor.elapsed() - t0)
        return loop.postprocess(state, info, status)


def _placed(mesh: Any, params: Params, knobs: H.Knobs, dtype: Any) -> tuple[Params, H.Knobs]:
    """The iterate and the knobs in ``dtype`` on the device(s), replicated over ``mesh``."""
    return parallel.replicate(mesh, (Params(*(parallel.device_array(v, dtype) for v in params)),
                                     H.Knobs(*(parallel.device_array(v, dtype) for v in knobs))))


@dataclasses.dataclass(frozen=True)
class OuterLoop:
    """One solve's compiled dispatch of iterations and data, with the loop's steps."""

    solver: PontryaginSolver
    problem: Problem
    monitor: Monitor
    arrays: tuple
    mesh: Any
    run_fn: Any
    full_fn: Any
    notes: dict
    epochs: Epochs
    full: FullData

    @property
    def dtype(self) -> Any:
        """The precision of the iterations (:func:`~controldl.solvers.options.resolve_dtype`)."""
        return resolve_dtype(self.solver.dtype, self.problem.data)

    @classmethod
    def build(cls, solver: PontryaginSolver, problem: Problem, params: Params,
              monitor: Monitor) -> OuterLoop:
        form = problem.formulation
        dtype = resolve_dtype(solver.dtype, problem.data)
        X0, Y, y, mesh = training_arrays(problem, dtype, solver.batch_size, solver.devices)
        params, knobs = _placed(mesh, params, solver.knobs(dtype), dtype)
        layer, readout = solver.inner_solvers(problem)
        config = Config(solver.extended, layer, readout, int(solver.inner_steps),
                        solver.batch_size, solver.checkpoint_every)
        notes = {"inner": {"layers": layer.name, "readout": readout.name,
                           "steps": int(solver.inner_steps)}}
        epochs = Epochs.of(problem, solver.batch_size, solver.batch_seed, solver.record_every)
        with monitor.compiling():
            full_fn = (IT.compiled_evaluation(form, (params, X0, Y, y))
                       if solver.batch_size is not None else None)
            full = FullData(problem, (X0, Y, y), params, mesh, monitor)
        loop = cls(solver, problem, monitor, (X0, Y, y), mesh, None, full_fn, notes, epochs,
                   full)
        state = LoopState(params, knobs, 0, 0.0, math.nan, math.inf, 0, math.nan, 0)
        with monitor.compiling():
            run_fn = IT.compiled_run(form, config, (params, knobs, X0, Y, y,
                                                    *loop.controls(state, 1)))
        return dataclasses.replace(loop, run_fn=run_fn)

    def init(self, params: Params) -> LoopState:
        dtype = self.dtype
        params, knobs = _placed(self.mesh, params, self.solver.knobs(dtype), dtype)
        return LoopState(params, knobs, 0, 0.0, math.nan, math.inf, 0, math.nan, 0)

    def restore(self, saved: LoopState) -> LoopState:
        """A saved state (NumPy leaves) with its iterate and knobs placed as :meth:`init`
        places them (the batch of iteration ``k`` follows from ``batch_seed`` and ``k``)."""
        params, knobs = _placed(self.mesh, saved.params, saved.knobs,
                                self.dtype)
        return saved._replace(params=params, knobs=knobs)

    def controls(self, state: LoopState, count: int) -> tuple[Any, IT.Control]:
        """The traced arguments of a dispatch of at most ``count`` iterations from
        ``state``: the mini-batches' rows (:func:`~controldl.solvers.pmp.iteration.
        batch_rows`) and the :class:`~controldl.solvers.pmp.iteration.Control` (the early
        stops the device can check: the solver's and the common tolerance on the full
        batch, the target cost)."""
        solver, stopping = self.solver, self.monitor.stopping
        dtype = self.dtype
        tol = -1.0
        if solver.batch_size is None:  # at most the tolerances in the run's precision
            tol = max(solver.tol, stopping.tol if stopping.tol is not None else -1.0)
            tol = float(np.nextafter(dtype(tol), dtype(-np.inf)) if dtype(tol) > tol
                        else dtype(tol))
        target = -math.inf if stopping.target_cost is None else stopping.target_cost
        c = IT.Control(*(np.asarray(v, np.int32) for v in (state.iteration, count,
                                                           stopping.max_iter)),
                       *(np.asarray(v, dtype) for v in (state.first_cost, state.last_cost, tol,
                                                       target, DIVERGE_FACTOR,
                                                       solver.rho_growth())))
        rows = IT.batch_rows(self.epochs.rows, state.iteration, count, solver.batch_size)
        return parallel.replicate(self.mesh, (parallel.device_array(rows), c))

    def dispatch(self, state: LoopState, count: int) -> IT.Dispatch:
        """Up to ``count`` compiled iterations from ``state.params`` (a device call)."""
        return self.run_fn(self.problem.formulation, state.params, state.knobs,
                           *self.arrays, *self.controls(state, count))

    def next_count(self, state: LoopState, out: IT.Dispatch, seconds: float) -> int:
        """Iterations for the next dispatch: as many as take :data:`DISPATCH_S` at the
        last dispatch's pace, at most :data:`~controldl.solvers.pmp.iteration.K_MAX`,
        up to ``max_iter``, at that pace the time left and up to the next iteration whose
        record evaluates its iterate on the full data or the test split
        (:meth:`~controldl.solvers.epochs.Epochs.next_evaluated`: that iterate starts the
        next dispatch, where the host holds it)."""
        pace = seconds / max(int(out.done), 1)
        count = int(DISPATCH_S / max(pace, 1e-9))
        stopping = self.monitor.stopping
        if stopping.max_time is not None:
            count = min(count, int((stopping.max_time - self.monitor.elapsed()) / pace) + 1)
        if self.epochs.batched or self.epochs.record_every:
            count = min(count, self.epochs.next_evaluated(state.iteration, stopping.max_iter)
                        - state.iteration)
        return max(1, min(count, IT.K_MAX, stopping.max_iter - state.iteration + 1))

    def replay(self, state: LoopState, out: IT.Dispatch, t0: float
               ) -> tuple[LoopState, StepInfo, Status | None]:
        """Record the dispatch's iterations in order and apply the stopping rules to each
        (:meth:`terminate`); the state after the last one, or at the one that stops.
        ``max_time`` and an interruption act at the end of the dispatch; a stop the
        device did not see (a rule checked in another precision) runs the dispatch again
        up to that iteration for its iterate."""
        done = int(out.done)
        entries = jax.device_get(out.entries)
        t1 = self.monitor.elapsed()
        start, pending = state, None
        for i in range(done):
            entry = IT.Entry(*jax.tree.map(lambda a, i=i: a[i], tuple(entries)))
            info = StepInfo(*entry.info)
            at = t0 + (t1 - t0) * (i + 1) / done
            last = i == done - 1
            if last and i > 0:  # θ_k is out.last: a stop here is resumed from it
                self.monitor.snapshot(state.iteration, state._replace(
                    params=out.last, knobs=out.last_knobs))
            held = state.params if i == 0 else out.last if last else None
            status = self.terminate(state, info, entry, at, held)
            if status in (Status.MAX_TIME, Status.INTERRUPTED) and not last:
                pending, status = pending or status, None
            status = status or (pending if last else None)
            if status is not None:
                params, knobs = out.last, out.last_knobs
                if not last:
                    again = self.dispatch(start, i + 1)
                    params, knobs = again.last, again.last_knobs
                return state._replace(params=params, knobs=knobs), info, status
            state = self.advance(state, info)
        return state._replace(params=out.next, knobs=out.next_knobs), info, None

    def _record(self, state: LoopState, info: StepInfo, entry: IT.Entry, at: float,
                held: Params | None) -> str | None:
        """The history entry of ``θ_k`` (the full-data cost where
        :class:`~controldl.solvers.epochs.Epochs` records with mini-batches, and where a
        signal or the time limit stops the run between two records); the monitor's stop,
        if any. ``held``: ``θ_k`` where the host holds it (the first and the last iteration
        of a dispatch, which ends before every recorded iteration: :meth:`next_count`),
        else ``None``: a stop there is left to the dispatch's last iteration."""
        k, max_iter, stop = state.iteration, self.monitor.stopping.max_iter, None
        if self.epochs.batched:
            stop = self.monitor.poll(k)
            if stop is None and not self.epochs.recorded(k, max_iter):
                return None
            if held is None:
                if stop is None:
                    raise RuntimeError(f"iteration {k} is recorded but its iterate is not "
                                       "held: a dispatch must end before it")
                return None
            with self.monitor.evaluating():
                full = self.full_fn(self.problem.formulation, held, *self.arrays)
                J, acc, stat = jax.device_get(full)
        else:
            J, acc, stat = info.cost, info.accuracy, info.stationarity
        classify = self.problem.formulation.task == "classification"
        test = {}
        if classify and self.epochs.with_test(k, max_iter):
            if held is None:
                raise RuntimeError(f"iteration {k} records the test accuracy but its iterate "
                                   "is not held: a dispatch must end before it")
            test = self.full.test(held)
        return self.monitor.record(
            k, J, acc if classify else None, at=at, stationarity=float(stat),
            work=state.work, **test, inner_ascent=float(np.max(info.gap)),
            readout_ascent=float(info.readout_gap),
            inner_iterations=int(np.max(info.inner_steps)),
            inner_evaluations=int(info.evaluations), rejected=int(info.rejected),
            rho=float(entry.rho)) or stop

    def terminate(self, state: LoopState, info: StepInfo, entry: IT.Entry, at: float,
                  held: Params | None) -> Status | None:
        """The status that ends the solve at ``θ_k``, or ``None`` to go on (``held``: see
        :meth:`_record`)."""
        stop = self._record(state, info, entry, at, held)
        cost = float(info.cost)
        first = cost if state.iteration == 0 else state.first_cost
        if stop is not None:
            return Status(stop)
        if self.monitor.out_of_time():
            return Status.MAX_TIME
        if not math.isfinite(cost) or cost > DIVERGE_FACTOR * abs(first):
            return Status.DIVERGED
        if not bool(info.finite):
            bad = np.flatnonzero(~np.isfinite(info.gap)).tolist()
            self.notes["message"] = ("the inner maximization returned non-finite controls "
                                     f"(layers {bad}, readout ascent {float(info.readout_gap)})")
            return Status.FAILED
        if self.solver.batch_size is None and self._within(info.stationarity, self.solver.tol):
            return Status.CONVERGED
        patience = self.solver.patience
        if patience is not None and state.iteration - state.best_iteration >= patience \
                and cost >= state.best_cost:
            return Status.STALLED
        if state.iteration >= self.monitor.stopping.max_iter:
            return Status.MAX_ITER
        return None

    def _within(self, stationarity: Any, tol: float) -> bool:
        """``stationarity ≤ tol`` in the run's precision, as the device compares it (it
        makes no inner maximization there)."""
        dtype = self.dtype
        return bool(dtype(stationarity) <= dtype(tol))

    def advance(self, state: LoopState, info: StepInfo) -> LoopState:
        """The bookkeeping of the state at ``θ_{k+1}`` (its iterate and knobs come from
        the device). The work counts full-batch gradient evaluations, as every solver's:
        an iteration on a mini-batch of B of the N samples is its work on the batch
        times B/N."""
        n = self.problem.data.n_train
        fraction = (self.solver.batch_size or n) / n
        cost = float(info.cost)
        first = cost if state.iteration == 0 else state.first_cost
        rose = state.iteration > 0 and cost > state.last_cost
        better = cost < state.best_cost
        return state._replace(iteration=state.iteration + 1,
                              work=state.work + float(info.work) * fraction,
                              first_cost=first,
                              best_cost=cost if better else state.best_cost,
                              best_iteration=state.iteration if better
                              else state.best_iteration,
                              last_cost=cost, cost_increases=state.cost_increases + int(rose))

    def postprocess(self, state: LoopState, info: StepInfo, status: Status) -> RunResult:
        k = max(state.iteration, 1)
        # the last recorded iterate's rise (advance, which counts the others, is not run)
        rises = state.cost_increases + int(state.iteration > 0
                                           and float(info.cost) > state.last_cost)
        stats = {
            **self.notes,
            "stationarity": float(info.stationarity),
            "inner_ascent": np.asarray(info.gap, np.float64).tolist(),
            "readout_ascent": float(info.readout_gap),
            "work": state.work,
            "cost_increases": rises,
            "oscillating": rises >= max(2, k // 4),
            "best_cost": min(state.best_cost, float(info.cost)),
            "rho": float(state.knobs.rho),
            "mu": float(state.knobs.mu),
            "devices": parallel.describe(self.mesh),
            "dtype": np.dtype(self.dtype).name,
        }
        return RunResult(state.params, status, state.iteration, stats)


@dataclasses.dataclass(frozen=True)
class MSA(PontryaginSolver):
    """Basic MSA, Li, Chen, Tai & E (2018), Algorithm 1: forward pass, backward pass,
    then every layer sets ``θ_t ← argmax_θ H_t(x(t), p(t+1), θ)`` (and the readout
    maximizes the terminal objective), all layers at once by the inner maximizer. It
    may oscillate or diverge; that is reported as what it is.
    """

    mu: float = option(0.0, "Sakawa–Shindo damping: each layer maximizes H_t − (μ/2)‖θ − θ_k‖² "
                       "(0: off, the published basic MSA).", low=0, traced=True)

    name: ClassVar[str] = "msa"
    extended: ClassVar[bool] = False

    def knobs(self, dtype: Any) -> H.Knobs:
        return H.Knobs(parallel.device_array(0.0, dtype), parallel.device_array(self.mu, dtype))


@dataclasses.dataclass(frozen=True)
class EMSA(PontryaginSolver):
    """Extended MSA, Li, Chen, Tai & E (2018), Algorithm 2: every layer maximizes
    ``H̃_t = H_t − (ρ/2)Σ_i‖x_i(t+1) − f(x_i(t), θ)‖² − (ρ/2)Σ_i‖p_i(t) − ∇_x H_t‖²``
    (see :mod:`controldl.solvers.pmp.hamiltonian` for the normalization), all layers
    at once by the inner maximizer, with ρ fixed.
    """

    rho: float = option(1.0, "the penalty ρ of the state and costate residuals (fixed; the "
                        "paper's toy problem uses 1).", low=0, open_low=True, traced=True)
    adaptive_rho: bool = option(False, "an option outside the paper: multiply ρ by rho_factor "
                                "after an iteration whose cost rose (off by default).")
    rho_factor: float = option(2.0, "the factor of adaptive_rho.", low=1, open_low=True)

    name: ClassVar[str] = "emsa"
    extended: ClassVar[bool] = True

    def knobs(self, dtype: Any) -> H.Knobs:
        return H.Knobs(parallel.device_array(self.rho, dtype), parallel.device_array(0.0, dtype))

    def rho_growth(self) -> float:
        return self.rho_factor if self.adaptive_rho else 1.0


class HamiltonianGap(NamedTuple):
    """:func:`hamiltonian_gap`'s result: per layer (``layers``, L floats) and for the
    readout a lower bound of ``max_θ H̃_t(θ) − H̃_t(θ_t)`` (``H_t`` for MSA), with the
    probe that found it (``starts``, ``scale``, ``steps``, ``seed``)."""

    layers: list[float]
    readout: float
    starts: int
    scale: float
    steps: int
    seed: int


def hamiltonian_gap(problem: Problem, params: Any, solver: PontryaginSolver | None = None,
                    starts: int = 8, scale: float = 1.0, steps: int = 50, seed: int = 0
                    ) -> HamiltonianGap:
    """How far ``params`` is from meeting the discrete maximum condition of ``solver``'s
    objective (E-MSA's ``H̃_t`` by default, basic MSA's ``H_t``), layer by layer: a lower
    bound of ``max_θ H̃_t(θ) − H̃_t(θ_t)`` found by the solver's inner maximizer, run for
    ``steps`` iterations from ``θ_t`` and from ``starts`` starts ``θ_t + U(−scale, scale)``
    (entrywise, drawn with ``seed``; :func:`~controldl.solvers.pmp.iteration.gap_probe`).

    It is 0 only if no start found a higher value: not a proof that ``θ_t`` maximizes
    ``H̃_t``, and the maximum condition itself is necessary for optimality only under
    the convexity assumption of Li & Hao (2018, Theorem 1). At a stationary point of J the
    ascent from ``θ_t`` alone is about ``‖∇J‖²`` (``H̃_t``'s gradient at ``θ_t`` is
    ``−∂J/∂θ_t``); what the perturbed starts add is measured in docs/solvers.md.
    Not part of a solve's time: call it on a solution."""
    from controldl.solvers.base import as_params

    solver = EMSA() if solver is None else solver
    form = problem.formulation
    dtype = resolve_dtype(solver.dtype, problem.data)
    params = Params(*(parallel.device_array(v, dtype) for v in as_params(problem, params)))
    knobs = solver.knobs(dtype)
    layer, readout = solver.inner_solvers(problem)
    config = Config(solver.extended, layer, readout, int(solver.inner_steps), None)
    args = (params, knobs, problem.initial_states(dtype), problem.targets(dtype),
            jax.random.PRNGKey(seed))
    probe = IT.Probe(int(starts), float(scale), int(steps))
    gaps, rgap = IT.compiled_gap_probe(form, config, probe, args)(form, *args)
    return HamiltonianGap(np.asarray(gaps, np.float64).tolist(), float(rgap), int(starts),
                          float(scale), int(steps), int(seed))
