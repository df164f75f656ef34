"""The forward pass: the embedding, one layer, the trajectory through the layers, the
outputs and the mean loss of a set of states.

The per-sample formulas come from :mod:`controldl.model`; this module assembles them over
samples (``vmap``) and layers (``lax.scan``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from controldl import model
from controldl.parallel import rows_of, weighted_mean
from controldl.problem.formulation import Formulation, Params

Array = jax.Array
JAX = model.ops_for("jax")


def embed(form: Formulation, X: Array) -> Array:
    """``x(0) = (X, 0, …, 0)``: pad the inputs (N, n) with zeros to width d → (N, d).
    Images (N, C₀, H, W) are flattened channel-major first, so the padding adds zero
    channels (the conv model's augmentation); with the conv model's ``input_pool`` s they
    are first averaged over s × s blocks (:func:`model.average_pool`). NumPy inputs are
    padded by NumPy (on the host, nothing compiled), others by ``jax.numpy``."""
    xp = np if isinstance(X, np.ndarray) else jnp
    if form.model == "conv" and (form.input_pool or 1) > 1:
        X = model.average_pool(xp.reshape(X, (X.shape[0], *form.image_shape)),
                               int(form.input_pool))
    X = xp.reshape(X, (X.shape[0], -1))
    return xp.pad(X, ((0, 0), (0, form.width - X.shape[1])))


def step(form: Formulation, x: Array, A: Array, b: Array) -> Array:
    """One layer for one sample: ``f(x, θ)`` with ``x`` (d,), ``A`` (d, d), ``b`` (d,);
    for ``conv`` the kernels ``A`` (C, C, k, k) and biases ``b`` (C,)."""
    geo = form.geometry
    if geo is not None:
        A = model.kernel_matrix(A)
    return model.step(JAX, form.model, form.activation, form.h, x, A, b, geo)


def features(form: Formulation, X: Array) -> Array:
    """The readout's inputs (N, feature_dim) of states ``X`` (N, d) (:func:`model.features`;
    the states themselves for the dense models)."""
    if form.model != "conv" or form.readout == "flatten":
        return X
    return jax.vmap(lambda x: model.features(JAX, form.readout, form.channels, x))(X)


def outputs(form: Formulation, W: Array, c: Array, X: Array) -> Array:
    """``z = W·features(x) + c`` (N, m) for states ``X`` (N, d)."""
    return features(form, X) @ W.T + c


def layer_unroll(form: Formulation) -> int | bool:
    """The ``unroll`` of the scans over the layers: all of them for the conv model, whose
    convolutions XLA:CPU computes several times slower inside a loop than unrolled (a
    gradient through 4 conv layers of 128 MNIST-sized images: 0.19 s in a scan against
    0.010 s unrolled, ``benchmarks/conv.py``; jax-ml/jax#12868), one for the dense models
    (compiled once per step whatever L)."""
    return True if form.model == "conv" else 1


def step_batch(form: Formulation, X: Array, A: Array, b: Array) -> Array:
    """One layer for all samples: (N, d) → (N, d)."""
    return jax.vmap(step, in_axes=(None, 0, None, None))(form, X, A, b)


def trajectory(form: Formulation, params: Params, X0: Array) -> Array:
    """All states ``x(0..L)``, shape (L+1, N, d)."""

    def body(x, theta):
        x_next = step_batch(form, x, *theta)
        return x_next, x_next

    _, xs = jax.lax.scan(body, X0, (params.A, params.b), unroll=layer_unroll(form))
    return jnp.concatenate([X0[None], xs], axis=0)


def final_state(form: Formulation, params: Params, X0: Array) -> Array:
    """``x(L)`` (N, d) without storing the intermediate states."""
    x, _ = jax.lax.scan(lambda x, th: (step_batch(form, x, *th), None), X0, (params.A, params.b),
                        unroll=layer_unroll(form))
    return x


def predict(form: Formulation, params: Params, X0: Array) -> Array:
    """Outputs ``z = W x(L) + c`` (N, m)."""
    return outputs(form, params.W, params.c, final_state(form, params, X0))


def mean_loss(form: Formulation, W: Array, c: Array, X: Array, Y: Array) -> Array:
    """``(1/N) Σ_i ℓ(W x_i + c, y_i)`` for states ``X`` (N, d) and targets ``Y`` (N, m);
    over the real samples only when ``Y`` is :class:`~controldl.parallel.Weighted` (rows
    padded for the devices: weight 0, the mean divided by the real N). Every mean over
    samples of the cost goes through here."""
    per_sample = jax.vmap(lambda z, y: model.loss(JAX, form.loss, z, y))
    return weighted_mean(per_sample(outputs(form, W, c, X), rows_of(Y)), Y)


def forward(form: Formulation, params: Params, X0: Array, Y: Array,
            checkpoint_every: int | None = None) -> tuple[Array, Array]:
    """``x(L)`` (N, d) and the running sum ``Σ_{t=1}^{L} (1/N) Σ_i ℓ(z_i(t), y_i)`` in one
    pass that keeps no intermediate state (0 when ``running`` is 0).

    ``checkpoint_every = k`` rematerializes: under reverse-mode autodiff only every k-th
    state is stored and the layers in between are recomputed (``jax.checkpoint`` on
    blocks of k layers), so memory for the states drops from O(N·L·d) to O(N·(L/k + k)·d).
    """
    W, c = params.W, params.c
    with_running = form.uses("running")

    def layer(carry, theta):
        x, run = carry
        x = step_batch(form, x, *theta)
        if with_running:
            run = run + mean_loss(form, W, c, x, Y)
        return (x, run), None

    def block(carry, thetas):
        return jax.lax.scan(layer, carry, thetas, unroll=layer_unroll(form))[0]

    carry = (X0, jnp.zeros((), X0.dtype))
    thetas = (params.A, params.b)
    L = form.layers
    if checkpoint_every is None or checkpoint_every >= L:
        carry = block(carry, thetas)
    else:
        k = int(checkpoint_every)
        if k < 1:
            raise ValueError(f"checkpoint_every must be >= 1, got {k}")
        nb = L // k
        saved = jax.checkpoint(block)
        head = jax.tree.map(lambda a: a[: nb * k].reshape(nb, k, *a.shape[1:]), thetas)
        carry = jax.lax.scan(lambda cr, th: (saved(cr, th), None), carry, head)[0]
        if nb * k < L:
            carry = saved(carry, jax.tree.map(lambda a: a[nb * k:], thetas))
    return carry


def accuracy_from_outputs(form: Formulation, z: Array, y: Array) -> Array:
    """Fraction of correct labels: ``z > 0`` for one output, ``argmax z`` for K outputs
    (of the real samples when ``y`` is :class:`~controldl.parallel.Weighted`)."""
    if form.n_outputs == 1:
        pred = (z[:, 0] > 0).astype(jnp.int32)
    else:
        pred = jnp.argmax(z, axis=1)
    return weighted_mean((pred == rows_of(y)).astype(z.dtype), y)


def accuracy_or_zero(form: Formulation, z: Array, y: Array) -> Array:
    """:func:`accuracy_from_outputs` of outputs ``z`` (N, m) for labels ``y`` (N,) in
    ``z``'s dtype; 0 for regression (no labels to count)."""
    if form.task != "classification":
        return jnp.zeros((), z.dtype)
    return accuracy_from_outputs(form, z, y).astype(z.dtype)
