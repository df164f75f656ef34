r"""MSA / E-MSA in bounded memory: each layer's maximization inside a backward sweep that
recomputes the states from checkpoints.

The stored iteration (:mod:`controldl.solvers.pmp.iteration`) keeps every state and
costate, ``2·N·(L+1)·d`` numbers, and maximizes all layers at once. With
``checkpoint_every = k`` the same iterate is computed as

1. a forward pass that keeps only the state at the start of every block of ``k`` layers
   (``S = ⌈L/k⌉`` blocks; the first block is padded in front with identity layers);
2. a backward sweep over the blocks, last to first: recompute the block's ``k+1`` states
   from its checkpoint, then, layer by layer from the block's end, the costate
   ``p(t) = ∇_x H_t(x(t), p(t+1), θ_t)`` (:func:`controldl.problem.costates`' recursion)
   and at once layer ``t``'s maximization
   (:func:`~controldl.solvers.pmp.iteration.layer_update`, which needs ``x(t), x(t+1),
   p(t), p(t+1)`` only);
3. the readout's maximization from ``x(L)`` and ``p(L)``; with a running cost its
   objective also needs every ``x(t)``, recomputed from the checkpoints inside each
   evaluation (``jax.checkpoint`` per block, so its gradient stores no more);
4. the cost and the stationarity residual by a forward pass and its gradient
   rematerialized in blocks of ``k`` (:func:`controldl.problem.forward`).

**Memory** for the per-sample arrays: ``S + 2(k+1)`` states and costates of shape
(N, d) plus one layer's inner-maximization temporaries, i.e. ``O(N·d·(L/k + k))``:
``O(N·d·√L)`` at ``k ≈ √L`` (:func:`default_every`), against ``O(N·d·L)`` stored.
**Work**: the recomputed forward pass and the sweep's costates, and the cost's
rematerialized gradient (:func:`~controldl.solvers.pmp.hamiltonian.work_weights`); the
layers start from the gradient of that pass (not evaluated again) and are maximized one
after another rather than all at once (``jax.vmap``).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from controldl import problem as P
from controldl.problem import Params
from controldl.solvers.pmp import hamiltonian as H

Array = jax.Array


class Updates(NamedTuple):
    """The parts of the stored iteration (:mod:`controldl.solvers.pmp.iteration`) this
    sweep reuses, handed over by it (so that this module does not import it back):
    ``layer_update``, ``readout_update`` and ``assemble``."""

    layer_update: Any
    readout_update: Any
    assemble: Any


def default_every(layers: int) -> int:
    """``⌈√L⌉``, the block length that minimizes ``L/k + k``."""
    return math.isqrt(max(layers, 1) - 1) + 1


def _blocks(form: P.Formulation, params: Params, k: int, grad: Params | None = None
            ) -> tuple:
    """Per-layer inputs of the sweep (:func:`~controldl.solvers.pmp.hamiltonian.
    layer_controls` flattened, the layers' parts of ``grad`` when given, and ``real``),
    padded in front to ``S·k`` layers and reshaped to (S, k, …): ``(A, b, left, right,
    has_left, has_right, t ≥ 1, [gA, gb,] real)``."""
    L = form.layers
    S = -(-L // k)
    pad = S * k - L
    seeds = () if grad is None else (grad.A, grad.b)
    per_layer = (*jax.tree.leaves(H.layer_controls(form, params)), *seeds,
                 jnp.ones(L, bool))
    padded = tuple(jnp.concatenate([jnp.zeros((pad, *v.shape[1:]), v.dtype), v])
                   for v in per_layer)
    return tuple(v.reshape(S, k, *v.shape[1:]) for v in padded)


def _states(form: P.Formulation, x: Array, block: tuple) -> Array:
    """The block's ``k+1`` states from its first one (padding layers are the identity)."""

    def one(x, layer):
        A, b, real = layer[0], layer[1], layer[-1]
        x = jnp.where(real, P.step_batch(form, x, A, b), x)
        return x, x

    _, xs = jax.lax.scan(one, x, (block[0], block[1], block[-1]))
    return jnp.concatenate([x[None], xs])


def checkpoints(form: P.Formulation, params: Params, X0: Array, k: int,
                grad: Params | None = None) -> tuple[Array, Array, tuple]:
    """``(x(L), starts (S, N, d), blocks)``: the final state, the state at the start of
    every block and the blocked per-layer inputs (:func:`_blocks`)."""
    blocks = _blocks(form, params, k, grad)

    def block_forward(x, block):
        return _states(form, x, block)[-1], x

    x_L, starts = jax.lax.scan(block_forward, X0, blocks)
    return x_L, starts, blocks


def sweep(form: P.Formulation, config: Any, knobs: H.Knobs, params: Params,
          Y: Array, starts: Array, blocks: tuple, p_L: Array, updates: Updates
          ) -> tuple[Any, Array]:
    """The backward sweep: every layer's ``(inner result, gap)``, stacked over the
    ``L`` layers as the stored iteration stacks them, and ``p(0)``."""
    W, c = params.W, params.c
    grad_x = jax.grad(P.hamiltonian, argnums=1)

    def block_backward(p_end, inputs):
        x0, block = inputs
        xs = _states(form, x0, block)

        def layer(p_next, j):
            A, b, Al, bl, Ar, br, has_l, has_r, running, *seed, real = (v[j] for v in block)
            X, X_next = xs[j], xs[j + 1]
            p = grad_x(form, X, p_next, A, b, W, c, Y, running)
            d = H.LayerData(X, X_next, p, p_next, (A, b), (Al, bl), (Ar, br), has_l,
                            has_r, running)
            res, gap = updates.layer_update(form, config, knobs, (W, c), Y, d,
                                            tuple(seed) if seed else None)
            return jnp.where(real, p, p_next), (res, gap)

        return jax.lax.scan(layer, p_end, jnp.arange(block[0].shape[0]), reverse=True)

    p0, (res, gap) = jax.lax.scan(block_backward, p_L, (starts, blocks), reverse=True)
    pad = starts.shape[0] * blocks[0].shape[1] - form.layers
    unblock = lambda v: v.reshape(-1, *v.shape[2:])[pad:]  # noqa: E731
    return jax.tree.map(unblock, (res, gap)), p0


def running_sum(form: P.Formulation, W: Array, c: Array, Y: Array, starts: Array,
                blocks: tuple) -> Array:
    """``Σ_{t=1}^{L}`` :func:`controldl.problem.running_cost_at` ``(x(t))``, the states
    recomputed block by block from the checkpoints (each block under ``jax.checkpoint``:
    a gradient in ``W, c`` stores one block's states at a time)."""

    @jax.checkpoint
    def block_sum(x0, block):
        xs = _states(form, x0, block)[1:]
        terms = jax.vmap(lambda x: P.running_cost_at(form, W, c, x, Y))(xs)
        return jnp.sum(jnp.where(block[-1], terms, 0.0))

    return jnp.sum(jax.lax.map(lambda a: block_sum(*a), (starts, blocks)))


def iteration(form: P.Formulation, params: Params, knobs: H.Knobs, X0: Array, Y: Array,
              y: Array, config: Any, updates: Updates) -> tuple[Params, Any]:
    """One MSA / E-MSA iteration in bounded memory: the iterate and report of
    :func:`controldl.solvers.pmp.iteration.iteration` (on the samples given), from its
    ``config`` and ``updates``."""
    k = min(int(config.checkpoint_every), form.layers)
    W, c = params.W, params.c
    J, z, grad = P.cost_outputs_and_smooth_gradient(form, params, X0, Y, k)
    at_k = (J, P.accuracy_or_zero(form, z, y), P.stationarity_from_gradient(form, params, grad))
    x_L, starts, blocks = checkpoints(form, params, X0, k, grad)
    p_L = P.terminal_costate(form, W, c, x_L, Y)
    (lay, gap), _ = sweep(form, config, knobs, params, Y, starts, blocks, p_L, updates)
    extra = None
    if form.uses("running"):
        def extra(phi):  # the running terms readout_objective would take from all states
            return running_sum(form, *phi, Y, starts, blocks)
    readout = updates.readout_update(form, config, knobs,
                                     H.ReadoutData(x_L[None], Y, p_L, (W, c)), extra)
    return updates.assemble(form, config, at_k, (lay.theta, lay, gap), readout, "checkpointed")
