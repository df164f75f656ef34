"""The convolutional model (``model="conv"``): the formula on both backends against an
independent plain convolution, costates against ``jax.grad``, JAX against CasADi, the
Lipschitz projection against an independent dense operator, the solvers, the data.

Tiny images (1 × 4 × 5, two state channels, 3 × 3 kernels), float64, explicit seeds.
"""

from __future__ import annotations

import casadi as ca
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import controldl as cdl
from controldl import data as D
from controldl import model
from controldl import problem as P
from controldl.conv import norm_bound
from controldl.solvers.direct import LIPSCHITZ_DESCRIPTIONS, CasadiDirect, cost_and_gradient

BASE = dict(model="conv", channels=2, kernel_size=3, layers=2, horizon=1.0)
ALL_TERMS = dict(l2=0.3, l1=0.2, smooth=0.5, running=0.4, readout_l2=0.2)


def images(n: int = 12, seed: int = 0, shape=(1, 4, 5), classes: int = 3) -> cdl.Dataset:
    rng = np.random.default_rng(seed)
    return D.classification(rng.normal(size=(n, *shape)), np.arange(n) % classes,
                            {"name": "images"})


def random_params(form: P.Formulation, seed: int, scale: float = 0.6) -> P.Params:
    """Generic random kernels, biases and readout (no exact zeros)."""
    rng = np.random.default_rng(seed)
    return P.Params(*(scale * rng.normal(size=s) for s in form.param_shapes().values()))


def plain_conv(K: np.ndarray, x: np.ndarray) -> np.ndarray:
    """'same' zero-padded cross-correlation, loops over NumPy arrays: ``K`` (C, C, k, k),
    ``x`` (C, H, W) — the independent reference."""
    C, H, W = x.shape
    k = K.shape[-1]
    p = (k - 1) // 2
    xp = np.pad(x, ((0, 0), (p, p), (p, p)))
    out = np.zeros_like(x)
    for r in range(H):
        for s in range(W):
            out[:, r, s] = np.einsum("ocij,cij->o", K, xp[:, r:r + k, s:s + k])
    return out


def dense_operator_norm(K: np.ndarray, H: int, W: int) -> float:
    """``‖K ⋆ ·‖₂`` from the (C·H·W)² matrix of :func:`plain_conv` on the unit images."""
    C = K.shape[0]
    n = C * H * W
    M = np.stack([plain_conv(K, e.reshape(C, H, W)).ravel() for e in np.eye(n)], axis=1)
    return float(np.linalg.svd(M, compute_uv=False)[0])


# --------------------------------------------------------------------------- the formula


def test_conv_step_on_both_backends_matches_a_plain_convolution():
    geo = model.ConvGeometry(3, 4, 5, 3)
    rng = np.random.default_rng(0)
    K, b, x = rng.normal(size=(3, 3, 3, 3)), rng.normal(size=3), rng.normal(size=60)
    ref = x + 0.3 * np.tanh(plain_conv(K, x.reshape(3, 4, 5)) + b[:, None, None]).ravel()
    Km = model.kernel_matrix(K)
    got = model.step(model.ops_for("jax"), "conv", "tanh", 0.3, jnp.asarray(x),
                     jnp.asarray(Km), jnp.asarray(b), geo)
    assert np.max(np.abs(np.asarray(got) - ref)) <= 1e-13
    xs, Ks, bs = ca.SX.sym("x", 60), ca.SX.sym("K", 3, 27), ca.SX.sym("b", 3)
    f = ca.Function("f", [xs, Ks, bs],
                    [model.step(model.ops_for("casadi"), "conv", "tanh", 0.3, xs, Ks, bs, geo)])
    assert np.max(np.abs(np.asarray(f(x, Km, b)).ravel() - ref)) <= 1e-13


def test_pool_readout_is_the_channel_mean():
    problem = cdl.Problem(images(), **BASE, readout="pool")
    form = problem.formulation
    X = np.asarray(problem.initial_states())
    feats = np.asarray(P.features(form, jnp.asarray(X)))
    assert feats.shape == (12, 2)
    assert np.allclose(feats, X.reshape(12, 2, 20).mean(axis=2), atol=1e-14)
    assert form.param_shapes() == {"A": (2, 2, 2, 3, 3), "b": (2, 2), "W": (3, 2), "c": (3,)}


