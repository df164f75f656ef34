r"""pmp-newton: layer-wise trust-region Newton on the augmented Hamiltonian, with momentum.

A Pontryagin-type method that is *not* Li, Chen, Tai & E's E-MSA (that is ``emsa``): each
iteration takes one damped Newton step per layer on a rescaled augmented Hamiltonian, the
penalty ``ρ`` is a trust-region parameter adapted by an acceptance test on the true cost
``J``, and a heavy-ball momentum extrapolates along the accepted steps.

One iteration from ``θ_k = (A_t, b_t)_t`` and the readout ``φ_k = (W, c)``:

1. forward pass ``x(t)``, backward pass ``p(t)`` (the costates, exact backpropagation);
2. every layer's model of ``\tilde H_t`` (:mod:`.newton_models`, which states the
   rescaling ``s_t``, the costate weight ``w`` and the normalization) at ``θ_k``:
   gradient ``g_t = ∇_θ H_t - ∂(smooth)/∂θ_t``, curvature ``B_t = |-∇²_θ H_t| + S_t``
   (``|·|`` the absolute eigenvalues, saddle-free Newton; ``curvature="gauss_newton"``
   keeps only the control cost's Hessian; ``S_t`` the smoothness majorizer) and the
   penalties' Gauss–Newton matrix ``G_t``; the readout's the same way;
3. a trial for ``ρ``: ``θ_t + δ_t``, ``δ_t = (B_t + ρG_t + τI)^{-1} g_t`` for all layers at
   once (``τ`` a Levenberg shift relative to the matrix's scale, so that a singular
   model — the padded inputs at layer 0 when ``d > n`` — still factors), a proximal
   FISTA loop with ``l1`` or constraints, and with momentum ``β > 0`` the first trial of
   an iteration is ``θ_k + δ_k + β(θ_k - θ_{k-1})``;
4. acceptance: with ``D`` the step *actually taken* (momentum included) the predicted
   decrease is ``pred = Σ_t (g_t·D_t - ½D_tᵀB_tD_t) - Δl1 + (readout part)``; the trial
   is kept if ``J`` is finite and ``J(θ_k) - J(θ_k + D) ≥ η·pred > 0``, otherwise ``ρ``
   is multiplied by ``rho_increase`` (a failed momentum trial is first repeated without
   momentum at the same ``ρ``). After an accepted step with ratio
   ``r = (J(θ_k) - J(θ_k+D))/pred``, ``ρ`` is divided by ``rho_decrease`` if ``r > 1/2``,
   doubled if ``r < 1/4``. ``J`` is monotone.

The whole iteration, the acceptance loop included, is one compiled call
(:mod:`.newton_step`), cached by the formulation's structure, the structural options
and the shapes; the formulation's numbers and the numeric options are traced.

**Stopping.** ``converged`` when the first-order stationarity residual
(:func:`controldl.problem.stationarity_residual`, the same measure for every solver) at
an accepted point is at most ``tol``; ``stalled`` when no trial passes within
``max_retries`` or below ``rho_max`` (``converged`` if the stationarity is below ``tol``
there), or when an accepted step changes ``J`` by at most ``rtol·|J|``; ``failed`` when
the model at ``θ_k`` or a Newton step is not finite (a factorization failure or
non-finite data): the last finite iterate is returned with ``stats["message"]``.

**Diagnostics.** Every history entry carries ``stationarity``, ``work`` (cumulative,
gradient-evaluation equivalents, :mod:`.newton_work`), ``rho``, ``trials`` (trial
points evaluated), ``rejected``, ``inner_iterations`` (Newton steps per layer:
``trials·inner_steps``) and ``ratio``.

**Cost.** ``O(L·N·d⁴)`` for the models (the costate penalty's Gram matrices),
``O(L·d⁶)`` per trial for the solves: a method for small widths.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any, ClassVar, NamedTuple

import jax
import numpy as np

from controldl import parallel
from controldl.problem import Params, Problem
from controldl.solvers import memory as M
from controldl.solvers.base import Monitor, RunResult, Solver, training_arrays
from controldl.solvers.epochs import Epochs, iterations_per_epoch
from controldl.solvers.options import (
    batch_seed_option,
    batch_size_option,
    check_options,
    devices_option,
    dtype_option,
    option,
    resolve_dtype,
)
from controldl.solvers.pmp import newton_step as NS
from controldl.solvers.pmp import newton_work as NW
from controldl.status import Status

CURVATURES: tuple[str, ...] = ("exact", "gauss_newton")
FAILED_MESSAGE = ("the Newton model or step of iteration {k} was not finite (a "
                  "factorization failed, or the data or controls give non-finite "
                  "derivatives); the last finite iterate is returned")


class _Info(NamedTuple):
    """The host copy of one iteration's scalars (see :class:`.newton_step.StepOut`)."""

    J_start: float
    J: float
    accepted: bool
    failed: bool
    trials: int
    rejected: int
    rho_used: float
    ratio: float
    full_J_start: float
    full_accuracy_start: float
    full_J: float
    full_accuracy: float
    stationarity: float
    stationarity_start: float

    @classmethod
    def of(cls, out: NS.StepOut) -> _Info:
        values = jax.device_get(tuple(getattr(out, f) for f in cls._fields))  # one transfer
        types = typing.get_type_hints(cls)
        return cls(*(types[f](v) for f, v in zip(cls._fields, values, strict=True)))


