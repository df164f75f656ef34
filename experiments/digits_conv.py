"""Li et al.'s image study in small: a convolutional ResNet on scikit-learn's digits,
trained by E-MSA, Adam, SGD and L-BFGS from the same initialization.

Claim tested (Li, Chen, Tai & E, "Maximum principle based algorithms for deep learning",
JMLR 2018, their MNIST / Fashion-MNIST study with a few convolutional residual layers):
E-MSA trains a convolutional ResNet to an accuracy comparable with the gradient methods,
with a cost per iteration of the order of tens of gradient steps.

Set-up: digits (1,797 images of 1 × 8 × 8, standardized pixels, the fixed stratified 70/30
split of seed 0), ``x(t+1) = x(t) + h·tanh(K_t ⋆ x(t) + b_t)`` with C channels (the input
embedded by zero channels), 3 × 3 kernels, 'same' padding, L layers, T = L/2 (h = 0.5),
the flattened state read out by ``W·x + c`` (cross-entropy), ``l2`` and ``readout_l2``
at the library's defaults (1e-3). Every solver starts from the same
``init_params(seed)``; the seeds change the initialization, not the split. References:
the dense ResNet (width 64, the same L and T) trained by Adam, and scikit-learn's
``MLPClassifier`` (100 hidden units, its defaults) on the same split.

Recorded: the training cost against iteration and wall time (after compilation), the
test accuracy against iteration and wall time (at a few log-spaced iterates, each from a
fresh deterministic solve of that many iterations), the final training and test accuracy,
the seconds per iteration measured in the same run (E-MSA's per iteration in Adam steps).
"""

from __future__ import annotations

import sys

import matplotlib.pyplot as plt
import numpy as np

import controldl as cdl
from controldl import plotting
from controldl import problem as P
from experiments import common

NAME = "digits_conv"
CLAIM = ("E-MSA trains a convolutional ResNet on digits to an accuracy comparable with "
         "Adam, SGD and L-BFGS, at a cost per iteration of the order of tens of Adam steps "
         "(Li, Chen, Tai & E 2018, their image study).")
KERNEL, RHO = 3, 1.0


def configure(p) -> None:
    p.add_argument("--channels", type=int, default=None, help="C (default 8; quick 4)")
    p.add_argument("--layers", type=int, default=None, help="L (default 4; quick 3)")
    p.add_argument("--n-images", type=int, default=None,
                   help="digits used, 70/30 split (default all 1797; quick 450)")
    p.add_argument("--iterations", type=int, default=None,
                   help="Adam and SGD steps (default 300; quick 20); L-BFGS a third, E-MSA "
                        "a tenth")
    p.add_argument("--emsa-iterations", type=int, default=None,
                   help="E-MSA iterations (default a tenth of --iterations)")


