"""Topology, honestly: can a width-2 ResNet separate the ring?

Claims tested:

1. Without a bound on the layers, a width-2 ResNet with large steps can make its layers
   non-invertible (``max_t h·‖A_t‖₂ > 1``) and fold the plane, and then it separates the
   ring anyway — fresh samples included. Folding is measured directly: the fraction of a
   grid of the input square where ``det ∂x(L)/∂x(0) ≤ 0`` (an injective map of the plane
   cannot change the sign of its Jacobian determinant).
2. With ``lipschitz_bound = 0.9`` (``h·‖A_t‖₂ ≤ 0.9``, every layer invertible, the network
   a homeomorphism of the plane) the training accuracy can still be high — a finite sample
   leaves gaps the flow squeezes through — but the accuracy on 5000 fresh samples of the
   same distribution cannot reach 100 %, and the cost stays higher than with width 3.
3. Width 3 with the same bound separates the ring, fresh samples included.

Done-when target (issue 6): on a 600-point ring with the bound 0.9, L = 50, T = 10,
l2 = 1e-3, width 2 stays below 99.5 % on 5000 fresh samples while width 3 reaches at
least 99.8 %. Checked for every seed, twice: with the solver of ``controldl train``'s
defaults (Adam, lr 0.01, 2000 iterations; the ``-default`` rows) and with L-BFGS, which
drives the cost further down — and, with it, squeezes the flow further through the
gaps of the sample.
"""

from __future__ import annotations

import sys

import matplotlib.pyplot as plt
import numpy as np

import controldl as cdl
from controldl import plotting
from experiments import common

NAME = "topology"
TARGET_W2 = 0.995
TARGET_W3 = 0.998


def configs(quick: bool) -> dict[str, dict]:
    L, T = (10, 5.0) if quick else (50, 10.0)
    Lf = 5 if quick else 10
    out: dict[str, dict] = {
        "w2-free-big-steps": dict(width=2, layers=Lf, horizon=10.0, lipschitz_bound=None),
        "w2-free": dict(width=2, layers=L, horizon=T, lipschitz_bound=None),
        "w2-lip0.9": dict(width=2, layers=L, horizon=T, lipschitz_bound=0.9),
        "w3-lip0.9": dict(width=3, layers=L, horizon=T, lipschitz_bound=0.9),
    }
    if not quick:  # the same two networks trained as `controldl train` does by default
        out["w2-lip0.9-default"] = dict(out["w2-lip0.9"], solver="default")
        out["w3-lip0.9-default"] = dict(out["w3-lip0.9"], solver="default")
    return out


def sizes(quick: bool) -> dict:
    if quick:
        return dict(n=150, fresh=2000, iters=150, l2=1e-3, grid=41)
    return dict(n=600, fresh=5000, iters=500, l2=1e-3, grid=121)


def fresh_targets(per_seed: dict[str, list[dict]], suffix: str) -> dict:
    """The done-when checks on the bounded networks ``w2-lip0.9{suffix}`` and
    ``w3-lip0.9{suffix}``, every seed: width 2 below ``TARGET_W2`` on fresh samples,
    width 3 at least ``TARGET_W3``, and the width-2 cost above width 3's."""
    w2_runs, w3_runs = per_seed[f"w2-lip0.9{suffix}"], per_seed[f"w3-lip0.9{suffix}"]
    w2 = [r["fresh_accuracy"] for r in w2_runs]
    w3 = [r["fresh_accuracy"] for r in w3_runs]
    return {
        "width2_fresh_below_0.995_every_seed": bool(all(a < TARGET_W2 for a in w2)),
        "width3_fresh_at_least_0.998_every_seed": bool(all(a >= TARGET_W3 for a in w3)),
        "width2_cost_above_width3_every_seed": bool(all(
            a["cost"] > b["cost"] for a, b in zip(w2_runs, w3_runs, strict=True))),
        "width2_fresh": w2, "width3_fresh": w3,
    }


