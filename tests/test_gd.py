"""Gradient descent: compiled once, stopping rules, constraints, options."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import controldl as cdl
from controldl import problem as P
from controldl.compilation import unregister_listener
from controldl.solvers import base

COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


@pytest.fixture
def small_problem():
    return cdl.Problem(cdl.data.ring(60, seed=0), width=3, layers=5, horizon=2.0, l2=1e-3)


def test_second_solve_of_the_same_shapes_does_not_recompile(small_problem):
    solver = cdl.GradientDescent("adam", lr=0.02)
    cdl.solve(small_problem, solver, max_iter=5, seed=0)
    compiles = []
    listener = lambda event, duration, **kw: compiles.append(event)  # noqa: E731
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        other_data = cdl.Problem(cdl.data.ring(60, seed=9), width=3, layers=5, horizon=2.0,
                                 l2=1e-3)
        sol = cdl.solve(other_data, cdl.GradientDescent("adam", lr=0.02), max_iter=7, seed=4)
    finally:
        unregister_listener(listener, "event_duration")
    assert [e for e in compiles if e == COMPILE_EVENT] == []
    assert sol.compile_time_s < 0.05
    assert sol.iterations == 7


def test_history_and_compile_time_are_recorded(small_problem):
    sol = cdl.solve(small_problem, cdl.GradientDescent("sgd", lr=0.5, schedule="cosine"),
                    max_iter=12, seed=1)
    assert [h["iteration"] for h in sol.history] == list(range(13))
    times = [h["time_s"] for h in sol.history]
    assert times == sorted(times) and times[0] >= sol.compile_time_s
    assert sol.history[-1]["cost"] == pytest.approx(sol.cost["total"], rel=1e-12)
    assert sol.history[-1]["cost"] < sol.history[0]["cost"]


def test_stopping_on_target_time_and_gradient(small_problem):
    start = cdl.solve(small_problem, cdl.GradientDescent(), max_iter=0).cost["total"]
    target = 0.9 * start
    sol = cdl.solve(small_problem, cdl.GradientDescent("adam", lr=0.05), max_iter=500,
                    target_cost=target)
    assert sol.status == "target_reached" and sol.cost["total"] <= target
    assert sol.history[-1]["cost"] <= target < sol.history[-2]["cost"]
    # grad_tol far below round-off: only the clock can stop it
    sol = cdl.solve(small_problem, cdl.GradientDescent("adam", grad_tol=1e-300), max_iter=10**7,
                    max_time=1.0)
    assert sol.status == "max_time" and sol.wall_time_s < 3.0
    sol = cdl.solve(small_problem, cdl.GradientDescent("adam", grad_tol=1e2), max_iter=50)
    assert sol.status == "converged" and sol.iterations == 0


def test_lbfgs_reaches_a_stationary_point(small_problem):
    small_problem = small_problem.replace(readout_l2=1e-2)  # bounded readout: well posed
    sol = cdl.solve(small_problem, cdl.GradientDescent("lbfgs", grad_tol=1e-7), max_iter=500)
    assert sol.status == "converged"
    form = small_problem.formulation
    g = jax.grad(lambda p: P.cost(form, p, small_problem.initial_states(),
                                  small_problem.targets()))(P.Params(*sol.params))
    assert float(optax_norm(g)) < 1e-5
    assert sol.train_accuracy == 1.0


def optax_norm(tree):
    return np.sqrt(sum(float((np.asarray(x) ** 2).sum()) for x in jax.tree.leaves(tree)))


def test_constraints_hold_along_the_run():
    problem = cdl.Problem(cdl.data.ring(60, seed=0), width=2, layers=4, horizon=8.0,
                          lipschitz_bound=0.9, box_bound=0.8)
    sol = cdl.solve(problem, cdl.GradientDescent("adam", lr=0.1), max_iter=60)
    assert np.all(P.lipschitz_constants(problem.formulation, sol.params) <= 0.9 + 1e-10)
    assert np.abs(sol.params.b).max() <= 0.8


def test_frozen_readout_stays_put(small_problem):
    problem = small_problem.replace(train_readout=False)
    init = P.init_params(problem.formulation, seed=2)
    sol = cdl.solve(problem, cdl.GradientDescent("adamw", lr=0.05), max_iter=20, seed=2)
    np.testing.assert_array_equal(sol.params.W, np.asarray(init.W))
    np.testing.assert_array_equal(sol.params.c, np.asarray(init.c))
    assert not np.allclose(sol.params.A, np.asarray(init.A))


def test_minibatch_records_full_cost_per_epoch(small_problem):
    sol = cdl.solve(small_problem, cdl.GradientDescent("adam", lr=0.05, batch_size=20),
                    max_iter=30)
    assert [h["iteration"] for h in sol.history] == list(range(0, 31, 3))
    assert sol.history[-1]["cost"] == pytest.approx(sol.cost["total"], rel=1e-12)


def test_float32_runs_close_to_float64(small_problem):
    a = cdl.solve(small_problem, cdl.GradientDescent("adam", lr=0.02), max_iter=40)
    b = cdl.solve(small_problem, cdl.GradientDescent("adam", lr=0.02, dtype="float32"),
                  max_iter=40)
    assert b.cost["total"] == pytest.approx(a.cost["total"], rel=1e-4)


def test_warm_start_continues_from_a_solution(small_problem, tmp_path):
    first = cdl.solve(small_problem, cdl.GradientDescent("adam", lr=0.05), max_iter=30)
    first.save(tmp_path / "first")
    again = cdl.solve(small_problem, cdl.GradientDescent("adam", lr=0.05), max_iter=0,
                      init=tmp_path / "first")
    assert again.cost["total"] == pytest.approx(first.cost["total"], rel=1e-12)
    wrong = cdl.Problem(small_problem.data, width=4, layers=5, horizon=2.0)
    with pytest.raises(ValueError, match="warm start: A has shape"):
        cdl.solve(wrong, cdl.GradientDescent(), init=first)


@pytest.mark.parametrize("kwargs, match", [
    (dict(optimizer="nosuchopt"), "unknown optax optimizer"),
    (dict(lr=-1.0), "lr must be > 0"),
    (dict(schedule="triangle"), "schedule"),
    (dict(optimizer="lbfgs", batch_size=10), "full batch"),
    (dict(dtype="float16"), "dtype"),
])
def test_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        cdl.GradientDescent(**kwargs)


def test_batch_larger_than_data(small_problem):
    with pytest.raises(ValueError, match="exceeds"):
        cdl.solve(small_problem, cdl.GradientDescent(batch_size=1000), max_iter=2)


def test_best_iterate_is_returned_by_default_and_divergence_is_reported(small_problem):
    init = P.init_params(small_problem.formulation, seed=0)
    best = cdl.solve(small_problem, cdl.GradientDescent("sgd", lr=1000.0), max_iter=50)
    assert best.status == "diverged"
    assert best.stats["returned"] == "best" and best.stats["best_iteration"] == 0
    assert best.stats["last_cost"] > 100 * max(best.history[0]["cost"], 1.0)
    for got, want in zip(best.params, init, strict=True):
        np.testing.assert_array_equal(got, np.asarray(want))
    assert best.cost["total"] == pytest.approx(best.history[0]["cost"], rel=1e-12)
    last = cdl.solve(small_problem, cdl.GradientDescent("sgd", lr=1000.0, return_best=False),
                     max_iter=50)
    assert last.stats["returned"] == "last"
    assert last.cost["total"] == pytest.approx(last.stats["last_cost"], rel=1e-12)


def test_divergence_threshold_is_declared_once_in_stopping():
    from controldl.solvers.base import Monitor, Stopping

    stop = Stopping(max_iter=10)
    assert stop.divergence_threshold(0.5) == Stopping.DIVERGENCE_FACTOR
    monitor = Monitor(stop)
    assert monitor.record(0, 0.5) is None
    assert monitor.record(1, 0.99 * Stopping.DIVERGENCE_FACTOR) is None
    assert monitor.record(2, 1.01 * Stopping.DIVERGENCE_FACTOR) == "diverged"
    assert Monitor(Stopping(tol=1e-3)).record(0, 1.0, stationarity=1e-4) == "converged"


def test_recorded_stationarity_is_the_one_measure_with_l1_and_a_box():
    problem = cdl.Problem(cdl.data.ring(60, seed=0), layers=5, horizon=2.0, l1=1e-3,
                          box_bound=0.5)
    sol = cdl.solve(problem, cdl.GradientDescent("adam", lr=0.05, return_best=False),
                    max_iter=15)
    assert sol.history[-1]["stationarity"] == pytest.approx(
        cdl.stationarity(problem, sol.params), rel=1e-9)
    assert sol.stationarity == pytest.approx(sol.history[-1]["stationarity"], rel=1e-9)
    tight = cdl.solve(problem, cdl.GradientDescent("adam", lr=0.05), max_iter=15,
                      tol=sol.history[5]["stationarity"])
    assert tight.status == "converged" and tight.iterations <= 5


def test_work_counts_gradient_evaluations(small_problem):
    adam = cdl.solve(small_problem, cdl.GradientDescent("adam"), max_iter=6)
    assert [h["work"] for h in adam.history] == [k + 1.0 for k in range(7)]
    batch = cdl.solve(small_problem, cdl.GradientDescent("adam", batch_size=20), max_iter=6)
    assert batch.history[-1]["work"] == pytest.approx(6 * 20 / 60)


@pytest.fixture
def gradient_evaluations(monkeypatch):
    """The points (flat ``θ``, NumPy) at which the cost was differentiated, in order:
    every evaluation of ``P.cost_and_outputs`` under ``jax.value_and_grad`` runs the
    forward rule of a ``custom_vjp`` identity on ``θ``, which sends ``θ`` to the host
    (``jax.debug.callback``); forward-only evaluations are not counted. The compiled
    steps are built afresh with it and forgotten afterwards."""
    points = []

    @jax.custom_vjp
    def tap(v):
        return v

    def forward(v):
        jax.debug.callback(lambda x: points.append(np.array(x)), v)
        return v, None

    tap.defvjp(forward, lambda _, g: (g,))
    original = P.cost_and_outputs

    def counted(form, params, *args, **kwargs):
        flat, unravel = jax.flatten_util.ravel_pytree(params)
        return original(form, P.Params(*unravel(tap(flat))), *args, **kwargs)

    # a saved executable of the same step (same key, same controldl source) has no tap:
    # compile this one, with the caches off (an in-process CLI test may have turned them on)
    cached = jax.config.values.get("jax_enable_compilation_cache", True)
    jax.config.update("jax_enable_compilation_cache", False)
    base.clear_compile_caches()
    monkeypatch.setattr(P, "cost_and_outputs", counted)
    yield points
    base.clear_compile_caches()
    jax.config.update("jax_enable_compilation_cache", cached)


def _flat(params):
    return np.concatenate([np.ravel(np.asarray(v)) for v in params])


def _lbfgs_evaluations(problem, points, steps):
    """The solve of ``steps`` L-BFGS iterations, and per iteration ``k < steps`` the points
    differentiated in it and the iterate ``θ_k`` (from a solve of ``k`` iterations: the
    runs are deterministic)."""
    marks = []
    sol = cdl.solve(problem, cdl.GradientDescent("lbfgs", grad_tol=0.0), max_iter=steps,
                    callback=lambda entry: marks.append(len(points)))
    per_step = [points[a:b] for a, b in zip([0, *marks[:-1]], marks, strict=True)][:steps]
    del points[marks[-1]:]
    iterates = [_flat(cdl.solve(problem, cdl.GradientDescent("lbfgs", grad_tol=0.0),
                                max_iter=k).params) for k in range(steps)]
    return sol, per_step, iterates


@pytest.mark.parametrize("bound", [None, 0.35], ids=["free", "box"])
def test_lbfgs_differentiates_each_point_once(gradient_evaluations, bound):
    """L-BFGS takes ``J`` and ``∇J`` at ``θ_k`` from the zoom line search that accepted
    it: counted by the evaluations actually made (not by the reported number), each
    iteration differentiates ``θ_k`` only when no earlier evaluation was at ``θ_k``
    (the first iteration, or the box projection moved the accepted point), no point is
    differentiated twice, and the history's work is that count plus a forward pass (1/3)
    for the accuracy, recorded every tenth iteration. The old step (``value_and_grad`` at
    every iterate) fails this: it differentiates every accepted point twice (checked)."""
    problem = cdl.Problem(cdl.data.ring(40, seed=0), width=3, layers=4, horizon=2.0,
                          l2=1e-3, readout_l2=1e-3, box_bound=bound)
    sol, per_step, iterates = _lbfgs_evaluations(problem, gradient_evaluations, 8)
    seen, moved, done = [], 0, 0
    for k, (evaluated, theta) in enumerate(zip(per_step, iterates, strict=True)):
        before = any(np.array_equal(theta, x) for x in seen)
        at_theta = sum(np.array_equal(theta, x) for x in evaluated)
        assert at_theta == (0 if before else 1), (k, at_theta, before)
        moved += k > 0 and not before
        # entry k: the evaluations of the steps before, θ_k's own, and the accuracy's
        # forward pass at iteration 0 (the next is at 10)
        assert sol.history[k]["work"] == pytest.approx(done + at_theta + 1 / 3, abs=1e-12)
        assert (sol.history[k]["train_accuracy"] is None) == (k > 0)
        seen += evaluated
        done += len(evaluated)
    points = [x.tobytes() for x in seen]
    assert len(points) == len(set(points)), "a point was differentiated twice"
    assert (moved > 0) == (bound is not None)


@pytest.fixture
def step_builds(monkeypatch):
    """The number of times gradient descent builds (traces and compiles) its step."""
    from controldl.solvers import gd

    count = [0]
    build = gd._build_step

    def counting(*args, **kwargs):
        count[0] += 1
        return build(*args, **kwargs)

    monkeypatch.setattr(gd, "_build_step", counting)
    base.COMPILED.clear()
    return count


def test_a_learning_rate_grid_compiles_once(step_builds):
    problem = cdl.Problem(cdl.data.ring(40, seed=0), width=3, layers=4)
    grid = (0.003, 0.01, 0.03, 0.1)
    costs = [cdl.solve(problem, cdl.GradientDescent("adam", lr=lr), max_iter=30).cost["total"]
             for lr in grid]
    assert step_builds[0] == 1
    assert len(set(costs)) == 4  # each run used its own learning rate
    base.COMPILED.clear()
    fresh = cdl.solve(problem, cdl.GradientDescent("adam", lr=0.03), max_iter=30)
    assert fresh.cost["total"] == costs[2]


def test_a_horizon_sweep_at_fixed_layers_compiles_once_per_solver(step_builds):
    from controldl.studies import turnpike as tp

    data = cdl.data.ring(24, seed=3)
    result = tp.sweep(data, [1.0, 2.0, 3.0, 4.0, 5.0], cdl.GradientDescent("adam", lr=0.05),
                      options=tp.SweepOptions(tol=1e-5, n_boot=5, finish_iter=300),
                      fixed="layers", layers=4, max_iter=50,
                      problem_options=dict(width=3, l2=1e-2, readout_l2=1e-2))
    assert len(result.report["horizons"]) == 5
    assert step_builds[0] == 2  # Adam's step and L-BFGS's (the finish), once each
    # compile and run are reported apart, per horizon and in the summary
    entries = result.report["horizons"]
    for e in entries:
        assert e["run_time_s"] == pytest.approx(e["wall_time_s"] - e["compile_time_s"])
        assert 0 < e["compile_time_s"] < e["wall_time_s"]
    assert result.report["time_s"]["compile"] == pytest.approx(
        sum(e["compile_time_s"] for e in entries))
    assert result.report["time_s"]["run"] == pytest.approx(sum(e["run_time_s"] for e in entries))


@pytest.fixture
def persistent_cache(tmp_path):
    """JAX's persistent cache (and controldl's saved executables) in ``tmp_path``, and every
    in-memory cache empty; the previous setting is restored afterwards."""
    from jax.experimental.compilation_cache import compilation_cache

    from controldl import compilation

    previous = jax.config.values["jax_compilation_cache_dir"]
    compilation.enable_compilation_cache(tmp_path)
    base.clear_compile_caches()
    yield tmp_path / compilation.EXECUTABLES
    jax.config.update("jax_compilation_cache_dir", previous)
    compilation_cache.reset_cache()


def test_a_new_process_loads_the_saved_programs_without_tracing(persistent_cache):
    """With the persistent cache on, a solve after every in-memory cache is gone (what a
    new process sees) loads gradient descent's step and its init as saved executables:
    neither is traced again (init_params compiles nothing), and the run is the same."""
    problem = cdl.Problem(cdl.data.ring(40, seed=1), width=3, layers=4, horizon=2.0, l2=1e-3)
    first = cdl.solve(problem, cdl.GradientDescent("adam", lr=0.05), max_iter=6)
    saved = sorted(persistent_cache.iterdir())
    base.clear_compile_caches()
    traced = []
    listener = lambda event, duration, **kw: traced.append(kw.get("fun_name"))  # noqa: E731
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        second = cdl.solve(problem, cdl.GradientDescent("adam", lr=0.05), max_iter=6)
    finally:
        unregister_listener(listener, "event_duration")
    assert len(saved) == 2  # the step and the optimizer's init
    assert "_block" in traced  # the listener saw the solve (its final evaluation)
    assert not {"iteration", "init", "_project_program"} & set(traced)
    assert [h["cost"] for h in second.history] == [h["cost"] for h in first.history]
    np.testing.assert_array_equal(second.params.A, first.params.A)


def test_a_saved_program_of_other_code_or_a_corrupt_file_is_not_loaded(persistent_cache,
                                                                        monkeypatch):
    from controldl import compilation

    fn = lambda x: jnp.sin(x) * 2.0  # noqa: E731
    x = jnp.arange(3.0)
    compiled = compilation.compile_or_load(fn, (x,), ("k",))
    (path,) = persistent_cache.iterdir()
    assert compilation._load_executable(path) is not None
    monkeypatch.setattr(compilation, "_source_digest", lambda: "other source")
    compilation.compile_or_load(fn, (x,), ("k",))
    assert len(list(persistent_cache.iterdir())) == 2  # a new entry for the other code
    path.write_bytes(b"not an executable")
    assert compilation._load_executable(path) is None
    np.testing.assert_array_equal(compiled(x), np.sin(np.arange(3.0)) * 2.0)


def test_an_executable_from_jax_s_cache_is_not_saved_again(persistent_cache, monkeypatch):
    """An executable JAX's persistent cache returned re-serializes without its compiled
    functions (it fails when it runs once loaded), so only a real compile is saved."""
    from controldl import compilation

    fn = lambda x: jnp.cos(x) + 1.0  # noqa: E731
    x = jnp.arange(4.0)
    with monkeypatch.context() as m:  # a process that only fills JAX's cache
        m.setattr(compilation, "_save_executable", lambda path, compiled: None)
        compilation.compile_or_load(fn, (x,), ("k2",))
    base.clear_compile_caches()
    again = compilation.compile_or_load(fn, (x,), ("k2",))  # from JAX's cache
    assert not persistent_cache.exists() or not list(persistent_cache.iterdir())
    np.testing.assert_allclose(again(x), np.cos(np.arange(4.0)) + 1.0)


def test_a_program_with_external_kernels_is_not_saved(persistent_cache):
    """An SVD (LAPACK, a custom call that jaxlib binds while lowering) would crash a new
    process that loads the program without lowering it: it is compiled, not saved."""
    from controldl import compilation

    fn = lambda a: jnp.linalg.svd(a, compute_uv=False)  # noqa: E731
    a = jnp.eye(3) * 2.0
    np.testing.assert_allclose(compilation.compile_or_load(fn, (a,), ("svd",))(a), 2.0)
    assert not persistent_cache.exists() or not list(persistent_cache.iterdir())


def test_a_second_process_with_a_lipschitz_bound_runs_from_the_cache(tmp_path):
    """Gradient descent's step with the Lipschitz projection (an SVD) in two processes that
    share a compilation cache: the second runs (it crashed when the step was saved) and
    gives the same cost."""
    import subprocess
    import sys

    code = ("import jax; jax.config.update('jax_enable_x64', True); import controldl as cdl; "
            f"cdl.enable_compilation_cache({str(tmp_path)!r}); "
            "p = cdl.Problem(cdl.data.ring(40, seed=1), width=3, layers=4, horizon=2.0, "
            "l2=1e-3, lipschitz_bound=0.5); "
            "print(repr(cdl.solve(p, cdl.GradientDescent('adam', lr=0.05), max_iter=4)"
            ".cost['total']))")
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=300) for _ in range(2)]
    assert [r.returncode for r in runs] == [0, 0], runs[1].stderr[-2000:]
    assert runs[0].stdout == runs[1].stdout
