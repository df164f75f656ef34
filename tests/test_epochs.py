"""Epochs as a user expects them: the batch order (a permutation per epoch, batches in
order, the last partial batch left out), ``epochs=`` / ``--epochs``, what the history
records, the progress bar, and a run interrupted between epochs or inside one that resumes
to the uninterrupted run."""

import json
import os
import signal

import jax
import numpy as np
import optax
import pytest

import controldl as cdl
from controldl import parallel
from controldl import problem as P
from controldl.cli import main
from controldl.solvers import base
from controldl.solvers.pmp import EMSA


def _problem(n=130, layers=3):
    data = cdl.data.train_test_split(cdl.data.ring(n, seed=2), 0.25, seed=0)
    return cdl.Problem(data, width=3, layers=layers, horizon=1.5)


def test_each_epoch_is_a_permutation_taken_in_order_and_the_remainder_is_left_out():
    order = parallel.BatchOrder(n=23, batch=5, seed=7)
    assert order.per_epoch == 4  # floor(23 / 5): 3 samples left out of each epoch
    for epoch in range(3):
        perm = np.random.default_rng([7, epoch]).permutation(23)
        batches = [order.rows(epoch * 4 + j) for j in range(4)]
        assert all(b.dtype == np.int32 and b.shape == (5,) for b in batches)
        np.testing.assert_array_equal(np.concatenate(batches), perm[:20])  # in order
        assert len(set(np.concatenate(batches).tolist())) == 20  # no sample twice
    # each epoch its own permutation (so a different remainder), a function of (seed, k)
    assert not np.array_equal(order.rows(0), order.rows(4))
    np.testing.assert_array_equal(parallel.BatchOrder(23, 5, 7).rows(9), order.rows(9))
    assert not np.array_equal(parallel.BatchOrder(23, 5, 8).rows(0), order.rows(0))
    with pytest.raises(ValueError, match="exceeds the 23 training samples"):
        _ = parallel.BatchOrder(23, 24).per_epoch


def test_gradient_descent_takes_the_batches_in_the_epoch_order():
    """Plain SGD on mini-batches equals an independent loop over the rows of
    BatchOrder, iterate by iterate, across an epoch boundary (the iterate a record keeps is
    the last one with return_best off)."""
    problem = _problem()
    form, X0, Y = problem.formulation, problem.initial_states(), problem.targets()
    solver = cdl.GradientDescent("sgd", lr=0.3, batch_size=20, batch_seed=5,
                                 return_best=False, grad_tol=0.0)
    per_epoch = problem.data.n_train // 20
    total = per_epoch + 2
    sol = cdl.solve(problem, solver, max_iter=total)
    params = P.init_params(form, seed=0)
    grad = jax.jit(jax.grad(lambda p, X, Yb: P.cost(form, p, X, Yb)))
    order = parallel.BatchOrder(problem.data.n_train, 20, seed=5)
    for k in range(total):
        rows = order.rows(k)
        params = optax.apply_updates(params, jax.tree.map(lambda g: -0.3 * g,
                                                          grad(params, X0[rows], Y[rows])))
    for mine, ref in zip(sol.params, params, strict=True):
        np.testing.assert_allclose(mine, np.asarray(ref), rtol=1e-10, atol=1e-12)


def test_emsa_iterates_on_the_batches_of_the_epoch_order():
    """A mini-batch E-MSA iteration is the full-batch iteration on the batch's samples:
    iterations 0 and 1 equal full-batch E-MSA on the data of rows(0), then of rows(1)."""
    problem = _problem(n=60, layers=2)
    emsa = dict(rho=0.5, inner_steps=3, tol=0.0, patience=None)
    order = parallel.BatchOrder(problem.data.n_train, 16, seed=3)
    two = cdl.solve(problem, EMSA(batch_size=16, batch_seed=3, **emsa), max_iter=2)
    params = P.init_params(problem.formulation, seed=0)
    for k in range(2):
        rows = order.rows(k)
        batch = cdl.Dataset(problem.data.X_train[rows], problem.data.y_train[rows])
        sub = cdl.Problem(batch, width=3, layers=2, horizon=1.5)
        params = cdl.solve(sub, EMSA(**emsa), init=params, max_iter=1).params
    for mine, ref in zip(two.params, params, strict=True):
        np.testing.assert_allclose(mine, ref, rtol=1e-9, atol=1e-12)


