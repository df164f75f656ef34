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

**Work**, in gradient-evaluation equivalents, counted from the products of an (N, d) by a
(d, d) matrix (or a layer's convolution) and of the readout that the compiled program
performs (:func:`~controldl.solvers.pmp.hamiltonian.work_weights`; a test reads them
against the optimized program): one gradient of J is ``3L`` layer products and three
readout products. The forward pass and the one backward pass that gives the costates
and the gradient (:func:`~controldl.solvers.pmp.hamiltonian.costates_and_gradient`) take
four layer products per layer; the inner maximizations start from the value and gradient
at ``θ_k`` that these passes give (not evaluated again); an evaluation of every layer's
``H̃_t`` then takes five layer products per layer (``H_t``: two), the readout's a few
readout products. With the backtracking L-BFGS (:func:`stepwise`) every pass of the one
loop evaluates every layer and the readout, and the count is exact: the passes times both
weights. With the other inner maximizers every layer runs in the same vmapped loop and the
count, the *largest* number of evaluations over the layers times the weight (a
Hessian-vector product counts as two evaluations), is a lower bound.

**Several iterations per dispatch** (:func:`run`): a ``lax.while_loop`` runs up to
``Control.count`` iterations on the device, stacking each one's report (:class:`Entry`),
and stops early where a stopping rule that the device can check holds; the host records
every entry and applies every stopping rule to each, in order (see
:mod:`controldl.solvers.pmp.solvers`).

**Mini-batches** (the paper's practice): with ``batch_size`` the iteration takes the
batch of the rows it is given (:mod:`controldl.solvers.epochs`: epochs of a permutation,
batches in order) and runs steps 1–3 on it (the costates then carry ``1/batch_size``).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from controldl import parallel
from controldl import problem as P
from controldl.compilation import compile_or_load
from controldl.problem import Params
from controldl.solvers.base import COMPILED, signature
from controldl.solvers.pmp import checkpointed
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
                 Y: Array, d: H.LayerData, grad: H.Theta | None = None,
                 running: H.RunningPart | None = None) -> tuple[InnerResult, Array]:
    """One layer's maximization from ``d.theta_k``: the inner result and the gap
    (objective at the result minus at ``θ_k``, the l1 term included). ``grad``: the
    layer's part of ``∇f`` at ``θ_k`` from the costate pass; the maximization then starts
    from the value and gradient there (:func:`~controldl.solvers.pmp.hamiltonian.
    layer_start`) instead of evaluating them."""
    prox = (lambda th, s: H.layer_prox(form, th, s)) if H.has_layer_prox(form) else None
    if running is None:
        running = H.running_part(form, d, readout, Y)
    objective = H.layer_objective(form, config.extended, knobs, d, readout, Y, running)
    start = None if grad is None else H.layer_start(form, d, running, grad)
    res = config.layer_inner.maximize(objective, d.theta_k, config.inner_steps, prox,
                                      start=start)
    return res, layer_gap(form, res, d.theta_k)


def layer_gap(form: P.Formulation, res: InnerResult, theta_k: H.Theta) -> Array:
    """The layer's gap estimate: its objective at the inner result minus at ``θ_k``, the
    l1 term included (the inner solvers maximize the smooth part)."""
    return ((res.value - H.layer_l1(form, res.theta))
            - (res.value0 - H.layer_l1(form, theta_k)))


def _layer_updates(form: P.Formulation, config: Config, knobs: H.Knobs, params: Params,
                   xs: Array, ps: Array, Y: Array, grad: Params | None = None
                   ) -> tuple[tuple[Array, Array], InnerResult, Array]:
    """Every layer's maximization at once: the new ``(A, b)``, the stacked inner results
    and the per-layer gaps (from ``grad``'s seeds when given)."""
    data = H.layer_data(form, params, xs, ps)
    readout = (params.W, params.c)
    seeds = None if grad is None else (grad.A, grad.b)
    res, gap = jax.vmap(lambda d, g: layer_update(form, config, knobs, readout, Y, d, g))(
        data, seeds)
    return res.theta, res, gap


def readout_update(form: P.Formulation, config: Config, knobs: H.Knobs,
                   data: H.ReadoutData, extra: Any = None, grad: H.Theta | None = None
                   ) -> tuple[tuple[Array, Array], InnerResult, Array]:
    """The terminal control's maximization (the readout unchanged when frozen) of
    :func:`~controldl.solvers.pmp.hamiltonian.readout_smooth_objective` minus
    ``extra(φ)`` when given; from :func:`~controldl.solvers.pmp.hamiltonian.readout_start`
    with ``grad`` (``∇_φ J`` from the costate pass)."""
    phi = data.phi_k
    if not form.train_readout:
        zero = jnp.zeros((), jnp.int32)
        value = jnp.zeros((), data.Y.dtype)
        return phi, InnerResult(phi, value, value, zero, zero, zero, zero), value

    def objective(f):
        value = H.readout_smooth_objective(form, config.extended, knobs, data, f)
        return value if extra is None else value - extra(f)

    start = None if grad is None else H.readout_start(form, data, grad)
    return _readout_result(config.readout_inner.maximize(objective, phi, config.inner_steps,
                                                         None, start=start))


def iteration(form: P.Formulation, params: Params, knobs: H.Knobs, X0: Array, Y: Array,
              y: Array, rows: Array, config: Config, tol: Array | None = None
              ) -> tuple[Params, StepInfo]:
    """One MSA (``config.extended`` false) or E-MSA iteration from ``params``; with
    ``config.checkpoint_every`` the bounded-memory sweep of
    :mod:`controldl.solvers.pmp.checkpointed` (the same iterate). The forward pass, one
    backward pass for the costates and ``∇f`` (which gives the stationarity and the
    inner maximizations' starting values), then the maximizations; not those where the
    stationarity is at most ``tol`` (the outer tolerance: the solve stops at ``params``,
    which is returned as the new iterate, with no inner work)."""
    if config.batch_size is not None:  # sharded like the full data (under on_mesh)
        X0, Y, y = parallel.draw_batch(rows, X0, Y, y)
    if config.checkpoint_every is not None:
        return checkpointed.iteration(form, params, knobs, X0, Y, y, config,
                                      checkpointed.Updates(layer_update, readout_update,
                                                           assemble))
    xs, ps, grad, at_k = at_iterate(form, params, X0, Y, y)

    def maximize() -> tuple[tuple, tuple]:
        if stepwise(config):
            return _lockstep_updates(form, config, knobs, params, xs, ps, Y, grad)
        return (_layer_updates(form, config, knobs, params, xs, ps, Y, grad),
                readout_update(form, config, knobs,
                               H.ReadoutData(xs, Y, ps[-1], (params.W, params.c)),
                               grad=(grad.W, grad.c)))

    if tol is None:
        layers, readout = maximize()
    else:
        layers, readout = jax.lax.cond(at_k[2] <= tol, lambda: _held(params, maximize),
                                       maximize)
    return assemble(form, config, at_k, layers, readout, "stored", stepwise(config))


def at_iterate(form: P.Formulation, params: Params, X0: Array, Y: Array, y: Array
               ) -> tuple[Array, Array, Params, tuple[Array, Array, Array]]:
    """The outer part of an iteration at ``θ_k``: the states ``xs`` and costates ``ps``
    (L+1, N, d), ``∇f`` and ``(J, accuracy, stationarity)``, from the forward pass and
    one backward pass (:func:`~controldl.solvers.pmp.hamiltonian.costates_and_gradient`)."""
    xs = P.trajectory(form, params, X0)
    ps, grad = H.costates_and_gradient(form, params, xs, Y)
    J = P.cost_terms_from_states(form, params, xs, Y)["total"]
    acc = P.accuracy_or_zero(form, P.outputs(form, params.W, params.c, xs[-1]), y)
    return xs, ps, grad, (J, acc, P.stationarity_from_gradient(form, params, grad))


def _held(params: Params, maximize: Any) -> tuple[tuple, tuple]:
    """What ``maximize`` returns, with the controls and readout of ``params`` kept, no
    evaluations and zero gaps (an iterate within the outer tolerance)."""
    zeros = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), jax.eval_shape(maximize))
    (_, lay, gap), (_, rd, rgap) = zeros
    theta, phi = (params.A, params.b), (params.W, params.c)
    return (theta, lay._replace(theta=theta), gap), (phi, rd._replace(theta=phi), rgap)


