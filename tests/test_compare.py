"""The comparison is fair and honest: the same start and data for every row, cold timing,
one tolerance, warm-started rows carrying their predecessor's time and work."""

import math

import jax
import numpy as np
import pytest

import controldl as cdl
from controldl import compare as C
from controldl import problem as P
from controldl.compilation import unregister_listener
from controldl.solvers import base
from controldl.solvers.gd import GradientDescent

COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


@pytest.fixture
def problem():
    data = cdl.data.train_test_split(cdl.data.ring(60, seed=0), 0.25, seed=0)
    return cdl.Problem(data, layers=4)


@pytest.fixture
def starts(monkeypatch):
    """Every call of ``GradientDescent.run``: (label, initial params, X_train, y_train)."""
    seen = []
    original = GradientDescent.run

    def spy(self, problem, params, monitor):
        seen.append((self.label(), *(np.array(v) for v in params),
                     np.array(problem.data.X_train), np.array(problem.data.y_train)))
        return original(self, problem, params, monitor)

    monkeypatch.setattr(GradientDescent, "run", spy)
    return seen


def test_every_row_not_warm_started_starts_from_the_same_point_and_data(problem, starts):
    comparison = C.compare(problem, ["adam:max_iter=3", "adam:max_iter=2:label=second",
                                     "sgd:max_iter=3:label=sgd", "sgd:from=sgd:max_iter=2:"
                                     "label=warm"], seed=5, cold=False)
    assert len(starts) == 4
    fresh, warm = starts[:3], starts[3]
    expected = P.init_params(problem.formulation, seed=5)
    for row in fresh:
        for got, want in zip(row[1:5], expected, strict=True):
            np.testing.assert_array_equal(got, np.asarray(want))
        np.testing.assert_array_equal(row[5], problem.data.X_train)
        np.testing.assert_array_equal(row[6], problem.data.y_train)
    sgd = comparison.solutions["sgd"]
    for got, want in zip(warm[1:5], sgd.params, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-15)


def test_a_warm_started_row_carries_its_predecessors_time_and_work(problem):
    comparison = C.compare(problem, ["adam:max_iter=20:label=adam",
                                     "adam:lr=0.05:from=adam:max_iter=20:label=polish"],
                           tol=None, target_cost=1e9, cold=False)
    first, polish = comparison.solutions["adam"], comparison.solutions["polish"]
    assert polish.warm_start.label == "adam"
    assert polish.warm_start.wall_time_s == first.wall_time_s
    assert polish.warm_start.work == first.work == 1.0  # stopped at the target at once
    rows = {r.solver: r for r in comparison.rows()}
    assert rows["polish"].predecessor_time_s == first.wall_time_s
    assert rows["polish"].total_time_s == pytest.approx(first.wall_time_s + polish.wall_time_s)
    assert rows["polish"].time_to_target_s == pytest.approx(
        first.wall_time_s + polish.history[0]["time_s"])
    # the row's own compile and run; with its predecessor's time, the total
    assert rows["polish"].compile_time_s == polish.compile_time_s
    assert rows["polish"].run_time_s == pytest.approx(polish.wall_time_s
                                                      - polish.compile_time_s)
    assert rows["polish"].compile_time_s + rows["polish"].run_time_s + rows[
        "polish"].predecessor_time_s == pytest.approx(rows["polish"].total_time_s)
    assert rows["polish"].predecessor_compile_time_s == first.compile_time_s
    shifted = comparison.histories()["polish"]
    assert shifted[0]["time_s"] >= first.wall_time_s
    assert shifted[0]["work"] == first.work + polish.history[0]["work"]
    assert polish.history[0]["cost"] == pytest.approx(first.cost["total"], rel=1e-12)


def test_every_row_is_timed_cold(problem, monkeypatch):
    events = []
    listener = lambda event, duration, **kw: events.append(event)  # noqa: E731
    C.compare(problem, ["adam:max_iter=2"], tol=None)  # compiled once in this process
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        C.compare(problem, ["adam:max_iter=2"], tol=None)
        cold = events.count(COMPILE_EVENT)
        events.clear()
        C.compare(problem, ["adam:max_iter=2"], tol=None, cold=False)
        warm = events.count(COMPILE_EVENT)
    finally:
        unregister_listener(listener, "event_duration")
    assert cold > warm and cold >= 2  # the step and the final cost compiled again
    assert len(base.COMPILED) > 0
    base.clear_compile_caches()
    assert len(base.COMPILED) == 0