def test_epochs_set_the_length_and_the_history_records_each_epoch_with_test_accuracy():
    problem = _problem()
    per_epoch = problem.data.n_train // 16
    sol = cdl.solve(problem, cdl.GradientDescent("adam", lr=0.05, batch_size=16), epochs=3)
    assert sol.iterations == 3 * per_epoch
    assert [h["iteration"] for h in sol.history] == [e * per_epoch for e in range(4)]
    assert [h["epoch"] for h in sol.history] == [0.0, 1.0, 2.0, 3.0]
    assert all(0.0 <= h["test_accuracy"] <= 1.0 for h in sol.history)
    spent = [h["evaluation_time_s"] for h in sol.history]  # the records' own time
    assert spent[0] > 0 and spent == sorted(spent)
    assert all(h["evaluation_time_s"] < h["time_s"] for h in sol.history)
    # the recorded cost is the full training cost, the accuracy the test split's
    params = P.init_params(problem.formulation, seed=0)
    assert sol.history[0]["cost"] == pytest.approx(
        float(P.cost(problem.formulation, params, problem.initial_states(),
                     problem.targets())), rel=1e-12)
    acc = float(P.accuracy_from_outputs(problem.formulation, P.predict(
        problem.formulation, params, problem.initial_states(test=True)),
        problem.data.y_test))
    assert sol.history[0]["test_accuracy"] == pytest.approx(acc)
    # sub-epoch points where asked
    every = cdl.solve(problem, cdl.GradientDescent("adam", lr=0.05, batch_size=16,
                                                   record_every=3), epochs=1)
    assert [h["iteration"] for h in every.history] == sorted(
        set(range(0, per_epoch, 3)) | {per_epoch})
    # the full batch: one iteration per epoch, the test accuracy where asked
    full = cdl.solve(problem, cdl.GradientDescent("lbfgs", record_every=2), epochs=5)
    assert full.iterations == 5 and [h["epoch"] for h in full.history] == [0, 1, 2, 3, 4, 5]
    assert [h["iteration"] for h in full.history if "test_accuracy" in h] == [0, 2, 4, 5]


def test_epochs_are_refused_where_they_do_not_apply():
    problem = _problem()
    adam = cdl.GradientDescent("adam", batch_size=16)
    with pytest.raises(ValueError, match="max_iter or epochs, not both"):
        cdl.solve(problem, adam, epochs=1, max_iter=3)
    with pytest.raises(ValueError, match="epochs must be an integer >= 0"):
        cdl.solve(problem, adam, epochs=1.5)
    from controldl.solvers.direct import CasadiDirect

    with pytest.raises(ValueError, match="does not iterate over the data in epochs"):
        cdl.solve(problem, CasadiDirect(), epochs=1)


def test_the_progress_bar_counts_batches_and_epochs(capsys):
    stopping = base.Stopping(max_iter=12)
    monitor = base.Monitor(stopping, progress="always", label="gd/adam", per_epoch=4)
    try:
        assert monitor._bar.unit == "batch" and monitor._bar.total == 12
        monitor.poll(5)
        assert monitor._bar.n == 5 and monitor._bar.desc.endswith("epoch 2/3")
        monitor.record(8, 0.5)
        assert monitor._bar.n == 8 and monitor._bar.desc.endswith("epoch 3/3")
        assert monitor.history[-1]["epoch"] == 2.0
    finally:
        monitor.close()


def _sigint_at(monkeypatch, iteration):
    """SIGINT to this process when a run polls ``iteration`` (between two records)."""
    poll = base.Monitor.poll

    def polled(self, k):
        if k == iteration:
            os.kill(os.getpid(), signal.SIGINT)
        return poll(self, k)

    monkeypatch.setattr(base.Monitor, "poll", polled)


@pytest.mark.parametrize("solver", [
    cdl.GradientDescent("adam", lr=0.05, batch_size=16),
    EMSA(rho=0.5, batch_size=16, inner_steps=3, record_every=2),
], ids=["adam", "emsa"])
def test_a_run_interrupted_inside_an_epoch_resumes_at_its_batch(solver, monkeypatch,
                                                                   tmp_path):
    problem = _problem()
    ref = cdl.solve(problem, solver, epochs=2)
    cut_at = solver.iterations_per_epoch(problem) + 3  # inside the second epoch
    _sigint_at(monkeypatch, cut_at)
    with pytest.raises(cdl.SolveInterrupted) as stop:
        cdl.solve(problem, solver, epochs=2)
    monkeypatch.undo()
    cut = stop.value.solution
    assert cut.status == "interrupted" and cut.checkpoint.iteration == cut_at
    assert cut.history[-1]["iteration"] == cut_at  # the iterate it stopped at, recorded
    cut.save(tmp_path / "cut")
    resumed = cdl.solve(problem, solver, resume=tmp_path / "cut")
    assert resumed.iterations == ref.iterations
    assert [h["iteration"] for h in resumed.history] == [h["iteration"] for h in ref.history]
    np.testing.assert_allclose([h["cost"] for h in resumed.history],
                               [h["cost"] for h in ref.history], rtol=0, atol=1e-12)
    for mine, theirs in zip(resumed.params, ref.params, strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-12)


