r"""Li & Hao's discrete MSA (ICML 2018, arXiv 1803.01299): the method of successive
approximations over binary or ternary controls, with their error control and moving
average, as in their published code (``LiQianxiao/discrete-MSA``).

One compiled iteration, every layer at once, on a mini-batch of ``S`` samples (the batches
and the epochs of :mod:`controldl.solvers.epochs`, gathered by
:func:`controldl.parallel.draw_batch`):

1. the forward pass, the states ``x(t)``;
2. the backward pass, reverse-mode differentiation of ``J`` through the forward pass,
   whose cotangents are the costates ``p(t) = ∇_x H_t(x(t), p(t+1), θ_t)`` and
   ``−∇_θ H_t``: ``M_t = α_t·∇_A Σ_i p_i(t+1)·f(x_i(t), θ_t)`` minus ``α_t`` times the
   smoothness term's derivative (the costates carry the batch mean's ``1/S``;
   :func:`hamiltonian_gradients`);
3. the exponential moving average ``m_t ← a·m_t + (1 − a)·M_t`` (the paper's averaging of
   ``M`` over mini-batches; ``m`` starts at 0 and, with ``debias``, is divided by its total
   weight ``1 − Πa`` before the maximization);
4. the new signs of every ``A_t`` from the closed-form maximization of
   ``m·v − κ|v| − ρ_k(v − w)²`` over the set, entry by entry
   (:func:`controldl.problem.discrete.maximize`): the error control
   ``ρ_k = ρ·max{|m_j| : j of wrong sign}`` limits the flips, and for ternary controls
   the threshold ``κ`` is the cost of one non-zero entry (``h·(sparsity + β·α + λα²/2)``);
5. the real parts ``b_t`` and the readout ``(W, c)``: one Adam step on ``−H``, i.e. on
   the batch's ``J`` (as the paper updates its batch-normalization scales and offsets;
   ``∂(−H_t)/∂b_t = ∂J/∂b_t`` at the current states and costates).

**Which Hamiltonian is maximized.** ``M_t·v`` is ``H_t`` linearized in ``A_t`` at the
current iterate. For ``inside`` (``x + h(Aσ(x) + b)``) ``H_t`` is linear in ``A_t`` and
this is the exact maximization of ``H_t`` over the set (up to the averaging); for
``resnet``, ``mlp`` and ``conv`` it is the paper's treatment: their binary layer is the
linear map ``u = A x`` alone (activation and batch norm are separate layers), whose
Hamiltonian ``Σ_i p_{u,i}·A x_i`` is linear in ``A``, with ``p_u`` the costate of ``u``;
splitting our layer into ``u = A x + b`` and the parameter-free rest gives
``Σ_i p_{u,i} x_iᵀ = ∇_A H_t`` at the current ``A``.

**Moving-average schedule.** ``a`` starts at ``ema_rate`` and after every epoch
(:func:`~controldl.solvers.epochs.iterations_per_epoch`) ``1 − a`` is multiplied by
``ema_decay``, as the paper's notebooks do (``set_ema_rates(0.999)``,
``train_epoch(..., ema_decay=0.95)``). With the full batch, which the paper does not use,
every iteration is an epoch and the default keeps ``a`` fixed.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from controldl import parallel
from controldl import problem as P
from controldl.compilation import RUN_ONCE_OPTIONS, compile_or_load
from controldl.problem import Params, Problem
from controldl.problem import discrete as D
from controldl.solvers.base import COMPILED, Monitor, RunResult, Solver, signature, training_arrays
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
from controldl.status import Status

Array = jax.Array

PAPER_RHO: dict[str, float] = {"binary": 0.5, "ternary": 0.25}
"""ρ of Li & Hao's MNIST notebooks (``mnist_fc_binary``: ``set_rho(0.5)``,
``mnist_fc_ternary``: ``set_rho(0.25)``): the default of ``rho``."""


PAPER_EMA_DECAY = 0.95
"""The per-epoch factor of ``1 − a`` in the paper's notebooks (``ema_decay=0.95``)."""


class Knobs(NamedTuple):
    """The traced numbers of one iteration: the error control ``rho``, this iteration's
    moving-average rate ``ema_rate`` and ``debias`` (1: divide the average by its total
    weight, 0: the published code's uncorrected average)."""

    rho: Array
    ema_rate: Array
    debias: Array


class State(NamedTuple):
    """The loop's state before iteration ``iteration``: the iterate (``A = α·s`` in the
    solver's dtype), the moving average ``m`` of ``M`` (the shape of ``A``) and its total
    weight ``1 − Π a`` (a scalar), Adam's state for ``(b, W, c)`` and the work done. What a
    checkpoint holds."""

    iteration: int
    params: Params
    ema: Array
    ema_weight: Array
    opt_state: Any
    work: float


