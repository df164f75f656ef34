"""``jax.random``'s threefry draws computed on the host with NumPy: nothing to compile.

The shared initialization (:func:`controldl.problem.init_params`) has always been
``kA, kW = jax.random.split(jax.random.PRNGKey(seed))`` and ``jax.random.normal`` draws
from them. Compiling that program (three Threefry-2x32 hashes and two inverse error
functions) took about a fifth of a second on every first solve of a process, longer than
the rest of a small problem's setup. This module computes the same numbers with NumPy:

- the key and the hash are integer arithmetic, bit-for-bit those of JAX's default
  (``jax_threefry_partitionable``) Threefry-2x32, 20 rounds (Salmon et al., "Parallel
  random numbers: as easy as 1, 2, 3", SC 2011): a key is two 32-bit words, the counter of
  element ``i`` of a draw is the 64-bit ``i`` as (high, low) words, and the two output words
  are the new key (``split``) or, for 64-bit draws, the high and low halves (``bits``);
- uniform floats are the top mantissa bits under exponent 1, minus 1, mapped to
  ``[nextafter(-1, 0), 1)`` as JAX maps them (exact IEEE arithmetic);
- normals are ``√2 · erfinv(u)`` with SciPy's ``erfinv``: within a few units in the last
  place of XLA's polynomial, so the initialization agrees with ``jax.random.normal`` to
  about 1e-15 relative (the tests check it), not bit for bit.
"""

from __future__ import annotations

import numpy as np
from scipy import special

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = np.uint32(0x1BD11BDA)


def prng_key(seed: int) -> np.ndarray:
    """``jax.random.PRNGKey(seed)``'s two words: the high and low 32 bits of ``seed``."""
    seed = int(seed)
    return np.array([(seed >> 32) & 0xFFFFFFFF, seed & 0xFFFFFFFF], np.uint32)


def threefry2x32(key: np.ndarray, x0: np.ndarray, x1: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Threefry-2x32 with 20 rounds of the counters ``(x0, x1)`` (uint32 arrays) under
    ``key`` (2,): five groups of four add-rotate-xor rounds, the key schedule
    ``(k0, k1, k0 ^ k1 ^ 0x1BD11BDA)`` injected after each group with the group's index."""
    ks = (key[0], key[1], key[0] ^ key[1] ^ _PARITY)
    x0, x1 = x0 + ks[0], x1 + ks[1]
    for group in range(5):
        for r in _ROTATIONS[group % 2]:
            x0 = x0 + x1
            x1 = (x1 << np.uint32(r)) | (x1 >> np.uint32(32 - r))
            x1 = x1 ^ x0
        x0 = x0 + ks[(group + 1) % 3]
        x1 = x1 + ks[(group + 2) % 3] + np.uint32(group + 1)
    return x0, x1


def _hash(key: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The hash of the counters ``0 … n-1`` (64-bit, as high and low words)."""
    count = np.arange(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        return threefry2x32(key, (count >> np.uint64(32)).astype(np.uint32),
                            (count & np.uint64(0xFFFFFFFF)).astype(np.uint32))


def split(key: np.ndarray, num: int = 2) -> np.ndarray:
    """``jax.random.split(key, num)``: (num, 2) keys."""
    hi, lo = _hash(key, num)
    return np.stack([hi, lo], axis=-1)


def normal(key: np.ndarray, shape: tuple[int, ...], dtype: type = np.float64) -> np.ndarray:
    """``jax.random.normal(key, shape, dtype)`` (float64 or float32), computed in ``dtype``
    up to the inverse error function (see the module docstring)."""
    dtype = np.dtype(dtype)
    n = int(np.prod(shape, dtype=np.int64))
    hi, lo = _hash(key, n)
    if dtype == np.float64:
        bits = (hi.astype(np.uint64) << np.uint64(32)) | lo.astype(np.uint64)
        mantissa = (bits >> np.uint64(12)) | np.array(1.0, dtype).view(np.uint64)
    elif dtype == np.float32:
        mantissa = ((hi ^ lo) >> np.uint32(9)) | np.array(1.0, dtype).view(np.uint32)
    else:
        raise ValueError(f"normal draws are float64 or float32, not {dtype}")
    floats = mantissa.view(dtype) - dtype.type(1.0)
    low, high = np.nextafter(dtype.type(-1.0), dtype.type(0.0)), dtype.type(1.0)
    u = np.maximum(low, floats * (high - low) + low)
    return (dtype.type(np.sqrt(2)) * special.erfinv(u).astype(dtype)).reshape(shape)
