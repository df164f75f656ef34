"""Noise: the seed post's "more natural" ring, with blurred inputs and mislabelled points,
and what each regularizer does to the dynamics and to the test accuracy.

Claim tested (the seed post, "Noisy vs noiseless data"): fitting every noisy label needs
an unnecessarily complex dynamics; regularization terms of the control problem select
simpler dynamics, which should generalize better. Compared: no regularization, the L²
penalty, the L¹ penalty (sparse controls), the smoothness penalty (controls that vary
slowly across layers) and the running loss (separate early, then rest).

Measured for each regularizer, over several seeds: the training accuracy, the accuracy on
fresh samples of the same noisy distribution (labels flipped too, so at most about
``1 − flip``), the accuracy on fresh samples with their true labels (input noise only),
and descriptors of the dynamics: the control energy ``h Σ_t ‖θ_t‖²``, the total variation
``Σ_t ‖θ_{t+1} − θ_t‖``, the share of near-zero control entries, the mean path length of
the states ``Σ_t ‖x_i(t+1) − x_i(t)‖`` and ``max_t h‖A_t‖₂``. Every network is trained by
the same solver for the same number of iterations.
"""

from __future__ import annotations

import sys

import matplotlib.pyplot as plt
import numpy as np

import controldl as cdl
from controldl import plotting
from experiments import common

NAME = "noise"


def sizes(quick: bool) -> dict:
    base = dict(noise=0.1, flip=0.1, width=3, horizon=5.0)
    if quick:
        return dict(base, n=120, fresh=1000, layers=6, iters=80)
    return dict(base, n=400, fresh=5000, layers=20, iters=1000)


REGULARIZERS = {  # name: cost weights (docs/design.md's config keys)
    "none": {},
    "l2": {"l2": 1e-2},
    "l1": {"l1": 1e-2},
    "smooth": {"smooth": 1e-1},
    "running": {"running": 1.0},
}


def dynamics(sol: cdl.Solution) -> dict:
    """Descriptors of the controls and of the flow of the training points."""
    A, b = np.asarray(sol.params.A), np.asarray(sol.params.b)
    theta = np.concatenate([A.reshape(len(A), -1), b], axis=1)
    h = sol.problem.h
    xs = sol.states(sol.problem.data.X_train)
    steps = np.linalg.norm(np.diff(xs, axis=0), axis=-1)  # (L, N)
    return {
        "control_energy": float(h * np.sum(theta ** 2)),
        "control_variation": float(np.sum(np.linalg.norm(np.diff(theta, axis=0), axis=1))),
        "near_zero_share": float(np.mean(np.abs(theta) < 1e-3 * np.abs(theta).max())),
        "path_length": float(np.mean(np.sum(steps, axis=0))),
        "control_norms": np.linalg.norm(theta, axis=1).tolist(),
    }


