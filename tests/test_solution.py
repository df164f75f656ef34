"""The solution directory: round trip, atomic writes, the contract's keys."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import controldl as cdl
from controldl.io import atomic_directory, marked, write_json


def _solution(problem):
    return cdl.solve(problem, cdl.GradientDescent("adam", lr=0.05), max_iter=15, seed=1)


def test_round_trip_preserves_everything(tmp_path):
    data = cdl.data.train_test_split(cdl.data.ring(80, seed=0), 0.25, seed=0)
    problem = cdl.Problem(data, width=3, layers=4, horizon=2.0, l2=1e-3, l1=1e-4,
                          lipschitz_bound=0.9)
    sol = _solution(problem)
    sol.save(tmp_path / "s")
    back = cdl.load(tmp_path / "s")
    for a, b in zip(sol.params, back.params, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(back.problem.data.X_test, data.X_test)
    assert back.problem.formulation == problem.formulation
    assert back.cost == pytest.approx(sol.cost)
    assert back.history == sol.history
    assert back.test_accuracy == sol.test_accuracy
    meta = json.loads((tmp_path / "s" / "meta.json").read_text())
    for key in ("problem", "solver", "status", "cost", "train_accuracy", "test_accuracy",
                "iterations", "wall_time_s", "compile_time_s", "history", "versions"):
        assert key in meta
    for key in ("model", "activation", "width", "layers", "horizon", "loss", "l2", "l1",
                "smooth", "running", "readout_l2", "train_readout", "data"):
        assert key in meta["problem"]
    assert set(meta["cost"]) == {"total", "terminal", "l2", "l1", "smooth", "running",
                                 "readout_l2"}
    assert set(meta["history"][0]) >= {"iteration", "time_s", "cost", "train_accuracy"}
    import zipfile  # compressed (MNIST's 60,000 images: 18 MB instead of 220 MB)

    with zipfile.ZipFile(tmp_path / "s" / "arrays.npz") as z:
        assert {i.compress_type for i in z.infolist()} == {zipfile.ZIP_DEFLATED}
    with np.load(tmp_path / "s" / "arrays.npz") as f:
        assert f["A"].shape == (4, 3, 3) and f["W"].shape == (1, 3) and f["c"].shape == (1,)


def test_regression_solution_has_no_accuracy(tmp_path):
    sol = _solution(cdl.Problem(cdl.data.sine(30, seed=0), width=2, layers=3))
    assert sol.train_accuracy is None and sol.test_accuracy is None
    sol.save(tmp_path / "r")
    assert cdl.load(tmp_path / "r").problem.task == "regression"


def test_atomic_directory_leaves_nothing_on_error(tmp_path):
    def boom(tmp):
        (tmp / "half.txt").write_text("x")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_directory(tmp_path / "out", boom, kind="figures")
    assert list(tmp_path.iterdir()) == []


def _figures(name):
    def write(tmp):
        (tmp / name).write_text(name)
        write_json(tmp / "figures.json", marked("figures", {"figures": [name]}))
    return write


def test_atomic_directory_replaces_a_previous_output_of_its_kind(tmp_path):
    atomic_directory(tmp_path / "o", _figures("a"), kind="figures")
    atomic_directory(tmp_path / "o", _figures("b"), kind="figures")
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["b", "figures.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["o"]
    with pytest.raises(ValueError, match="holds a controldl figures output, not a solution"):
        atomic_directory(tmp_path / "o", _figures("c"), kind="solution")
    with pytest.raises(RuntimeError, match="did not record its kind"):  # a writer's bug
        atomic_directory(tmp_path / "p", lambda t: (t / "x").write_text("1"), kind="figures")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]


def test_load_rejects_broken_directories(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        cdl.load(tmp_path / "nope")
    (tmp_path / "e").mkdir()
    with pytest.raises(ValueError, match="meta.json is missing"):
        cdl.load(tmp_path / "e")


def test_the_library_meets_a_user_with_arrays():
    """Issue 15's six calls, with a user's own arrays."""
    ring = cdl.data.ring(80, seed=2)
    X, y = ring.X_train, ring.y_train
    data = cdl.data.Dataset(X, y)
    assert data.task == "classification" and data.n_classes == 2
    problems = [cdl.Problem(X, y, layers=4), cdl.Problem((X, y), layers=4),
                cdl.Problem(X=X, y=y, layers=4), cdl.Problem(data, layers=4)]
    assert len({p.formulation for p in problems}) == 1
    solver = cdl.make_solver("adam")
    assert isinstance(solver, cdl.GradientDescent) and solver.optimizer == "adam"
    assert cdl.make_solver("adam:lr=0.03") == cdl.GradientDescent("adam", lr=0.03)
    solution = cdl.solve(problems[0], "adam:lr=0.03", max_iter=30)
    assert solution.solver["options"]["lr"] == 0.03
    pred = solution.predict(X)
    assert pred.shape == (80,) and set(np.unique(pred)) <= {0, 1}
    assert solution.accuracy(X, y) == pytest.approx(solution.train_accuracy)
    xs = solution.states(X)
    assert xs.shape == (5, 80, 3)
    np.testing.assert_array_equal(xs[0, :, :2], X)
    np.testing.assert_allclose(xs[-1] @ solution.params.W.T + solution.params.c,
                               solution.outputs(X), rtol=1e-12)


@pytest.mark.parametrize("call, match", [
    (lambda X, y: cdl.Problem(X), "pair"),
    (lambda X, y: cdl.Problem(X, y, X=X), "twice"),
    (lambda X, y: cdl.solve(cdl.Problem(X, y, layers=2), "casadi:from=adam"), "only apply"),
    (lambda X, y: cdl.data.Dataset(X, np.where(y == 0, 2, y)), "every class present"),
])
def test_array_calls_that_are_really_wrong(call, match):
    ring = cdl.data.ring(20, seed=0)
    with pytest.raises(ValueError, match=match):
        call(ring.X_train, ring.y_train)


def test_warm_start_record_survives_a_round_trip(tmp_path):
    problem = cdl.Problem(cdl.data.ring(40, seed=0), layers=3)
    first = cdl.solve(problem, cdl.GradientDescent("adam"), max_iter=4)
    first.save(tmp_path / "first")
    second = cdl.solve(problem, cdl.GradientDescent("adam"), max_iter=3,
                       init=tmp_path / "first")
    assert second.warm_start.directory == str((tmp_path / "first").resolve())
    assert second.warm_start.wall_time_s == pytest.approx(first.wall_time_s)
    assert second.warm_start.work == first.work == 5.0
    second.save(tmp_path / "second")
    back = cdl.load(tmp_path / "second")
    assert back.warm_start == second.warm_start
    assert back.stationarity == pytest.approx(second.stationarity)
    third = cdl.solve(problem, cdl.GradientDescent("adam"), max_iter=2, init=back)
    assert third.warm_start.work == 5.0 + 4.0  # the chain adds up


def test_load_takes_a_file_of_the_solution_and_solve_takes_options(tmp_path):
    """``cdl.load(".../arrays.npz")`` reads the solution it belongs to, and
    ``cdl.solve(problem, "adam", lr=0.01)`` is ``cdl.solve(problem, "adam:lr=0.01")``."""
    problem = cdl.Problem(cdl.data.ring(40, seed=0), layers=3)
    solution = cdl.solve(problem, "adam", lr=0.01, max_iter=3)
    assert solution.solver["options"]["lr"] == 0.01 and solution.solver["label"] == "adam"
    spec = cdl.solve(problem, "adam:lr=0.01", max_iter=3)
    np.testing.assert_array_equal(solution.params.A, spec.params.A)
    solution.save(tmp_path / "sol")
    for name in ("arrays.npz", "meta.json"):
        np.testing.assert_array_equal(cdl.load(tmp_path / "sol" / name).params.A,
                                      solution.params.A)
    with pytest.raises(ValueError,
                       match="has no option 'lr'.*options: optimizer, record_every, grad_tol"):
        cdl.solve(problem, "lbfgs", lr=0.1)
    with pytest.raises(ValueError, match="go with a solver named by a string"):
        cdl.solve(problem, cdl.GradientDescent("adam"), lr=0.1)
    with pytest.raises(ValueError, match="solver 'adam' has no option 'learning_rate'"):
        cdl.solve(problem, "adam", learning_rate=0.1)


def test_without_float64_a_solve_says_so_once():
    """A process that never turned on JAX's float64: a solve warns once, in its own words
    (what happens, what to do), instead of JAX's truncation warning at every float64
    array; a solver given dtype='float32' is not warned about."""
    code = textwrap.dedent("""
        import json, warnings
        warnings.simplefilter("always")
        import controldl as cdl
        problem = cdl.Problem(cdl.data.ring(40, seed=0), layers=2)
        with warnings.catch_warnings(record=True) as seen:
            cdl.solve(problem, "adam", max_iter=2)
        with warnings.catch_warnings(record=True) as chosen:
            cdl.solve(problem, "adam", dtype="float32", max_iter=2)
        print(json.dumps([[str(w.message) for w in seen], [str(w.message) for w in chosen]]))
    """)
    env = {k: v for k, v in os.environ.items() if k != "JAX_ENABLE_X64"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    seen, chosen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(seen) == 1 and "jax_enable_x64" in seen[0], seen
    assert chosen == [] and "Explicitly requested dtype" not in proc.stderr
