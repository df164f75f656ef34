"""``controldl.model`` through JAX ops and through CasADi ops gives the same numbers.

The model is written once over backend primitives; these tests evaluate every activation,
dynamics, loss and per-layer cost term with both backends (CasADi as an SX ``Function``,
the way the direct method uses it) and compare values and first derivatives to 1e-12,
including logits far outside the range where a naive ``exp`` overflows.
"""

from __future__ import annotations

import casadi as ca
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import controldl  # noqa: F401  (turns on float64)
from controldl import model

JAX = model.ops_for("jax")
CA = model.ops_for("casadi")
TOL = 1e-12

LARGE = np.array([-800.0, -40.0, -1.5, -1e-3, 0.0, 2e-3, 0.7, 35.0, 800.0])


def close(a: np.ndarray, b: np.ndarray, tol: float = TOL) -> bool:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert np.all(np.isfinite(a)) and np.all(np.isfinite(b))
    return bool(np.all(np.abs(a - b) <= tol * np.maximum(1.0, np.abs(a))))


def casadi_eval(fn, *shapes_and_values):
    """Build an SX function of symbols with the given shapes, evaluate at the values."""
    syms = [ca.SX.sym(f"a{k}", *shape) for k, (shape, _) in enumerate(shapes_and_values)]
    out = fn(*syms)
    outs = out if isinstance(out, tuple) else (out,)
    f = ca.Function("f", syms, list(outs))
    res = f(*[v for _, v in shapes_and_values])
    res = res if isinstance(res, tuple) else (res,)
    return [np.asarray(r, np.float64) for r in res]


def test_ops_for_rejects_unknown_backend():
    with pytest.raises(ValueError, match="unknown backend"):
        model.ops_for("torch")


@pytest.mark.parametrize("act", model.ACTIVATIONS)
def test_activation_values_and_derivatives(act):
    u = LARGE.reshape(-1, 1)
    n = u.shape[0]
    ref = np.asarray(model.activation(JAX, act, jnp.asarray(u[:, 0])))
    dref = np.asarray(jax.vmap(jax.grad(lambda s: model.activation(JAX, act, s)))(
        jnp.asarray(u[:, 0])))

    def fn(s):
        y = model.activation(CA, act, s)
        return y, ca.diag(ca.jacobian(y, s))

    val, der = casadi_eval(fn, ((n, 1), u))
    assert close(val[:, 0], ref)
    # At u = 0 the kinks of relu/abs make the derivative a backend convention; see
    # test_softplus_derivative_at_zero.
    nz = u[:, 0] != 0
    assert close(der[nz, 0], dref[nz])


def test_softplus_derivative_at_zero():
    """Both backends give softplus'(0) = 1/2 (the flat start depends on it)."""
    d_jax = float(jax.grad(lambda s: model.softplus(JAX, s))(0.0))
    (d_ca,) = casadi_eval(lambda s: ca.jacobian(model.softplus(CA, s), s), ((1, 1), np.zeros(1)))
    assert abs(float(d_ca.item()) - 0.5) < TOL
    assert abs(d_jax - 0.5) < TOL


@pytest.mark.parametrize("mdl", model.DENSE_MODELS)
@pytest.mark.parametrize("act", model.ACTIVATIONS)
def test_step_values_and_jacobians(mdl, act):
    rng = np.random.default_rng(3)
    d, h = 4, 0.3
    x = rng.normal(size=d)
    A = rng.normal(size=(d, d)) * 2.0
    b = rng.normal(size=d)
    ref = np.asarray(model.step(JAX, mdl, act, h, jnp.asarray(x), jnp.asarray(A), jnp.asarray(b)))
    jref = np.asarray(jax.jacobian(lambda xx: model.step(JAX, mdl, act, h, xx, jnp.asarray(A),
                                                          jnp.asarray(b)))(jnp.asarray(x)))

    def fn(xs, As, bs):
        y = model.step(CA, mdl, act, h, xs, As, bs)
        return y, ca.jacobian(y, xs)

    val, jac = casadi_eval(fn, ((d, 1), x), ((d, d), A), ((d, 1), b))
    assert close(val[:, 0], ref)
    assert close(jac, jref)