def body(run: common.Run) -> None:
    S = sizes(run.quick)
    per_seed: dict[str, list[dict]] = {k: [] for k in REGULARIZERS}
    keep: dict[str, cdl.Solution] = {}
    for seed in run.seeds:
        data = cdl.data.ring(S["n"], seed=seed, noise=S["noise"], flip=S["flip"])
        fresh = cdl.data.ring(S["fresh"], seed=10_000 + seed, noise=S["noise"], flip=S["flip"])
        clean = cdl.data.ring(S["fresh"], seed=20_000 + seed, noise=S["noise"])
        for key, weights in REGULARIZERS.items():
            problem = cdl.Problem(data, width=S["width"], layers=S["layers"],
                                  horizon=S["horizon"], **weights)
            sol = cdl.solve(problem, cdl.GradientDescent("adam", lr=0.05, schedule="cosine"),
                            seed=seed, max_iter=S["iters"])
            rec = common.solution_record(sol)
            rec.update(seed=seed, fresh_accuracy=common.accuracy_on(sol, fresh),
                       true_label_accuracy=common.accuracy_on(sol, clean), **dynamics(sol))
            per_seed[key].append(rec)
            run.log(f"seed {seed} {key:8s}: train {rec['train_accuracy']:.3f}, fresh "
                    f"{rec['fresh_accuracy']:.3f}, true labels {rec['true_label_accuracy']:.3f}"
                    f", energy {rec['control_energy']:.3g}, path {rec['path_length']:.3g}")
            if seed == run.seeds[0]:
                keep[key] = sol

    metrics = ("train_accuracy", "fresh_accuracy", "true_label_accuracy", "cost",
               "control_energy", "control_variation", "near_zero_share", "path_length",
               "max_lipschitz")
    summary = {k: {m: common.stats([r[m] for r in recs]) for m in metrics}
               for k, recs in per_seed.items()}

    seed0 = run.seeds[0]
    n = len(REGULARIZERS)
    fig, axes = plt.subplots(1, n, figsize=(3.1 * n, 3.5))
    for ax, (key, sol) in zip(axes, keep.items(), strict=True):
        r = per_seed[key][0]
        common.decision_panel(ax, sol, lo=-1.4, hi=1.4,
                              points=(sol.problem.data.X_train, sol.problem.data.y_train),
                              title=f"{key}: train {r['train_accuracy']:.3f}\nfresh "
                                    f"{r['fresh_accuracy']:.3f}, true "
                                    f"{r['true_label_accuracy']:.3f}")
    fig.suptitle(f"Noisy ring (noise {S['noise']}, {S['flip']:.0%} labels flipped), seed {seed0}")
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    run.save_figure(fig, "decision_regions.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    for k, (key, sol) in enumerate(keep.items()):
        norms = per_seed[key][0]["control_norms"]
        ax.plot(np.arange(len(norms)) * sol.problem.h, norms, "o-", ms=3, color=f"C{k}",
                label=key)
    ax.set_xlabel("t")
    ax.set_ylabel("‖θ_t‖")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Control profiles by regularizer")
    fig.tight_layout()
    run.save_figure(fig, "control_profiles.png")

    L = S["layers"]
    panels = [0, L // 3, 2 * L // 3, L]
    fig = plt.figure(figsize=(2.6 * len(panels), 2.5 * n))
    for r, (key, sol) in enumerate(keep.items()):
        xs = sol.states(sol.problem.data.X_train)
        colors = [plotting.CLASS_COLORS[int(k)] for k in sol.problem.data.y_train]
        for c, t in enumerate(panels):
            ax = fig.add_subplot(n, len(panels), r * len(panels) + c + 1, projection="3d")
            ax.scatter(xs[t][:, 0], xs[t][:, 1], xs[t][:, 2], c=colors, s=2, depthshade=False)
            ax.set_title(f"{key}, layer {t}", fontsize=8)
            ax.tick_params(labelsize=5)
    fig.suptitle("The training points through the layers, by regularizer")
    fig.tight_layout()
    run.save_figure(fig, "dynamics.png")

    run.write_json({"sizes": S, "regularizers": REGULARIZERS, "per_seed": per_seed,
                    "summary": summary, "solver": "gd/adam lr 0.05 cosine"})

    rows = []
    for key in REGULARIZERS:
        s = summary[key]
        w = ", ".join(f"{k} {v:g}" for k, v in REGULARIZERS[key].items()) or "—"
        rows.append([key, w, common.pm(s["train_accuracy"], ".3f"),
                     common.pm(s["fresh_accuracy"], ".3f"),
                     common.pm(s["true_label_accuracy"], ".3f"),
                     common.pm(s["control_energy"], ".3g"),
                     common.pm(s["control_variation"], ".3g"),
                     common.pm(s["near_zero_share"], ".2f"), common.pm(s["path_length"], ".3g"),
                     common.pm(s["max_lipschitz"], ".2f")])
    table = common.md_table(["regularizer", "weight", "train acc", "fresh acc (noisy labels)",
                             "fresh acc (true labels)", "h Σ‖θ_t‖²", "Σ‖θ_{t+1} − θ_t‖",
                             "near-zero share", "path length", "max h‖A_t‖₂"], rows)
    best = max(REGULARIZERS, key=lambda k: summary[k]["true_label_accuracy"]["mean"] or 0)
    note = (f"\n\nHighest accuracy on fresh points with their true labels: **{best}** "
            f"({common.pm(summary[best]['true_label_accuracy'], '.3f')}); without "
            f"regularization {common.pm(summary['none']['true_label_accuracy'], '.3f')}.")
    settings = (f"ring({S['n']}, noise {S['noise']}, flip {S['flip']}) for seed s in "
                f"{run.seeds}; fresh samples: {S['fresh']} points of the same distribution "
                f"(seed 10000 + s) and {S['fresh']} with true labels (seed 20000 + s); ResNet "
                f"width {S['width']}, L = {S['layers']}, T = {S['horizon']:g}, tanh, logistic "
                f"loss; Adam (lr 0.05, cosine schedule), {S['iters']} iterations from the "
                "library's normal initialization. Mean ± standard deviation over seeds.")
    run.write_markdown(common.experiment_markdown(
        "Noise and regularization", "Regularization selects simpler dynamics on noisy data; "
        "which regularizer generalizes best?", settings, table + note,
        [("decision_regions.png", "Decision regions by regularizer"),
         ("control_profiles.png", "‖θ_t‖ across the layers"),
         ("dynamics.png", "The flow of the training points")], run))


def main(argv: list[str] | None = None) -> int:
    return common.main_wrapper(NAME, __doc__, body, argv)


if __name__ == "__main__":
    sys.exit(main())
