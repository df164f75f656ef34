"""Horizon sweeps: grids, control interpolation, diagnostics, fits, saving and resuming,
and the ``controldl turnpike`` command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import controldl as cdl
from controldl import problem as P
from controldl import turnpike as tp
from controldl.cli import main

# --------------------------------------------------------------------------- grids


def test_horizon_grid_fixed_step_and_fixed_layers():
    assert tp.horizon_grid([2, 1], "step", step=0.25) == [(1.0, 4), (2.0, 8)]
    assert tp.horizon_grid([1, 3], "layers", layers=6) == [(1.0, 6), (3.0, 6)]
    assert tp.horizon_grid([1.0], "step") == [(1.0, round(1 / tp.DEFAULT_STEP))]
    with pytest.raises(ValueError, match="at least one layer"):
        tp.horizon_grid([0.1, 1], "step", step=0.5)
    with pytest.raises(ValueError, match="layers"):
        tp.horizon_grid([1], "layers", layers=0)
    with pytest.raises(ValueError, match="fixed"):
        tp.horizon_grid([1], "time")


@pytest.mark.parametrize("text", ["0,1", "a,b", "-1,2", "1,1", "", "1,,2", "inf"])
def test_parse_horizons_rejects_bad_input(text):
    with pytest.raises(ValueError):
        tp.parse_horizons(text)


def test_parse_horizons_sorts():
    assert tp.parse_horizons("4, 1,2") == [1.0, 2.0, 4.0]


# --------------------------------------------------------------------------- interpolation


@pytest.mark.parametrize("method", tp.INTERPOLATION_METHODS)
@pytest.mark.parametrize("new_layers", [1, 2, 5, 7, 12])
def test_interpolation_is_exact_for_constant_controls(method, new_layers):
    rng = np.random.default_rng(0)
    A0, b0 = rng.normal(size=(3, 3)), rng.normal(size=3)
    W, c = rng.normal(size=(1, 3)), rng.normal(size=1)
    params = P.Params(np.repeat(A0[None], 4, 0), np.repeat(b0[None], 4, 0), W, c)
    new = tp.interpolate_controls(params, new_layers, method)
    assert new.A.shape == (new_layers, 3, 3) and new.b.shape == (new_layers, 3)
    np.testing.assert_array_equal(new.A, np.repeat(A0[None], new_layers, 0))
    np.testing.assert_array_equal(new.b, np.repeat(b0[None], new_layers, 0))
    np.testing.assert_array_equal(new.W, W)
    np.testing.assert_array_equal(new.c, c)


def test_interpolation_in_rescaled_time():
    L = 4
    s = (np.arange(L) + 0.5) / L  # the midpoints carry the controls
    A = (2.0 * s + 1.0)[:, None, None] * np.ones((L, 2, 2))
    b = np.stack([s, -s], axis=1)
    params = P.Params(A, b, np.ones((1, 2)), np.zeros(1))
    # Same grid: the identity, whichever method.
    for method in tp.INTERPOLATION_METHODS:
        same = tp.interpolate_controls(params, L, method)
        np.testing.assert_allclose(same.A, A)
        np.testing.assert_allclose(same.b, b)
    # Linear in s is reproduced between the first and last midpoints.
    new = tp.interpolate_controls(params, 8, "linear")
    s8 = (np.arange(8) + 0.5) / 8
    inside = (s8 >= s[0]) & (s8 <= s[-1])
    np.testing.assert_allclose(new.A[inside, 0, 0], 2.0 * s8[inside] + 1.0)
    np.testing.assert_allclose(new.b[inside, 1], -s8[inside])
    # Sample and hold refines by an integer factor exactly.
    held = tp.interpolate_controls(params, 8, "constant")
    np.testing.assert_allclose(held.A, np.repeat(A, 2, axis=0))
    # The amplitude factor of the warm start.
    half = tp.interpolate_controls(params, 4, "linear", scale=0.5)
    np.testing.assert_allclose(half.A, 0.5 * A)
    with pytest.raises(ValueError):
        tp.interpolate_controls(params, 0)


# --------------------------------------------------------------------------- fits


def test_power_law_fit_recovers_the_slope():
    T = np.array([1.0, 2.0, 4.0, 8.0, 16.0])
    fit = tp.fit_power_law(T, 3.0 / T)
    assert fit["slope"] == pytest.approx(-1.0, abs=1e-12)
    assert fit["ci95"][0] == pytest.approx(-1.0, abs=1e-9)
    noisy = 3.0 * T ** -1.2 * np.exp(np.random.default_rng(1).normal(scale=0.1, size=5))
    fit = tp.fit_power_law(T, noisy)
    lo, hi = fit["ci95"]
    assert lo < fit["slope"] < hi and lo < -1.2 < hi
    two = tp.fit_power_law([1.0, 2.0], [1.0, 0.5])
    assert two["slope"] == pytest.approx(-1.0) and two["ci95"] is None


def test_exponential_fit_leaves_out_the_final_transient():
    T = 8.0
    t = np.arange(32) * 0.25
    v = 2.0 * np.exp(-0.7 * t)
    v[t > 0.75 * T] *= 50.0  # a final transient
    fit = tp.fit_exponential_rate(t, v, T, tail_fraction=0.25)
    assert fit["rate"] == pytest.approx(0.7, abs=1e-10)
    assert fit["window"] == [0.0, 6.0]
    assert fit["ci95"][0] <= 0.7 + 1e-9 <= fit["ci95"][1] + 1e-9
    whole = tp.fit_exponential_rate(t, v, T, tail_fraction=0.0)
    assert whole["rate"] < 0.7


# --------------------------------------------------------------------------- diagnostics


@pytest.fixture(scope="module")
def data():
    return cdl.data.ring(40, seed=3)


def test_profiles_follow_their_definitions(data):
    # The formulation of the sweeps below (T = 2, L = 4): compiled once for the module.
    problem = cdl.Problem(data, width=3, layers=4, horizon=2.0, l2=1e-3)
    params = P.init_params(problem.formulation, seed=2)
    prof = tp.profiles(problem, params)
    A, b, W, c = (np.asarray(v) for v in params)
    h = 2.0 / 4
    xs = [np.pad(data.X_train, ((0, 0), (0, 1)))]
    for t in range(4):
        xs.append(xs[-1] + h * np.tanh(xs[-1] @ A[t].T + b[t]))
    xs = np.stack(xs)
    y = data.y_train
    z = xs @ W.T + c
    errors = np.log1p(np.exp(-(2.0 * y[None, :, None] - 1.0) * z)).mean(axis=(1, 2))
    np.testing.assert_allclose(prof["control_norms"],
                               np.sqrt((A ** 2).sum((1, 2)) + (b ** 2).sum(1)))
    np.testing.assert_allclose(prof["state_distances"],
                               np.sqrt(((xs - xs[-1]) ** 2).sum(2).mean(1)), atol=1e-12)
    np.testing.assert_allclose(prof["state_speeds"],
                               np.sqrt(((xs[1:] - xs[:-1]) ** 2).sum(2).mean(1)) / h)
    np.testing.assert_allclose(prof["running_errors"], errors, rtol=1e-10)
    np.testing.assert_allclose(prof["times"], np.arange(5) * h)
    wrong = ((z[..., 0] > 0).astype(int) != y[None]).mean(1)
    np.testing.assert_allclose(prof["running_misclassification"], wrong)
    assert prof["terminal_error"] == pytest.approx(errors[-1], rel=1e-10)
    assert prof["steady_distances"] is None  # the logistic loss has no steady minimizer
    assert not tp.steady_reference(problem)["defined"]


def test_steady_states_for_the_squared_loss():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(12, 2))
    data = cdl.data.regression(X, rng.normal(size=(12, 1)), {"name": "test"})
    problem = cdl.Problem(data, width=3, layers=3, horizon=1.0)
    params = P.init_params(problem.formulation, seed=1)
    assert tp.steady_reference(problem)["defined"]
    xL = np.asarray(P.trajectory(problem.formulation, params, problem.initial_states()))[-1]
    ref = tp.steady_states(problem, params, xL)
    W, c = np.asarray(params.W), np.asarray(params.c)
    np.testing.assert_allclose(ref @ W.T + c, np.asarray(problem.targets()), atol=1e-12)
    prof = tp.profiles(problem, params)
    assert len(prof["steady_distances"]) == 4


# --------------------------------------------------------------------------- the sweep


class Counter:
    def __init__(self):
        self.calls = 0

    def __call__(self, entry):
        self.calls += 1


KEYS = ("horizon", "layers", "terminal_error", "control_norms", "state_distances",
        "running_errors")


def _sweep(data, out, horizons=(1.0, 2.0), resume=False, callback=None, l2=1e-3, **kw):
    problem = cdl.Problem(data, width=3, layers=1, horizon=1.0, l2=l2)
    return tp.sweep(problem, list(horizons), cdl.GradientDescent("adam", lr=0.02), fixed="step",
                    step=0.5, out=out, resume=resume, max_iter=4, callback=callback, **kw)


def test_sweep_writes_report_and_resume_repeats_nothing(data, tmp_path):
    out = tmp_path / "sweep"
    first_count = Counter()
    first = _sweep(data, out, callback=first_count)
    assert first.solved == [1.0, 2.0] and first.loaded == []
    assert first_count.calls > 0
    report = json.loads((out / "turnpike.json").read_text())
    assert report["complete"]
    for e, L in zip(report["horizons"], (2, 4), strict=True):
        for k in KEYS:
            assert k in e
        assert e["layers"] == L
        assert len(e["control_norms"]) == L
        assert len(e["state_distances"]) == L + 1 and len(e["running_errors"]) == L + 1
        assert e["terminal_error"] == pytest.approx(e["cost"]["terminal"], rel=1e-9)
    assert report["error_vs_horizon_slope"]["slope"] is not None
    assert "ci95" in report["error_vs_horizon_slope"]
    assert "rate" in report["control_decay_rate"] and "ci95" in report["control_decay_rate"]
    for T in ("T=1", "T=2"):
        assert cdl.load(out / T).status in ("max_iter", "converged")
    # The second horizon was warm-started from the first one.
    assert first.solutions[2.0].solver["init"] == "warm_start"
    stamp = (out / "T=2" / "meta.json").stat().st_mtime_ns

    again_count = Counter()
    again = _sweep(data, out, resume=True, callback=again_count)
    assert again.solved == [] and again.loaded == [1.0, 2.0]
    assert again_count.calls == 0  # no iteration ran
    assert (out / "T=2" / "meta.json").stat().st_mtime_ns == stamp
    for T in (1.0, 2.0):
        assert again.solutions[T].wall_time_s == pytest.approx(first.solutions[T].wall_time_s)
        np.testing.assert_array_equal(again.solutions[T].params.A, first.solutions[T].params.A)

    # Extending the sweep solves only the new horizon, warm-started from the loaded one.
    more = _sweep(data, out, horizons=(1.0, 2.0, 4.0), resume=True)
    assert more.solved == [4.0] and more.loaded == [1.0, 2.0]
    assert more.solutions[4.0].solver["init"] == "warm_start"
    assert len(json.loads((out / "turnpike.json").read_text())["horizons"]) == 3


def test_interrupted_sweep_loses_nothing(data, tmp_path):
    out = tmp_path / "sweep"

    class Interrupt:
        def __init__(self):
            self.calls = 0

        def __call__(self, entry):
            self.calls += 1
            if self.calls > 6:  # during the second horizon (4 iterations + 1 per solve)
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _sweep(data, out, callback=Interrupt())
    assert sorted(p.name for p in out.iterdir()) == ["T=1", "turnpike.json"]
    report = json.loads((out / "turnpike.json").read_text())
    assert [e["horizon"] for e in report["horizons"]] == [1.0] and not report["complete"]
    resumed = _sweep(data, out, resume=True)
    assert resumed.loaded == [1.0] and resumed.solved == [2.0]


def test_sweep_refuses_to_mix_problems(data, tmp_path):
    out = tmp_path / "sweep"
    _sweep(data, out, horizons=(1.0,))
    with pytest.raises(ValueError, match="resume"):
        _sweep(data, out, horizons=(1.0,))
    with pytest.raises(ValueError, match="another problem"):
        _sweep(data, out, horizons=(1.0,), resume=True, l2=0.5)


def test_sweep_with_another_solver(data, tmp_path):
    """The sweep is solver-agnostic: the direct method (cheap to build) through the same
    warm-start chain. (Every solver's handling of every term is in test_cost_terms.py.)"""
    solver = "casadi"
    if solver not in cdl.available():
        pytest.skip(f"solver {solver!r} is not available yet")
    problem = cdl.Problem(data, width=3, layers=1, horizon=1.0, l2=1e-3, running=0.5)
    result = tp.sweep(problem, [0.5, 1.0], cdl.make_solver(solver), fixed="layers", layers=3,
                      out=tmp_path / "s", max_iter=2)
    assert result.solved == [0.5, 1.0]
    assert [e["layers"] for e in result.report["horizons"]] == [3, 3]
    assert result.solutions[1.0].solver["init"] == "warm_start"


# --------------------------------------------------------------------------- command line

# The same data, formulation and solver as the library sweeps above (compiled once).
BASE = ["turnpike", "--n-samples", "40", "--seed", "3", "--width", "3", "--l2", "1e-3",
        "--optimizer", "adam", "--lr", "0.02", "--max-iter", "4", "--progress", "false"]


@pytest.mark.parametrize("horizons", ["0,1", "a,b", "-1,2", "1,-2", "1,1", ""])
def test_cli_rejects_bad_horizons(tmp_path, capsys, horizons):
    out = tmp_path / "out"
    assert main([*BASE, f"--horizons={horizons}", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("controldl: error:") and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_cli_rejects_negative_horizons_as_separate_argument(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main([*BASE, "--horizons", "-1,2", "--out", str(out)])
    assert exc.value.code == 2
    assert not out.exists()


@pytest.mark.parametrize("extra", [["--layers", "5"], ["--horizon", "3"],
                                   ["--fixed", "layers", "--step", "0.5"],
                                   ["--step", "0"], ["--step", "1", "--horizons", "0.2,1"],
                                   ["--solver", "gd", "--rho", "2"],
                                   ["--tail-fraction", "1"], ["--width", "1"]])
def test_cli_rejects_bad_flags(tmp_path, capsys, extra):
    out = tmp_path / "out"
    args = [*BASE, "--out", str(out), *extra]
    if not any(a.startswith("--horizons") for a in extra):
        args += ["--horizons", "1,2"]
    try:
        code = main(args)
    except SystemExit as exc:  # argparse errors (an option unknown to this build)
        code = exc.code
    assert code == 2
    assert not out.exists()


def test_cli_sweep_figures_and_resume(tmp_path, capsys):
    out = tmp_path / "out"
    args = [*BASE, "--horizons", "1,2", "--step", "0.5", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "2 horizon(s) solved, 0 loaded" in printed
    report = json.loads((out / "turnpike.json").read_text())
    assert [e["layers"] for e in report["horizons"]] == [2, 4]
    for name in ("profiles.png", "error_vs_horizon.png", "controls_heatmap.png"):
        assert (out / "figures" / name).stat().st_size > 0
    assert main(args + ["--resume", "--no-plots"]) == 0
    assert "0 horizon(s) solved, 2 loaded" in capsys.readouterr().out
    assert main(args) == 2  # the sweep exists: --resume or another --out
    layers = [*BASE, "--horizons", "1,2", "--fixed", "layers", "--layers", "4", "--out",
              str(tmp_path / "fixed"), "--no-plots"]
    assert main(layers) == 0
    report = json.loads((Path(tmp_path) / "fixed" / "turnpike.json").read_text())
    assert [e["layers"] for e in report["horizons"]] == [4, 4]
    assert [e["step"] for e in report["horizons"]] == pytest.approx([0.25, 0.5])