@pytest.mark.parametrize("act", model.ACTIVATIONS)
def test_conv_step_values_and_jacobians(act):
    """``conv``: the one formula of :func:`model.conv` gives the same values and Jacobians
    on both backends (C = 2 channels of 3 × 4 pixels, 3 × 3 kernels)."""
    rng = np.random.default_rng(5)
    geo, h = model.ConvGeometry(2, 3, 4, 3), 0.3
    d = 2 * 12
    x, K, b = rng.normal(size=d), rng.normal(size=(2, 18)), rng.normal(size=2)
    f = lambda xx, KK: model.step(JAX, "conv", act, h, xx, KK, jnp.asarray(b), geo)  # noqa: E731
    ref = np.asarray(f(jnp.asarray(x), jnp.asarray(K)))
    jref = np.asarray(jax.jacobian(f)(jnp.asarray(x), jnp.asarray(K)))
    # CasADi's vec is column-major: d/dK in the order K[:, 0], K[:, 1], …
    kref = np.asarray(jax.jacobian(f, argnums=1)(jnp.asarray(x), jnp.asarray(K)))
    kref = kref.transpose(0, 2, 1).reshape(d, -1)

    def fn(xs, Ks, bs):
        y = model.step(CA, "conv", act, h, xs, Ks, bs, geo)
        return y, ca.jacobian(y, xs), ca.jacobian(y, Ks)

    val, jac, kjac = casadi_eval(fn, ((d, 1), x), ((2, 18), K), ((2, 1), b))
    assert close(val[:, 0], ref)
    assert close(jac, jref)
    assert close(kjac, kref)


def test_jax_convolution_is_the_tap_formula():
    """JAX's ``ops.conv`` (XLA's convolution) equals :func:`model.conv_taps` evaluated
    with NumPy on a 3-channel 5 × 6 image and 3 × 3 kernels, and 5 × 5 kernels."""
    rng = np.random.default_rng(8)
    for k in (3, 5):
        geo = model.ConvGeometry(3, 5, 6, k)
        X, K = rng.normal(size=(3, 30)), rng.normal(size=(3, k * k * 3))
        taps = model.conv_taps(geo, K, np.hstack([X, np.zeros((3, 1))]))
        assert close(np.asarray(JAX.conv(geo, jnp.asarray(K), jnp.asarray(X))), taps)


@pytest.mark.parametrize("readout", model.READOUTS)
def test_conv_readout_features_on_both_backends(readout):
    x = np.random.default_rng(9).normal(size=24)  # 2 channels of 3 × 4 pixels
    ref = np.asarray(model.features(JAX, readout, 2, jnp.asarray(x)))
    val, = casadi_eval(lambda xs: model.features(CA, readout, 2, xs), ((24, 1), x))
    assert close(val[:, 0], ref)


@pytest.mark.parametrize("act", model.ACTIVATIONS)
def test_inside_step_is_the_plain_formula_on_both_backends(act):
    """``inside``: ``x + h·(A σ(x) + b)`` (leia's W_t σ(x) + b_t), checked against a plain
    NumPy formula on both backends; θ = 0 is the identity layer for every σ."""
    rng = np.random.default_rng(11)
    d, h = 3, 0.25
    x, A, b = rng.normal(size=d), rng.normal(size=(d, d)), rng.normal(size=d)
    sig = {"tanh": np.tanh, "relu": lambda u: np.maximum(u, 0.0),
           "sigmoid": lambda u: 1.0 / (1.0 + np.exp(-u)),
           "softplus": lambda u: np.log1p(np.exp(u)), "identity": lambda u: u}[act]
    plain = x + h * (A @ sig(x) + b)
    via_jax = np.asarray(model.step(JAX, "inside", act, h, jnp.asarray(x), jnp.asarray(A),
                                    jnp.asarray(b)))
    (via_ca,) = casadi_eval(lambda xs, As, bs: model.step(CA, "inside", act, h, xs, As, bs),
                            ((d, 1), x), ((d, d), A), ((d, 1), b))
    assert close(via_jax, plain) and close(via_ca[:, 0], plain)
    zero = np.asarray(model.step(JAX, "inside", act, h, jnp.asarray(x), jnp.zeros((d, d)),
                                 jnp.zeros(d)))
    assert np.array_equal(zero, x)


