r"""One compiled iteration of MSA / E-MSA (Li, Chen, Tai & E 2018, Algorithms 1 and 2).

From the controls ``θ_k`` and the readout ``φ_k``:

1. the forward pass, the states ``x(t)`` (:func:`controldl.problem.trajectory`);
2. the backward pass, the costates ``p(t)`` (:func:`controldl.problem.costates`);
3. every layer maximizes its objective (:mod:`controldl.solvers.pmp.hamiltonian`) by
   the inner maximizer, all layers at once (``jax.vmap`` over ``t``), and the readout
   maximizes the terminal objective the same way.

The new controls are taken as they come: no acceptance test, no momentum, no trust
region. The same call reports, at ``θ_k``: the cost ``J``, the accuracy, the
stationarity residual (:func:`controldl.problem.stationarity_residual`), the per-layer
Hamiltonian gap ``max_θ H̃_t − H̃_t(θ_k)`` estimated by the inner maximizer (objective
at its result minus at ``θ_k``, the l1 term included; a lower bound of the true gap),
the inner iterations, the rejected line-search trials and the work in
gradient-evaluation equivalents.

**Work.** One forward plus one backward pass over all samples and layers is 1 (per
layer, three products of an (N, d) by a (d, d) matrix: the step, the costate and the
θ-gradient). An iteration costs 1 (the forward pass, the costate pass and, from them,
the gradient of the stationarity diagnostic) + the inner work: every layer runs in the
same vmapped loop, so an inner evaluation costs the weight of
:func:`~controldl.solvers.pmp.hamiltonian.evaluation_weight` times the *largest*
number of evaluations over the layers, and a Hessian-vector product counts as two
evaluations. This is a lower bound: inside the vmapped loop a layer whose line search
ends early waits for the slowest one, so more trials may be computed than any one
layer counts. With the backtracking L-BFGS (:func:`stepwise`) every pass of the one
loop evaluates every layer and the readout, and the count is exact: the passes times
both weights.

**Mini-batches** (the paper's practice): with ``batch_size`` the iteration takes the
batch of the rows it is given (:mod:`controldl.solvers.epochs`: epochs of a permutation,
batches in order) and runs steps 1–3 on it (the costates then carry ``1/batch_size``).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from controldl import parallel
from controldl import problem as P
from controldl.compilation import compile_or_load
from controldl.problem import Params
from controldl.solvers.base import COMPILED, signature
from controldl.solvers.pmp import hamiltonian as H
from controldl.solvers.pmp.inner import InnerResult

Array = jax.Array


class Config(NamedTuple):
    """The structural options of an iteration (static, part of the cache key)."""

    extended: bool
    layer_inner: Any
    readout_inner: Any
    inner_steps: int
    batch_size: int | None
    checkpoint_every: int | None = None


class StepInfo(NamedTuple):
    """What one iteration reports about the iterate ``θ_k`` it started from (on the
    batch it used): ``cost``, ``accuracy`` (0 for regression), ``stationarity``, the
    per-layer ``gap`` (L,), the ``readout_gap``, the per-layer ``inner_steps`` (L,),
    the ``evaluations`` (largest over the layers, plus the readout's), the ``rejected``
    line-search trials (summed over layers and readout), ``work`` (gradient-evaluation
    equivalents of the whole iteration) and ``finite`` (the new iterate is finite)."""

    cost: Array
    accuracy: Array
    stationarity: Array
    gap: Array
    readout_gap: Array
    inner_steps: Array
    evaluations: Array
    rejected: Array
    work: Array
    finite: Array


def layer_update(form: P.Formulation, config: Config, knobs: H.Knobs, readout: H.Theta,
                 Y: Array, d: H.LayerData) -> tuple[InnerResult, Array]:
    """One layer's maximization from ``d.theta_k``: the inner result and the gap
    (objective at the result minus at ``θ_k``, the l1 term included)."""
    prox = (lambda th, s: H.layer_prox(form, th, s)) if H.has_layer_prox(form) else None

    objective = H.layer_objective(form, config.extended, knobs, d, readout, Y)
    res = config.layer_inner.maximize(objective, d.theta_k, config.inner_steps, prox)
    return res, layer_gap(form, res, d.theta_k)


def layer_gap(form: P.Formulation, res: InnerResult, theta_k: H.Theta) -> Array:
    """The layer's gap estimate: its objective at the inner result minus at ``θ_k``, the
    l1 term included (the inner solvers maximize the smooth part)."""
    return ((res.value - H.layer_l1(form, res.theta))
            - (res.value0 - H.layer_l1(form, theta_k)))


def _layer_updates(form: P.Formulation, config: Config, knobs: H.Knobs, params: Params,
                   xs: Array, ps: Array, Y: Array) -> tuple[tuple[Array, Array],
                                                            InnerResult, Array]:
    """Every layer's maximization at once: the new ``(A, b)``, the stacked inner results
    and the per-layer gaps."""
    data = H.layer_data(form, params, xs, ps)
    readout = (params.W, params.c)
    res, gap = jax.vmap(lambda d: layer_update(form, config, knobs, readout, Y, d))(data)
    return res.theta, res, gap


def readout_update(form: P.Formulation, config: Config, knobs: H.Knobs,
                   data: H.ReadoutData, extra: Any = None
                   ) -> tuple[tuple[Array, Array], InnerResult, Array]:
    """The terminal control's maximization (the readout unchanged when frozen) of
    :func:`~controldl.solvers.pmp.hamiltonian.readout_smooth_objective` minus
    ``extra(φ)`` when given."""
    phi = data.phi_k
    if not form.train_readout:
        zero = jnp.zeros((), jnp.int32)
        value = jnp.zeros((), data.Y.dtype)
        return phi, InnerResult(phi, value, value, zero, zero, zero, zero), value

    def objective(f):
        value = H.readout_smooth_objective(form, config.extended, knobs, data, f)
        return value if extra is None else value - extra(f)

    return _readout_result(config.readout_inner.maximize(objective, phi, config.inner_steps,
                                                         None))


def iteration(form: P.Formulation, params: Params, knobs: H.Knobs, X0: Array, Y: Array,
              y: Array, rows: Array, config: Config) -> tuple[Params, StepInfo]:
    """One MSA (``config.extended`` false) or E-MSA iteration from ``params``; with
    ``config.checkpoint_every`` the bounded-memory sweep of
    :mod:`controldl.solvers.pmp.checkpointed` (the same iterate)."""
    if config.batch_size is not None:  # sharded like the full data (under on_mesh)
        X0, Y, y = parallel.draw_batch(rows, X0, Y, y)
    if config.checkpoint_every is not None:
        from controldl.solvers.pmp import checkpointed

        return checkpointed.iteration(form, params, knobs, X0, Y, y, config)
    xs = P.trajectory(form, params, X0)
    ps = P.costates(form, params, xs, Y)
    J = P.cost_terms_from_states(form, params, xs, Y)["total"]
    acc = P.accuracy_or_zero(form, P.outputs(form, params.W, params.c, xs[-1]), y)
    stationarity = H.stationarity_from_costates(form, params, xs, ps, Y)
    if stepwise(config):
        layers, readout = _lockstep_updates(form, config, knobs, params, xs, ps, Y)
        return assemble(form, config, (J, acc, stationarity), layers, readout, 0.0, True)
    layers = _layer_updates(form, config, knobs, params, xs, ps, Y)
    readout = readout_update(form, config, knobs,
                             H.ReadoutData(xs, Y, ps[-1], (params.W, params.c)))
    return assemble(form, config, (J, acc, stationarity), layers, readout, 0.0)


def stepwise(config: Config) -> bool:
    """Whether the layers' and the readout's maximizers run one evaluation at a time
    (``start`` / ``advance`` / ``finished`` / ``outcome``, the backtracking L-BFGS): then
    :func:`_lockstep_updates` runs them all in one loop."""
    return all(getattr(inner, "stepwise", False)
               for inner in (config.layer_inner, config.readout_inner))


def _lockstep_updates(form: P.Formulation, config: Config, knobs: H.Knobs, params: Params,
                      xs: Array, ps: Array, Y: Array) -> tuple[tuple, tuple]:
    """Every layer's maximization and the readout's in one ``while_loop``, each pass one
    evaluation of every objective (the layers ``vmap``-ped), a finished maximization held
    where it is, until all are finished. The iterates are those of running each
    maximization alone; each objective appears once in the compiled program (the nested
    loops of :meth:`~controldl.solvers.pmp.inner.LBFGS.maximize` hold it twice per
    maximizer and a loop per line search). Returns :func:`_layer_updates`' and
    :func:`readout_update`'s results."""
    data = H.layer_data(form, params, xs, ps)
    phi, steps = (params.W, params.c), config.inner_steps
    lay, rd = config.layer_inner, config.readout_inner
    running = jax.vmap(lambda d: H.running_part(form, d, phi, Y))(data)
    rdata = H.ReadoutData(xs, Y, ps[-1], phi)
    train = form.train_readout

    def layer(d: H.LayerData, run: H.RunningPart, s: Any) -> Any:
        objective = H.layer_objective(form, config.extended, knobs, d, phi, Y, run)
        return _hold(lay.finished(s, steps), s, lay.advance(objective, s, d.theta_k))

    def readout(s: Any) -> Any:
        objective = lambda f: H.readout_smooth_objective(  # noqa: E731
            form, config.extended, knobs, rdata, f)
        return _hold(rd.finished(s, steps), s, rd.advance(objective, s, phi)) if train else s

    def pending(c: tuple) -> Array:
        layers = jnp.any(~jax.vmap(lambda s: lay.finished(s, steps))(c[0]))
        return layers | (~rd.finished(c[1], steps) if train else False)

    start = (jax.vmap(lay.start)(data.theta_k), rd.start(phi) if train else None)
    end = jax.lax.while_loop(pending, lambda c: (jax.vmap(layer)(data, running, c[0]),
                                                  readout(c[1])), start)
    res = jax.vmap(lay.outcome)(end[0], data.theta_k)
    gap = jax.vmap(lambda r, th: layer_gap(form, r, th))(res, data.theta_k)
    readout_result = (_readout_result(rd.outcome(end[1], phi)) if train
                      else readout_update(form, config, knobs, rdata))  # frozen: unchanged
    return (res.theta, res, gap), readout_result


def _readout_result(res: InnerResult) -> tuple[tuple[Array, Array], InnerResult, Array]:
    """The readout's ``(new φ, inner result, gap)``: the gap is the objective's increase."""
    return res.theta, res, res.value - res.value0


def _hold(done: Array, old: Any, new: Any) -> Any:
    """``old`` where ``done``, else ``new`` (leafwise)."""
    return jax.tree.map(lambda a, b: jnp.where(done, a, b), old, new)


def assemble(form: P.Formulation, config: Config, at_k: tuple[Array, Array, Array],
             layers: tuple, readout: tuple, extra_work: float, lockstep: bool = False
             ) -> tuple[Params, StepInfo]:
    """The new iterate and the :class:`StepInfo` from ``(J, accuracy, stationarity)`` at
    ``θ_k``, the layers' ``((A, b), stacked inner results, gaps)``, the readout's
    ``((W, c), inner result, gap)`` and the work beyond the two passes and the inner
    evaluations. ``lockstep`` (:func:`_lockstep_updates`): every pass of the loop
    evaluated every layer and the readout, so the inner work is the passes (the most
    evaluations of any maximizer) times both weights."""
    J, acc, stationarity = at_k
    (A, b), lay, gap = layers
    (W, c), rd, readout_gap = readout
    new = Params(A, b, W, c)
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in new]))
    w_layer, w_readout = H.evaluation_weight(form, config.extended)
    if lockstep:
        inner = (w_layer + w_readout) * jnp.maximum(jnp.max(lay.evaluations), rd.evaluations)
    else:
        inner = (w_layer * (jnp.max(lay.evaluations) + 2 * jnp.max(lay.hvps))
                 + w_readout * (rd.evaluations + 2 * rd.hvps))
    info = StepInfo(J, acc, stationarity, gap, readout_gap, lay.steps,
                    jnp.max(lay.evaluations) + rd.evaluations,
                    jnp.sum(lay.rejected) + rd.rejected, 1.0 + extra_work + inner, finite)
    return new, info