def test_one_tolerance_time_and_work_to_it_and_the_rankings(problem):
    comparison = C.compare(problem, ["adam:lr=0.05", "lbfgs"], tol=1e-3, max_time=60,
                           cold=False)
    rows = {r.solver: r for r in comparison.rows()}
    for label, row in rows.items():
        sol = comparison.solutions[label]
        assert row.status == "converged", label
        assert row.stationarity <= 1e-3
        hit = next(h for h in sol.history if h["stationarity"] <= 1e-3)
        assert row.time_to_tol_s == hit["time_s"] and row.work_to_tol == hit["work"]
        assert row.time_to_target_s is not None and row.time_to_target_s <= row.total_time_s
    assert rows["lbfgs"].work >= rows["lbfgs"].iterations + 1  # line-search evaluations
    assert rows["adam:lr=0.05"].work == rows["adam:lr=0.05"].iterations + 1
    assert comparison.target == pytest.approx(
        C.TARGET_FACTOR * min(r.cost for r in rows.values()))
    ranked = comparison.ranking("time_to_tol_s")
    assert [t for _, t in ranked] == sorted(t for _, t in ranked)
    report = C._report(comparison, comparison.rows(), C.table_markdown(comparison), [])
    assert "By time to the target: **" in report and "By time to the tolerance: **" in report
    assert comparison.exit_code == 0


def test_a_diverged_row_makes_the_exit_code_1(problem):
    comparison = C.compare(problem, ["adam:max_iter=3", "sgd:lr=1000:max_iter=50"], tol=None,
                           cold=False)
    assert comparison.solutions["sgd:lr=1000:max_iter=50"].status == "diverged"
    assert comparison.exit_code == 1


def test_default_line_up_names_a_pontryagin_solver_when_installed():
    specs = C.default_specs()
    assert specs[:2] == ["adam", "lbfgs"] and specs[-1] == "casadi:from=adam"
    pmp = [s for s in C.PMP_CHOICES if s in cdl.available()]
    if pmp:
        assert any(s.split(":")[0] == pmp[0] and "until=target" in s for s in specs)
    assert all("{" not in s for s in specs)


@pytest.mark.parametrize("specs, match", [
    (["adam", "adam"], "unique"),
    (["casadi:from=adam", "adam"], "warm-starts from"),
    (["adam:lr=abc"], "bad value"),
    (["adam:nosuch=1"], "has no option"),
])
def test_bad_specs(problem, specs, match):
    with pytest.raises(ValueError, match=match):
        C.compare(problem, specs)


def test_the_report_rows_are_finite_numbers_or_none(problem):
    comparison = C.compare(problem, ["adam:max_iter=5"], tol=None, cold=False)
    row = comparison.rows()[0].asdict()
    for key, value in row.items():
        assert value is None or not isinstance(value, float) or math.isfinite(value), key


def test_an_until_target_row_stops_at_the_target_of_the_rows_before_it(problem):
    comparison = C.compare(problem, ["lbfgs:max_iter=200:label=first",
                                     "adam:lr=0.05:max_iter=3000:until=target:label=then"],
                           tol=None, cold=False)
    first, then = comparison.solutions["first"], comparison.solutions["then"]
    bound = C.TARGET_FACTOR * first.cost["total"]
    assert then.status == "target_reached"
    assert bound * 0.98 < then.history[-1]["cost"] <= bound
    assert comparison.solutions["first"].status != "target_reached"
    with pytest.raises(ValueError, match="only apply inside compare"):
        cdl.make_solver("adam:until=target")
    with pytest.raises(ValueError, match="until takes 'target'"):
        C.parse_spec("adam:until=tol")


def test_the_returned_comparison_prints_its_table_and_saves_its_report(problem, tmp_path):
    """``compare()`` from Python: ``.table()`` is the command's table, ``.save(DIR)`` its
    report directory."""
    comparison = C.compare(problem, ["adam:max_iter=3", "lbfgs:max_iter=3"], cold=False)
    assert comparison.table() == C.table_markdown(comparison)
    assert comparison.table().splitlines()[2].startswith("| adam:max_iter=3 | ")
    out = comparison.save(tmp_path / "report", figures=False)
    assert (out / "table.md").read_text() == comparison.table() + "\n"
    assert sorted(p.name for p in (out / "solutions").iterdir()) == ["adam_max_iter_3",
                                                                    "lbfgs_max_iter_3"]