class StepInfo(NamedTuple):
    """What one iteration reports about ``θ_k`` on its batch: ``cost``, ``accuracy`` (0 for
    regression) and ``flips``, the entries whose value changed (a float sum: XLA's CPU
    backend reduces booleans to integers several times slower)."""

    cost: Array
    accuracy: Array
    flips: Array


def hamiltonian_gradients(form: P.Formulation, params: Params, X0: Array, Y: Array
                          ) -> tuple[Array, Array, Array, tuple[Array, Array, Array]]:
    """``(J, z(L), M, ∂J/∂(b, W, c))`` from one forward and one backward pass.

    The backward pass is reverse-mode differentiation of ``J`` through the forward pass:
    its cotangents of the states are the costates (``p(t) = −∂J/∂x(t)``: the costate
    recursion is backpropagation) and its cotangent of ``A_t`` is
    ``−∇_A H_t(x(t), p(t+1), θ_t)``. ``M = α·∇_A`` of the flow and smoothness parts of
    ``H_t``: the separable control cost of ``A`` (l2, l1, sparsity) is left out of the
    differentiated ``J`` and counted exactly by ``κ``. ``∂J/∂(b, W, c) = −∇H`` (zero for a
    frozen readout)."""
    def objective(p: Params) -> tuple[Array, tuple[Array, Array]]:
        J, z = P.cost_and_outputs(form, p, X0, Y)
        zero = jnp.zeros_like(p.b[0])
        separable = jnp.sum(jax.vmap(lambda A_t: P.control_cost(form, A_t, zero))(p.A))
        return J - separable, (J, z)

    (_, (J, z)), g = jax.value_and_grad(objective, has_aux=True)(params)
    if not form.train_readout:
        g = g._replace(W=jnp.zeros_like(g.W), c=jnp.zeros_like(g.c))
    return J, z, -D.scale(form) * g.A, (g.b, g.W, g.c)


def iteration(form: P.Formulation, params: Params, ema: tuple[Array, Array], opt_state: Any,
              knobs: Knobs, X0: Array, Y: Array, y: Array, rows: Array,
              batch_size: int | None) -> tuple[Params, tuple[Array, Array], Any, StepInfo]:
    """One discrete-MSA iteration from ``params`` on the batch of ``rows`` (all samples on
    the full batch; see the module docstring): the new iterate, moving average ``(m, its
    total weight)`` and Adam state, and the :class:`StepInfo` of ``θ_k``."""
    if batch_size is not None:  # sharded like the full data (under on_mesh)
        X0, Y, y = parallel.draw_batch(rows, X0, Y, y)
    J, z, M, real_grad = hamiltonian_gradients(form, params, X0, Y)
    acc = P.accuracy_or_zero(form, z, y)
    a = knobs.ema_rate
    ema = (a * ema[0] + (1.0 - a) * M, a * ema[1] + (1.0 - a))
    m = ema[0] / jnp.where(knobs.debias > 0, ema[1], 1.0)
    alpha = D.scale(form)
    w = jnp.round(params.A / alpha)
    kappa = D.entry_cost(form)
    s = jax.vmap(lambda m_t, w_t: D.maximize(m_t, w_t, knobs.rho, kappa, form.controls))(m, w)
    real = (params.b, params.W, params.c)
    updates, opt_state = _adam().update(real_grad, opt_state, real)
    b, W, c = optax.apply_updates(real, updates)
    if not form.train_readout:
        W, c = params.W, params.c
    new = Params((alpha * s).astype(params.A.dtype), b, W, c)
    info = StepInfo(J, acc, jnp.sum((s != w).astype(J.dtype)))
    return new, ema, opt_state, info


def _adam(learning_rate: Any = 1e-3) -> optax.GradientTransformation:
    """Adam on ``(b, W, c)``, its learning rate injected (part of the state, traced)."""
    return optax.inject_hyperparams(optax.adam)(learning_rate=learning_rate)


def _compiled(name: str, fn: Any, form: P.Formulation, args: tuple, extra: Any = None,
              options: dict[str, Any] | None = None) -> Any:
    """``fn(form, *args)`` compiled once per structure, shapes, dtypes and placement,
    traced under the data's mesh; called as ``compiled(form, *args)``."""
    key = (name, form.static_key(), extra, signature(args))

    def build() -> Any:
        with parallel.on_mesh(parallel.mesh_of(args[-1])):
            return compile_or_load(fn, (form, *args), key, options)

    return COMPILED.get(key, build)