def stepwise(config: Config) -> bool:
    """Whether the layers' and the readout's maximizers run one evaluation at a time
    (``start`` / ``advance`` / ``finished`` / ``outcome``, the backtracking L-BFGS): then
    :func:`_lockstep_updates` runs them all in one loop."""
    return all(getattr(inner, "stepwise", False)
               for inner in (config.layer_inner, config.readout_inner))


def _lockstep_updates(form: P.Formulation, config: Config, knobs: H.Knobs, params: Params,
                      xs: Array, ps: Array, Y: Array, grad: Params | None = None
                      ) -> tuple[tuple, tuple]:
    """Every layer's maximization and the readout's in one ``while_loop``, each pass one
    evaluation of every objective (the layers ``vmap``-ped), a finished maximization held
    where it is, until all are finished; with ``grad`` (``∇f`` at ``θ_k`` from the costate
    pass) each starts from its value and gradient there, without a pass to evaluate them.
    The iterates are those of running each maximization alone; each objective appears
    once in the compiled program (the nested loops of
    :meth:`~controldl.solvers.pmp.inner.LBFGS.maximize` hold it twice per maximizer and a
    loop per line search). Returns :func:`_layer_updates`' and :func:`readout_update`'s
    results."""
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

    if grad is None:
        start = (jax.vmap(lay.start)(data.theta_k), rd.start(phi) if train else None)
    else:
        seeds = jax.vmap(lambda d, run, g: H.layer_start(form, d, run, g))(
            data, running, (grad.A, grad.b))
        start = (jax.vmap(lay.start)(data.theta_k, seeds),
                 rd.start(phi, H.readout_start(form, rdata, (grad.W, grad.c))) if train
                 else None)
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
             layers: tuple, readout: tuple, outer: str, lockstep: bool = False
             ) -> tuple[Params, StepInfo]:
    """The new iterate and the :class:`StepInfo` from ``(J, accuracy, stationarity)`` at
    ``θ_k``, the layers' ``((A, b), stacked inner results, gaps)`` and the readout's
    ``((W, c), inner result, gap)``; ``outer`` is ``"stored"`` or ``"checkpointed"`` (the
    sweep's recomputations, :func:`~controldl.solvers.pmp.hamiltonian.work_weights`).
    ``lockstep`` (:func:`_lockstep_updates`): every pass of the loop evaluated every layer
    and the readout, so the inner work is the passes (the most evaluations of any
    maximizer) times both weights."""
    J, acc, stationarity = at_k
    (A, b), lay, gap = layers
    (W, c), rd, readout_gap = readout
    new = Params(A, b, W, c)
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in new]))
    w = H.work_weights(form, config.extended, outer == "checkpointed")
    w_readout = w.readout if form.train_readout else 0.0
    if lockstep:
        inner = (w.layers + w_readout) * jnp.maximum(jnp.max(lay.evaluations),
                                                      rd.evaluations)
    elif outer == "checkpointed":  # the sweep maximizes one layer at a time
        inner = (w.layers / form.layers * jnp.sum(lay.evaluations + 2 * lay.hvps)
                 + w_readout * (rd.evaluations + 2 * rd.hvps))
    else:
        inner = (w.layers * (jnp.max(lay.evaluations) + 2 * jnp.max(lay.hvps))
                 + w_readout * (rd.evaluations + 2 * rd.hvps))
    info = StepInfo(J, acc, stationarity, gap, readout_gap, lay.steps,
                    jnp.max(lay.evaluations) + rd.evaluations,
                    jnp.sum(lay.rejected) + rd.rejected, w.outer + inner, finite)
    return new, info