@dataclasses.dataclass
class _Tally:
    """Running totals of a solve."""

    accepted: int = 0
    rejected: int = 0
    trials: int = 0
    work: float = 0.0
    rhos: list[float] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class PMPNewton(Solver):
    """Layer-wise trust-region Newton on the augmented Hamiltonian, with momentum: every
    layer takes the damped Newton step ``δ_t = (B_t + ρG_t)^{-1} g_t`` on its rescaled
    augmented Hamiltonian (:mod:`controldl.solvers.pmp.newton_models`), all layers at
    once; ``ρ`` is a trust-region parameter adapted by the ratio of the actual decrease
    of J to the model's, predicted for the step taken (momentum included). Not Li et
    al.'s E-MSA (``emsa``): see :mod:`controldl.solvers.pmp.newton`.

    Options: the fields, declared with :func:`controldl.solvers.options.option`.
    """

    rho: float = option(1.0, "initial trust-region penalty ρ (dimensionless; the step does not "
                        "depend on N, on L at a fixed horizon, nor on the scale of the loss).",
                        low=0, open_low=True, traced=True)
    rho_min: float = option(1e-6, "lower bound of the adaptive ρ.", low=0, open_low=True,
                            traced=True)
    rho_max: float = option(1e10, "upper bound of ρ; when no trial is accepted below it the "
                            "solve stalls.", low=0, open_low=True, traced=True)
    rho_increase: float = option(4.0, "factor on ρ after a rejected trial.", low=1,
                                 open_low=True, traced=True)
    rho_decrease: float = option(2.0, "divisor of ρ after a step whose actual/predicted "
                                 "decrease exceeds 1/2 (ρ doubles below 1/4). The default 2 "
                                 "was chosen on ring, spiral and moons runs (see the "
                                 "pmp-newton section of docs/solvers.md).", low=1, traced=True)
    sufficient_decrease: float = option(1e-3, "η: keep a trial only if J decreases by at least "
                                        "η times the model's predicted decrease for the step "
                                        "taken.", low=0, high=1, open_high=True, traced=True)
    max_retries: int = option(30, "trials per iteration before the solve stalls.", low=1,
                              traced=True)
    inner_steps: int = option(1, "Newton steps on each layer's augmented Hamiltonian per trial "
                              "(1: one step from the current controls, where the penalty "
                              "residuals vanish).", low=1)
    curvature: str = option("exact", "exact (saddle-free |∇²_θ H_t|) or gauss_newton (only the "
                            "control cost's Hessian; the penalties give the rest).",
                            choices=CURVATURES)
    prox_iters: int = option(50, "proximal-gradient (FISTA) iterations per trial for l1 and "
                             "constraints.", low=1)
    costate_weight: float = option(0.1, "weight w of the costate penalty (0 drops it).", low=0,
                                   traced=True)
    momentum: float = option(0.9, "β: the first trial of an iteration adds β times the "
                             "previous step (heavy ball); it is dropped if that trial fails "
                             "(not used with l1 or constraints).", low=0, high=1,
                             open_high=True, traced=True)
    tol: float = option(1e-9, "converged when the stationarity residual (the proximal-gradient "
                        "norm of J) is at most tol.", low=0)
    rtol: float = option(1e-13, "stalled when an accepted step changes J by at most rtol·|J|.",
                         low=0)
    batch_size: int | None = batch_size_option("The acceptance test then uses the batch cost.")
    batch_seed: int = batch_seed_option()
    dtype: str | None = dtype_option()
    devices: int | None = devices_option()
    layer_block: int | None = option(None, "build the layers' models this many layers at a time "
                                     "(memory for long horizons; used with inner_steps=1). "
                                     "None: all layers at once.", low=1)

    name: ClassVar[str] = "pmp-newton"
    default_max_iter: ClassVar[int] = 500
    tolerance_option: ClassVar[str | None] = "tol"  # compare's common tolerance

    def __post_init__(self) -> None:
        check_options(self)
        if not self.rho_min <= self.rho <= self.rho_max:
            raise ValueError(f"need rho_min <= rho <= rho_max, got {self.rho_min}, "
                             f"{self.rho}, {self.rho_max}")

    def memory_estimate(self, sizes: M.Sizes) -> M.MemoryEstimate:
        """The states and costates (4 copies), the per-sample Kronecker blocks of the layers'
        models (5 copies of ``(d+1)²`` per sample and layer, ``layer_block`` layers at a
        time), the Hessian blocks (6 matrices ``n × n``, ``n = d(d+1)``, per layer: the
        curvature, the penalties', their sum, its eigenvectors and factor), the data and
        the parameters; the final evaluation's full-batch gradient after the run."""
        size = sizes.itemsize(self.dtype)
        s, batch = sizes, self.batch_size or sizes.N
        block = min(self.layer_block or s.L, s.L)
        n = s.d * (s.d + 1)
        return M.MemoryEstimate((
            *M.data_parts(s, size),
            M.params_part(s, 6, size, "the parameters, steps and trials"),
            M.states_part(s, 4, self.batch_size, None, size, "the states and costates"),
            M.Part("the per-sample Kronecker blocks of the layers' models",
                   5 * block * batch * (s.d + 1) ** 2,
                   f"5 × {'L' if block == s.L else block} × "
                   f"{'N' if batch == s.N else 'batch'} × (d + 1)²", size),
            M.Part("the Hessian blocks of the layers", 6 * (s.L + 1) * n * n,
                   "6 × (L + 1) × (d(d + 1))²", size, sharded=False),
            M.final_evaluation_part(s)))

    def iterations_per_epoch(self, problem: Problem) -> int:
        return iterations_per_epoch(problem.data.n_train, self.batch_size)

    def structure(self) -> NS.Structure:
        """The structural options (static in the compiled step)."""
        return NS.Structure(curvature=self.curvature, inner_steps=int(self.inner_steps),
                            prox_iters=int(self.prox_iters), batch_size=self.batch_size,
                            costate=self.costate_weight > 0, momentum=self.momentum > 0,
                            layer_block=self.layer_block)

    def knobs(self, dtype: Any = np.float64) -> NS.Knobs:
        """The numeric options (traced in the compiled step) in ``dtype``."""
        return NS.Knobs(*(dtype(v) for v in (
            self.rho_min, self.rho_max, self.rho_increase, self.rho_decrease,
            self.sufficient_decrease, self.max_retries, self.costate_weight,
            self.momentum)))

    def work_shape(self, problem: Problem) -> NW.WorkShape:
        """What the work count of an iteration depends on (:mod:`.newton_work`)."""
        form, N = problem.formulation, problem.data.n_train
        prox = NS.has_prox(form)
        return NW.WorkShape(N=N, batch=self.batch_size or N, L=form.layers, d=form.width,
                            costate=self.costate_weight > 0,
                            exact=self.curvature == "exact",
                            inner_steps=int(self.inner_steps),
                            prox_iters=int(self.prox_iters) if prox else 0)

    # ------------------------------------------------------------------ the solve

    def run(self, problem: Problem, params: Params, monitor: Monitor) -> RunResult:
        form = problem.formulation
        if form.model not in ("resnet", "mlp"):
            raise ValueError(f"pmp-newton builds its layer models in the pre-activation "
                             f"A x + b, which the {form.model!r} model does not have; use "
                             "gd, msa or emsa")
        dtype = resolve_dtype(self.dtype, problem.data)
        X0, Y, y, mesh = training_arrays(problem, dtype, self.batch_size, self.devices,
                                         pad=False)  # its models take plain sample means
        params = Params(*(np.asarray(v, dtype) for v in params))
        signature = tuple((tuple(a.shape), str(a.dtype)) for a in (*params, X0, Y, y))
        with monitor.compiling():
            step = NS.compiled_step(form, self.structure(), signature, self.devices)
        loop = _Loop(self, problem, step, (NS.traced_form(form, dtype), X0, Y, y), monitor)
        params, status, k, message = loop.iterate(params)
        t = loop.tally
        stats = {"stationarity": loop.stationarity, "rho": t.rhos, "accepted": t.accepted,
                 "rejected": t.rejected, "trials": t.trials, "work": t.work,
                 "devices": parallel.describe(mesh)}
        if message is not None:
            stats["message"] = message
        return RunResult(params, status, k, stats)


