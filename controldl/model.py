"""The canonical model, written once over a handful of primitives.

Every formula of the canonical problem that acts on *one sample* or *one layer* lives
here: the activations, one step of the dynamics, the readout, the losses and the
per-layer cost terms. Each function takes an ``ops`` namespace as its first argument;
``JAX_OPS`` evaluates them on ``jax.numpy`` arrays (a sample is a vector of shape
``(d,)``), ``CASADI_OPS`` builds CasADi expressions (a sample is a column ``(d, 1)``).
The JAX problem (``controldl.problem``) and the CasADi transcription
(``controldl.solvers.casadi_direct``) both call these functions, so there is exactly one
copy of the mathematics; ``tests/test_model_backends.py`` checks that the two backends
give the same numbers.

The primitives an ``ops`` namespace must provide: ``tanh``, ``exp``, ``log1p``, ``abs``,
``relu`` (``max(u, 0)``), ``sum`` (of all entries), ``logsumexp`` (of a vector).
Matrix products use ``@``, which both backends overload.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

ACTIVATIONS: tuple[str, ...] = ("tanh", "relu", "sigmoid", "softplus", "identity")
MODELS: tuple[str, ...] = ("resnet", "mlp", "inside")
LOSSES: tuple[str, ...] = ("logistic", "cross_entropy", "sigmoid_mse", "squared")


def _jax_ops() -> SimpleNamespace:
    import jax
    import jax.numpy as jnp

    return SimpleNamespace(
        name="jax",
        tanh=jnp.tanh,
        exp=jnp.exp,
        log1p=jnp.log1p,
        abs=jnp.abs,
        relu=lambda u: jnp.maximum(u, 0.0),
        sum=jnp.sum,
        logsumexp=jax.nn.logsumexp,
    )


def _casadi_ops() -> SimpleNamespace:
    import casadi as ca

    return SimpleNamespace(
        name="casadi",
        tanh=ca.tanh,
        exp=ca.exp,
        log1p=ca.log1p,
        abs=ca.fabs,
        relu=lambda u: ca.fmax(u, 0),
        sum=lambda u: ca.sum1(ca.sum2(u)),
        logsumexp=ca.logsumexp,
    )


def ops_for(backend: str) -> SimpleNamespace:
    """The primitive namespace of ``backend`` (``"jax"`` or ``"casadi"``)."""
    if backend == "jax":
        return _jax_ops()
    if backend == "casadi":
        return _casadi_ops()
    raise ValueError(f"unknown backend {backend!r}; expected 'jax' or 'casadi'")


# --------------------------------------------------------------------------- activations


def softplus(ops: Any, u: Any) -> Any:
    """``softplus(u) = log(1 + e^u) = (u + |u|)/2 + log1p(e^{-|u|})`` (no overflow).

    ``max(u, 0)`` is written as ``(u + |u|)/2`` so that automatic differentiation gives
    the true derivative ``1/2`` at ``u = 0`` on every backend whatever its convention for
    ``|u|'(0)`` (the two kinks cancel). This matters at Li et al.'s flat start, where
    every logit is exactly 0.
    """
    a = ops.abs(u)
    return 0.5 * (u + a) + ops.log1p(ops.exp(-a))


def sigmoid(ops: Any, u: Any) -> Any:
    """``sigmoid(u) = 1 / (1 + e^{-u}) = (1 + tanh(u/2)) / 2`` (no overflow)."""
    return 0.5 * (1.0 + ops.tanh(0.5 * u))


def activation(ops: Any, name: str, u: Any) -> Any:
    """σ(u) for σ ∈ {tanh, relu, sigmoid, softplus, identity}, entrywise."""
    if name == "tanh":
        return ops.tanh(u)
    if name == "relu":
        return ops.relu(u)
    if name == "sigmoid":
        return sigmoid(ops, u)
    if name == "softplus":
        return softplus(ops, u)
    if name == "identity":
        return u
    raise ValueError(f"unknown activation {name!r}; expected one of {', '.join(ACTIVATIONS)}")


# --------------------------------------------------------------------------- dynamics


def step(ops: Any, model: str, act: str, h: float, x: Any, A: Any, b: Any) -> Any:
    """One layer: ``resnet``: ``x + h·σ(A x + b)``; ``mlp``: ``σ(A x + b)``;
    ``inside``: ``x + h·(A σ(x) + b)`` (Esteve et al.'s dynamics homogeneous in the
    parameters, leia's "inside" form with ``W_t = A`` a full d×d matrix; ``θ = 0`` is the
    identity layer whatever σ).

    Shapes: ``x`` (d,), ``A`` (d, d), ``b`` (d,) — or columns (d, 1) for CasADi.
    """
    if model == "inside":
        return x + h * (A @ activation(ops, act, x) + b)
    u = activation(ops, act, A @ x + b)
    if model == "resnet":
        return x + h * u
    if model == "mlp":
        return u
    raise ValueError(f"unknown model {model!r}; expected one of {', '.join(MODELS)}")


def readout(W: Any, c: Any, x: Any) -> Any:
    """``z = W x + c``; ``W`` (m, d), ``c`` (m,), ``x`` (d,) → ``z`` (m,)."""
    return W @ x + c


# --------------------------------------------------------------------------- losses


def loss(ops: Any, name: str, z: Any, target: Any) -> Any:
    """ℓ(z, y) for one sample. ``target`` is numeric with the shape of ``z`` (m,):

    - ``logistic``: ``log(1 + exp(-(2y-1)·z))``, y ∈ {0, 1}, m = 1;
    - ``cross_entropy``: ``logsumexp(z) - z_y``, the target one-hot (K,);
    - ``sigmoid_mse``: ``(sigmoid(z) - y)²``, y ∈ {0, 1}, m = 1;
    - ``squared``: ``½‖z - y‖²``.
    """
    if name == "logistic":
        return ops.sum(softplus(ops, -(2.0 * target - 1.0) * z))
    if name == "cross_entropy":
        return ops.logsumexp(z) - ops.sum(target * z)
    if name == "sigmoid_mse":
        return ops.sum((sigmoid(ops, z) - target) ** 2)
    if name == "squared":
        return 0.5 * ops.sum((z - target) ** 2)
    raise ValueError(f"unknown loss {name!r}; expected one of {', '.join(LOSSES)}")


# --------------------------------------------------------------------------- cost terms


def layer_l2(ops: Any, l2: float, h: float, A: Any, b: Any) -> Any:
    """``(λ/2)·h·(‖A‖_F² + ‖b‖²)`` for one layer."""
    return 0.5 * l2 * h * (ops.sum(A * A) + ops.sum(b * b))


def layer_l1(ops: Any, l1: float, h: float, A: Any, b: Any) -> Any:
    """``β·h·(‖A‖₁ + ‖b‖₁)`` (entrywise) for one layer."""
    return l1 * h * (ops.sum(ops.abs(A)) + ops.sum(ops.abs(b)))


def layer_smooth(ops: Any, smooth: float, h: float, A0: Any, b0: Any, A1: Any, b1: Any) -> Any:
    """``(α/(2h))·(‖A₁ - A₀‖_F² + ‖b₁ - b₀‖²)`` between two consecutive layers."""
    dA = A1 - A0
    db = b1 - b0
    return 0.5 * smooth / h * (ops.sum(dA * dA) + ops.sum(db * db))


def readout_l2(ops: Any, kappa: float, W: Any, c: Any) -> Any:
    """``(κ/2)·(‖W‖_F² + ‖c‖²)``."""
    return 0.5 * kappa * (ops.sum(W * W) + ops.sum(c * c))
