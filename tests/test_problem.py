"""The canonical problem: dynamics, losses, cost terms, costates, constraints."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference import np_states

import controldl as cdl
from controldl import model
from controldl import problem as P
from controldl.compilation import unregister_listener

J = model.ops_for("jax")


def _random_params(form, seed):
    prm = P.init_params(form, seed=seed)
    k = jax.random.PRNGKey(seed + 100)
    return prm._replace(b=0.3 * jax.random.normal(k, prm.b.shape),
                        c=0.2 * jnp.ones_like(prm.c))


CASES = [
    dict(model="resnet", activation="tanh", l2=1e-2, l1=1e-3, smooth=1e-2, running=0.5,
         readout_l2=1e-2),
    dict(model="mlp", activation="softplus", l2=1e-3, running=0.3),
    dict(model="resnet", activation="sigmoid", smooth=0.1, readout_l2=0.1),
    dict(model="resnet", activation="relu", l2=1e-2),
    dict(model="resnet", activation="identity", running=1.0),
]


@pytest.mark.parametrize("options", CASES)
@pytest.mark.parametrize("data_name", ["spiral3", "sine"])
def test_costate_gives_the_autodiff_gradient(options, data_name):
    if data_name == "sine":
        data = cdl.data.sine(40, seed=1)
    else:
        data = cdl.data.classification(
            np.random.default_rng(0).normal(size=(45, 2)), np.arange(45) % 3, {"name": "t"})
    problem = cdl.Problem(data, width=4, layers=6, horizon=2.0, **options)
    form = problem.formulation
    params = _random_params(form, seed=3)
    X0, Y = problem.initial_states(), problem.targets()
    # Both compiled (one XLA program each, instead of hundreds of eager operations).
    auto = jax.jit(jax.grad(lambda p: P.cost(form, p, X0, Y)))(params)
    pmp = jax.jit(lambda p: P.costate_gradient(form, p, X0, Y))(params)
    for a, b in zip(auto, pmp, strict=True):
        assert float(jnp.linalg.norm(a - b)) <= 1e-10 * float(jnp.linalg.norm(a)) + 1e-14


def test_costate_recursion_is_backpropagation_of_the_states():
    """p(t) = -∂J/∂x(t), the running cost at t included: perturbing the states at layer t
    changes J by -p(t)·δx."""
    problem = cdl.Problem(cdl.data.ring(30, seed=2), width=3, layers=5, horizon=1.5,
                          running=0.7)
    form = problem.formulation
    params = _random_params(form, 0)
    X0, Y = problem.initial_states(), problem.targets()
    xs = jax.jit(lambda p: P.trajectory(form, p, X0))(params)
    ps = jax.jit(lambda p, x: P.costates(form, p, x, Y))(params, xs)

    def cost_from_layer(x_t, t):
        here = P.running_cost_at(form, params.W, params.c, x_t, Y)  # r(x(t)), t >= 1
        if t == form.layers:
            return P.mean_loss(form, params.W, params.c, x_t, Y) + here
        tail = params._replace(A=params.A[t:], b=params.b[t:])
        f_tail = P.Formulation(**{**form.public_dict(), "layers": form.layers - t,
                                  "horizon": form.h * (form.layers - t)})
        terms = P.cost_terms_from_states(f_tail, tail, P.trajectory(f_tail, tail, x_t), Y)
        return terms["terminal"] + terms["running"] + here

    for t in (1, 3, 5):
        g = jax.jit(jax.grad(cost_from_layer), static_argnums=1)(xs[t], t)
        np.testing.assert_allclose(np.asarray(ps[t]), -np.asarray(g), rtol=1e-10, atol=1e-14)


def test_losses_are_stable_for_huge_logits():
    z = jnp.array([800.0])
    assert float(model.loss(J, "logistic", z, jnp.array([1.0]))) == 0.0
    assert np.isclose(float(model.loss(J, "logistic", z, jnp.array([0.0]))), 800.0)
    assert np.isclose(float(model.loss(J, "logistic", -z, jnp.array([1.0]))), 800.0)
    zk = jnp.array([900.0, -900.0, 0.0])
    assert np.isclose(float(model.loss(J, "cross_entropy", zk, jnp.array([0.0, 1.0, 0.0]))),
                      1800.0)
    assert np.isclose(float(model.loss(J, "sigmoid_mse", z, jnp.array([0.0]))), 1.0)
    g = jax.grad(lambda v: model.loss(J, "logistic", v, jnp.array([0.0])))(z)
    assert np.all(np.isfinite(np.asarray(g)))


def test_loss_formulas_match_their_definitions():
    z, y = jnp.array([0.7]), jnp.array([1.0])
    assert np.isclose(float(model.loss(J, "logistic", z, y)), np.log1p(np.exp(-0.7)))
    assert np.isclose(float(model.loss(J, "sigmoid_mse", z, y)), (1 / (1 + np.exp(-0.7)) - 1) ** 2)
    zk = jnp.array([0.1, 0.5, -0.2])
    expect = np.log(np.exp(zk).sum()) - 0.5
    assert np.isclose(float(model.loss(J, "cross_entropy", zk, jnp.array([0.0, 1.0, 0.0]))),
                      expect)
    assert np.isclose(float(model.loss(J, "squared", zk, jnp.zeros(3))), 0.5 * float(zk @ zk))
    for name, f in (("softplus", lambda u: np.log1p(np.exp(u))), ("sigmoid",
                    lambda u: 1 / (1 + np.exp(-u))), ("relu", lambda u: np.maximum(u, 0))):
        u = np.linspace(-5, 5, 11)
        np.testing.assert_allclose(np.asarray(model.activation(J, name, jnp.asarray(u))), f(u),
                                   rtol=1e-12, atol=1e-15)


def test_embedding_pads_with_zeros_and_dynamics_follow_design():
    problem = cdl.Problem(cdl.data.ring(10, seed=0), width=4, layers=3, horizon=1.5)
    form = problem.formulation
    X0 = problem.initial_states()
    assert X0.shape == (10, 4) and np.all(np.asarray(X0[:, 2:]) == 0)
    params = _random_params(form, 1)
    xs = np.asarray(P.trajectory(form, params, X0))
    A, b = np.asarray(params.A), np.asarray(params.b)
    for t, x in enumerate(np_states("resnet", "tanh", 0.5, A, b, np.asarray(X0))):
        np.testing.assert_allclose(xs[t], x, rtol=1e-13)
    mlp = P.Formulation(**{**form.public_dict(), "model": "mlp"})
    x = np_states("mlp", "tanh", 0.5, A, b, np.asarray(X0))[-1]
    np.testing.assert_allclose(np.asarray(P.final_state(mlp, params, X0)), x, rtol=1e-13)


def test_projection_enforces_both_constraints():
    problem = cdl.Problem(cdl.data.ring(10, seed=0), width=3, layers=4, horizon=4.0,
                          lipschitz_bound=0.5, box_bound=0.3)
    form = problem.formulation
    params = P.init_params(form, seed=0, scale=5.0)
    assert np.all(P.lipschitz_constants(form, params) <= 0.5 + 1e-12)
    assert np.all(np.abs(np.asarray(params.b)) <= 0.3)
    assert np.max(np.abs(np.asarray(params.A))) <= 0.3 + 1e-3


def test_normal_initialization_is_jax_randoms_draw_and_compiles_nothing():
    """``init_params`` is ``jax.random``'s ``normal`` draws from ``split(PRNGKey(seed))``
    (A from the first key, W from the second), scaled by the fan-in, computed on the host:
    the integer hash bit for bit, the normals to the inverse error function's round-off;
    unconstrained, no XLA program is compiled."""
    from controldl import rng

    problem = cdl.Problem(cdl.data.ring(10, seed=0), width=3, layers=4, horizon=4.0)
    form = problem.formulation
    compiled = []
    listen = lambda event, duration, **kw: compiled.append(event)  # noqa: E731
    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        params = P.init_params(form, seed=7, scale=0.5)
        single = P.init_params(form, seed=7, scale=0.5, dtype=jnp.float32)
    finally:
        unregister_listener(listen, "event_duration")
    assert "/jax/core/compile/backend_compile_duration" not in compiled
    kA, kW = jax.random.split(jax.random.PRNGKey(7))
    np.testing.assert_array_equal(rng.split(rng.prng_key(7)), np.asarray(jax.random.split(
        jax.random.PRNGKey(7))))
    np.testing.assert_array_equal(rng.split(rng.prng_key(2**40 + 3), 5), np.asarray(
        jax.random.split(jax.random.PRNGKey(2**40 + 3), 5)))
    np.testing.assert_allclose(params.A, 0.5 / np.sqrt(3) * jax.random.normal(kA, (4, 3, 3)),
                               rtol=1e-13)
    np.testing.assert_allclose(params.W, 0.5 / np.sqrt(3) * jax.random.normal(kW, (1, 3)),
                               rtol=1e-13)
    np.testing.assert_allclose(single.A, 0.5 / np.sqrt(3) * jax.random.normal(
        kA, (4, 3, 3), jnp.float32), rtol=1e-5)
    assert single.A.dtype == jnp.float32
    assert not np.any(params.b) and not np.any(params.c)
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="seed must be a non-negative integer"):
            P.init_params(form, seed=bad)


def test_zero_initialization_is_flat():
    problem = cdl.Problem(cdl.data.sine(20, seed=0), width=2, layers=5)
    params = P.init_params(problem.formulation, scheme="zeros")
    assert all(float(jnp.abs(v).max()) == 0 for v in params)
    with pytest.raises(ValueError, match="initialization"):
        P.init_params(problem.formulation, scheme="uniform")


@pytest.mark.parametrize("bad, match", [
    (dict(width=1), "smaller than the input dimension"),
    (dict(layers=0), "layers"),
    (dict(horizon=-1.0), "horizon"),
    (dict(l2=-1e-3), "l2"),
    (dict(activation="gelu"), "activation"),
    (dict(model="cnn"), "model"),
    (dict(loss="hinge"), "loss"),
    (dict(terminal=0.0), "no loss in the cost"),
    (dict(lipschitz_bound=0.0), "lipschitz_bound"),
    (dict(wdith=3), "unknown problem option"),
])
def test_bad_formulations_raise_precise_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        cdl.Problem(cdl.data.ring(10, seed=0), **bad)


def test_squared_loss_on_class_labels_targets_plus_minus_one_or_one_hot():
    """Esteve et al.'s distance-type loss for classification: ±1 targets (m = 1) for two
    classes, one-hot targets (m = K) for K classes."""
    ring = cdl.data.ring(10, seed=0)
    two = cdl.Problem(ring, loss="squared")
    assert two.n_outputs == 1
    assert np.array_equal(np.asarray(two.targets())[:, 0], 2.0 * ring.y_train - 1.0)
    data = cdl.data.classification(np.arange(12.0).reshape(6, 2), np.arange(6) % 3,
                                   {"name": "t"})
    three = cdl.Problem(data, loss="squared")
    assert three.n_outputs == 3
    assert np.array_equal(np.asarray(three.targets()), np.eye(3)[np.arange(6) % 3])


def test_terminal_weight_scales_only_the_terminal_term():
    """``terminal`` = w multiplies (1/N)Σℓ(z(L)); w = 0 with γ > 0 is a purely integral cost."""
    data = cdl.data.ring(8, seed=1)
    base = cdl.Problem(data, width=2, layers=2, running=0.5, l2=1e-2)
    params = P.init_params(base.formulation, seed=2)
    X0, Y = base.initial_states(), base.targets()
    terms = jax.jit(P.cost_terms)
    t1 = terms(base.formulation, params, X0, Y)
    for w in (0.0, 2.5):
        form = base.replace(terminal=w).formulation
        tw = terms(form, params, X0, Y)
        assert np.isclose(float(tw["terminal"]), w * float(t1["terminal"]))
        assert np.isclose(float(tw["running"]), float(t1["running"]))
    g = jax.jit(P.costate_gradient)(form, params, X0, Y)
    ga = jax.jit(jax.grad(P.cost, argnums=1))(form, params, X0, Y)
    assert np.allclose(np.asarray(g.A), np.asarray(ga.A), atol=1e-10)


def test_multiclass_needs_cross_entropy():
    data = cdl.data.classification(np.zeros((6, 2)) + np.arange(6)[:, None], np.arange(6) % 3,
                                   {"name": "t"})
    assert cdl.Problem(data).loss == "cross_entropy"
    assert cdl.Problem(data).n_outputs == 3
    with pytest.raises(ValueError, match="3 classes"):
        cdl.Problem(data, loss="logistic")