class _Loop:
    """The outer loop of one solve: calls the compiled step, keeps the tallies, records
    the history and applies the stopping rules."""

    def __init__(self, solver: PMPNewton, problem: Problem, step: Any, data: tuple,
                 monitor: Monitor) -> None:
        self.solver, self.step, self.data, self.monitor = solver, step, data, monitor
        self.classify = problem.formulation.task == "classification"
        self.epochs = Epochs.of(problem, solver.batch_size, solver.batch_seed)
        self.batched = self.epochs.batched
        self.epoch = self.epochs.per_epoch
        self.shape = solver.work_shape(problem)
        self.dtype = resolve_dtype(solver.dtype, problem.data)
        self.knobs = solver.knobs(self.dtype)
        self.tally = _Tally()
        self.stationarity = math.nan

    def record(self, k: int, J: float, accuracy: float, **extra: Any) -> Status | None:
        stop = self.monitor.record(k, J, accuracy if self.classify else None,
                                   work=self.tally.work, **extra)
        return None if stop is None else Status(stop)

    def count(self, info: _Info, recorded: bool) -> None:
        t = self.tally
        t.trials += info.trials
        t.rejected += info.rejected
        t.work += NW.iteration_work(self.shape, info.trials, recorded)
        if info.accepted:
            t.accepted += 1
            t.rhos.append(info.rho_used)
        if not math.isnan(info.stationarity):
            self.stationarity = info.stationarity

    def after_step(self, info: _Info, k: int, recorded: bool) -> Status | None:
        """The status that ends a mini-batch solve after the accepted step to iterate
        ``k``."""
        s = self.solver
        if recorded:
            stop = self.record(k, info.full_J, info.full_accuracy, rho=info.rho_used,
                               accepted=True, trials=info.trials, rejected=info.rejected,
                               inner_iterations=info.trials * s.inner_steps,
                               ratio=info.ratio, stationarity=info.stationarity)
            if stop is not None:
                return stop
        if info.stationarity <= s.tol:  # NaN (not evaluated) compares False
            return Status.CONVERGED
        if k >= self.monitor.stopping.max_iter:
            return Status.MAX_ITER
        return None

    def iterate(self, params: Params) -> tuple[Params, Status, int, str | None]:
        """Iterations from ``params`` until a stopping rule: ``(params, status,
        iterations, failure message or None)``."""
        if self.batched:
            return self._iterate_batches(params)
        return self._iterate_full(params)

    def _call(self, params: Params, prev: Params, rho: Any, k: int, record: bool,
              go: bool, tol: float) -> tuple[Any, _Info]:
        tform, X0, Y, y = self.data
        dtype = self.dtype
        out = self.step(tform, params, prev, rho, self.knobs, X0, Y, y, self.epochs.rows(k),
                        np.bool_(record), np.bool_(k == 0), np.bool_(go), dtype(tol))
        return out, _Info.of(out)

    def _converged(self, stationarity: float) -> bool:
        """The stationarity at most ``tol``, compared in the run's precision as the
        compiled step compares it (it makes no trial then)."""
        dtype = self.dtype
        return bool(dtype(stationarity) <= dtype(self.solver.tol))

    def _iterate_full(self, params: Params) -> tuple[Params, Status, int, str | None]:
        """The full batch: call ``k`` reports ``J``, the accuracy and the stationarity at
        ``θ_k`` (from its expansion's costates: the stationarity of an accepted point is
        not computed twice), entry ``k`` is recorded with the trials of call ``k − 1``,
        and call ``k`` makes trials only when the solve goes on from ``θ_k`` (not at
        ``max_iter``, not after a stall, not where the stationarity is within ``tol``;
        from the start always, as the rules below test ``θ_0`` only when no trial is
        accepted). The statuses and iterates are those of one stationarity per call."""
        s = self.solver
        max_iter = self.monitor.stopping.max_iter
        rho = self.dtype(s.rho)
        prev = Params(*(np.zeros_like(v) for v in params))
        self.tally.work = NW.start_work(self.shape)
        k, last, stalled = 0, None, False
        while True:
            go = k < max_iter and not stalled
            out, info = self._call(params, prev, rho, k, True, go, -np.inf if k == 0 else s.tol)
            self.stationarity = info.stationarity_start
            if last is None:
                extra = dict(rho=float(rho), accepted=None, trials=0, rejected=0,
                             inner_iterations=0)
            else:
                extra = dict(rho=last.rho_used, accepted=True, trials=last.trials,
                             rejected=last.rejected, inner_iterations=last.trials * s.inner_steps,
                             ratio=last.ratio)
            stop = self.record(k, info.full_J_start, info.full_accuracy_start,
                               stationarity=info.stationarity_start, **extra)
            if k == 0 and not info.failed and (stop is not None or max_iter == 0):
                return params, stop or Status.MAX_ITER, 0, None
            if k > 0:
                if stop is not None:
                    return params, stop, k, None
                if self._converged(info.stationarity_start):
                    return params, Status.CONVERGED, k, None
                if stalled:
                    return params, Status.STALLED, k, None
                if k >= max_iter:
                    return params, Status.MAX_ITER, k, None
            self.count(info, True)
            if info.failed:
                return params, Status.FAILED, k, FAILED_MESSAGE.format(k=k)
            if not info.accepted:
                done = self._converged(info.stationarity_start)
                return params, Status.CONVERGED if done else Status.STALLED, k, None
            stalled = abs(info.J_start - info.J) <= s.rtol * abs(info.J_start)
            last, k = info, k + 1
            params, prev, rho = out.params, out.displacement, out.rho

    def _iterate_batches(self, params: Params) -> tuple[Params, Status, int, str | None]:
        """Mini-batches: the full cost, accuracy and stationarity of the returned point
        are computed on all samples when its entry is recorded (once per epoch)."""
        s = self.solver
        max_iter = self.monitor.stopping.max_iter
        rho = self.dtype(s.rho)
        prev = Params(*(np.zeros_like(v) for v in params))
        self.tally.work = NW.start_work(self.shape)  # the stationarity at the start
        k = 0
        while True:
            recorded = (k + 1) % self.epoch == 0 or k + 1 == max_iter
            out, info = self._call(params, prev, rho, k, k == 0 or recorded, True, -np.inf)
            if k == 0:
                self.stationarity = info.stationarity_start
                stop = self.record(0, info.full_J_start, info.full_accuracy_start,
                                   rho=float(rho), accepted=None, trials=0, rejected=0,
                                   inner_iterations=0, stationarity=info.stationarity_start)
                if not info.failed and (stop is not None or max_iter == 0):
                    return params, stop or Status.MAX_ITER, 0, None
            self.count(info, recorded)
            if info.failed:
                return params, Status.FAILED, k, FAILED_MESSAGE.format(k=k)
            if not info.accepted:
                done = info.stationarity <= s.tol
                return params, Status.CONVERGED if done else Status.STALLED, k, None
            k += 1
            params, prev, rho = out.params, out.displacement, out.rho
            status = self.after_step(info, k, recorded)
            if status is not None:
                return params, status, k, None