def body(run: common.Run) -> None:
    S = sizes(run.quick)
    C = configs(run.quick)
    grid = common.grid_points(-1.2, 1.2, S["grid"])
    per_seed: dict[str, list[dict]] = {k: [] for k in C}
    keep: dict[str, cdl.Solution] = {}
    fresh_sets = {}
    for seed in run.seeds:
        data = cdl.data.ring(S["n"], seed=seed)
        fresh = cdl.data.ring(S["fresh"], seed=10_000 + seed)
        fresh_sets[seed] = fresh
        for key, cfg in C.items():
            options = {k: v for k, v in cfg.items() if k != "solver"}
            problem = cdl.Problem(data, l2=S["l2"], **options)
            if cfg.get("solver") == "default":  # controldl train's defaults
                sol = cdl.solve(problem, cdl.GradientDescent(), seed=seed)
            else:
                sol = cdl.solve(problem, common.training_solver(run.quick)[0], seed=seed,
                                max_iter=S["iters"])
            dets = common.flow_jacobian_dets(sol, grid)
            lips = cdl.problem.lipschitz_constants(problem.formulation, sol.params)
            rec = common.solution_record(sol)
            rec.update(seed=seed, fresh_accuracy=common.accuracy_on(sol, fresh),
                       layers_above_1=int(np.sum(lips > 1.0)),
                       fold_fraction=float(np.mean(dets <= 0)),
                       min_jacobian_det=float(dets.min()))
            per_seed[key].append(rec)
            run.log(f"seed {seed} {key}: cost {rec['cost']:.4g}, train "
                    f"{rec['train_accuracy']:.4f}, fresh {rec['fresh_accuracy']:.4f}, max "
                    f"h|A| {rec['max_lipschitz']:.3f}, fold {rec['fold_fraction']:.3f}")
            if seed == run.seeds[0]:
                keep[key] = sol

    summary = {}
    for key, recs in per_seed.items():
        summary[key] = {m: common.stats([r[m] for r in recs]) for m in
                        ("train_accuracy", "fresh_accuracy", "cost", "max_lipschitz",
                         "fold_fraction", "layers_above_1", "iterations", "wall_time_s")}
    done = {
        "setting": "ring(600), lipschitz_bound 0.9, L = 50, T = 10, l2 = 1e-3, 5000 fresh",
        "applies": not run.quick,
        "solver": common.training_solver(run.quick)[1],
        **fresh_targets(per_seed, ""),
    }
    if "w2-lip0.9-default" in per_seed:
        done["cli_default_solver"] = {
            "solver": "Adam (optax), lr 0.01, 2000 iterations (controldl train's defaults)",
            **fresh_targets(per_seed, "-default"),
        }

    # Figures: decision regions with the misclassified fresh points; deformed grids.
    seed0 = run.seeds[0]
    shown = {k: v for k, v in keep.items() if not k.endswith("-default")}
    fig, axes = plt.subplots(1, len(shown), figsize=(3.4 * len(shown), 3.7))
    for ax, (key, sol) in zip(axes, shown.items(), strict=True):
        wrong = common.misclassified(sol, fresh_sets[seed0])
        r = per_seed[key][0]
        common.decision_panel(ax, sol, lo=-1.2, hi=1.2,
                              points=(sol.problem.data.X_train, sol.problem.data.y_train),
                              wrong=wrong,
                              title=f"{key} (L={sol.problem.layers})\ntrain "
                                    f"{r['train_accuracy']:.3f}, fresh {r['fresh_accuracy']:.4f}"
                                    f"\nmax h‖A‖₂ "
                                    f"{r['max_lipschitz']:.2f}, fold {r['fold_fraction']:.2f}")
    fig.suptitle(f"Decision regions (seed {seed0}); red crosses: misclassified fresh samples")
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    run.save_figure(fig, "decision_regions.png")
    for key in ("w2-free-big-steps", "w2-lip0.9", "w3-lip0.9"):
        sol = keep[key]
        L = sol.problem.layers
        run.save_figure(plotting.deformed_grid_figure(sol, layers=[0, L // 2, L]),
                        f"grid_{key}.png")
    run.save_figure(plotting.layers_figure(keep["w2-lip0.9"]), "layers_w2-lip0.9.png")

    results = {"sizes": S, "configs": C, "per_seed": per_seed, "summary": summary,
               "done_when": done, "solver": common.training_solver(run.quick)[1]}
    run.write_json(results)

    rows = []
    for key in C:
        s = summary[key]
        cfg = C[key]
        rows.append([key + (" (Adam)" if cfg.get("solver") == "default" else ""),
                     f"{cfg['width']}", f"{cfg['layers']}", f"{cfg['horizon']:g}",
                     common.fmt(cfg["lipschitz_bound"]),
                     common.pm(s["train_accuracy"], ".4f"), common.pm(s["fresh_accuracy"], ".4f"),
                     f"{common.fmt(s['fresh_accuracy']['min'], '.4f')}",
                     common.pm(s["cost"], ".3g"), common.pm(s["max_lipschitz"], ".3f"),
                     common.pm(s["fold_fraction"], ".3f")])
    table = common.md_table(["network", "width", "L", "T", "bound", "train acc", "fresh acc",
                             "worst fresh acc", "cost", "max h‖A_t‖₂", "fold fraction"], rows)
    per_seed_rows = []
    for key in C:
        for r in per_seed[key]:
            per_seed_rows.append([key, r["seed"], common.fmt(r["train_accuracy"], ".4f"),
                                  common.fmt(r["fresh_accuracy"], ".4f"),
                                  common.fmt(r["cost"], ".4g"),
                                  common.fmt(r["max_lipschitz"], ".3f"),
                                  r["layers_above_1"], common.fmt(r["fold_fraction"], ".3f"),
                                  r["status"]])
    seed_table = common.md_table(["network", "seed", "train acc", "fresh acc", "cost",
                                  "max h‖A_t‖₂", "layers with h‖A_t‖₂ > 1", "fold fraction",
                                  "status"], per_seed_rows)
    big = summary["w2-free-big-steps"]
    h_big = C["w2-free-big-steps"]["horizon"] / C["w2-free-big-steps"]["layers"]
    notes = [
        f"- **Without a bound, big steps** (h = {h_big:g}):"
        f" max h‖A_t‖₂ = {common.pm(big['max_lipschitz'], '.2f')}, the flow folds "
        f"{common.pm(big['fold_fraction'], '.3f')} of the grid, fresh accuracy "
        f"{common.pm(big['fresh_accuracy'], '.4f')}.",
        f"- **Without a bound, L = {C['w2-free']['layers']}**: max h‖A_t‖₂ = "
        f"{common.pm(summary['w2-free']['max_lipschitz'], '.3f')}, fold fraction "
        f"{common.pm(summary['w2-free']['fold_fraction'], '.3f')}, fresh accuracy "
        f"{common.pm(summary['w2-free']['fresh_accuracy'], '.4f')}.",
        f"- **Width 2, bound 0.9**: training accuracy "
        f"{common.pm(summary['w2-lip0.9']['train_accuracy'], '.4f')}, fresh "
        f"{common.pm(summary['w2-lip0.9']['fresh_accuracy'], '.4f')} (best seed "
        f"{common.fmt(summary['w2-lip0.9']['fresh_accuracy']['max'], '.4f')}), cost "
        f"{common.pm(summary['w2-lip0.9']['cost'], '.3g')} against "
        f"{common.pm(summary['w3-lip0.9']['cost'], '.3g')} for width 3.",
        f"- **Width 3, bound 0.9**: fresh accuracy "
        f"{common.pm(summary['w3-lip0.9']['fresh_accuracy'], '.4f')} (worst seed "
        f"{common.fmt(summary['w3-lip0.9']['fresh_accuracy']['min'], '.4f')}).",
    ]
    if not run.quick:
        notes.append(
            f"- Done-when target with {done['solver']} ({S['iters']} iterations): width 2 "
            f"below {TARGET_W2:.1%} on every seed: "
            f"**{common.fmt(done['width2_fresh_below_0.995_every_seed'])}**; width 3 at least "
            f"{TARGET_W3:.1%} on every seed: "
            f"**{common.fmt(done['width3_fresh_at_least_0.998_every_seed'])}**; width-2 cost "
            f"above width 3 on every seed: "
            f"**{common.fmt(done['width2_cost_above_width3_every_seed'])}**.")
        dd = done["cli_default_solver"]
        notes.append(
            f"- Done-when target with `controldl train`'s default solver ({dd['solver']}; "
            f"the `-default` rows): width 2 below {TARGET_W2:.1%} on every seed: "
            f"**{common.fmt(dd['width2_fresh_below_0.995_every_seed'])}** (fresh "
            f"{', '.join(f'{a:.4f}' for a in dd['width2_fresh'])}); width 3 at least "
            f"{TARGET_W3:.1%} on every seed: "
            f"**{common.fmt(dd['width3_fresh_at_least_0.998_every_seed'])}**.")
        lbfgs_cost = summary["w2-lip0.9"]["cost"]["mean"]
        adam_cost = summary["w2-lip0.9-default"]["cost"]["mean"]
        notes.append(
            "- Reading: the bound makes every layer a homeomorphism, so the disk's image "
            "stays enclosed by the annulus's image; training can only thin the annulus out "
            "where the sample leaves a gap, and the fresh points in that channel are lost. "
            f"How many depends on where the optimizer puts the channel, not on the cost "
            f"alone (mean width-2 cost {lbfgs_cost:.3g} with L-BFGS, {adam_cost:.3g} with "
            "Adam): the 99.5 % line is a property of a training run, not of the problem, "
            "while 100 % on fresh samples is out of reach for every run. At L = 50, "
            f"T = 10 (h = {C['w2-lip0.9']['horizon'] / C['w2-lip0.9']['layers']:g}) the "
            "unbounded width-2 network stays invertible too (max h‖A_t‖₂ "
            f"{common.pm(summary['w2-free']['max_lipschitz'], '.2f')}), and behaves alike.")
    default_rows = ("" if run.quick else "(the `-default` rows: Adam, lr 0.01, 2000 "
                    "iterations, as `controldl train`) ")
    settings = (f"ring({S['n']}, seed s) for seed s in {run.seeds}, {S['fresh']} fresh points "
                f"ring({S['fresh']}, seed 10000 + s); tanh ResNet, logistic loss, l2 = "
                f"{S['l2']:g}; {common.training_solver(run.quick)[1]} for {S['iters']} iterations "
                f"{default_rows}from the library's "
                f"normal initialization with seed s; the bound is kept by projection. Fold "
                f"fraction: share of a {S['grid']}×{S['grid']} grid of [−1.2, 1.2]² with "
                f"det ∂x(L)/∂x(0) ≤ 0.")
    body_md = (table + "\n\nMean ± standard deviation over seeds.\n\n" + "\n".join(notes)
               + "\n\nPer seed:\n\n" + seed_table)
    figs = [("decision_regions.png", "Decision regions; red crosses are fresh samples the "
                                     "network gets wrong"),
            ("grid_w2-free-big-steps.png", "Width 2 without a bound, big steps: the grid folds"),
            ("grid_w2-lip0.9.png", "Width 2 with invertible layers: the grid is squeezed, "
                                   "never folded"),
            ("grid_w3-lip0.9.png", "Width 3: the third dimension lifts the disk out"),
            ("layers_w2-lip0.9.png", "Width 2 with the bound, layer by layer")]
    run.write_markdown(common.experiment_markdown(
        "Topology, honestly", "A width-2 ResNet with invertible layers (h‖A_t‖₂ ≤ 0.9) cannot "
        "separate the ring on fresh samples; without the bound it can fold the plane; width 3 "
        "separates.", settings, body_md, figs, run))


def main(argv: list[str] | None = None) -> int:
    return common.main_wrapper(NAME, __doc__, body, argv)


if __name__ == "__main__":
    sys.exit(main())
