"""Binary and ternary controls (controldl.problem.discrete) and Li & Hao's discrete MSA
(controldl.solvers.pmp.discrete): the closed-form maximization against brute force, the
error-control rule against an independent NumPy implementation of the published one, M
against the explicit costate recursion, the saved solution, the sparsity weight, the
straight-through baselines and the refusals."""

import itertools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import controldl as cdl
from controldl import problem as P
from controldl.cli import main
from controldl.problem import discrete as D
from controldl.solvers.pmp import discrete as DM


def _problem(controls, model="resnet", width=4, layers=3, **options):
    data = cdl.data.train_test_split(cdl.data.ring(60, seed=0), 0.25, seed=0)
    return cdl.Problem(data, controls=controls, model=model, width=width, layers=layers,
                       horizon=1.5, **options)


# --------------------------------------------------------------------------- the rules


def _paper_rule(m, w, rho, lam, controls):
    """The update of LiQianxiao/discrete-MSA's layers.py, rewritten in NumPy: binary
    ``_train_op`` of BinaryFullyConnectedLayer, ternary of TernaryFullyConnectedLayer (a
    zero-size maximum taken as 0)."""
    correct = np.where(m >= 0, 1.0, -1.0) if controls == "binary" else np.sign(m)
    wrong = w != correct
    top = np.abs(m)[wrong].max() if wrong.any() else 0.0
    if controls == "binary":
        return np.where(np.abs(m) > rho * top, correct, w)
    rho_k = rho * top
    new = np.zeros_like(w)
    new = np.where(m > rho_k * (1 - 2 * w) + lam, 1.0, new)
    return np.where(m < -rho_k * (1 + 2 * w) - lam, -1.0, new)


@pytest.mark.parametrize("controls", ["binary", "ternary"])
def test_the_error_control_rule_flips_exactly_the_entries_it_names(controls):
    rng = np.random.default_rng(3)
    values = (-1.0, 1.0) if controls == "binary" else (-1.0, 0.0, 1.0)
    for rho in (0.0, 0.1, 0.5, 0.9):
        m = rng.normal(size=(6, 7))
        w = rng.choice(values, size=(6, 7))
        m[0, 0], w[0, 0] = 5.0, 1.0  # the largest |m| has the right sign: not in ρ_k
        lam = 0.05 if controls == "ternary" else 0.0
        mine = np.asarray(D.maximize(jnp.asarray(m), jnp.asarray(w), rho, lam, controls))
        np.testing.assert_array_equal(mine, _paper_rule(m, w, rho, lam, controls))
        if controls == "binary":
            wrong = w != np.where(m >= 0, 1.0, -1.0)
            named = wrong & (np.abs(m) > rho * np.abs(m[wrong]).max())
            assert named.any() and (~named).any()
            np.testing.assert_array_equal(mine != w, named)


@pytest.mark.parametrize("controls", ["binary", "ternary"])
def test_the_closed_form_maximization_equals_brute_force_over_every_sign_pattern(controls):
    """``inside`` (x + h(Aσ(x) + b)): H_t is linear in A_t, so the solver's closed form (M
    from its backward pass, κ, the rule) must be the exact maximizer of
    H_t(α·v) − (sparsity term) − (error control) over all 16 (binary) or 81 (ternary)
    sign patterns of a 2×2 layer; checked with the error control off and on."""
    extra = {"sparsity": 0.02} if controls == "ternary" else {}
    pb = _problem(controls, model="inside", width=2, l2=0.05, l1=0.01, running=0.3, **extra)
    form = pb.formulation
    params = P.init_params(form, seed=1)
    values = (-1, 1) if controls == "binary" else (-1, 0, 1)
    patterns = np.array(list(itertools.product(values, repeat=4)), np.float64)
    patterns = patterns.reshape(-1, 2, 2)
    assert len(patterns) == (16 if controls == "binary" else 81)
    alpha, kappa = D.scale(form), float(D.entry_cost(form))
    M, H = _M_and_hamiltonians(form, params, pb.initial_states(), pb.targets(),
                               jnp.asarray(alpha * patterns))
    for t in range(form.layers):
        w, m = np.rint(np.asarray(params.A[t]) / alpha), np.asarray(M[t])
        target = np.sign(m) if controls == "ternary" else np.where(m >= 0, 1.0, -1.0)
        for rho in (0.0, 0.4):
            rho_k = rho * np.abs(m)[w != target].max(initial=0.0)
            c = rho_k / 2 if controls == "binary" else rho_k  # the error-control term
            value = np.asarray(H[t]) - c * np.sum((patterns - w) ** 2, axis=(1, 2))
            mine = np.asarray(D.maximize(M[t], jnp.asarray(w), rho, kappa, controls))
            np.testing.assert_array_equal(mine, patterns[np.argmax(value)])