class Probe(NamedTuple):
    """The starts of :func:`gap_probe` (static): ``starts`` perturbed starts besides
    ``θ_k`` itself, each entry of ``θ_k`` moved by ``U(−scale, scale)``, and ``steps``
    inner iterations from each."""

    starts: int
    scale: float
    steps: int


def gap_probe(form: P.Formulation, params: Params, knobs: H.Knobs, X0: Array, Y: Array,
              key: Array, config: Config, probe: Probe) -> tuple[Array, Array]:
    """A lower bound of the Hamiltonian gap ``max_θ H̃_t(θ) − H̃_t(θ_k)`` of every layer
    (``H_t`` for MSA) and of the readout at ``params``: the inner maximizer run for
    ``probe.steps`` iterations from ``θ_k`` and from ``probe.starts`` perturbed starts
    (projected onto the constraints), the largest objective reached (the l1 term taken
    at the point reached) minus the objective at ``θ_k`` (its l1 term at ``θ_k``). Li et
    al.'s code perturbs the inner start the same way (``msa_perturb_init``, U(±0.005)).
    Returns the layers' (L,) and the readout's gap."""
    xs = P.trajectory(form, params, X0)
    ps, _ = H.costates_and_gradient(form, params, xs, Y)
    data = H.layer_data(form, params, xs, ps)
    phi = (params.W, params.c)
    prox = (lambda th, s: H.layer_prox(form, th, s)) if H.has_layer_prox(form) else None
    n = probe.starts + 1
    k_layers, k_readout = jax.random.split(key)

    def deltas(k: Array, theta: H.Theta) -> H.Theta:
        keys = jax.random.split(k, len(theta))
        moved = tuple(probe.scale * jax.random.uniform(kk, (n, *v.shape), v.dtype, -1.0, 1.0)
                      for kk, v in zip(keys, theta, strict=True))
        return tuple(m.at[0].set(0.0) for m in moved)  # the first start is θ_k itself

    def layer(d: H.LayerData, k: Array) -> Array:
        objective = H.layer_objective(form, config.extended, knobs, d, phi, Y)
        full = lambda th: objective(th) - H.layer_l1(form, th)  # noqa: E731

        def reach(delta: H.Theta) -> Array:
            start = tuple(a + b for a, b in zip(d.theta_k, delta, strict=True))
            start = start if prox is None else prox(start, jnp.zeros((), X0.dtype))
            res = config.layer_inner.maximize(objective, start, probe.steps, prox)
            return res.value - H.layer_l1(form, res.theta)

        return jnp.max(jax.vmap(reach)(deltas(k, d.theta_k))) - full(d.theta_k)

    gaps = jax.vmap(layer)(data, jax.random.split(k_layers, form.layers))
    if not form.train_readout:
        return gaps, jnp.zeros((), X0.dtype)
    rdata = H.ReadoutData(xs, Y, ps[-1], phi)
    objective = lambda f: H.readout_smooth_objective(  # noqa: E731
        form, config.extended, knobs, rdata, f)

    def reach_readout(delta: H.Theta) -> Array:
        start = tuple(a + b for a, b in zip(phi, delta, strict=True))
        return config.readout_inner.maximize(objective, start, probe.steps).value

    readout = jnp.max(jax.vmap(reach_readout)(deltas(k_readout, phi))) - objective(phi)
    return gaps, readout


