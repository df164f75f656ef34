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
from controldl.solvers.pmp.iteration import (
    Config,
    StepInfo,
    compiled_evaluation,
    compiled_iteration,
)
from controldl.status import Status

DIVERGE_FACTOR = 1e3
"""A cost above this many times its starting value counts as ``diverged``."""


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

    def adapt(self, knobs: H.Knobs, cost_rose: bool) -> H.Knobs:
        """The knobs for the next iteration (fixed unless an option says otherwise)."""
        return knobs

    def run(self, problem: Problem, params: Params, monitor: Monitor) -> RunResult:
        loop = OuterLoop.build(self, problem, params, monitor)
        state = loop.init(params)
        if monitor.resumed is not None:
            state = loop.restore(monitor.resumed.restore(state))
        info, status = None, None
        while status is None:
            monitor.snapshot(state.iteration, state)
            new, info = loop.step(state)
            status = loop.terminate(state, info)
            if status is None:
                state = loop.advance(state, new, info)
        return loop.postprocess(state, info, status)


def _placed(mesh: Any, params: Params, knobs: H.Knobs, dtype: Any) -> tuple[Params, H.Knobs]:
    """The iterate and the knobs in ``dtype`` on the device(s), replicated over ``mesh``."""
    return parallel.replicate(mesh, (Params(*(parallel.device_array(v, dtype) for v in params)),
                                     H.Knobs(*(parallel.device_array(v, dtype) for v in knobs))))


@dataclasses.dataclass(frozen=True)
class OuterLoop:
    """One solve's compiled iteration and data, with the loop's pure-ish steps."""

    solver: PontryaginSolver
    problem: Problem
    monitor: Monitor
    arrays: tuple
    mesh: Any
    step_fn: Any
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
        epochs = Epochs.of(problem, solver.batch_size, solver.batch_seed, solver.record_every)
        rows = parallel.replicate(mesh, parallel.device_array(epochs.rows(0)))
        with monitor.compiling():
            step_fn = compiled_iteration(form, config, (params, knobs, X0, Y, y, rows))
            full_fn = (compiled_evaluation(form, (params, X0, Y, y))
                       if solver.batch_size is not None else None)
            full = FullData(problem, (X0, Y, y), params, mesh, monitor)
        notes = {"inner": {"layers": layer.name, "readout": readout.name,
                           "steps": int(solver.inner_steps)}}
        return cls(solver, problem, monitor, (X0, Y, y), mesh, step_fn, full_fn, notes,
                   epochs, full)

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

    def step(self, state: LoopState) -> tuple[Params, StepInfo]:
        """One compiled iteration from ``state.params``; its report on the host."""
        rows = parallel.replicate(self.mesh,
                                  parallel.device_array(self.epochs.rows(state.iteration)))
        form = self.problem.formulation
        new, info = self.step_fn(form, state.params, state.knobs, *self.arrays, rows)
        return new, StepInfo(*jax.device_get(tuple(info)))

    def _record(self, state: LoopState, info: StepInfo) -> str | None:
        """The history entry of ``θ_k`` (the full-data cost where
        :class:`~controldl.solvers.epochs.Epochs` records with mini-batches, and where a
        signal or the time limit stops the run between two records); the monitor's stop,
        if any."""
        k, max_iter, stop = state.iteration, self.monitor.stopping.max_iter, None
        if self.epochs.batched:
            stop = self.monitor.poll(k)
            if stop is None and not self.epochs.recorded(k, max_iter):
                return None
            with self.monitor.evaluating():
                full = self.full_fn(self.problem.formulation, state.params, *self.arrays)
                J, acc, stat = jax.device_get(full)
        else:
            J, acc, stat = info.cost, info.accuracy, info.stationarity
        classify = self.problem.formulation.task == "classification"
        test = (self.full.test(state.params)
                if classify and self.epochs.with_test(k, max_iter) else {})
        return self.monitor.record(
            k, J, acc if classify else None, stationarity=float(stat), work=state.work,
            **test,
            hamiltonian_gap=float(np.max(info.gap)), readout_gap=float(info.readout_gap),
            inner_iterations=int(np.max(info.inner_steps)),
            inner_evaluations=int(info.evaluations), rejected=int(info.rejected),
            rho=float(state.knobs.rho)) or stop

    def terminate(self, state: LoopState, info: StepInfo) -> Status | None:
        """The status that ends the solve at ``θ_k``, or ``None`` to go on."""
        stop = self._record(state, info)
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
                                     f"(layers {bad}, readout gap {float(info.readout_gap)})")
            return Status.FAILED
        if self.solver.batch_size is None and float(info.stationarity) <= self.solver.tol:
            return Status.CONVERGED
        patience = self.solver.patience
        if patience is not None and state.iteration - state.best_iteration >= patience \
                and cost >= state.best_cost:
            return Status.STALLED
        if state.iteration >= self.monitor.stopping.max_iter:
            return Status.MAX_ITER
        return None

    def advance(self, state: LoopState, new: Params, info: StepInfo) -> LoopState:
        """The state at ``θ_{k+1}``."""
        cost = float(info.cost)
        first = cost if state.iteration == 0 else state.first_cost
        rose = state.iteration > 0 and cost > state.last_cost
        better = cost < state.best_cost
        knobs = self.solver.adapt(state.knobs, rose)
        knobs = parallel.replicate(self.mesh, knobs)
        return LoopState(new, knobs, state.iteration + 1, state.work + float(info.work),
                         first, cost if better else state.best_cost,
                         state.iteration if better else state.best_iteration, cost,
                         state.cost_increases + int(rose))

    def postprocess(self, state: LoopState, info: StepInfo, status: Status) -> RunResult:
        k = max(state.iteration, 1)
        # the last recorded iterate's rise (advance, which counts the others, is not run)
        rises = state.cost_increases + int(state.iteration > 0
                                           and float(info.cost) > state.last_cost)
        stats = {
            **self.notes,
            "stationarity": float(info.stationarity),
            "hamiltonian_gap": np.asarray(info.gap, np.float64).tolist(),
            "readout_gap": float(info.readout_gap),
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

    def adapt(self, knobs: H.Knobs, cost_rose: bool) -> H.Knobs:
        if not (self.adaptive_rho and cost_rose):
            return knobs
        return knobs._replace(rho=knobs.rho * self.rho_factor)
