"""The figures show what they claim: the controls figure draws the norms and entries of
θ_t of each solution against t·h, the layer panels of a classifier use a frame in which
the readout separates the classes along the vertical axis, the history marks the target
and the tolerance, and ``controldl plot`` writes ``controls.png``."""

from __future__ import annotations

import dataclasses

import matplotlib
import numpy as np
import pytest

import controldl as cdl
from controldl import plotting

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def trained():
    """A width-3 ResNet trained on a small ring (a quarter held out) until it separates
    the training set."""
    data = cdl.data.train_test_split(cdl.data.ring(160, seed=0), 0.25, seed=0)
    problem = cdl.Problem(data, width=3, layers=6, horizon=3.0, l2=1e-3)
    solution = cdl.solve(problem, cdl.GradientDescent("adam", lr=0.05), max_iter=250)
    assert solution.train_accuracy >= 0.95, solution.summary()
    return solution


def test_readout_frame_puts_the_separation_on_the_vertical_axis(trained):
    xs = plotting.states(trained)
    frame = plotting.readout_frame(trained, xs[-1])
    assert frame.shape == (3, 3)
    np.testing.assert_allclose(frame.T @ frame, np.eye(3), atol=1e-12)
    W, c = np.asarray(trained.params.W[0]), float(trained.params.c[0])
    np.testing.assert_allclose(frame[:, -1], W / np.linalg.norm(W), atol=1e-12)
    # The last layer: the classes lie on either side of the horizontal plane at -c/‖W‖,
    # exactly as the readout classifies them.
    height = (xs[-1] @ frame)[:, -1]
    above = height > -c / np.linalg.norm(W)
    y = trained.problem.data.y_train
    assert np.mean(above == (y == 1)) == pytest.approx(trained.train_accuracy)
    # ... and none of the other two axes separates them that well.
    for k in range(2):
        other = (xs[-1] @ frame)[:, k]
        cuts = np.quantile(other, np.linspace(0, 1, 41))
        accs = [np.mean((other > s) == (y == 1)) for s in cuts]
        assert max(max(accs), 1 - min(accs)) < trained.train_accuracy


def test_layers_figure_draws_the_separating_plane(trained):
    fig = plotting.layers_figure(trained, layers=[0, 6])
    last = fig.axes[1]
    assert last.name == "3d" and last.collections, "no points in the last panel"
    assert "readout W" in fig._suptitle.get_text()
    plotting.plt.close(fig)


def two_solutions(trained):
    smooth = cdl.Problem(trained.problem.data, width=3, layers=6, horizon=3.0, l2=1e-3,
                         smooth=1.0)
    other = cdl.solve(smooth, cdl.GradientDescent("adam", lr=0.05), max_iter=30,
                      init=trained)
    return {"l2": trained, "l2 + smooth": other}


def test_controls_figure_draws_norms_and_entries_per_label(trained):
    sols = two_solutions(trained)
    fig = plotting.controls_figure(sols)
    ax_a, ax_b = fig.axes[:2]
    for (label, sol), line_a, line_b in zip(sols.items(), ax_a.get_lines(), ax_b.get_lines(),
                                            strict=True):
        A, b = np.asarray(sol.params.A), np.asarray(sol.params.b)
        assert line_a.get_label() == label
        np.testing.assert_allclose(line_a.get_xdata(), np.arange(6) * 0.5)
        np.testing.assert_allclose(line_a.get_ydata(),
                                   [np.sqrt(np.sum(A[t] ** 2)) for t in range(6)])
        np.testing.assert_allclose(line_b.get_ydata(), [np.sqrt(np.sum(b[t] ** 2))
                                                        for t in range(6)])
    maps = [ax for ax in fig.axes[2:] if ax.images]
    assert [ax.get_title().split(":")[0] for ax in maps] == list(sols)
    for ax, sol in zip(maps, sols.values(), strict=True):
        image = np.asarray(ax.images[0].get_array())
        A, b = np.asarray(sol.params.A), np.asarray(sol.params.b)
        assert image.shape == (9 + 3, 6)
        np.testing.assert_allclose(image[1, :], A[:, 0, 1])  # row A12
        np.testing.assert_allclose(image[9 + 2, :], b[:, 2])  # row b3
    plotting.plt.close(fig)
    with pytest.raises(ValueError, match="at least one"):
        plotting.controls_figure({})


def horizontal_lines(ax):
    return [ln for ln in ax.get_lines() if len(set(np.ravel(ln.get_ydata()))) == 1
            and ln.get_linestyle() == "--"]


def test_history_marks_target_and_tolerance_and_reads_a_short_run():
    hist = [{"iteration": i, "time_s": 0.8 + 0.05 * i, "cost": 1.0 / (i + 1),
             "train_accuracy": 0.5, "stationarity": 10.0 ** -i} for i in range(3)]
    fig = plotting.history_figure({"run": hist}, target=0.4, tolerance=1e-2)
    cost_it, cost_time, _, stat = fig.axes
    for ax in (cost_it, cost_time):
        assert [ln.get_ydata()[0] for ln in horizontal_lines(ax)] == [0.4]
    assert [ln.get_ydata()[0] for ln in horizontal_lines(stat)] == [1e-2]
    # A run of under a second: a linear time axis from 0 to just past its end, plain ticks.
    assert cost_time.get_xscale() == "linear"
    lo, hi = cost_time.get_xlim()
    assert lo == 0.0 and hi == pytest.approx(1.05 * 0.9)
    fig.canvas.draw()
    labels = [t.get_text() for t in cost_time.get_xticklabels()]
    assert labels and not any("10^" in s or "×" in s or "e" in s for s in labels), labels
    plotting.plt.close(fig)


