"""Gradient descent (backpropagation) with any optax optimizer: the baseline.

One iteration: ``g = ∇J(θ_k)`` by reverse-mode autodiff (full batch, or a mini-batch
estimate), ``θ_{k+1} = Π(θ_k + update(g))`` where ``update`` is the optax optimizer and
``Π`` the projection onto the constraints (:func:`controldl.problem.project`). The step
is compiled once per (formulation, optimizer, shapes) and reused by later solves.

On a discrete formulation (``controls`` binary or ternary) gradient descent is the
straight-through estimator (:func:`controldl.problem.discrete.straight_through`): the
iterate's ``A`` holds latent weights ``u`` in units of ``α``, the forward pass sees
``α·q(u)`` (BinaryConnect's sign, or the ternary-weight-network threshold), the optimizer
steps ``u`` with ``∂J/∂u = α·∂J/∂A`` and ``Π`` clips ``u`` to ``[−1, 1]``; the solution
holds the projected weights ``α·q(u)``. The latent weights start at ``clip(A/α, −1, 1)``
of the initial ``A``: the shared initialization's signs, or the real values of a warm
start (BinaryConnect's own start, from a real initialization). First-order optax
optimizers only (L-BFGS's line search needs a continuous objective).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.tree_utils as otu

from controldl import parallel
from controldl import problem as P
from controldl.compilation import RUN_ONCE_OPTIONS, compile_or_load
from controldl.problem import Params, Problem
from controldl.solvers import memory as M
from controldl.solvers.base import (
    COMPILED,
    Monitor,
    RunResult,
    Solver,
    signature,
    training_arrays,
)
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
from controldl.solvers.registry import optax_optimizers, unknown_solver
from controldl.status import Status

DEFAULT_LR: dict[str, float | None] = {"sgd": 0.1, "lbfgs": None}
LINE_SEARCH: tuple[str, ...] = ("lbfgs",)
"""The optimizers whose step length their own line search chooses: they take no learning
rate, schedule or momentum, and need the full batch."""
LBFGS_ACCURACY_EVERY = 10
"""L-BFGS records the training accuracy at iterations 0, 10, 20, …: its cost and gradient
come from the line search, the accuracy needs a forward pass of its own (a tenth of a
step on the default problem, measured by ``benchmarks/lbfgs_step.py``)."""


def inapplicable_options(optimizer: str) -> dict[str, str]:
    """``{option: why}``: the options of :class:`GradientDescent` that ``optimizer`` does not
    have (a line search's step takes no ``lr``, ``schedule``, ``momentum``, ``batch_size``
    or ``batch_seed``; an optax optimizer without a ``momentum`` parameter takes none)."""
    if optimizer in LINE_SEARCH:
        why = "its line search chooses the step"
        return {"lr": why, "schedule": why, "momentum": why,
                "batch_size": "its line search needs the full batch",
                "batch_seed": "its line search needs the full batch: it draws no batches"}
    factory = getattr(optax, optimizer, None)
    try:
        takes = "momentum" in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        takes = True
    return {} if takes else {"momentum": f"optax.{optimizer} takes no momentum"}


SCHEDULES: tuple[str, ...] = ("constant", "cosine", "exponential", "warmup_cosine")


def make_schedule(name: str, lr: float, steps: int) -> optax.Schedule | float:
    """An optax learning-rate schedule over ``steps`` iterations."""
    steps = max(int(steps), 1)
    if name == "constant":
        return lr
    if name == "cosine":
        return optax.cosine_decay_schedule(lr, steps, alpha=0.01)
    if name == "exponential":
        return optax.exponential_decay(lr, transition_steps=steps, decay_rate=0.01)
    if name == "warmup_cosine":  # the decay needs at least one step after the warmup
        warmup = max(steps // 20, 1)
        return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(steps, warmup + 1),
                                                  lr * 0.01)
    raise ValueError(f"unknown schedule {name!r}; expected one of {', '.join(SCHEDULES)}")


def resolved_lr(name: str, lr: float | None) -> float | None:
    """The learning rate ``lr`` of optimizer ``name``, or its default (:data:`DEFAULT_LR`,
    else 0.01; ``None`` for L-BFGS: its line search)."""
    return DEFAULT_LR.get(name, 0.01) if lr is None else lr


def make_optimizer(name: str, lr: float | None, schedule: str = "constant", steps: int = 1000,
                   **options: Any) -> optax.GradientTransformation:
    """Any optax optimizer by name (``sgd``, ``adam``, ``adamw``, ``lbfgs``, ``rmsprop``…).

    The learning rate (a number or a schedule) and the numeric options are injected
    (``optax.inject_hyperparams``): they are part of the optimizer's state, so a compiled
    step serves every value of them."""
    if name not in optax_optimizers():
        raise ValueError(unknown_solver(name, "optax optimizer"))
    factory = getattr(optax, name)
    lr = resolved_lr(name, lr)
    if lr is not None and (not math.isfinite(lr) or lr <= 0):
        raise ValueError(f"learning rate must be > 0, got {lr}")
    rate = None if lr is None else make_schedule(schedule, lr, steps)
    try:
        opt = _inject(factory, rate, options)
    except TypeError as exc:
        raise ValueError(f"optax.{name} does not take these options: {exc}") from None
    if not isinstance(opt, optax.GradientTransformation):
        raise ValueError(f"optax.{name} is not an optimizer")
    return opt


def _inject(factory: Any, rate: Any, options: dict[str, Any]) -> Any:
    """``factory(learning_rate=rate, **options)``, its learning rate and numeric options
    injected (state, not constants) unless ``rate`` is ``None`` (a line search). The
    numbers may be tracers (see :func:`_compiled_init`)."""
    if rate is None:
        return factory(learning_rate=rate, **options)
    static = tuple(k for k, v in options.items() if not _is_number(v))
    return optax.inject_hyperparams(factory, static_args=static)(learning_rate=rate, **options)


def _is_number(value: Any) -> bool:
    return (isinstance(value, int | float | jax.Array | np.ndarray)
            and not isinstance(value, bool))


def _compiled_init(solver: GradientDescent, steps: int, params: Params) -> Any:
    """The optimizer's initial state at ``params`` from one small compiled program, whose
    arguments are the injected numbers (a constant learning rate, the momentum): cached on
    the structure like the step, so a learning-rate grid builds it once (an eager
    ``opt.init`` would dispatch and compile one program per operation instead)."""
    numbers = solver.injected_numbers()
    init = _init_function(solver, steps)
    key = ("gd-init", solver.structure(), steps, signature((params, numbers)))
    compiled = COMPILED.get(key, lambda: compile_or_load(init, (params, numbers), key,
                                                          RUN_ONCE_OPTIONS))
    return compiled(params, numbers)


def _init_function(solver: GradientDescent, steps: int) -> Any:
    """``init(params, numbers)``: the optimizer's state, with the injected ``numbers``
    (:meth:`GradientDescent.injected_numbers`) as arguments (traceable)."""

    def init(params: Params, numbers: dict[str, Any]) -> Any:
        numbers = dict(numbers)
        lr = resolved_lr(solver.optimizer, solver.lr)
        static_rate = None if lr is None else make_schedule(solver.schedule, lr, steps)
        rate = numbers.pop("learning_rate", static_rate)
        return _inject(getattr(optax, solver.optimizer), rate, numbers).init(params)

    return init


def _compiled_step(form: P.Formulation, solver: GradientDescent, steps: int,
                   args: tuple) -> Any:
    """The jitted-and-compiled iteration for one structure of formulation and optimizer,
    set of shapes and placement, called as ``step(params, opt_state, X0, Y, y, rows)``
    (``rows``: the batch's, :mod:`controldl.solvers.epochs`).
    Cached on what is static: the formulation's numbers (horizon, weights, bounds) and
    the optimizer's injected hyperparameters (learning rate, momentum) are arguments, so a
    learning-rate grid or a sweep of horizons at fixed L compiles once."""
    key = ("gd-step", form.static_key(), solver.structure(), steps, signature(args))
    compiled = COMPILED.get(key, lambda: _build_step(form, solver, steps, args, key))
    return functools.partial(compiled, form)


def _build_step(form: P.Formulation, solver: GradientDescent, steps: int, args: tuple,
                key: tuple) -> Any:
    """One compiled iteration ``(params, opt_state, X0, Y, y, rows) → (new, opt_state,
    [J, accuracy, stationarity, work, work_at])`` on the batch of ``rows`` (all samples on
    the full batch): ``J`` and the accuracy at ``params``, the one stationarity measure
    (:func:`controldl.problem.stationarity_from_gradient`, from the gradient already
    computed; a mini-batch estimate with ``batch_size``; NaN on a discrete set), the
    iteration's work in gradient-evaluation equivalents (``batch/N`` for a mini-batch,
    1 otherwise; for L-BFGS :func:`_lbfgs_iteration`'s exact count) and the part of it
    spent before ``J``, the accuracy and the stationarity at ``params`` were known
    (``work_at``: the whole step but for L-BFGS's line search). ``key``: the compile key,
    under which the executable is saved (:func:`controldl.compilation.compile_or_load`)."""
    opt = solver.optimizer_transform(steps)
    is_lbfgs = solver.optimizer == "lbfgs"
    batch = solver.batch_size
    remat = solver.checkpoint_every
    N = parallel.sample_count(args[2])  # the real samples (not the devices' padding)
    seen = _forward_params(form)

    def iteration(form, params, opt_state, X0, Y, y, rows):
        if batch is not None:  # the batch is sharded like the data
            X0, Y, y = parallel.draw_batch(rows, X0, Y, y)

        def f(p):  # optax's line search may promote a float32 iterate: cast it back
            p = jax.tree.map(lambda a, r: a.astype(r.dtype), p, params)
            return P.cost_and_outputs(form, seen(p), X0, Y, remat)

        if is_lbfgs:
            return _lbfgs_iteration(form, opt, f, params, opt_state, X0, y)
        (J, z), g = jax.value_and_grad(f, has_aux=True)(params)
        g = _frozen_readout(form, g)
        work = jnp.asarray(1.0 if batch is None else batch / N, J.dtype)
        updates, opt_state = opt.update(g, opt_state, params)
        new = P.project(form, optax.apply_updates(params, updates))
        if form.discrete:  # BinaryConnect's clip of the latent weights
            new = new._replace(A=jnp.clip(new.A, -1.0, 1.0))
        new = _kept_readout(form, params, new)
        residual = (jnp.full((), jnp.nan, J.dtype) if form.discrete  # no gradient on a set
                    else P.stationarity_from_gradient(form, params,
                                                      _smooth_part(form, params, g)))
        acc = P.accuracy_or_zero(form, z, y)
        return new, opt_state, jnp.stack([J, acc, residual, work, work])

    def lower_args() -> tuple:  # only when compiling: the optimizer's state's shapes
        params, X0, Y, y, rows = args
        opt_state = jax.eval_shape(_init_function(solver, steps), params,
                                   solver.injected_numbers())  # what _compiled_init returns
        if isinstance(params.A, jax.Array) and len(params.A.sharding.device_set) > 1:
            opt_state = jax.tree.map(
                lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=params.A.sharding)
                if hasattr(s, "shape") else s, opt_state)
        return form, params, opt_state, X0, Y, y, rows

    with parallel.on_mesh(parallel.mesh_of(args[1])):  # traced under the data's mesh
        return compile_or_load(iteration, lower_args, key)


def _frozen_readout(form: P.Formulation, g: Params) -> Params:
    """The gradient ``g`` with its readout part zero when the readout is frozen."""
    if form.train_readout:
        return g
    return g._replace(W=jnp.zeros_like(g.W), c=jnp.zeros_like(g.c))


def _kept_readout(form: P.Formulation, params: Params, new: Params) -> Params:
    """``new`` with the readout of ``params`` when the readout is frozen."""
    return new if form.train_readout else new._replace(W=params.W, c=params.c)


def _lbfgs_iteration(form: P.Formulation, opt: optax.GradientTransformation, f: Any,
                     params: Params, opt_state: Any, X0: jax.Array, y: jax.Array) -> tuple:
    """One L-BFGS iteration at its true cost: ``J(θ_k)`` and ``∇J(θ_k)`` are those the
    previous zoom line search computed at its accepted point and keeps in ``opt_state``
    (:func:`optax.value_and_grad_from_state`); they are evaluated afresh only where the
    state has none (the first iteration) or where the projection moved the point (then
    the state's value is set to ``inf``, which the next iteration reads as "evaluate").
    The work is exact: that evaluation (0 or 1) plus the line search's, and, for a
    classification problem, a forward pass (1/3) for the accuracy at ``θ_k`` every
    :data:`LBFGS_ACCURACY_EVERY` iterations (NaN, not recorded, at the others). Returns
    what :func:`_build_step`'s iteration returns."""
    value_fn = lambda p: f(p)[0]  # noqa: E731
    value = otu.tree_get(opt_state, "value")
    fresh = ~jnp.isfinite(value)  # the condition value_and_grad_from_state evaluates on
    J, g = optax.value_and_grad_from_state(value_fn)(params, state=opt_state)
    g = _frozen_readout(form, g)
    updates, opt_state = opt.update(g, opt_state, params, value=J, grad=g, value_fn=value_fn)
    raw = optax.apply_updates(params, updates)
    new = _kept_readout(form, params, P.project(form, raw))
    moved = jnp.any(jnp.stack([jnp.any(a != b) for a, b in zip(new, raw, strict=True)]))
    opt_state = otu.tree_set(opt_state, value=jnp.where(moved, jnp.inf,
                                                         otu.tree_get(opt_state, "value")))
    searched = otu.tree_get(opt_state, "num_linesearch_steps")
    work = fresh.astype(J.dtype) + jnp.asarray(searched, J.dtype)
    acc = jnp.full((), jnp.nan, J.dtype)  # not recorded
    if form.task == "classification":  # the outputs at θ_k: a forward pass, every tenth
        due = otu.tree_get(opt_state, "count") % LBFGS_ACCURACY_EVERY == 1  # counted after
        acc = jax.lax.cond(due, lambda: P.accuracy_or_zero(form, P.predict(form, params, X0),
                                                           y), lambda: acc)
        work = work + jnp.where(due, 1.0 / 3.0, 0.0)
    at_k = work - jnp.asarray(searched, J.dtype)
    residual = P.stationarity_from_gradient(form, params, _smooth_part(form, params, g))
    return new, opt_state, jnp.stack([J, acc, residual, work, at_k])


def _forward_params(form: P.Formulation) -> Any:
    """What the forward pass sees of the iterate: itself, or on a discrete formulation the
    straight-through estimator's ``α·q(u)`` of the latent weights ``u``."""
    if form.discrete:
        return lambda p: P.discrete.straight_through(form, p)
    return lambda p: p


def _projected(form: P.Formulation) -> Any:
    """The parameters a recorded iterate is evaluated at: itself, or on a discrete
    formulation the projected weights ``α·q(u)`` of the latent ones."""
    if form.discrete:
        return lambda p: P.discrete.from_latent(form, p)
    return lambda p: p


def _smooth_part(form: P.Formulation, params: Params, g: Params) -> Params:
    """``∇f = ∇J − ∇(l1 term)``: the gradient of J's smooth part from autodiff's gradient
    of J (whose l1 part is ``β·h·sign(θ)``); ``g`` itself without l1."""
    if not form.uses("l1"):
        return g
    gl1 = jax.grad(lambda A, b: P.l1_cost(form, A, b), argnums=(0, 1))(params.A, params.b)
    return g._replace(A=g.A - gl1[0], b=g.b - gl1[1])


@dataclasses.dataclass(frozen=True)
class GradientDescent(Solver):
    """Backpropagation with an optax optimizer (options: the fields, declared with
    :func:`controldl.solvers.options.option`)."""

    optimizer: str = option("adam", "any optax optimizer by name (``adam``, ``sgd``, "
                            "``adamw``, ``lbfgs``…).")
    lr: float | None = option(None, "learning rate (default: 0.1 for sgd, line search for "
                              "lbfgs, 0.01 otherwise); traced with the constant schedule, "
                              "static with the others.", low=0, open_low=True, traced=True)
    schedule: str = option("constant", "``constant``, ``cosine``, ``exponential`` or "
                           "``warmup_cosine`` over ``max_iter`` iterations.", choices=SCHEDULES)
    batch_size: int | None = batch_size_option()
    batch_seed: int = batch_seed_option()
    record_every: int | None = record_every_option()
    grad_tol: float = option(1e-9, "converged when the stationarity "
                             "``‖θ − Π(prox_l1(θ − ∇f))‖₂`` "
                             "(:func:`controldl.problem.stationarity_residual`, ``‖∇J‖₂`` "
                             "without l1 and constraints) is at most ``grad_tol``; the common "
                             "tolerance ``tol`` of :func:`controldl.solve` stops it too. Full "
                             "batch only.", low=0)
    dtype: str | None = dtype_option()
    momentum: float | None = option(None, "passed to optimizers that take it (sgd).",
                                    traced=True)
    devices: int | None = devices_option()
    checkpoint_every: int | None = option(None, "rematerialize the forward pass in blocks of "
                                          "this many layers (memory O(N·(L/k + k)·d) instead "
                                          "of O(N·L·d), one extra forward pass).", low=1)
    return_best: bool = option(True, "return the iterate of lowest recorded cost (the cost of "
                               "gradient descent is not monotone), unless the run converged "
                               "(then the iterate that met the tolerance); ``False``: the last "
                               "iterate. ``stats[\"returned\"]`` says which, with "
                               "``best_iteration``/``best_cost`` and "
                               "``last_iteration``/``last_cost``.")

    name: ClassVar[str] = "gd"
    controls: ClassVar[tuple[str, ...]] = ("real", "binary", "ternary")
    default_max_iter: ClassVar[int] = 5000
    tolerance_option: ClassVar[str | None] = "grad_tol"
    stop_on_growth: ClassVar[bool] = True
    resumable: ClassVar[bool] = True

    def __post_init__(self) -> None:
        check_options(self)
        self.optimizer_transform(1)  # validate the optimizer name and options now

    def label(self) -> str:
        """The optimizer's name (``adam``, ``lbfgs``): what the user wrote."""
        return self.optimizer

    @classmethod
    def inapplicable(cls, options: dict[str, Any]) -> dict[str, str]:
        """The options the optimizer of ``options`` does not have
        (:func:`inapplicable_options`)."""
        return inapplicable_options(options.get("optimizer", "adam"))

    def memory_estimate(self, sizes: M.Sizes) -> M.MemoryEstimate:
        """The states kept for backpropagation (4 copies of every stored layer over the
        batch), the data, and the iterate with the optimizer's copies of it (5; L-BFGS's
        10 stored pairs, 25); the final evaluation's full-batch gradient after the run."""
        size = sizes.itemsize(self.dtype)
        copies = 25 if self.optimizer == "lbfgs" else 5
        return M.MemoryEstimate((
            *M.data_parts(sizes, size),
            M.params_part(sizes, copies, size, "the parameters with the optimizer's copies"),
            M.states_part(sizes, 4, self.batch_size, self.checkpoint_every, size,
                          "the states kept for backpropagation"),
            M.final_evaluation_part(sizes)))

    def check_problem(self, problem: Problem) -> None:
        """On a discrete formulation, a first-order optimizer (the straight-through
        estimator); L-BFGS's line search needs a continuous objective."""
        super().check_problem(problem)
        if problem.formulation.discrete and self.optimizer == "lbfgs":
            raise ValueError(f"gd on controls={problem.formulation.controls} is the "
                             "straight-through estimator, for first-order optimizers: lbfgs's "
                             "line search needs a continuous objective (use adam or sgd)")

    def iterations_per_epoch(self, problem: Problem) -> int:
        return iterations_per_epoch(problem.data.n_train, self.batch_size)

    def structure(self) -> tuple:
        """What a compiled step depends on: the optimizer's kind, the schedule (with its
        learning rate unless constant), whether momentum is given, the batch size, the
        precision, the devices and the rematerialization; not the injected numbers (a
        constant learning rate, the momentum) nor the Python-side stopping options."""
        lr = None if self.schedule == "constant" else self.lr
        return (self.optimizer, self.schedule, lr, self.momentum is None, self.batch_size,
                self.dtype, self.devices, self.checkpoint_every)

    def injected_numbers(self) -> dict[str, np.ndarray]:
        """The numbers injected into the optimizer's state that :meth:`structure` leaves
        out: a constant learning rate and the momentum (0-d float64 arrays)."""
        numbers = {} if self.momentum is None else {"momentum": self.momentum}
        lr = resolved_lr(self.optimizer, self.lr)
        if lr is not None and self.schedule == "constant":
            numbers["learning_rate"] = lr
        return {k: np.asarray(v, np.float64) for k, v in numbers.items()}

    def optimizer_transform(self, steps: int) -> optax.GradientTransformation:
        extra = {} if self.momentum is None else {"momentum": self.momentum}
        return make_optimizer(self.optimizer, self.lr, self.schedule, steps, **extra)

    def _start(self, params: Params, steps: int, mesh: Any, monitor: Monitor) -> _State:
        """The loop's first state: fresh at ``params``, or the resumed checkpoint's
        (placed as the fresh one)."""
        opt_state = parallel.replicate(mesh, _compiled_init(self, steps, params))
        start = _State(0, params, opt_state, 0.0, _Iterate(params, math.inf, -1), steps)
        if monitor.resumed is None:
            return start
        saved = monitor.resumed.restore(start)  # numbers as numbers, arrays as NumPy

        def place(tree: Any) -> Any:
            return parallel.replicate(mesh, jax.tree.map(parallel.device_array, tree))

        return saved._replace(params=place(saved.params), opt_state=place(saved.opt_state),
                              best=saved.best._replace(params=place(saved.best.params)))

    def run(self, problem: Problem, params: Params, monitor: Monitor) -> RunResult:
        form = problem.formulation
        dtype = resolve_dtype(self.dtype, problem.data)
        X0, Y, y, mesh = training_arrays(problem, dtype, self.batch_size, self.devices)
        params = parallel.replicate(mesh, Params(*(parallel.device_array(v, dtype)
                                                   for v in params)))
        epochs = Epochs.of(problem, self.batch_size, self.batch_seed, self.record_every)
        rows = parallel.replicate(mesh, parallel.device_array(epochs.rows(0)))
        if form.discrete:  # the straight-through estimator's latent weights u = A/α
            params = params._replace(A=P.discrete.latent(form, params.A))
        # a schedule spans the first run's max_iter, also after a resume
        steps = monitor.stopping.max_iter if self.schedule != "constant" else 0
        with monitor.compiling():
            start = self._start(params, steps, mesh, monitor)
            steps = start.schedule_steps
            step = _compiled_step(form, self, steps, (params, X0, Y, y, rows))
            full = FullData(problem, (X0, Y, y), params, mesh, monitor)
        loop = _Loop(step, full, (X0, Y, y), monitor, form.task == "classification",
                     self.grad_tol, epochs, mesh, _projected(form))
        run = loop.run(start)
        best, last = run.best, run.last
        # A converged run returns the iterate that met the tolerance (the best one may
        # differ from it in round-off and miss the tolerance).
        use_best = self.return_best and run.status != Status.CONVERGED
        stats = {"stationarity": run.residual, "optimizer": self.optimizer,
                 "returned": "best" if use_best else "last",
                 "best_iteration": best.iteration, "best_cost": best.cost,
                 "last_iteration": last.iteration, "last_cost": last.cost,
                 "dtype": np.dtype(dtype).name,
                 "devices": parallel.describe(mesh)}
        returned = best.params if use_best else last.params
        if form.discrete:  # the projected weights α·q(u)
            returned = P.discrete.from_latent(form, returned)
            stats["estimator"] = P.discrete.ESTIMATORS[form.controls]
        return RunResult(returned, run.status, run.iterations, stats)


class _Iterate(NamedTuple):
    """A recorded iterate: its parameters, the full cost there and its iteration."""

    params: Params
    cost: float
    iteration: int


class _State(NamedTuple):
    """The loop's state before iteration ``iteration``: the iterate, the optimizer's state
    (optax pytree: Adam's moments and count, L-BFGS's memory…), the work done, the best
    recorded iterate so far (cost ``inf`` before any) and the length of the learning-rate
    schedule (0: constant). What a checkpoint of gradient descent holds (the batch of
    iteration ``k`` follows from ``batch_seed`` and ``k``)."""

    iteration: int
    params: Params
    opt_state: Any
    work: float
    best: _Iterate
    schedule_steps: int


class _Outcome(NamedTuple):
    """How :meth:`_Loop.run` ended: the status, the iterations done, the best and the last
    recorded iterates and the last stationarity (``nan`` with mini-batches)."""

    status: Status
    iterations: int
    best: _Iterate
    last: _Iterate
    residual: float


@dataclasses.dataclass
class _Loop:
    """The iterations of :class:`GradientDescent`: record the cost (every iteration on the
    full batch; the full cost at the iterations :class:`~controldl.solvers.epochs.Epochs`
    records with mini-batches), the test accuracy where it asks, the stationarity and the
    cumulative work; keep the best and the last recorded iterate."""

    step: Any
    full: FullData
    data: tuple
    monitor: Monitor
    classify: bool
    grad_tol: float
    epochs: Epochs
    mesh: Any
    view: Any = None  # the parameters the full cost sees (projected on a discrete set)
    _no_rows: Any = None

    def run(self, start: _State) -> _Outcome:
        max_iter, monitor = self.monitor.stopping.max_iter, self.monitor
        params, opt_state, done, best = start[1:5]
        last, residual, status, k = None, math.nan, Status.MAX_ITER, start.iteration
        for k in range(start.iteration, max_iter + 1):
            monitor.snapshot(k, start._replace(iteration=k, params=params,
                                               opt_state=opt_state, work=done, best=best))
            new, next_state, out = self.step(params, opt_state, *self.data, self._rows(k))
            J, acc, residual, work, at_k = (float(v) for v in np.asarray(out))
            stop = self._record(k, params, J, acc, residual, done, at_k)
            if monitor.history and monitor.history[-1]["iteration"] == k:
                J = monitor.history[-1]["cost"]
                last = _Iterate(params, J, k)
                if J < best.cost or not math.isfinite(best.cost):
                    best = last
            if stop or k == max_iter:
                status = stop or status
                break
            params, opt_state = new, next_state
            done += work
        return _Outcome(status, k, best, last,
                        math.nan if self.epochs.batched else residual)

    def _record(self, k: int, params: Params, J: float, acc: float, residual: float,
                done: float, at_k: float) -> Status | None:
        """The history entry of iterate ``k`` where one is due (a mini-batch run records
        the full cost; a signal or the time limit between two records records the iterate
        it stops at; ``at_k``: the work of the step spent before ``J`` at ``θ_k`` was
        known); the status that stops the run, if any."""
        monitor, max_iter = self.monitor, self.monitor.stopping.max_iter
        if not self.epochs.batched:  # NaN: the accuracy was not computed (L-BFGS)
            stop = monitor.record(k, J, acc if self.classify and acc == acc else None,
                                  stationarity=residual, work=done + at_k,
                                  **self._test(params, k))
            if stop is None and residual <= self.grad_tol:
                stop = Status.CONVERGED
            return stop
        stop = monitor.poll(k)
        if stop is None and not self.epochs.recorded(k, max_iter):
            return None
        J, acc = self.full.cost(self.view(params))
        return (monitor.record(k, J, acc if self.classify else None, work=done,
                               **self._test(params, k)) or stop)

    def _rows(self, k: int) -> Any:
        """Iteration ``k``'s batch rows on the device(s) (the full batch's placeholder
        placed once)."""
        if self.epochs.batched:
            return parallel.replicate(self.mesh, parallel.device_array(self.epochs.rows(k)))
        if self._no_rows is None:
            self._no_rows = parallel.replicate(self.mesh, parallel.device_array(
                parallel.NO_ROWS))
        return self._no_rows

    def _test(self, params: Params, k: int) -> dict[str, float]:
        """The test accuracy and cost where the record of ``k`` carries them, else empty."""
        if not self.classify or not self.epochs.with_test(k, self.monitor.stopping.max_iter):
            return {}
        return self.full.test(self.view(params))
