"""Layer by layer: the seed post's pictures of the data carried through the hidden layers.

Claims tested (the seed post, "Visualizing Deep Learning"):

1. A width-3 multilayer perceptron makes the ring linearly separable, but its states lose
   a dimension: the final states collapse onto a plane (or a line). Measured by the
   singular values of the centred final states (smallest one reported).
2. A width-2 ResNet separates the spiral; on the ring it is a homeomorphism of the plane
   and "cannot untie the tie" (the training accuracy can still be high: see the
   ``topology`` experiment for the honest test on fresh samples).
3. A width-3 ResNet separates both; the flow is smooth layer to layer.
4. Two initializations give two different dynamics that both solve the problem.

Every network is trained by the library (``controldl.solve`` with L-BFGS from optax; Adam
in quick mode) and
drawn with ``controldl.plotting`` (states at chosen layers, a deformed grid, decision
regions). Fresh samples of the same distribution measure generalization.
"""

from __future__ import annotations

import sys

import matplotlib.pyplot as plt
import numpy as np

import controldl as cdl
from controldl import plotting
from experiments import common

NAME = "layers"
DATASETS = {"ring": cdl.data.ring, "spiral": cdl.data.spiral}
COLLAPSE_RATIO = 0.05  # σ_min / σ_max below this: the states lie (nearly) on a subspace


def sizes(quick: bool) -> dict:
    if quick:
        return dict(n=120, fresh=1000, mlp_layers=3, layers=10, horizon=5.0, iters=100,
                    panels=[0, 3, 6, 10], l2=1e-3)
    return dict(n=400, fresh=4000, mlp_layers=5, layers=50, horizon=10.0, iters=400,
                panels=[0, 10, 20, 30, 40, 50], l2=1e-3)


def train(run: common.Run, data: cdl.Dataset, model: str, width: int, layers: int,
          horizon: float, seed: int, S: dict) -> cdl.Solution:
    problem = cdl.Problem(data, model=model, width=width, layers=layers, horizon=horizon,
                          l2=S["l2"])
    solver, _ = common.training_solver(run.quick)
    sol = cdl.solve(problem, solver, seed=seed, max_iter=S["iters"])
    run.log(f"{data.source['name']} {model} width {width}: {sol.summary()[:110]}")
    return sol


def record(sol: cdl.Solution, fresh: cdl.Dataset) -> dict:
    xs = sol.states(sol.problem.data.X_train)
    sv = common.singular_values_centred(xs[-1])
    rec = common.solution_record(sol)
    rec.update(fresh_accuracy=common.accuracy_on(sol, fresh),
               final_singular_values=sv.tolist(),
               smallest_singular_value=float(sv[-1]),
               singular_ratio=float(sv[-1] / sv[0]),
               collapsed=bool(sv[-1] / sv[0] < COLLAPSE_RATIO),
               effective_dimension=int(np.sum(sv / sv[0] >= COLLAPSE_RATIO)),
               singular_ratio_by_layer=[float(s[-1] / s[0]) for s in
                                        (common.singular_values_centred(x) for x in xs)])
    return rec


def two_inits_figure(sols: list[cdl.Solution], seeds: list[int], panels: list[int]):
    fig = plt.figure(figsize=(3.0 * len(panels), 3.0 * len(sols)))
    for r, (sol, seed) in enumerate(zip(sols, seeds, strict=True)):
        xs = sol.states(sol.problem.data.X_train)
        colors = [plotting.CLASS_COLORS[int(k)] for k in sol.problem.data.y_train]
        for c, t in enumerate(panels):
            ax = fig.add_subplot(len(sols), len(panels), r * len(panels) + c + 1,
                                 projection="3d")
            ax.scatter(xs[t][:, 0], xs[t][:, 1], xs[t][:, 2], c=colors, s=3,
                       depthshade=False)
            ax.set_title(f"init seed {seed}, layer {t}", fontsize=8)
            ax.tick_params(labelsize=5)
    fig.suptitle("ResNet width 3 on the ring: two initializations, two dynamics")
    fig.tight_layout()
    return fig