def test_decision_regions_names_the_solver_and_keeps_class_colours_out_of_the_legend(trained):
    sol = dataclasses.replace(trained, solver={**trained.solver, "label": "adam-run"})
    fig = plotting.decision_regions_figure(sol, resolution=20)
    ax = fig.axes[0]
    assert "adam-run" in ax.get_title()
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["train", "test"]
    colours = {matplotlib.colors.to_hex(h.get_color()) for h in legend.legend_handles}
    assert not colours & set(plotting.CLASS_COLORS), colours
    plotting.plt.close(fig)


def test_plot_command_writes_controls_png(trained, tmp_path):
    from controldl.cli import main

    trained.save(tmp_path / "sol")
    assert main(["plot", str(tmp_path / "sol")]) == 0
    assert (tmp_path / "sol" / "figures" / "controls.png").stat().st_size > 0


def test_controls_and_history_take_a_solution_or_a_list(trained):
    """The calls a user tries first: ``controls_figure(solution)`` and
    ``history_figure([s1, s2])``, labelled by what each solver was called."""
    fig = plotting.controls_figure(trained)
    assert [ln.get_label() for ln in fig.axes[0].get_lines()] == ["adam"]
    plotting.plt.close(fig)
    again = dataclasses.replace(trained, history=trained.history[:5])
    fig = plotting.history_figure([trained, again])
    lines = fig.axes[0].get_lines()
    assert [ln.get_label() for ln in lines] == ["adam", "adam (2)"]
    np.testing.assert_allclose(lines[1].get_ydata(), [h["cost"] for h in again.history])
    plotting.plt.close(fig)
    with pytest.raises(ValueError, match="a Solution, a list of them"):
        plotting.history_figure([trained, "adam"])


def test_three_features_get_every_figure_on_a_principal_plane(tmp_path):
    """Inputs of n = 3: decision regions and the deformed grid are drawn on the plane
    through the inputs' mean along their two principal directions (said in the title),
    and ``save_solution_figures`` writes all five figures."""
    data = cdl.data.spheres(60, seed=0, dim=3)
    sol = cdl.solve(cdl.Problem(data, layers=3), "adam", max_iter=3)
    plane = plotting.input_plane(sol)
    X = data.X_train
    np.testing.assert_allclose(plane.origin, X.mean(axis=0))
    np.testing.assert_allclose(plane.basis.T @ plane.basis, np.eye(2), atol=1e-12)
    uv = plane.coordinates(X)
    np.testing.assert_allclose(plane.coordinates(plane.points(uv)), uv, atol=1e-12)
    assert np.var(uv[:, 0]) >= np.var((X - X.mean(axis=0)) @ np.array([1.0, 0, 0])) - 1e-12
    fig = plotting.decision_regions_figure(sol, resolution=10)
    assert fig is not None and "slice of R^3" in fig.axes[0].get_title()
    plotting.plt.close(fig)
    written = plotting.save_solution_figures(sol, tmp_path / "figures")
    assert sorted(p.name for p in written) == ["controls.png", "decision_regions.png",
                                               "deformed_grid.png", "history.png",
                                               "layers.png"]

def test_history_draws_mini_batch_runs_per_epoch_with_test_accuracy_against_time():
    mini = [{"iteration": 4 * e, "epoch": float(e), "time_s": 1.0 + e, "cost": 1.0 / (e + 1),
             "train_accuracy": 0.5 + 0.1 * e, "test_accuracy": 0.45 + 0.1 * e}
            for e in range(4)]
    full = [{"iteration": i, "epoch": float(i), "time_s": 0.5 + 0.3 * i, "cost": 0.9 ** i,
             "train_accuracy": 0.6} for i in range(4)]
    fig = plotting.history_figure({"adam": mini, "lbfgs": full})
    cost, cost_time, acc, acc_time = fig.axes
    assert cost.get_xlabel() == "epoch" and acc.get_xlabel() == "epoch"
    assert "wall time" in acc_time.get_xlabel()
    np.testing.assert_allclose(cost.get_lines()[0].get_xdata(), [0, 1, 2, 3])  # not 0, 4, …
    dashed = [ln for ln in acc.get_lines() if ln.get_linestyle() == "--"]
    assert [ln.get_label() for ln in dashed] == ["adam (test)"]
    np.testing.assert_allclose(dashed[0].get_ydata(), [0.45, 0.55, 0.65, 0.75])
    timed = [ln for ln in acc_time.get_lines() if ln.get_linestyle() == "--"]
    np.testing.assert_allclose(timed[0].get_xdata(), [1, 2, 3, 4])
    plotting.plt.close(fig)
    only_full = plotting.history_figure({"lbfgs": full})  # full batch: per iteration
    assert only_full.axes[0].get_xlabel() == "iteration" and len(only_full.axes) == 3
    plotting.plt.close(only_full)
