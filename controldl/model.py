"""The canonical model, written once over a handful of primitives.

Every formula of the canonical problem that acts on *one sample* or *one layer* lives
here: the activations, one step of the dynamics, the readout, the losses and the
per-layer cost terms. Each function takes an ``ops`` namespace as its first argument;
``JAX_OPS`` evaluates them on ``jax.numpy`` arrays (a sample is a vector of shape
``(d,)``), ``CASADI_OPS`` builds CasADi expressions (a sample is a column ``(d, 1)``).
The JAX problem (``controldl.problem``) and the CasADi transcription
(``controldl.solvers.direct``) both call these functions, so there is exactly one
copy of the mathematics; ``tests/test_model_backends.py`` checks that the two backends
give the same numbers.

The primitives an ``ops`` namespace must provide: ``tanh``, ``exp``, ``log1p``, ``abs``,
``relu`` (``max(u, 0)``), ``sum`` (of all entries), ``logsumexp`` (of a vector), and for
the convolutional model the layout primitives ``rows(x, C)`` (a flat sample (C·H·W,) as the
matrix (C, H·W), channel-major), ``flat`` (the inverse), ``column(v)`` (a vector as a
column), ``ones(r, c)``, and ``conv(geometry, K, X)``: the 'same'-padded cross-correlation
``K ⋆ X`` of the image ``X`` (C, H·W) with the kernel matrix ``K`` (C, k·k·C), as (C, H·W).
CasADi builds it by :func:`conv_taps`, the sum over the taps of (C, C) products with
shifted slices of the padded image (appending one zero column and taking the columns of
:func:`tap_columns`); JAX calls ``jax.lax.conv_general_dilated`` on the same kernels
(:func:`kernels_of_matrix`), several times faster on 28 × 28 images than the taps (measured
in ``benchmarks/conv.py``); ``tests/test_model_backends.py`` holds the two to each other,
values and derivatives. Matrix products use ``@``, which both backends overload.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, NamedTuple

import numpy as np

ACTIVATIONS: tuple[str, ...] = ("tanh", "relu", "sigmoid", "softplus", "identity")
DENSE_MODELS: tuple[str, ...] = ("resnet", "mlp", "inside")
"""The models with dense controls ``A_t`` (d, d), ``b_t`` (d,)."""
MODELS: tuple[str, ...] = (*DENSE_MODELS, "conv")
CONTROL_SETS: tuple[str, ...] = ("real", "binary", "ternary")
"""The sets of the controls' entries: real numbers, ``α_t·{−1, +1}``, ``α_t·{−1, 0, +1}``
(:mod:`controldl.problem.discrete`)."""
READOUTS: tuple[str, ...] = ("flatten", "pool", "channel_mean")
"""The convolutional model's readout features: the whole state, each channel's mean over
the pixels, or each pixel's mean over the channels (Li et al.'s ``Lower`` layer)."""
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
        rows=lambda x, C: jnp.reshape(x, (C, -1)),
        flat=jnp.ravel,
        column=lambda v: jnp.reshape(v, (-1, 1)),
        ones=lambda r, c: np.ones((r, c), np.float32),  # exact; promotes to the operand
        conv=_jax_conv,
    )


def _jax_conv(geometry: ConvGeometry, K: Any, X: Any) -> Any:
    """``K ⋆ X`` for the image ``X`` (C, H·W) and the kernel matrix ``K`` (C, k·k·C) by
    ``jax.lax.conv_general_dilated`` ('SAME' padding, stride 1: the cross-correlation of
    :func:`conv_taps`), as (C, H·W). Under ``vmap`` over samples XLA batches it into one
    convolution."""
    import jax

    C, H, W = geometry.channels, geometry.height, geometry.width
    dtype = jax.numpy.result_type(X, K)  # promoted as a matrix product would be
    img = X.reshape(1, C, H, W).astype(dtype)
    kernels = kernels_of_matrix(K, geometry.kernel_size).astype(dtype)
    out = jax.lax.conv_general_dilated(img, kernels, (1, 1), "SAME",
                                       dimension_numbers=("NCHW", "OIHW", "NCHW"))
    return out.reshape(C, H * W)


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
        rows=lambda x, C: ca.reshape(x, x.shape[0] // C, C).T,
        flat=lambda M: ca.vec(M.T),
        column=lambda v: v,
        ones=lambda r, c: ca.DM.ones(r, c),
        conv=lambda geometry, K, X: conv_taps(geometry, K, ca.horzcat(
            X, ca.DM.zeros(X.shape[0], 1))),
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


def step(ops: Any, model: str, act: str, h: float, x: Any, A: Any, b: Any,
         geometry: ConvGeometry | None = None) -> Any:
    """One layer: ``resnet``: ``x + h·σ(A x + b)``; ``mlp``: ``σ(A x + b)``;
    ``inside``: ``x + h·(A σ(x) + b)`` (Esteve et al.'s dynamics homogeneous in the
    parameters, leia's "inside" form with ``W_t = A`` a full d×d matrix; ``θ = 0`` is the
    identity layer whatever σ); ``conv``: ``x + h·σ(K ⋆ x + b)`` (:func:`conv`, ``A`` the
    kernel matrix of :func:`kernel_matrix`, ``b`` one bias per channel, ``geometry``
    the image's shape).

    Shapes: ``x`` (d,), ``A`` (d, d), ``b`` (d,) — or columns (d, 1) for CasADi; for
    ``conv`` ``x`` (C·H·W,), ``A`` (C, k·k·C), ``b`` (C,).
    """
    if model == "conv":
        if geometry is None:
            raise ValueError("the conv model needs its geometry (channels, height, width, k)")
        return x + h * activation(ops, act, conv(ops, geometry, A, b, x))
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


# --------------------------------------------------------------------------- convolution


class ConvGeometry(NamedTuple):
    """The convolutional state: ``channels`` C images of ``height`` × ``width`` pixels,
    kernels ``kernel_size`` × ``kernel_size`` (odd: 'same' padding ``p = (k-1)/2``)."""

    channels: int
    height: int
    width: int
    kernel_size: int

    @property
    def pixels(self) -> int:
        return self.height * self.width


def tap_columns(geometry: ConvGeometry) -> list[np.ndarray]:
    """For each kernel tap ``(i, j)`` (row-major, ``t = i·k + j``) the source column of
    every output pixel ``(r, s)`` in the image extended by one zero column (index ``H·W``):
    ``(r + i − p)·W + (s + j − p)`` when inside the image, ``H·W`` (zero padding) outside.
    Columns of the matrix (C, H·W + 1): CasADi's padded image (constants, NumPy)."""
    H, W, k = geometry.height, geometry.width, geometry.kernel_size
    p = (k - 1) // 2
    r, s = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    taps = []
    for i in range(k):
        for j in range(k):
            rr, ss = r + i - p, s + j - p
            inside = (rr >= 0) & (rr < H) & (ss >= 0) & (ss < W)
            taps.append(np.where(inside, rr * W + ss, H * W).ravel())
    return taps


def conv(ops: Any, geometry: ConvGeometry, K: Any, b: Any, x: Any) -> Any:
    """``u = K ⋆ x + b``, 'same' zero padding, stride 1 (cross-correlation, as in deep
    learning): ``u[o, r, s] = Σ_{c,i,j} K[o, c, i, j]·x[c, r+i−p, s+j−p] + b[o]``, ``K``
    the kernel matrix (C, k·k·C) of :func:`kernel_matrix`; ``K ⋆ x`` is the backend's
    ``ops.conv`` (:func:`conv_taps` on CasADi, XLA's convolution on JAX).

    Shapes: ``x`` (C·H·W,) channel-major, ``b`` (C,) → ``u`` (C·H·W,).
    """
    C, HW = geometry.channels, geometry.pixels
    U = ops.conv(geometry, K, ops.rows(x, C)) + ops.column(b) @ ops.ones(1, HW)
    return ops.flat(U)


def conv_taps(geometry: ConvGeometry, K: Any, Xp: Any) -> Any:
    """``K ⋆ X = Σ_t K_t @ shifted_t(X)`` over the taps ``t = (i, j)`` (row-major),
    ``K_t = K[:, :, i, j]`` the t-th (C, C) column block of the kernel matrix ``K``
    (C, k·k·C) and ``shifted_t`` the columns :func:`tap_columns` of the image extended by
    one zero column, ``Xp`` (C, H·W + 1) → (C, H·W). Any backend whose matrices take
    column indexing and ``@`` (CasADi, NumPy)."""
    C = geometry.channels
    U = 0
    for t, cols in enumerate(tap_columns(geometry)):
        U = U + K[:, t * C:(t + 1) * C] @ Xp[:, [int(v) for v in cols]]
    return U


def kernels_of_matrix(K: Any, k: int) -> Any:
    """The kernels (C_out, C_in, k, k) of a kernel matrix (C_out, k·k·C_in): the inverse of
    :func:`kernel_matrix` (a reshape and a transpose)."""
    C_out = K.shape[0]
    return K.reshape(C_out, k, k, K.shape[1] // (k * k)).transpose(0, 3, 1, 2)


def average_pool(X: Any, s: int) -> Any:
    """Images ``X`` (N, C, H, W) averaged over ``s × s`` blocks → (N, C, H/s, W/s) (NumPy
    or JAX arrays; ``s`` divides H and W): the conv model's ``input_pool``, applied to the
    inputs before the embedding."""
    if s == 1:
        return X
    N, C, H, W = X.shape
    return X.reshape(N, C, H // s, s, W // s, s).mean(axis=(3, 5))


def kernel_matrix(K: Any) -> Any:
    """The kernel matrix ``(C_out, k·k·C_in)`` of kernels ``K`` (..., C_out, C_in, k, k):
    column ``(i·k + j)·C_in + c`` holds ``K[:, c, i, j]`` (a reshape, NumPy or JAX)."""
    *lead, C_out, C_in, k, _ = K.shape
    perm = (*range(len(lead)), len(lead), len(lead) + 2, len(lead) + 3, len(lead) + 1)
    return K.transpose(perm).reshape(*lead, C_out, k * k * C_in)


def features(ops: Any, readout_name: str, channels: int, x: Any) -> Any:
    """The readout's input: ``flatten``: the state ``x`` itself; ``pool``: the mean of
    each channel over the pixels (global average pooling), (C,); ``channel_mean``: the
    mean of each pixel over the channels, (H·W,) (Li et al.'s ``Lower``)."""
    if readout_name == "flatten":
        return x
    if readout_name == "pool":
        X = ops.rows(x, channels)
        hw = X.shape[1]
        return ops.flat(X @ ops.ones(hw, 1)) / hw
    if readout_name == "channel_mean":
        return ops.flat(ops.ones(1, channels) @ ops.rows(x, channels)) / channels
    raise ValueError(f"unknown readout {readout_name!r}; expected one of {', '.join(READOUTS)}")


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