def test_channel_mean_readout_is_each_pixels_mean_over_the_channels():
    problem = cdl.Problem(images(), **BASE, readout="channel_mean")
    form = problem.formulation
    X = np.asarray(problem.initial_states())
    feats = np.asarray(P.features(form, jnp.asarray(X)))
    assert np.allclose(feats, X.reshape(12, 2, 20).mean(axis=1), atol=1e-14)
    assert form.param_shapes()["W"] == (3, 20)


def test_input_pool_averages_blocks_before_the_zero_channels():
    """``input_pool=2`` on 1 × 4 × 6 images: the state is 2 channels of 2 × 3 pixels, the
    first the 2 × 2 block means of the image (a loop), the other zero; ``predict`` takes
    the raw images and the kernel size is checked against the pooled state."""
    data = images(shape=(1, 4, 6))
    problem = cdl.Problem(data, **BASE, input_pool=2)
    form = problem.formulation
    assert form.geometry == model.ConvGeometry(2, 2, 3, 3) and problem.width == 12
    X0 = np.asarray(problem.initial_states()).reshape(12, 2, 2, 3)
    img = data.X_train[:, 0]
    blocks = np.array([[[img[n, 2 * r:2 * r + 2, 2 * c:2 * c + 2].mean() for c in range(3)]
                        for r in range(2)] for n in range(12)])
    np.testing.assert_allclose(X0[:, 0], blocks, atol=1e-15)
    assert np.all(X0[:, 1] == 0)
    params = random_params(form, seed=4)
    sol_like = P.predict(form, P.Params(*map(jnp.asarray, params)), P.embed(form, data.X_train))
    np.testing.assert_allclose(np.asarray(sol_like), np.asarray(P.predict(
        form, P.Params(*map(jnp.asarray, params)), problem.initial_states())), atol=1e-14)
    with pytest.raises(ValueError, match="does not divide"):
        cdl.Problem(images(), **BASE, input_pool=2)  # 4 × 5
    with pytest.raises(ValueError, match="at most 3 for 2×3 states"):
        cdl.Problem(data, **{**BASE, "kernel_size": 5}, input_pool=2)
    with pytest.raises(ValueError, match="options of the conv model"):
        cdl.Problem(cdl.data.ring(20, seed=0), input_pool=2)


def test_inputs_are_embedded_by_zero_channels():
    problem = cdl.Problem(images(), **{**BASE, "channels": 3})
    X0 = np.asarray(problem.initial_states()).reshape(12, 3, 4, 5)
    assert np.array_equal(X0[:, :1], problem.data.X_train)
    assert np.all(X0[:, 1:] == 0)
    assert problem.width == 60


# --------------------------------------------------------------------------- gradients


VARIANTS = [dict(readout="flatten"), dict(readout="pool"), dict(readout="channel_mean"),
            dict(readout="channel_mean", input_pool=2)]
"""The readouts, and Li et al.'s architecture in our model (pooled inputs, channel mean)."""


def variant_problem(variant: dict, **terms) -> cdl.Problem:
    shape = (1, 4, 6) if variant.get("input_pool") else (1, 4, 5)
    return cdl.Problem(images(shape=shape), **BASE, **terms, **variant)


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(map(str, v.values())))
def test_costate_gradient_equals_autodiff_with_every_cost_term(variant):
    problem = variant_problem(variant, **ALL_TERMS)
    form = problem.formulation
    params = P.Params(*(jnp.asarray(v) for v in random_params(form, seed=1)))
    X0, Y = problem.initial_states(), problem.targets()
    g = jax.grad(lambda q: P.cost(form, q, X0, Y))(params)
    gp = P.costate_gradient(form, params, X0, Y)
    for k in P.Params._fields:
        a, b = np.asarray(getattr(g, k)), np.asarray(getattr(gp, k))
        assert np.linalg.norm(a - b) <= 1e-10 * np.linalg.norm(a), k


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(map(str, v.values())))
def test_casadi_cost_and_gradient_match_jax_with_every_cost_term(variant):
    problem = variant_problem(variant, **ALL_TERMS)
    form = problem.formulation
    params = random_params(form, seed=2)
    jp = P.Params(*(jnp.asarray(v) for v in params))
    X0, Y = problem.initial_states(), problem.targets()
    J, g = jax.value_and_grad(lambda q: P.cost(form, q, X0, Y))(jp)
    Jc, gc = cost_and_gradient(problem, params, transcription="single")
    assert abs(Jc - float(J)) <= 1e-10 * abs(float(J))
    for k in P.Params._fields:
        a, b = np.asarray(getattr(g, k)), np.asarray(getattr(gc, k))
        assert a.shape == b.shape, k
        assert np.linalg.norm(a - b) <= 1e-10 * np.linalg.norm(a), k


