"""Shared fixtures. Tests run in float64 (controldl turns on jax_enable_x64 at import)."""

import jax
import numpy as np
import pytest

import controldl  # noqa: F401  (enables float64)

jax.config.update("jax_enable_x64", True)


@pytest.fixture
def ring_small():
    return controldl.data.ring(60, seed=0)


@pytest.fixture
def ring_file(tmp_path):
    d = controldl.data.ring(600, seed=0)
    path = tmp_path / "ring.npz"
    np.savez(path, X=d.X_train, y=d.y_train)
    return path