@dataclasses.dataclass(frozen=True)
class DiscreteMSA(Solver):
    """Li & Hao's discrete MSA for binary and ternary controls (options: the fields,
    declared with :func:`controldl.solvers.options.option`; defaults from the paper's
    MNIST notebooks)."""

    rho: float | None = option(None, "the error control ρ: a layer's entries flip only where "
                               "|m| > ρ·max{|m_j| : j of wrong sign} (binary; the ternary "
                               "rule in docs/discrete.md). None: the paper's 0.5 (binary) or "
                               "0.25 (ternary).", low=0, traced=True)
    ema_rate: float = option(0.999, "the moving average m ← a·m + (1−a)·M_t of M over "
                             "iterations: its first rate a (the paper's notebooks' 0.999).",
                             low=0, high=1, open_high=True, traced=True)
    ema_decay: float | None = option(None, "after every epoch 1 − a is multiplied by this; "
                                     "1 keeps a fixed. None: the paper's 0.95 with "
                                     "mini-batches, 1 with the full batch (there every "
                                     "iteration is an epoch and 0.95 would freeze the "
                                     "average within a hundred iterations).", low=0, high=1,
                                     traced=True)
    debias: bool = option(True, "divide the average m by its total weight 1 − Πa (as Adam "
                          "does): the ternary threshold κ then compares with an unbiased "
                          "average from the first iteration (the binary rule and the error "
                          "control do not depend on the scale of m). False: the published "
                          "code's uncorrected average, which starts at (1 − a)·M.")
    lr: float = option(1e-3, "Adam's learning rate for b_t and the readout (a step on −H, "
                       "i.e. on the batch's J; the paper's 1e-3 for its batch-norm "
                       "parameters).", low=0, open_low=True, traced=True)
    batch_size: int | None = batch_size_option()
    batch_seed: int = batch_seed_option()
    record_every: int | None = record_every_option()
    dtype: str | None = dtype_option()
    devices: int | None = devices_option()

    name: ClassVar[str] = "discrete-msa"
    controls: ClassVar[tuple[str, ...]] = ("binary", "ternary")
    default_max_iter: ClassVar[int] = 1000
    resumable: ClassVar[bool] = True

    def __post_init__(self) -> None:
        check_options(self)

    def refusal(self, controls: str) -> str:
        return ("its maximization is over a discrete set; give controls=binary or ternary, "
                "or use msa, emsa or gd for real controls")

    def iterations_per_epoch(self, problem: Problem) -> int:
        return iterations_per_epoch(problem.data.n_train, self.batch_size)

    def resolved_rho(self, controls: str) -> float:
        """``rho``, or the paper's value for ``controls`` (:data:`PAPER_RHO`)."""
        return PAPER_RHO[controls] if self.rho is None else float(self.rho)

    def resolved_ema_decay(self) -> float:
        """``ema_decay``, or its default (0.95 with mini-batches, 1 with the full batch)."""
        if self.ema_decay is not None:
            return float(self.ema_decay)
        return 1.0 if self.batch_size is None else PAPER_EMA_DECAY

    def ema_rate_at(self, iteration: int, epoch: int) -> float:
        """``a_k = 1 − (1 − ema_rate)·ema_decay^⌊k/epoch⌋``."""
        return 1.0 - (1.0 - self.ema_rate) * self.resolved_ema_decay() ** (iteration // epoch)

    def run(self, problem: Problem, params: Params, monitor: Monitor) -> RunResult:
        loop = _Loop.build(self, problem, params, monitor)
        return loop.run()


@dataclasses.dataclass
class _Loop:
    """One solve: the compiled iteration, the data, the batches and records
    (:class:`~controldl.solvers.epochs.Epochs`, :class:`~controldl.solvers.epochs.FullData`)
    and the host loop."""

    solver: DiscreteMSA
    problem: Problem
    monitor: Monitor
    arrays: tuple
    mesh: Any
    step: Any
    full: FullData
    epochs: Epochs
    start: State
    dtype: Any

    @classmethod
    def build(cls, solver: DiscreteMSA, problem: Problem, params: Params, monitor: Monitor
              ) -> _Loop:
        form, dtype = problem.formulation, resolve_dtype(solver.dtype, problem.data)
        X0, Y, y, mesh = training_arrays(problem, dtype, solver.batch_size, solver.devices)
        place = lambda tree: parallel.replicate(mesh, jax.tree.map(  # noqa: E731
            lambda v: parallel.device_array(v, dtype if _floating(v) else None), tree))
        params = place(Params(*params)._replace(A=D.project(form, params.A)))  # a warm start
        epochs = Epochs.of(problem, solver.batch_size, solver.batch_seed, solver.record_every)
        with monitor.compiling():
            real, lr = (params.b, params.W, params.c), np.asarray(solver.lr, dtype)
            opt_state = place(_compiled("discrete-msa-init", _init, form, (real, lr),
                                        options=RUN_ONCE_OPTIONS)(form, real, lr))
            start = State(0, params, place(jnp.zeros_like(params.A)),
                          place(np.zeros((), dtype)), opt_state, 0.0)
            if monitor.resumed is not None:
                start = monitor.resumed.restore(start)
                start = start._replace(**{k: place(getattr(start, k)) for k in
                                          ("params", "ema", "ema_weight", "opt_state")})
            knobs = place(Knobs(*(np.zeros((), dtype),) * 3))
            rows = parallel.replicate(mesh, parallel.device_array(epochs.rows(0)))
            step = _compiled("discrete-msa-iteration",
                             functools.partial(iteration, batch_size=solver.batch_size), form,
                             (start.params, (start.ema, start.ema_weight), start.opt_state,
                              knobs, X0, Y, y, rows), extra=solver.batch_size)
            full = FullData(problem, (X0, Y, y), params, mesh, monitor)
        return cls(solver, problem, monitor, (X0, Y, y), mesh, step, full, epochs, start,
                   dtype)

    def knobs(self, k: int) -> Knobs:
        """The traced numbers of iteration ``k``, placed like the iterate."""
        rho = self.solver.resolved_rho(self.problem.formulation.controls)
        rate = self.solver.ema_rate_at(k, self.epochs.per_epoch)
        return parallel.replicate(self.mesh, Knobs(*(parallel.device_array(v, self.dtype)
                                                     for v in (rho, rate,
                                                               float(self.solver.debias)))))

    def rows(self, k: int) -> Array:
        """Iteration ``k``'s batch rows on the device(s)."""
        return parallel.replicate(self.mesh, parallel.device_array(self.epochs.rows(k)))

    def record(self, state: State, info: StepInfo, flips: float) -> Status | None:
        """The history entry of ``θ_k`` where one is due (the full training cost and
        accuracy where :class:`~controldl.solvers.epochs.Epochs` records with mini-batches,
        and where a signal or the time limit stops the run between two records; the
        batch's every iteration with the full batch), with the test accuracy where it asks,
        the zero fraction and the flips since the last entry; the status that stops the
        run, if any."""
        form, k = self.problem.formulation, state.iteration
        max_iter, stop = self.monitor.stopping.max_iter, None
        if self.epochs.batched:
            stop = self.monitor.poll(k)
            if stop is None and not self.epochs.recorded(k, max_iter) \
                    and math.isfinite(float(info.cost)):
                return None
            J, acc = self.full.cost(state.params)
        else:
            J, acc = float(info.cost), float(info.accuracy)
        classify = form.task == "classification"
        test = (self.full.test(state.params)
                if classify and self.epochs.with_test(k, max_iter) else {})
        zeros = D.zero_fraction(jax.device_get(state.params.A))
        return self.monitor.record(k, J, acc if classify else None, work=state.work,
                                   flips=int(flips), zero_fraction=zeros, **test) or stop

    def run(self) -> RunResult:
        monitor, form = self.monitor, self.problem.formulation
        max_iter, state = monitor.stopping.max_iter, self.start
        status, flips, k = Status.MAX_ITER, 0.0, state.iteration
        work = (self.solver.batch_size or self.problem.data.n_train) / self.problem.data.n_train
        for k in range(state.iteration, max_iter + 1):
            state = state._replace(iteration=k)
            monitor.snapshot(k, state)
            params, ema, opt_state, info = self.step(form, state.params,
                                                     (state.ema, state.ema_weight),
                                                     state.opt_state, self.knobs(k),
                                                     *self.arrays, self.rows(k))
            info = StepInfo(*(float(v) for v in jax.device_get(tuple(info))))
            stop = self.record(state, info, flips)
            if stop is None and not math.isfinite(info.cost):
                stop = Status.DIVERGED
            if monitor.history and monitor.history[-1]["iteration"] == k:
                flips = 0.0
            if stop or k == max_iter:
                status = stop or status
                break
            flips += info.flips
            state = State(k + 1, params, *ema, opt_state, state.work + work)
        stats = {"rho": self.solver.resolved_rho(form.controls),
                 "epoch_iterations": self.epochs.per_epoch,
                 "ema_decay": self.solver.resolved_ema_decay(),
                 "ema_rate_last": self.solver.ema_rate_at(k, self.epochs.per_epoch),
                 "dtype": np.dtype(self.dtype).name, "devices": parallel.describe(self.mesh)}
        return RunResult(state.params, status, k, stats)


def _init(form: P.Formulation, real: tuple, lr: Array) -> Any:
    """Adam's initial state for ``real = (b, W, c)`` with learning rate ``lr``."""
    return _adam(lr).init(real)


def _floating(v: Any) -> bool:
    return np.issubdtype(np.asarray(v).dtype if not isinstance(v, jax.Array) else v.dtype,
                         np.floating)