# --------------------------------------------------------------------------- Lipschitz


def test_projection_bounds_every_layer_by_an_independent_dense_operator():
    problem = cdl.Problem(images(), **{**BASE, "layers": 3}, lipschitz_bound=0.4)
    form = problem.formulation
    big = random_params(form, seed=3, scale=2.0)
    projected = P.project(form, P.Params(*(jnp.asarray(v) for v in big)))
    K = np.asarray(projected.A)
    lips = np.array([form.h * dense_operator_norm(Kt, 4, 5) for Kt in K])
    assert np.all(lips <= 0.4 * (1 + 1e-12)), lips
    # the bound is reached on the torus (the projection did something) and the
    # dense norm is what the library reports
    assert np.allclose(form.h * np.asarray(norm_bound(jnp.asarray(K), 4, 5)), 0.4, rtol=1e-12)
    assert np.allclose(P.lipschitz_constants(form, projected), lips, rtol=1e-10)
    # a kernel inside the set is left alone
    small = random_params(form, seed=4, scale=0.01)
    again = P.project(form, P.Params(*(jnp.asarray(v) for v in small)))
    assert np.array_equal(np.asarray(again.A), small.A)


def test_torus_bound_is_an_upper_bound_of_the_same_padded_norm():
    rng = np.random.default_rng(5)
    for _ in range(3):
        K = rng.normal(size=(2, 2, 3, 3))
        exact = dense_operator_norm(K, 4, 5)
        bound = float(norm_bound(jnp.asarray(K), 4, 5))
        assert exact <= bound * (1 + 1e-12)


def test_gradient_descent_keeps_the_lipschitz_bound_on_every_layer():
    problem = cdl.Problem(images(), **BASE, lipschitz_bound=0.3)
    sol = cdl.solve(problem, "sgd:lr=0.5", max_iter=15)
    K = np.asarray(sol.params.A)
    assert K.shape == (2, 2, 2, 3, 3)
    lips = np.array([problem.h * dense_operator_norm(Kt, 4, 5) for Kt in K])
    assert np.all(lips <= 0.3 * (1 + 1e-12)), lips


def test_casadi_conv_frobenius_constraint_holds():
    problem = cdl.Problem(images(), **BASE, l2=1e-3, lipschitz_bound=0.2)
    sol = cdl.solve(problem, CasadiDirect(), max_iter=60)
    assert sol.stats["lipschitz_form"] == LIPSCHITZ_DESCRIPTIONS["conv-frobenius"]
    K = np.asarray(sol.params.A)
    assert np.all(problem.h * 3 * np.linalg.norm(K.reshape(2, -1), axis=1) <= 0.2 * (1 + 1e-8))
    lips = np.array([problem.h * dense_operator_norm(Kt, 4, 5) for Kt in K])
    assert np.all(lips <= 0.2)


# --------------------------------------------------------------------------- solvers


@pytest.mark.parametrize("solver", ["adam:lr=0.05", "emsa", "msa:mu=1.0"])
def test_jax_solvers_lower_the_cost(solver):
    problem = cdl.Problem(images(), **BASE, l2=1e-2)
    init = P.init_params(problem.formulation, seed=0)
    start = P.cost(problem.formulation, init, problem.initial_states(), problem.targets())
    sol = cdl.solve(problem, solver, init=init, max_iter=4)
    assert sol.cost["total"] < float(start)
    assert sol.params.A.shape == (2, 2, 2, 3, 3)