def test_train_epochs_2_interrupted_after_the_first_epoch_resumes_to_the_same_run(
        monkeypatch, tmp_path):
    """``controldl train --epochs 2`` stopped by SIGINT at the first batch of epoch 2
    (exit 130, a checkpoint), then ``--resume``: the same history and parameters as the
    uninterrupted ``--epochs 2``."""
    flags = ["--n-samples", "90", "--layers", "3", "--batch-size", "16", "--lr", "0.05",
             "--tol", "0", "--epochs", "2", "--progress", "false"]
    assert main(["train", *flags, "--out", str(tmp_path / "ref")]) == 0
    per_epoch = json.loads((tmp_path / "ref" / "meta.json").read_text())["history"][1][
        "iteration"]
    _sigint_at(monkeypatch, per_epoch)
    assert main(["train", *flags, "--out", str(tmp_path / "run")]) == 130
    monkeypatch.undo()
    cut = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert cut["status"] == "interrupted" and cut["iterations"] == per_epoch
    assert main(["train", "--resume", str(tmp_path / "run")]) == 0
    ref, run = (json.loads((tmp_path / d / "meta.json").read_text()) for d in ("ref", "run"))
    assert run["iterations"] == ref["iterations"] == 2 * per_epoch
    assert run["stats"]["resumed_from_iteration"] == per_epoch
    assert [h["epoch"] for h in run["history"]] == [h["epoch"] for h in ref["history"]]
    np.testing.assert_allclose([h["cost"] for h in run["history"]],
                               [h["cost"] for h in ref["history"]], rtol=0, atol=1e-12)
    np.testing.assert_allclose([h["test_accuracy"] for h in run["history"]],
                               [h["test_accuracy"] for h in ref["history"]], rtol=0, atol=0)
    a, b = (np.load(tmp_path / d / "arrays.npz") for d in ("ref", "run"))
    for k in ("A", "b", "W", "c"):
        np.testing.assert_allclose(b[k], a[k], rtol=0, atol=1e-12)


def _images(dtype, n=48, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    X = (rng.normal(size=(n, 1, 6, 6)) + y[:, None, None, None]).astype(dtype)
    return cdl.Dataset(X, y)


def test_image_data_stored_in_float32_defaults_to_float32_and_the_user_can_override():
    from controldl.solvers.options import default_dtype

    assert default_dtype(_images(np.float32)) == "float32"
    assert default_dtype(_images(np.float64)) == "float64"  # digits' standardized pixels
    assert default_dtype(cdl.data.ring(20, seed=0)) == "float64"
    flat = _images(np.float32)
    assert default_dtype(cdl.Dataset(flat.X_train.reshape(48, -1), flat.y_train)) == "float64"
    problem = cdl.Problem(_images(np.float32), model="conv", channels=2, layers=2)
    single = cdl.solve(problem, cdl.GradientDescent("adam", lr=0.05, batch_size=16), epochs=2)
    double = cdl.solve(problem, cdl.GradientDescent("adam", lr=0.05, batch_size=16,
                                                    dtype="float64"), epochs=2)
    assert single.stats["dtype"] == "float32" and double.stats["dtype"] == "float64"
    emsa = cdl.solve(problem, EMSA(batch_size=16, inner_steps=2), max_iter=2)
    assert emsa.stats["dtype"] == "float32"
    # L-BFGS in float32 (optax's line search evaluates promoted iterates: cast back)
    lbfgs = cdl.solve(problem, cdl.GradientDescent("lbfgs"), max_iter=3)
    assert lbfgs.stats["dtype"] == "float32" and lbfgs.cost["total"] < single.history[0]["cost"]
    np.testing.assert_allclose([h["cost"] for h in single.history],
                               [h["cost"] for h in double.history], rtol=1e-4)