@jax.jit
def _M_and_hamiltonians(form, params, X0, Y, As):
    """The solver's M, and H_t(A) minus the sparsity term for every layer t and every
    ``A`` of ``As`` (K, d, d), from the explicit costate recursion."""
    xs = P.trajectory(form, params, X0)
    ps = P.costates(form, params, xs, Y)

    def H(X, Pn, b, t, A):
        return (P.hamiltonian(form, X, Pn, A, b, params.W, params.c, Y, t > 0)
                - D.sparsity_cost(form, A[None]))

    per_layer = jax.vmap(lambda X, Pn, b, t: jax.vmap(lambda A: H(X, Pn, b, t, A))(As))
    Hs = per_layer(xs[:-1], ps[1:], params.b, jnp.arange(form.layers))
    return DM.hamiltonian_gradients(form, params, X0, Y)[2], Hs


def test_M_is_alpha_times_the_hamiltonian_gradient_of_the_costate_recursion():
    """M from the solver's backward pass equals α·∇_A Σ_i p_i(t+1)·f(x_i(t), A_t, b_t) with
    the costates of the explicit recursion (controldl.problem.costates), l2 and a running
    cost present; without a control cost on A it is −α·∂J/∂A."""
    for model in ("resnet", "mlp"):
        pb = _problem("binary", model=model, running=0.2)
        form = pb.formulation
        params = P.init_params(form, seed=2)
        X0, Y = pb.initial_states(), pb.targets()
        M, flow = _M_and_flow(form, params, X0, Y)
        np.testing.assert_allclose(M, D.scale(form) * flow, rtol=1e-10, atol=1e-13)
    form = pb.replace(l2=0.0).formulation
    gA = jax.jit(jax.grad(P.cost, argnums=1))(form, params, X0, Y).A
    M, _ = _M_and_flow(form, params, X0, Y)
    np.testing.assert_allclose(M, -D.scale(form) * gA, rtol=1e-10, atol=1e-13)


@jax.jit
def _M_and_flow(form, params, X0, Y):
    """The solver's M, and ∇_A Σ_i p_i(t+1)·f(x_i(t), A_t, b_t) from the explicit costate
    recursion (controldl.problem.costates), for every layer."""
    xs = P.trajectory(form, params, X0)
    ps = P.costates(form, params, xs, Y)
    flow = jax.vmap(jax.grad(lambda A, X, Pn, b: jnp.sum(Pn * P.step_batch(form, X, A, b))))(
        params.A, xs[:-1], ps[1:], params.b)
    return DM.hamiltonian_gradients(form, params, X0, Y)[2], flow


# --------------------------------------------------------------------------- the formulation


def test_the_initialization_is_the_projection_and_the_cost_counts_the_non_zeros():
    pb = _problem("ternary", sparsity=0.1)
    form = pb.formulation
    real = P.init_params(_problem("real").formulation, seed=0)
    disc = P.init_params(form, seed=0)
    alpha = D.scale(form)
    assert alpha == pytest.approx(0.5)  # 1/√4
    u = np.asarray(real.A) / alpha
    np.testing.assert_array_equal(np.asarray(disc.A) / alpha,
                                  np.where(np.abs(u) > 0.5, np.sign(u), 0.0))
    terms = P.cost_terms(form, disc, pb.initial_states(), pb.targets())
    assert float(terms["sparsity"]) == pytest.approx(0.1 * form.h * np.count_nonzero(disc.A))
    binary = P.init_params(_problem("binary").formulation, seed=0)
    np.testing.assert_array_equal(np.asarray(binary.A), alpha * np.where(u >= 0, 1.0, -1.0))


@pytest.mark.parametrize("options, match", [
    ({"controls": "binary", "sparsity": 0.1}, "sparsity weighs the non-zero entries"),
    ({"controls": "ternary", "lipschitz_bound": 0.9}, "lipschitz_bound constrains real"),
    ({"controls": "quaternary"}, "unknown controls"),
])
def test_bad_discrete_formulations_are_refused(options, match):
    with pytest.raises(ValueError, match=match):
        cdl.Problem(cdl.data.ring(40, seed=0), **options)


# --------------------------------------------------------------------------- solutions