def compiled_gap_probe(form: P.Formulation, config: Config, probe: Probe, args: tuple
                       ) -> Any:
    """The compiled :func:`gap_probe` for ``args = (params, knobs, X0, Y, key)``."""
    fn = functools.partial(gap_probe, config=config, probe=probe)
    key = ("pmp-gap-probe", form.static_key(), config, probe, signature(args))
    return COMPILED.get(key, lambda: compile_or_load(fn, (form, *args), key))


K_MAX = 64
"""The most iterations one dispatch runs (:func:`run`; the stacked reports' length)."""


class Control(NamedTuple):
    """The traced arguments of one dispatch (:func:`run`): the first ``iteration`` k,
    the most iterations to run (``count`` ≤ :data:`K_MAX`), the solve's ``max_iter``, the
    costs at iteration 0 and k−1 (NaN when not yet known), the device's early stops
    (``tol``: stationarity at most this, −1 for none; ``target``: cost at most this, −inf
    for none), the divergence factor and ``rho_growth`` (ρ is multiplied by it after an
    iteration whose cost rose; 1 keeps ρ fixed)."""

    iteration: Array
    count: Array
    max_iter: Array
    first_cost: Array
    last_cost: Array
    tol: Array
    target: Array
    diverge: Array
    rho_growth: Array


def one_iteration(dtype: Any) -> Control:
    """The :class:`Control` of one iteration from the start on the full batch (the
    shapes and dtypes every dispatch has; for compiling or inspecting :func:`run`)."""
    ints = lambda *v: (jnp.asarray(x, jnp.int32) for x in v)  # noqa: E731
    floats = lambda *v: (jnp.asarray(x, dtype) for x in v)  # noqa: E731
    return Control(*ints(0, 1, 1), *floats(jnp.nan, jnp.nan, -1.0, -jnp.inf, 1e3, 1.0))