def body(run: common.Run) -> None:
    S = sizes(run.quick)
    seed = run.seeds[0]
    seed_b = run.seeds[1] if len(run.seeds) > 1 else seed + 1
    runs: dict[str, dict] = {}
    sols: dict[str, cdl.Solution] = {}
    for dname, make in DATASETS.items():
        data = make(S["n"], seed=seed)
        fresh = make(S["fresh"], seed=10_000 + seed)
        for model, width, L, T in (("mlp", 3, S["mlp_layers"], S["mlp_layers"] * 1.0),
                                   ("resnet", 2, S["layers"], S["horizon"]),
                                   ("resnet", 3, S["layers"], S["horizon"])):
            key = f"{dname}/{model}{width}"
            sols[key] = train(run, data, model, width, L, T, seed, S)
            runs[key] = record(sols[key], fresh)
        if dname == "ring":
            key = f"ring/resnet3/seed{seed_b}"
            sols[key] = train(run, data, "resnet", 3, S["layers"], S["horizon"], seed_b, S)
            runs[key] = record(sols[key], fresh)

    # Figures: states through the layers, the deformed grid, decision regions.
    for key, sol in sols.items():
        if "/seed" in key:
            continue
        L = sol.problem.layers
        panels = [t for t in S["panels"] if t <= L] if sol.problem.model == "resnet" \
            else list(range(L + 1))
        run.save_figure(plotting.layers_figure(sol, panels),
                        f"layers_{key.replace('/', '_')}.png")
    for key in ("spiral/resnet2", "ring/resnet3", "ring/resnet2"):
        L = sols[key].problem.layers
        run.save_figure(plotting.deformed_grid_figure(sols[key], layers=[0, L // 2, L]),
                        f"grid_{key.replace('/', '_')}.png")
    fig, axes = plt.subplots(2, 3, figsize=(9, 6.2))
    for r, dname in enumerate(DATASETS):
        for c, arch in enumerate(("mlp3", "resnet2", "resnet3")):
            key = f"{dname}/{arch}"
            data = sols[key].problem.data
            common.decision_panel(axes[r, c], sols[key], points=(data.X_train, data.y_train),
                                  title=f"{key}: train {runs[key]['train_accuracy']:.3f}, "
                                        f"fresh {runs[key]['fresh_accuracy']:.3f}")
    fig.suptitle("Decision regions in the input plane")
    fig.tight_layout()
    run.save_figure(fig, "decision_regions.png")
    pair = [sols["ring/resnet3"], sols[f"ring/resnet3/seed{seed_b}"]]
    panels = [0, S["layers"] // 4, S["layers"] // 2, 3 * S["layers"] // 4, S["layers"]]
    run.save_figure(two_inits_figure(pair, [seed, seed_b], panels), "two_initializations.png")

    # Two initializations: how different are the two solutions?
    a, b = pair
    theta = lambda s: np.concatenate([np.ravel(s.params.A), np.ravel(s.params.b)])  # noqa: E731
    xa, xb = a.states(a.problem.data.X_train), b.states(b.problem.data.X_train)
    mid = S["layers"] // 2
    two = {
        "seeds": [seed, seed_b],
        "both_train_accuracy": [a.train_accuracy, b.train_accuracy],
        "both_fresh_accuracy": [runs["ring/resnet3"]["fresh_accuracy"],
                                runs[f"ring/resnet3/seed{seed_b}"]["fresh_accuracy"]],
        "relative_control_difference": float(np.linalg.norm(theta(a) - theta(b))
                                             / max(np.linalg.norm(theta(a)),
                                                   np.linalg.norm(theta(b)))),
        "rms_state_difference_mid": float(np.sqrt(np.mean(np.sum((xa[mid] - xb[mid]) ** 2, -1)))),
        "rms_state_difference_final": float(np.sqrt(np.mean(np.sum((xa[-1] - xb[-1]) ** 2,
                                                                   -1)))),
        "rms_state_spread_final": float(np.sqrt(np.mean(np.sum(
            (xa[-1] - xa[-1].mean(0)) ** 2, -1)))),
    }
    results = {"sizes": S, "collapse_ratio_threshold": COLLAPSE_RATIO, "runs": runs,
               "two_initializations": two}
    run.write_json(results)

    rows = []
    for key, r in runs.items():
        rows.append([key, common.fmt(r["cost"], ".3g"), common.fmt(r["train_accuracy"], ".4f"),
                     common.fmt(r["fresh_accuracy"], ".4f"), common.fmt(r["max_lipschitz"], ".3f"),
                     ", ".join(f"{v:.2g}" for v in r["final_singular_values"]),
                     f"{'yes' if r['collapsed'] else 'no'} (dimension "
                     f"{r['effective_dimension']})"])
    table = common.md_table(["network", "cost", "train acc", "fresh acc", "max h‖A_t‖₂",
                             "singular values of centred x(L)", "collapsed"], rows)
    mlp = runs["ring/mlp3"]
    notes = [
        f"- MLP width 3 on the ring: singular values of the centred final states "
        f"{', '.join(f'{v:.3g}' for v in mlp['final_singular_values'])} "
        f"(smallest/largest = {mlp['singular_ratio']:.2e}): "
        + (f"the states have collapsed onto "
           f"{'a line' if mlp['effective_dimension'] == 1 else 'a plane'} "
           f"(effective dimension {mlp['effective_dimension']} of 3)."
           if mlp["collapsed"] else "no collapse at this threshold."),
        f"- ResNet width 3 on the ring, smallest/largest singular value of x(L): "
        f"{runs['ring/resnet3']['singular_ratio']:.3f} (a genuinely 3-D cloud)."
        if runs["ring/resnet3"]["singular_ratio"] >= COLLAPSE_RATIO else
        f"- ResNet width 3 on the ring: smallest/largest singular value "
        f"{runs['ring/resnet3']['singular_ratio']:.3f}.",
        f"- ResNet width 2 on the ring: training accuracy "
        f"{runs['ring/resnet2']['train_accuracy']:.4f}, fresh samples "
        f"{runs['ring/resnet2']['fresh_accuracy']:.4f} (max h‖A_t‖₂ = "
        f"{runs['ring/resnet2']['max_lipschitz']:.3f}); width 3: fresh "
        f"{runs['ring/resnet3']['fresh_accuracy']:.4f}.",
        f"- Two initializations (seeds {seed}, {seed_b}) of the width-3 ResNet on the ring: "
        f"training accuracies {two['both_train_accuracy'][0]:.4f} and "
        f"{two['both_train_accuracy'][1]:.4f}; the controls differ by "
        f"{100 * two['relative_control_difference']:.0f} % (relative norm) and the final "
        f"states by an RMS distance of {two['rms_state_difference_final']:.3g} (the cloud's "
        f"RMS radius is {two['rms_state_spread_final']:.3g}).",
    ]
    settings = (f"{S['n']} training points per data set (seed {seed}), {S['fresh']} fresh "
                f"points of the same distribution; MLP width 3 with {S['mlp_layers']} layers; "
                f"ResNets with L = {S['layers']}, T = {S['horizon']:g}; tanh, logistic loss, "
                f"l2 = {S['l2']:g}; {common.training_solver(run.quick)[1]}, {S['iters']} "
                f"iterations from the "
                f"library's normal initialization. 'Collapsed': smallest/largest singular "
                f"value of the centred final states below {COLLAPSE_RATIO}; effective dimension: "
                f"the number of singular values at least {COLLAPSE_RATIO} × the largest.")
    figs = [("layers_ring_mlp3.png", "MLP width 3 on the ring, every layer"),
            ("layers_ring_resnet2.png", "ResNet width 2 on the ring"),
            ("layers_spiral_resnet2.png", "ResNet width 2 on the spiral"),
            ("layers_ring_resnet3.png", "ResNet width 3 on the ring"),
            ("layers_spiral_resnet3.png", "ResNet width 3 on the spiral"),
            ("grid_spiral_resnet2.png", "A grid of the plane deformed by the width-2 flow "
                                        "(spiral)"),
            ("grid_ring_resnet3.png", "The grid carried by the width-3 flow (ring)"),
            ("decision_regions.png", "Decision regions"),
            ("two_initializations.png", "Two initializations, two dynamics")]
    run.write_markdown(common.experiment_markdown(
        "Layer by layer", "The seed post's pictures: an MLP loses a dimension, a width-2 "
        "ResNet separates the spiral but not (truly) the ring, width 3 separates both, and "
        "different initializations give different dynamics that all solve the problem.",
        settings, table + "\n\n" + "\n".join(notes), figs, run))


def main(argv: list[str] | None = None) -> int:
    return common.main_wrapper(NAME, __doc__, body, argv, default_seeds=(0, 1),
                               quick_seeds=(0, 1))


if __name__ == "__main__":
    sys.exit(main())
