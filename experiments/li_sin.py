"""Li et al.'s toy experiment: E-MSA against SGD, Adagrad and Adam on sin(x).

Claim tested (Li, Chen, Tai & E, "Maximum principle based algorithms for deep learning",
JMLR 2018, and their code ``LiQianxiao/MaxPrinciple-DeepLearning``, ``config.yml``):
E-MSA with 10 inner L-BFGS iterations decreases the loss faster *per iteration* than
SGD, Adagrad and Adam early in training, and is not faster in wall-clock time.

Set-up as in their code: x uniform on [−π, π], 100 training and 100 test points, the
input repeated on the 5 coordinates of the state (``np.repeat``), 20 residual layers
``x + 0.25·tanh(A x + b)`` (T = 5), the readout fixed to the sum of the coordinates
(``reduce_sum``), every control starting at zero, full batch (their batch size is the
training set), 500 iterations, ρ = 1, SGD 0.1, Adagrad 0.1, Adam 0.005. Differences in
controldl's normalization (stated in the summary): the loss is ``½(z − y)²`` (theirs the
mean squared error, twice ours) and ``l2 = 1e-3`` is ``(λ/2)·h·Σ‖θ‖²`` (theirs
``1e-3·½‖θ‖²`` per layer, without h).

The training loss is recorded at every iteration (with its time); the test loss at
checkpoints, by re-running the same deterministic full-batch solve to each checkpoint.
"""

from __future__ import annotations

import sys

import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import controldl as cdl
from controldl import problem as P
from experiments import common

NAME = "li_sin"
CLAIM = ("E-MSA with 10 inner L-BFGS iterations decreases the loss faster per iteration "
         "than SGD, Adagrad and Adam early in training, and is not faster in wall-clock "
         "time (Li, Chen, Tai & E 2018, their toy experiment).")
WIDTH, LAYERS, HORIZON, L2, RHO = 5, 20, 5.0, 1e-3, 1.0


def solvers() -> dict[str, cdl.Solver]:
    return {"emsa": cdl.EMSA(rho=RHO, inner="lbfgs", inner_steps=10, tol=0.0, patience=None),
            "sgd": cdl.GradientDescent("sgd", lr=0.1, grad_tol=0.0),
            "adagrad": cdl.GradientDescent("adagrad", lr=0.1, grad_tol=0.0),
            "adam": cdl.GradientDescent("adam", lr=0.005, grad_tol=0.0)}