def batch_rows(rows_of: Any, first: int, count: int, batch: int | None) -> np.ndarray:
    """The rows (:data:`K_MAX`, B) int32 of the mini-batches of iterations ``first`` …
    ``first + count − 1`` (``rows_of(k)``: :meth:`controldl.solvers.epochs.Epochs.rows`),
    the unused slots repeating the last; (:data:`K_MAX`, 0) on the full batch."""
    if batch is None:
        return np.zeros((K_MAX, 0), np.int32)
    ks = [first + min(j, max(count, 1) - 1) for j in range(K_MAX)]
    return np.stack([np.asarray(rows_of(k), np.int32) for k in ks])


class Entry(NamedTuple):
    """One iteration's report as the host receives it: the :class:`StepInfo` at ``θ_k``
    (on the iteration's batch) and the ρ the iteration used."""

    info: StepInfo
    rho: Array


class Dispatch(NamedTuple):
    """What one dispatch returns: the iterate and knobs of the last iteration it ran
    (``last``, ``last_knobs``), that iteration's new iterate and the knobs that follow
    (``next``, ``next_knobs``), the iterations ``done`` and the stacked :class:`Entry`
    reports (:data:`K_MAX`, …; the first ``done`` are filled)."""

    last: Params
    last_knobs: H.Knobs
    next: Params
    next_knobs: H.Knobs
    done: Array
    entries: Entry


def _stops(info: StepInfo, k: Array, first: Array, c: Control) -> Array:
    """Whether the host will stop at this iteration by a rule the device can check
    (the host decides; an early exit only): the cost not finite or diverged, non-finite
    controls, the stationarity at most ``tol``, the cost at most ``target``, ``max_iter``."""
    return ((~jnp.isfinite(info.cost)) | (info.cost > c.diverge * jnp.abs(first))
            | (~info.finite) | (info.stationarity <= c.tol) | (info.cost <= c.target)
            | (k >= c.max_iter))


def run(form: P.Formulation, params: Params, knobs: H.Knobs, X0: Array, Y: Array,
        y: Array, rows: Array, control: Control, config: Config) -> Dispatch:
    """Up to ``control.count`` iterations from ``params`` on the device (a
    ``lax.while_loop`` around :func:`iteration`), iteration ``j`` of the dispatch on the
    mini-batch ``rows[j]`` (:func:`batch_rows`): each one's :class:`Entry` is stacked, the
    new iterate taken, ρ grown by ``rho_growth`` after a rise of the cost; the loop ends
    after the first iteration at which :func:`_stops` holds."""
    c = control

    def one(j: Array, params: Params, knobs: H.Knobs) -> tuple[Params, StepInfo]:
        return iteration(form, params, knobs, X0, Y, y, rows[j], config,
                         None if config.batch_size is not None else c.tol)

    shapes = jax.eval_shape(one, c.iteration, params, knobs)
    empty = Entry(jax.tree.map(lambda a: jnp.zeros((K_MAX, *a.shape), a.dtype), shapes[1]),
                  jnp.zeros((K_MAX,), X0.dtype))

    def body(carry):
        j, params, knobs, _, _, first, last, _, entries = carry
        k = c.iteration + j
        new, info = one(j, params, knobs)
        first = jnp.where(k == 0, info.cost, first)
        entries = jax.tree.map(lambda buf, v: buf.at[j].set(v), entries,
                               Entry(info, knobs.rho))
        rose = (k > 0) & (info.cost > last)
        grown = knobs._replace(rho=jnp.where(rose, knobs.rho * c.rho_growth, knobs.rho))
        stop = _stops(info, k, first, c)
        return j + 1, new, grown, params, knobs, first, info.cost, stop, entries

    def cond(carry):
        j, stop = carry[0], carry[7]
        return (j < c.count) & ~stop

    start = (jnp.zeros((), jnp.int32), params, knobs, params, knobs,
             c.first_cost.astype(X0.dtype), c.last_cost.astype(X0.dtype), jnp.zeros((), bool),
             empty)
    j, new, new_knobs, last, last_knobs, _, _, _, entries = jax.lax.while_loop(
        cond, body, start)
    return Dispatch(last, last_knobs, new, new_knobs, j, entries)


def compiled_run(form: P.Formulation, config: Config, args: tuple) -> Any:
    """The compiled :func:`run` for ``args = (params, knobs, X0, Y, y, rows, control)``, cached
    on the formulation's structure, ``config`` and the shapes, dtypes and placements of
    the arguments (the formulation's numbers, the knobs and the control are traced)."""
    fn = functools.partial(run, config=config)
    key = ("pmp-run", K_MAX, form.static_key(), config, signature(args))

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