def test_casadi_single_shooting_is_stationary_and_multiple_is_refused():
    problem = cdl.Problem(images(), **BASE, l2=1e-2)
    sol = cdl.solve(problem, CasadiDirect(tol=1e-9), max_iter=200)
    assert sol.status == "converged"
    assert cdl.stationarity(problem, sol.params) <= 1e-6
    with pytest.raises(ValueError, match="single shooting only"):
        cdl.solve(problem, CasadiDirect(transcription="multiple"))


# --------------------------------------------------------------------------- data, files


def test_digits_is_a_standardized_70_30_split_of_8x8_images():
    ds = D.digits(seed=0)
    assert ds.X_train.shape[1:] == (1, 8, 8) and ds.image_shape == (1, 8, 8)
    assert len(ds.X_train) + len(ds.X_test) == 1797
    assert abs(len(ds.X_test) / 1797 - 0.3) < 0.01
    assert np.allclose(ds.X_train.mean(axis=0), 0, atol=1e-12)
    std = ds.X_train.std(axis=0)
    assert np.all(np.isclose(std, 1) | (std == 0))
    again = D.digits(seed=0)
    assert np.array_equal(again.y_test, ds.y_test)
    assert not np.array_equal(D.digits(seed=1).y_test, ds.y_test)


def test_conv_refuses_flat_inputs_and_bad_kernels():
    with pytest.raises(ValueError, match=r"needs images"):
        cdl.Problem(D.ring(20), model="conv")
    with pytest.raises(ValueError, match="odd"):
        cdl.Problem(images(), **{**BASE, "kernel_size": 2})
    with pytest.raises(ValueError, match="smaller than the input channels"):
        cdl.Problem(images(shape=(3, 4, 5)), **{**BASE, "channels": 2})
    with pytest.raises(ValueError, match="options of the conv model"):
        cdl.Problem(D.ring(20), channels=3)


def test_image_file_and_saved_solution_keep_the_shapes(tmp_path):
    ds = images(n=15, shape=(2, 4, 4))
    np.savez(tmp_path / "img.npz", X=ds.X_train, y=ds.y_train)
    loaded = D.load_file(tmp_path / "img.npz")
    assert loaded.X_train.shape == (15, 2, 4, 4)
    problem = cdl.Problem(loaded, **{**BASE, "channels": 3})
    sol = cdl.solve(problem, "gd", max_iter=3)
    sol.save(tmp_path / "sol")
    arrays = np.load(tmp_path / "sol" / "arrays.npz")
    assert arrays["A"].shape == (2, 3, 3, 3, 3) and arrays["X_train"].shape == (15, 2, 4, 4)
    back = cdl.load(tmp_path / "sol")
    assert back.problem.channels == 3 and back.problem.readout == "flatten"
    assert np.allclose(back.predict(loaded.X_train), sol.predict(loaded.X_train))


def test_conv_pictures_have_a_panel_per_channel_layer_and_kernel(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from controldl import plotting

    problem = cdl.Problem(images(), **BASE)
    sol = cdl.solve(problem, "adam:lr=0.05", max_iter=2)
    fig = plotting.channels_figure(sol, count=2)
    assert len(fig.axes) == 2 * 2 * 3  # 2 images × 2 channels, layers 0, 1, 2
    kern = plotting.kernels_figure(sol)
    assert kern.axes[0].images[0].get_array().shape == (6, 6)  # (C·k)², layer 0
    files = plotting.save_solution_figures(sol, tmp_path / "fig")
    assert sorted(f.name for f in files) == ["channels.png", "controls.png", "history.png",
                                             "kernels.png"]


def test_replace_derives_the_conv_width_again():
    """``Problem.replace`` of a conv problem: a new channel count gives the width
    channels × height × width (the old width is not carried over), other options keep it,
    and an explicit width that disagrees is still refused."""
    problem = cdl.Problem(cdl.data.digits(40, seed=0), model="conv", channels=4, layers=2)
    wider = problem.replace(channels=6)
    assert (wider.channels, wider.width) == (6, 6 * 8 * 8)
    assert problem.replace(l2=0.1).width == 4 * 8 * 8
    with pytest.raises(ValueError, match="channels × height × width"):
        problem.replace(channels=6, width=4 * 8 * 8)