def sine_data(seed: int, n_train: int, n_test: int) -> cdl.Dataset:
    """x ~ U[−π, π], y = sin x; the input repeated on every coordinate of the state."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-np.pi, np.pi, size=n_train + n_test)
    X = np.repeat(x[:, None], WIDTH, axis=1)
    data = cdl.data.regression(X, np.sin(x)[:, None], {"name": "li_sin", "seed": seed})
    return cdl.data.train_test_split(data, n_test / (n_train + n_test), seed=seed)


def zero_start(form: P.Formulation) -> P.Params:
    """Zero controls and the fixed summing readout ``W = (1, …, 1)``, ``c = 0``."""
    L, d = form.layers, form.width
    return P.Params(np.zeros((L, d, d)), np.zeros((L, d)), np.ones((1, d)), np.zeros(1))


def test_cost(problem: cdl.Problem, params: P.Params) -> float:
    """J on the test split (the same cost terms as the training cost)."""
    X0, Y = problem.initial_states(test=True), problem.targets(test=True)
    params = P.Params(*(jnp.asarray(v) for v in params))
    return float(P.cost(problem.formulation, params, X0, Y))


def one_seed(run: common.Run, seed: int, iters: int, checkpoints: list[int]) -> dict:
    data = sine_data(seed, 100, 100)
    problem = cdl.Problem(data, width=WIDTH, layers=LAYERS, horizon=HORIZON, l2=L2,
                          loss="squared", train_readout=False)
    init = zero_start(problem.formulation)
    out = {}
    for label, solver in solvers().items():
        sol = cdl.solve(problem, solver, init=init, max_iter=iters)
        tests = []
        for k in checkpoints:
            part = sol if k == iters else cdl.solve(problem, solver, init=init, max_iter=k)
            tests.append({"iteration": k, "test_cost": test_cost(problem, part.params),
                          "train_cost": part.cost["total"]})
        out[label] = {"status": sol.status, "compile_time_s": sol.compile_time_s,
                      "train": [{"iteration": h["iteration"], "time_s": h["time_s"],
                                 "cost": h["cost"]} for h in sol.history],
                      "test": tests}
        run.log(f"seed {seed} {label:8s}: {sol.history[0]['cost']:.4g} -> "
                f"{sol.cost['total']:.4g} in {sol.iterations} it, {sol.wall_time_s:.1f} s")
    return out


def early_verdict(per_seed: list[dict], at: list[int]) -> dict:
    """For each early iteration: E-MSA's training cost and the best baseline's, averaged
    over seeds, and whether E-MSA is lower."""
    out = {}
    for k in at:
        def mean_cost(label, k=k):
            return float(np.mean([next(h["cost"] for h in r[label]["train"]
                                       if h["iteration"] == k) for r in per_seed]))
        base = {lab: mean_cost(lab) for lab in ("sgd", "adagrad", "adam")}
        best = min(base, key=base.get)
        emsa = mean_cost("emsa")
        out[str(k)] = {"emsa": emsa, "best_baseline": best, "baseline": base[best],
                       "emsa_lower": emsa < base[best]}
    return out


def figure(per_seed: list[dict]):
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    r = per_seed[0]
    for label, rec in r.items():
        it = [h["iteration"] for h in rec["train"]]
        cost = [h["cost"] for h in rec["train"]]
        t = [h["time_s"] - rec["compile_time_s"] for h in rec["train"]]
        axes[0].semilogy(it, cost, label=label)
        axes[1].semilogy(np.maximum(t, 1e-4), cost, label=label)
        axes[2].semilogy([h["iteration"] for h in rec["test"]],
                         [h["test_cost"] for h in rec["test"]], "o-", label=label)
    axes[0].set(xlabel="iteration", ylabel="training cost J", title="per iteration")
    axes[1].set(xlabel="wall time after compilation [s]", ylabel="training cost J",
                title="per second", xscale="log")
    axes[2].set(xlabel="iteration", ylabel="test cost", title="test (checkpoints)")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def body(run: common.Run) -> None:
    iters = 60 if run.quick else 500
    checkpoints = [0, 5, 20, 60] if run.quick else [0, 1, 2, 5, 10, 20, 50, 100, 200, 500]
    early = [1, 5, 10, 20] if run.quick else [1, 5, 10, 20, 50]
    per_seed = [one_seed(run, seed, iters, checkpoints) for seed in run.seeds]
    verdict = early_verdict(per_seed, early)
    final = {lab: float(np.mean([r[lab]["train"][-1]["cost"] for r in per_seed]))
             for lab in per_seed[0]}
    seconds = {lab: float(np.mean([(r[lab]["train"][-1]["time_s"] - r[lab]["compile_time_s"])
                                   / iters for r in per_seed])) for lab in per_seed[0]}
    fig = run.save_figure(figure(per_seed), "li_sin_history.png")
    run.write_json({"settings": {"width": WIDTH, "layers": LAYERS, "horizon": HORIZON,
                                 "l2": L2, "rho": RHO, "iterations": iters,
                                 "checkpoints": checkpoints},
                    "per_seed": per_seed, "early": verdict, "final_train_cost": final,
                    "seconds_per_iteration": seconds})
    rows = [[k, common.fmt(v["emsa"]), f"{v['best_baseline']} {common.fmt(v['baseline'])}",
             "yes" if v["emsa_lower"] else "no"] for k, v in verdict.items()]
    table = common.md_table(["iteration", "E-MSA J", "best baseline J", "E-MSA lower"], rows)
    times = common.md_table(["solver", "final J", "s / iteration"],
                            [[lab, common.fmt(final[lab]), common.fmt(seconds[lab], ".3g")]
                             for lab in final])
    run.write_markdown(common.experiment_markdown(
        "Li et al.'s sin(x) toy problem", CLAIM,
        f"width {WIDTH}, {LAYERS} layers, T = {HORIZON}, tanh, l2 {L2}, ρ = {RHO}, "
        f"{iters} full-batch iterations, zero start, fixed summing readout.",
        table + "\n\n" + times, [(fig, "Training cost per iteration and per second; test "
                                       "cost at checkpoints (first seed)")], run))


def main(argv: list[str] | None = None) -> int:
    return common.main_wrapper(NAME, __doc__, body, argv, default_seeds=(0, 1, 2))


if __name__ == "__main__":
    sys.exit(main())