def compiled_iteration(form: P.Formulation, config: Config, args: tuple) -> Any:
    """The compiled :func:`iteration` for ``args = (params, knobs, X0, Y, y, rows)``,
    cached on the formulation's structure, ``config`` and the shapes, dtypes and
    placements of the arguments (the formulation's numbers and the knobs are traced)."""
    fn = functools.partial(iteration, config=config)

    key = ("pmp-iteration", form.static_key(), config, signature(args))

    def build() -> Any:  # a later process loads the saved executable
        with parallel.on_mesh(parallel.mesh_of(args[2])):
            return compile_or_load(fn, (form, *args), key)

    return COMPILED.get(key, build)


def evaluation(form: P.Formulation, params: Params, X0: Array, Y: Array, y: Array
               ) -> tuple[Array, Array, Array]:
    """``(J, accuracy, stationarity)`` on the given samples (the full training set for
    mini-batch runs)."""
    J, z = P.cost_and_outputs(form, params, X0, Y)
    return J, P.accuracy_or_zero(form, z, y), P.stationarity_residual(form, params, X0, Y)


def compiled_evaluation(form: P.Formulation, args: tuple) -> Any:
    """The compiled :func:`evaluation` for ``args = (params, X0, Y, y)``."""
    return COMPILED.get(("pmp-evaluation", form.static_key(), signature(args)),
                        lambda: jax.jit(evaluation).lower(form, *args).compile())