def test_a_binary_solution_round_trips_bit_exactly_and_predicts(tmp_path):
    pb = _problem("binary")
    sol = cdl.solve(pb, DM.DiscreteMSA(batch_size=15, dtype="float32"), max_iter=12)
    alpha = D.scale(pb.formulation)
    assert sol.params.A.dtype == np.float64  # α·s exactly, though solved in float32
    np.testing.assert_array_equal(np.abs(sol.params.A), alpha)
    sol.save(tmp_path / "s")
    meta = json.loads((tmp_path / "s" / "meta.json").read_text())
    assert meta["problem"]["controls"] == "binary"
    assert meta["problem"]["control_scale"]["value"] == alpha
    assert meta["stats"]["zero_fraction"] == 0.0
    with np.load(tmp_path / "s" / "arrays.npz") as f:
        assert f["A_sign"].dtype == np.int8 and f["A_scale"].shape == (3,)
        np.testing.assert_array_equal(f["A_scale"][:, None, None] * f["A_sign"], f["A"])
    back = cdl.load(tmp_path / "s")
    for a, b in zip(back.params, sol.params, strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    X = pb.data.X_test
    np.testing.assert_array_equal(back.predict(X), sol.predict(X))
    assert back.accuracy(X, pb.data.y_test) == sol.test_accuracy


def test_a_tampered_discrete_solution_is_refused(tmp_path):
    sol = cdl.solve(_problem("binary"), "discrete-msa", max_iter=2)
    sol.save(tmp_path / "s")
    with np.load(tmp_path / "s" / "arrays.npz") as f:
        arrays = {k: f[k] for k in f.files}
    arrays["A"] = arrays["A"] * 1.5
    np.savez(tmp_path / "s" / "arrays.npz", **arrays)
    with pytest.raises(ValueError, match="A is not"):
        cdl.load(tmp_path / "s")


def test_a_larger_sparsity_weight_gives_more_zeros():
    zeros = []
    for s in (0.0, 3e-3, 3e-2):
        sol = cdl.solve(_problem("ternary", sparsity=s), "discrete-msa", max_iter=30)
        zeros.append(sol.stats["zero_fraction"])
        assert sol.cost["sparsity"] == pytest.approx(
            s * sol.problem.h * np.count_nonzero(sol.params.A))
    assert zeros[0] < zeros[1] < zeros[2], zeros


@pytest.mark.parametrize("controls", ["binary", "ternary"])
def test_straight_through_gradient_descent_returns_projected_weights(controls):
    pb = _problem(controls)
    sol = cdl.solve(pb, "adam:lr=0.05", max_iter=40)
    s = np.asarray(sol.params.A) / D.scale(pb.formulation)
    assert set(np.unique(s)) <= ({-1.0, 1.0} if controls == "binary" else {-1.0, 0.0, 1.0})
    terms = P.cost_terms(pb.formulation, P.Params(*sol.params), pb.initial_states(),
                         pb.targets())
    assert sol.cost["total"] == pytest.approx(float(terms["total"]), rel=1e-12)
    assert sol.stationarity is None and "straight-through" in sol.stats["estimator"]
    assert sol.history[-1]["cost"] < sol.history[0]["cost"]


def test_straight_through_latent_weights_are_clipped_and_flip_at_zero():
    """One BinaryConnect step by hand: u ← clip(u − lr·α·∂J/∂A, −1, 1), forward sign(u)."""
    pb = _problem("binary")
    form = pb.formulation
    params = P.init_params(form, seed=0)
    u = D.latent(form, params.A)
    g = jax.grad(lambda p: P.cost(form, D.straight_through(form, p), pb.initial_states(),
                                  pb.targets()))(params._replace(A=u))
    gA = jax.grad(P.cost, argnums=1)(form, params, pb.initial_states(), pb.targets()).A
    np.testing.assert_allclose(g.A, D.scale(form) * gA, rtol=1e-12)
    moved = jnp.clip(u - 10.0 * g.A, -1, 1)
    assert float(jnp.max(jnp.abs(moved))) <= 1.0
    np.testing.assert_array_equal(D.from_latent(form, params._replace(A=moved)).A,
                                  D.scale(form) * jnp.where(moved >= 0, 1.0, -1.0))


# --------------------------------------------------------------------------- the solver


def test_discrete_msa_resumes_exactly(tmp_path):
    pb = _problem("ternary", sparsity=1e-3)
    solver = DM.DiscreteMSA(batch_size=15)
    ref = cdl.solve(pb, solver, max_iter=12)
    cut = cdl.solve(pb, solver, max_iter=5, checkpoint_dir=tmp_path / "ck")
    cut.save(tmp_path / "cut")
    resumed = cdl.solve(pb, solver, resume=tmp_path / "cut", max_iter=12)
    for a, b in zip(resumed.params, ref.params, strict=True):
        np.testing.assert_array_equal(a, b)
    assert [h["iteration"] for h in resumed.history] == [h["iteration"] for h in ref.history]


def test_discrete_msa_decreases_the_cost_and_records_flips_and_zeros():
    pb = _problem("binary")
    sol = cdl.solve(pb, DM.DiscreteMSA(lr=0.05, batch_size=10, ema_rate=0.9), epochs=20)
    h = sol.history
    per = pb.data.n_train // 10
    assert [e["iteration"] for e in h] == list(range(0, 20 * per + 1, per))  # every epoch
    assert h[-1]["cost"] < 0.8 * h[0]["cost"]
    assert sum(e["flips"] for e in h) > 0 and h[0]["zero_fraction"] == 0.0
    assert all(e["test_accuracy"] is not None for e in h)


@pytest.mark.parametrize("solver, match", [
    ("casadi", "mixed-integer"),
    ("emsa", "discrete-msa"),
    ("lbfgs", "straight-through"),
])
def test_solvers_for_real_controls_refuse_a_discrete_set(solver, match):
    with pytest.raises(ValueError, match=match):
        cdl.solve(_problem("binary"), solver, max_iter=1)


def test_discrete_msa_refuses_real_controls():
    with pytest.raises(ValueError, match="discrete set"):
        cdl.solve(_problem("real"), "discrete-msa", max_iter=1)


def test_the_cli_refuses_the_direct_method_on_a_discrete_set(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["train", "--controls", "binary", "--solver", "casadi", "--n-samples", "40",
                 "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "mixed-integer" in err[0]
    assert not out.exists()
    code = main(["compare", "--controls", "ternary", "--solvers", "adam,casadi",
                 "--n-samples", "40", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "mixed-integer" in err[-1] and not out.exists()


def test_compare_binary_adam_against_discrete_msa(tmp_path, capsys):
    out = tmp_path / "cmp"
    code = main(["compare", "--controls", "binary", "--solvers", "adam,discrete-msa",
                 "--n-samples", "60", "--width", "4", "--layers", "3", "--max-iter", "20",
                 "--no-figures", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert [r["solver"] for r in results["rows"]] == ["adam", "discrete-msa"]
    assert results["problem"]["controls"] == "binary"
    for label in ("adam", "discrete-msa"):
        meta = json.loads((out / "solutions" / label / "meta.json").read_text())
        assert meta["stats"]["zero_fraction"] == 0.0


def test_conv_kernels_take_the_same_sets():
    data = cdl.data.digits(n_samples=60, seed=0)
    pb = cdl.Problem(data, model="conv", channels=2, kernel_size=3, layers=2, horizon=1.0,
                     controls="ternary", sparsity=1e-4, loss="cross_entropy")
    form = pb.formulation
    assert D.scale(form) == pytest.approx(1 / np.sqrt(2 * 3 * 3))  # fan-in C·k·k
    sol = cdl.solve(pb, DM.DiscreteMSA(batch_size=14), epochs=2)
    s = np.asarray(sol.params.A) / D.scale(form)
    assert s.shape == (2, 2, 2, 3, 3) and set(np.unique(s)) <= {-1.0, 0.0, 1.0}
    assert sol.stats["zero_fraction"] == pytest.approx(np.mean(s == 0))


def test_a_warm_start_from_the_real_initialization_starts_both_from_its_projection():
    """Warm-started from the real initialization, discrete-msa projects it and the
    straight-through estimator takes it as its latent weights: both start from the network
    of the shared (projected) initialization, so their first recorded costs agree with a
    cold start; the estimator's latent weights then differ (they keep the magnitudes)."""
    pb = _problem("binary", l2=0.0)
    real = P.init_params(_problem("real").formulation, seed=0)
    first = {}
    for label, solver, init in [("cold", "discrete-msa", None), ("msa", "discrete-msa", real),
                                ("bc", "adam:lr=0.05", real)]:
        sol = cdl.solve(pb, solver, max_iter=1, init=init)
        first[label] = sol.history[0]["cost"]
    assert first["msa"] == pytest.approx(first["cold"], rel=1e-12)
    assert first["bc"] == pytest.approx(first["cold"], rel=1e-12)
    cold = cdl.solve(pb, "adam:lr=0.05", max_iter=5)
    warm = cdl.solve(pb, "adam:lr=0.05", max_iter=5, init=real)
    assert not np.array_equal(cold.params.b, warm.params.b) or \
        not np.array_equal(cold.params.A, warm.params.A)
