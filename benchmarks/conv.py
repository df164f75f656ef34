"""The conv model's convolution on JAX: XLA's convolution (``jax.lax.conv_general_dilated``,
what ``model.ops_for("jax").conv`` calls) against the sum over the k² taps of (C, C)
products with shifted slices of the padded image (the form CasADi builds, and what the
JAX backend used before). Seconds per gradient of the mean cross-entropy of a batch of
MNIST-sized images through L residual conv layers, compiled, float32.

    python benchmarks/conv.py [--batch 128] [--repeats 10]

Prints one JSON object per (H, C, L): ``taps_s``, ``lax_s`` and their ratio.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from controldl import model


def taps(geo: model.ConvGeometry, K: jax.Array, X: jax.Array) -> jax.Array:
    """Σ_t K_t @ window_t(pad(X)): slices of the zero-padded (C, H, W) image."""
    C, H, W, k = geo
    p = (k - 1) // 2
    Xp = jnp.pad(X.reshape(C, H, W), ((0, 0), (p, p), (p, p)))
    U = 0
    for i in range(k):
        for j in range(k):
            t = i * k + j
            U = U + K[:, t * C:(t + 1) * C] @ Xp[:, i:i + H, j:j + W].reshape(C, H * W)
    return U


def lax(geo: model.ConvGeometry, K: jax.Array, X: jax.Array) -> jax.Array:
    return model.ops_for("jax").conv(geo, K, X)


def timed(conv, geo, L: int, batch: int, repeats: int) -> float:
    C, H, W, k = geo
    rng = np.random.default_rng(0)
    K = jnp.asarray(rng.normal(size=(L, C, k * k * C)) / np.sqrt(9 * C), jnp.float32)
    Wr = jnp.asarray(rng.normal(size=(10, C * H * W)) / np.sqrt(C * H * W), jnp.float32)
    X = jnp.asarray(rng.normal(size=(batch, C * H * W)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 10, batch))

    def loss(K, Wr):
        def one(x):
            for t in range(L):
                x = x + 0.5 * jnp.tanh(conv(geo, K[t], x.reshape(C, H * W)).ravel())
            return Wr @ x
        z = jax.vmap(one)(X)
        return jnp.mean(jax.nn.logsumexp(z, 1) - z[jnp.arange(batch), y])

    f = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    jax.block_until_ready(f(K, Wr))
    t0 = time.perf_counter()
    for _ in range(repeats):
        jax.block_until_ready(f(K, Wr))
    return (time.perf_counter() - t0) / repeats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=10)
    a = ap.parse_args()
    for H, C, L in ((28, 5, 2), (28, 8, 4), (14, 5, 4), (14, 8, 4), (7, 5, 4)):
        geo = model.ConvGeometry(C, H, H, 3)
        t_taps, t_lax = (timed(fn, geo, L, a.batch, a.repeats) for fn in (taps, lax))
        print(json.dumps({"H": H, "C": C, "L": L, "batch": a.batch, "taps_s": t_taps,
                          "lax_s": t_lax, "taps_over_lax": t_taps / t_lax}), flush=True)


if __name__ == "__main__":
    main()