def _targets(loss: str, m: int, rng: np.random.Generator) -> np.ndarray:
    if loss == "cross_entropy":
        return np.eye(m)[rng.integers(m)]
    if loss == "squared":
        return rng.normal(size=m)
    return rng.integers(0, 2, size=m).astype(np.float64)


@pytest.mark.parametrize("loss", model.LOSSES)
@pytest.mark.parametrize("scale", [1.0, 800.0], ids=["moderate", "large"])
def test_loss_values_and_gradients(loss, scale):
    rng = np.random.default_rng(5)
    m = 3 if loss in ("cross_entropy", "squared") else 1
    for _ in range(6):
        z = rng.normal(size=m)
        z = scale * z / np.max(np.abs(z)) if scale > 1 else z
        y = _targets(loss, m, rng)
        ref = float(model.loss(JAX, loss, jnp.asarray(z), jnp.asarray(y)))
        gref = np.asarray(jax.grad(lambda zz, yy: model.loss(JAX, loss, zz, yy))(
            jnp.asarray(z), jnp.asarray(y)))

        def fn(zs, ys):
            val = model.loss(CA, loss, zs, ys)
            return val, ca.gradient(val, zs)

        val, grad = casadi_eval(fn, ((m, 1), z), ((m, 1), y))
        assert np.isfinite(ref)
        assert close(val, ref), (z, y, float(val), ref)
        assert close(grad[:, 0], gref), (z, y, grad[:, 0], gref)


@pytest.mark.parametrize("label,z", [(0.0, 800.0), (1.0, -800.0), (0.0, -800.0), (1.0, 800.0)])
def test_binary_losses_do_not_overflow_at_extreme_logits(label, z):
    for loss in ("logistic", "sigmoid_mse"):
        ref = float(model.loss(JAX, loss, jnp.asarray([z]), jnp.asarray([label])))
        (val,) = casadi_eval(lambda zs, ys, loss=loss: model.loss(CA, loss, zs, ys),
                             ((1, 1), np.array([z])), ((1, 1), np.array([label])))
        assert np.isfinite(ref) and close(val, ref)
    # logistic grows linearly on the wrong side: log(1 + e^800) = 800
    wrong = (label == 0.0) == (z > 0)
    if wrong:
        (val,) = casadi_eval(lambda zs, ys: model.loss(CA, "logistic", zs, ys),
                             ((1, 1), np.array([z])), ((1, 1), np.array([label])))
        assert abs(float(val.item()) - 800.0) < 1e-9


def test_readout_and_cost_terms():
    rng = np.random.default_rng(7)
    d, m, h = 3, 2, 0.25
    A0, A1 = rng.normal(size=(2, d, d))
    b0, b1 = rng.normal(size=(2, d))
    W, c, x = rng.normal(size=(m, d)), rng.normal(size=m), rng.normal(size=d)
    j = {k: jnp.asarray(v) for k, v in dict(A0=A0, A1=A1, b0=b0, b1=b1, W=W, c=c, x=x).items()}
    refs = [
        np.asarray(model.readout(j["W"], j["c"], j["x"])),
        float(model.layer_l2(JAX, 0.3, h, j["A0"], j["b0"])),
        float(model.layer_l1(JAX, 0.2, h, j["A0"], j["b0"])),
        float(model.layer_smooth(JAX, 0.7, h, j["A0"], j["b0"], j["A1"], j["b1"])),
        float(model.readout_l2(JAX, 0.05, j["W"], j["c"])),
    ]

    def fn(A0s, A1s, b0s, b1s, Ws, cs, xs):
        return (model.readout(Ws, cs, xs), model.layer_l2(CA, 0.3, h, A0s, b0s),
                model.layer_l1(CA, 0.2, h, A0s, b0s),
                model.layer_smooth(CA, 0.7, h, A0s, b0s, A1s, b1s),
                model.readout_l2(CA, 0.05, Ws, cs))

    vals = casadi_eval(fn, ((d, d), A0), ((d, d), A1), ((d, 1), b0), ((d, 1), b1),
                       ((m, d), W), ((m, 1), c), ((d, 1), x))
    assert close(vals[0][:, 0], refs[0])
    for v, r in zip(vals[1:], refs[1:], strict=True):
        assert close(v, r)