def settings(run: common.Run) -> dict:
    a = run.args
    quick = run.quick
    pick = lambda v, full, small: v if v is not None else (small if quick else full)  # noqa: E731
    iters = pick(a.iterations, 300, 20)
    return {"channels": pick(a.channels, 8, 4), "layers": pick(a.layers, 4, 3),
            "n_images": pick(a.n_images, cdl.data.DIGITS_SIZE, 450), "gd_iterations": iters,
            "lbfgs_iterations": max(iters // 3, 2),
            "emsa_iterations": a.emsa_iterations or max(iters // 10, 2)}


def solvers(s: dict) -> dict[str, tuple[cdl.Solver, int]]:
    return {"emsa": (cdl.EMSA(rho=RHO, inner="lbfgs", inner_steps=10, tol=0.0, patience=None),
                     s["emsa_iterations"]),
            "adam": (cdl.GradientDescent("adam", lr=0.01, grad_tol=0.0), s["gd_iterations"]),
            "sgd": (cdl.GradientDescent("sgd", lr=0.1, grad_tol=0.0), s["gd_iterations"]),
            "lbfgs": (cdl.GradientDescent("lbfgs", grad_tol=0.0), s["lbfgs_iterations"])}


def seconds_per_iteration(sol: cdl.Solution) -> float:
    """Wall seconds per iteration after the first recorded iteration (compilation and the
    first call excluded)."""
    h = [e for e in sol.history if e["iteration"] >= 1]
    if len(h) < 2:
        return float("nan")
    return (h[-1]["time_s"] - h[0]["time_s"]) / (h[-1]["iteration"] - h[0]["iteration"])


def record(sol: cdl.Solution) -> dict:
    return {"status": sol.status, "iterations": sol.iterations, "cost": sol.cost["total"],
            "train_accuracy": sol.train_accuracy, "test_accuracy": sol.test_accuracy,
            "compile_time_s": sol.compile_time_s, "wall_time_s": sol.wall_time_s,
            "seconds_per_iteration": seconds_per_iteration(sol),
            "history": [{"iteration": h["iteration"], "time_s": h["time_s"], "cost": h["cost"],
                         "train_accuracy": h.get("train_accuracy")} for h in sol.history]}


CURVE_POINTS = 3
"""Iterates, besides the last, whose test accuracy is measured (log-spaced counts)."""


def curve_iterations(iters: int) -> list[int]:
    """Iteration counts ``round(iters^(j/CURVE_POINTS))``, j = 0..CURVE_POINTS−1, without
    ``iters`` itself (e.g. 1, 7, 45 for 300)."""
    return sorted({max(1, round(iters ** (j / CURVE_POINTS))) for j in range(CURVE_POINTS)}
                  - {iters})


def accuracy_curve(problem: cdl.Problem, solver: cdl.Solver, init, iters: int,
                        full: cdl.Solution) -> list[dict]:
    """The test accuracy of the iterate a solve returns after k iterations, for k in
    :func:`curve_iterations` and the full run: each k a fresh solve from the same
    initialization (every solver here is deterministic, so it follows the full run's
    iterates), placed in time by the full run's history."""
    times = {h["iteration"]: h["time_s"] for h in full.history}
    rows = [{"iteration": k, "time_s": times.get(k),
             "test_accuracy": cdl.solve(problem, solver, init=init, max_iter=k).test_accuracy}
            for k in curve_iterations(iters)]
    last = full.history[-1]
    return rows + [{"iteration": last["iteration"], "time_s": last["time_s"],
                    "test_accuracy": full.test_accuracy}]


def mlp_reference(data: cdl.Dataset, seed: int) -> float:
    from sklearn.neural_network import MLPClassifier

    flat = lambda X: X.reshape(len(X), -1)  # noqa: E731
    clf = MLPClassifier(hidden_layer_sizes=(100,), max_iter=500, random_state=seed)
    clf.fit(flat(data.X_train), data.y_train)
    return float(clf.score(flat(data.X_test), data.y_test))


def one_seed(run: common.Run, s: dict, data: cdl.Dataset, seed: int) -> tuple[dict, dict]:
    L = s["layers"]
    problem = cdl.Problem(data, model="conv", channels=s["channels"], kernel_size=KERNEL,
                          layers=L, horizon=L / 2)
    init = P.init_params(problem.formulation, seed=seed)
    out, sols = {}, {}
    for label, (solver, iters) in solvers(s).items():
        sol = cdl.solve(problem, solver, init=init, max_iter=iters)
        out[label], sols[label] = record(sol), sol
        out[label]["test_accuracy_curve"] = accuracy_curve(problem, solver, init, iters,
                                                                sol)
        run.log(f"seed {seed} {label:6s}: J {sol.history[0]['cost']:.4g} -> "
                f"{sol.cost['total']:.4g} in {sol.iterations} it, "
                f"{out[label]['seconds_per_iteration']:.3g} s/it, test acc "
                f"{sol.test_accuracy:.4f}")
    dense = cdl.Problem(data.__class__(data.X_train.reshape(len(data.X_train), -1),
                                       data.y_train, data.X_test.reshape(len(data.X_test), -1),
                                       data.y_test, source=data.source),
                        width=64, layers=L, horizon=L / 2)
    dsol = cdl.solve(dense, cdl.GradientDescent("adam", lr=0.01, grad_tol=0.0), seed=seed,
                     max_iter=s["gd_iterations"])
    out["dense_resnet_adam"] = record(dsol)
    out["mlp_classifier"] = {"test_accuracy": mlp_reference(data, seed)}
    run.log(f"seed {seed} dense ResNet (Adam) test acc {dsol.test_accuracy:.4f}, "
            f"MLPClassifier {out['mlp_classifier']['test_accuracy']:.4f}")
    return out, sols


def figure(per_seed: list[dict]):
    """Training cost (top) and test accuracy (bottom, at the iterates of
    :func:`accuracy_curve`) against iteration and wall time after compilation, first
    seed."""
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.2))
    for label, rec in per_seed[0].items():
        if "history" not in rec:
            continue
        shift = rec["compile_time_s"]
        it = [h["iteration"] for h in rec["history"]]
        cost = [h["cost"] for h in rec["history"]]
        t = [max(h["time_s"] - shift, 1e-3) for h in rec["history"]]
        axes[0, 0].semilogy(it, cost, label=label)
        axes[0, 1].loglog(t, cost, label=label)
        curve = [c for c in rec.get("test_accuracy_curve", []) if c["time_s"] is not None]
        if not curve:  # the dense reference records its final accuracy only
            continue
        axes[1, 0].semilogx([max(c["iteration"], 1) for c in curve],
                            [c["test_accuracy"] for c in curve], "o-", label=label)
        axes[1, 1].semilogx([max(c["time_s"] - shift, 1e-3) for c in curve],
                            [c["test_accuracy"] for c in curve], "o-", label=label)
    axes[0, 0].set(xlabel="iteration", ylabel="training cost J", title="per iteration")
    axes[0, 1].set(xlabel="wall time after compilation [s]", ylabel="training cost J",
                   title="per second")
    axes[1, 0].set(xlabel="iteration", ylabel="test accuracy")
    axes[1, 1].set(xlabel="wall time after compilation [s]", ylabel="test accuracy")
    for ax in axes.flat:
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def summary(per_seed: list[dict]) -> dict:
    labels = [k for k in per_seed[0]]
    acc = {k: common.stats(r[k]["test_accuracy"] for r in per_seed) for k in labels}
    secs = {k: float(np.mean([r[k]["seconds_per_iteration"] for r in per_seed]))
            for k in labels if "history" in per_seed[0][k]}
    cost = {k: float(np.mean([r[k]["cost"] for r in per_seed]))
            for k in labels if "history" in per_seed[0][k]}
    gap = 100 * (acc["mlp_classifier"]["mean"] - acc["adam"]["mean"])
    emsa_in_adam = secs["emsa"] / secs["adam"]
    return {"test_accuracy": acc, "seconds_per_iteration": secs, "final_cost": cost,
            "adam_points_below_mlp": gap, "adam_within_2_points": bool(gap <= 2.0),
            "emsa_iteration_in_adam_steps": emsa_in_adam,
            "emsa_within_30_adam_steps": bool(emsa_in_adam <= 30.0)}


def verdict(sm: dict) -> str:
    acc = sm["test_accuracy"]
    e, a = acc["emsa"]["mean"], acc["adam"]["mean"]
    gap = sm["adam_points_below_mlp"]
    side = "below" if gap >= 0 else "above"
    return (f"Adam reaches {100 * a:.1f} % test accuracy against MLPClassifier's "
            f"{100 * acc['mlp_classifier']['mean']:.1f} % ({abs(gap):.1f} points {side}: "
            f"{'within' if sm['adam_within_2_points'] else 'not within'} 2). E-MSA reaches "
            f"{100 * e:.1f} % in its iterations (a tenth of Adam's by default); one costs "
            f"{sm['emsa_iteration_in_adam_steps']:.1f} Adam steps "
            f"({'within' if sm['emsa_within_30_adam_steps'] else 'above'} 30).")


def body(run: common.Run) -> None:
    s = settings(run)
    data = cdl.data.digits(n_samples=s["n_images"], seed=0)
    results = [one_seed(run, s, data, seed) for seed in run.seeds]
    per_seed = [r for r, _ in results]
    sm = summary(per_seed)
    fig = run.save_figure(figure(per_seed), "digits_conv_history.png")
    adam = results[0][1]["adam"]
    chan = run.save_figure(plotting.channels_figure(adam, count=3), "digits_conv_channels.png")
    kern = run.save_figure(plotting.kernels_figure(adam), "digits_conv_kernels.png")
    run.write_json({"settings": {**s, "kernel_size": KERNEL, "rho": RHO, "horizon": "L/2",
                                 "split": "digits seed 0, 70/30"},
                    "per_seed": per_seed, "summary": sm, "verdict": verdict(sm)})
    rows = [[k, common.pm(sm["test_accuracy"][k]),
             common.fmt(sm["final_cost"].get(k)),
             common.fmt(sm["seconds_per_iteration"].get(k), ".3g")]
            for k in sm["test_accuracy"]]
    table = common.md_table(["solver", "test accuracy", "final J", "s / iteration"], rows)
    run.write_markdown(common.experiment_markdown(
        "Convolutional ResNet on digits", CLAIM,
        f"C = {s['channels']}, k = {KERNEL}, L = {s['layers']}, T = L/2, tanh, flatten "
        f"readout, {s['n_images']} digits (70/30, seed 0), Adam/SGD {s['gd_iterations']} "
        f"steps, L-BFGS {s['lbfgs_iterations']}, E-MSA {s['emsa_iterations']} (ρ = {RHO}, 10 "
        "inner L-BFGS steps).",
        table + "\n\n**Verdict.** " + verdict(sm),
        [(fig, "Training cost and test accuracy per iteration and per second (first seed)"),
         (chan, "Channels of three test digits through the layers (Adam, first seed)"),
         (kern, "Learned kernels (Adam, first seed)")], run))


def main(argv: list[str] | None = None) -> int:
    return common.main_wrapper(NAME, __doc__, body, argv, configure=configure,
                               default_seeds=(0, 1, 2))


if __name__ == "__main__":
    sys.exit(main())
