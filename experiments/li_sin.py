"""Li et al.'s toy experiment: E-MSA against SGD, Adagrad and Adam on sin(x).

Claim tested (Li, Chen, Tai & E, "Maximum principle based algorithms for deep learning",
JMLR 2018, and their code ``LiQianxiao/MaxPrinciple-DeepLearning``, ``config.yml``):
E-MSA with 10 inner L-BFGS iterations decreases the loss faster *per iteration* than
SGD, Adagrad and Adam early in training, and is not faster in wall-clock time.

Set-up as in their code: x uniform on [−π, π], 100 training and 100 test points, the
input repeated on the 5 coordinates of the state (``np.repeat``), 20 residual layers
``x + 0.25·tanh(A x + b)`` (T = 5), the readout fixed to the sum of the coordinates
(``reduce_sum``), full batch (their batch size is the training set), 500 iterations,
ρ = 1, SGD 0.1, Adagrad 0.1, Adam 0.005. Differences in controldl's normalization (stated
in the summary): the loss is ``½(z − y)²`` (theirs the mean squared error, twice ours)
and ``l2 = 1e-3`` is ``(λ/2)·h·Σ‖θ‖²`` (theirs ``1e-3·½‖θ‖²`` per layer, without h).

**The start.** Their controls start at zero. With the input repeated on every coordinate
that start lies in an invariant subspace: every coordinate of every state equal, every
``A_t`` and ``b_t`` unchanged by permuting the coordinates. The dynamics, the gradient
and every layer's Hamiltonian keep that symmetry, so an exact method never leaves it:
only round-off does (Adagrad stays in it, E-MSA's inner L-BFGS amplifies the round-off
to O(1) within about 100 iterations, at an iteration that moves with the device and the
dtype). Their code breaks it for E-MSA only, by perturbing every inner start by
U(±0.005) (``msa_perturb_init``). Here every solver starts from the same point, zero plus
U(±``PERTURB``) entrywise (``PERTURB`` = 0.005, their scale; drawn with the data seed), so
every method leaves the symmetric subspace by its own dynamics, and the verdict is
computed in float64 and in float32 (``symmetry`` in the results: the spread of the final
states over the coordinates).

The training loss is recorded at every iteration (with its time); the test loss at
checkpoints (float64), by re-running the same deterministic full-batch solve to each
checkpoint.
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
PERTURB = 0.005
"""The start's perturbation of zero, U(±PERTURB) entrywise (Li's ``msa_perturb_init``)."""
DTYPES = ("float64", "float32")


def solvers(dtype: str = "float64") -> dict[str, cdl.Solver]:
    return {"emsa": cdl.EMSA(rho=RHO, inner="lbfgs", inner_steps=10, tol=0.0, patience=None,
                             dtype=dtype),
            "sgd": cdl.GradientDescent("sgd", lr=0.1, grad_tol=0.0, dtype=dtype),
            "adagrad": cdl.GradientDescent("adagrad", lr=0.1, grad_tol=0.0, dtype=dtype),
            "adam": cdl.GradientDescent("adam", lr=0.005, grad_tol=0.0, dtype=dtype)}


def sine_data(seed: int, n_train: int, n_test: int) -> cdl.Dataset:
    """x ~ U[−π, π], y = sin x; the input repeated on every coordinate of the state."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-np.pi, np.pi, size=n_train + n_test)
    X = np.repeat(x[:, None], WIDTH, axis=1)
    data = cdl.data.regression(X, np.sin(x)[:, None], {"name": "li_sin", "seed": seed})
    return cdl.data.train_test_split(data, n_test / (n_train + n_test), seed=seed)


def perturbed_start(form: P.Formulation, seed: int) -> P.Params:
    """Zero controls plus U(±PERTURB) entrywise (drawn with ``seed``) and the fixed summing
    readout ``W = (1, …, 1)``, ``c = 0``: off the symmetric subspace of the zero start."""
    L, d = form.layers, form.width
    rng = np.random.default_rng(seed)
    return P.Params(rng.uniform(-PERTURB, PERTURB, (L, d, d)),
                    rng.uniform(-PERTURB, PERTURB, (L, d)), np.ones((1, d)), np.zeros(1))


def asymmetry(problem: cdl.Problem, params: P.Params) -> float:
    """The largest spread of the final states over the coordinates,
    ``max_i (max_k x_ik(L) − min_k x_ik(L))``: 0 in the symmetric subspace."""
    X0 = problem.initial_states()
    x_L = P.final_state(problem.formulation, P.Params(*(jnp.asarray(v) for v in params)), X0)
    return float(jnp.max(jnp.max(x_L, axis=1) - jnp.min(x_L, axis=1)))


def test_cost(problem: cdl.Problem, params: P.Params) -> float:
    """J on the test split (the same cost terms as the training cost)."""
    X0, Y = problem.initial_states(test=True), problem.targets(test=True)
    params = P.Params(*(jnp.asarray(v) for v in params))
    return float(P.cost(problem.formulation, params, X0, Y))


def one_seed(run: common.Run, seed: int, dtype: str, iters: int, checkpoints: list[int]
             ) -> dict:
    """Every solver from the same perturbed start on the seed's data in ``dtype``: the
    training costs and times, the test costs at the checkpoints (float64 only) and the
    asymmetry of the final states."""
    data = sine_data(seed, 100, 100)
    problem = cdl.Problem(data, width=WIDTH, layers=LAYERS, horizon=HORIZON, l2=L2,
                          loss="squared", train_readout=False)
    init = perturbed_start(problem.formulation, seed)
    out = {}
    for label, solver in solvers(dtype).items():
        sol = cdl.solve(problem, solver, init=init, max_iter=iters)
        tests = []
        for k in checkpoints if dtype == "float64" else []:
            part = sol if k == iters else cdl.solve(problem, solver, init=init, max_iter=k)
            tests.append({"iteration": k, "test_cost": test_cost(problem, part.params),
                          "train_cost": part.cost["total"]})
        out[label] = {"status": sol.status, "compile_time_s": sol.compile_time_s,
                      "train": [{"iteration": h["iteration"], "time_s": h["time_s"],
                                 "cost": h["cost"]} for h in sol.history],
                      "test": tests, "asymmetry": asymmetry(problem, sol.params)}
        run.log(f"seed {seed} {dtype} {label:8s}: {sol.history[0]['cost']:.4g} -> "
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


def per_dtype(run: common.Run, dtype: str, iters: int, checkpoints: list[int],
              early: list[int]) -> dict:
    per_seed = [one_seed(run, seed, dtype, iters, checkpoints) for seed in run.seeds]
    final = {lab: float(np.mean([r[lab]["train"][-1]["cost"] for r in per_seed]))
             for lab in per_seed[0]}
    seconds = {lab: float(np.mean([(r[lab]["train"][-1]["time_s"] - r[lab]["compile_time_s"])
                                   / iters for r in per_seed])) for lab in per_seed[0]}
    symmetry = {lab: float(min(r[lab]["asymmetry"] for r in per_seed)) for lab in per_seed[0]}
    at = [*early, iters]
    return {"per_seed": per_seed, "early": early_verdict(per_seed, at),
            "per_seed_verdict": [{k: v["emsa_lower"] for k, v in early_verdict([r], at).items()}
                                 for r in per_seed],
            "emsa_largest_rise": [largest_rise(r["emsa"]["train"]) for r in per_seed],
            "final_train_cost": final, "seconds_per_iteration": seconds,
            "symmetry": symmetry}


def largest_rise(train: list[dict]) -> dict:
    """The iteration at which the cost rose by the largest factor, and the factor (1 when
    it never rose)."""
    costs = np.asarray([h["cost"] for h in train])
    factors = costs[1:] / costs[:-1]
    k = int(np.argmax(factors)) if factors.size else 0
    return {"iteration": k + 1, "factor": float(max(factors[k], 1.0)) if factors.size else 1.0}


def body(run: common.Run) -> None:
    iters = 60 if run.quick else 500
    checkpoints = [0, 5, 20, 60] if run.quick else [0, 1, 2, 5, 10, 20, 50, 100, 200, 500]
    early = [1, 5, 10, 20] if run.quick else [1, 5, 10, 20, 50]
    results = {dtype: per_dtype(run, dtype, iters, checkpoints, early) for dtype in DTYPES}
    verdicts = {dtype: {k: v["emsa_lower"] for k, v in r["early"].items()}
                for dtype, r in results.items()}
    same = verdicts["float64"] == verdicts["float32"]
    pairs = [(seed, k) for seed, a, b in zip(run.seeds, results["float64"]["per_seed_verdict"],
                                             results["float32"]["per_seed_verdict"],
                                             strict=True) for k in a if a[k] != b[k]]
    main = results["float64"]
    fig = run.save_figure(figure(main["per_seed"]), "li_sin_history.png")
    run.write_json({"settings": {"width": WIDTH, "layers": LAYERS, "horizon": HORIZON,
                                 "l2": L2, "rho": RHO, "iterations": iters,
                                 "checkpoints": checkpoints, "perturb": PERTURB},
                    "per_dtype": results, "verdict_same_in_both_dtypes": same,
                    "per_seed_differences": [{"seed": a, "iteration": b} for a, b in pairs],
                    "early": main["early"], "final_train_cost": main["final_train_cost"],
                    "seconds_per_iteration": main["seconds_per_iteration"]})
    rows = [[k, common.fmt(v["emsa"]), f"{v['best_baseline']} {common.fmt(v['baseline'])}",
             "yes" if v["emsa_lower"] else "no",
             "yes" if results["float32"]["early"][k]["emsa_lower"] else "no"]
            for k, v in main["early"].items()]
    table = common.md_table(["iteration", "E-MSA J", "best baseline J", "E-MSA lower",
                             "float32: E-MSA lower"], rows)
    times = common.md_table(["solver", "final J", "s / iteration", "final asymmetry"],
                            [[lab, common.fmt(main["final_train_cost"][lab]),
                              common.fmt(main["seconds_per_iteration"][lab], ".3g"),
                              common.fmt(main["symmetry"][lab], ".2g")]
                             for lab in main["final_train_cost"]])
    note = ("The verdict (the mean over seeds) is the same in float32 and float64"
            if same else "The verdict (the mean over seeds) differs between float32 and float64")
    note += (", and so is every seed's." if not pairs else
             "; seed by seed it differs at " + ", ".join(f"seed {a} iteration {b}"
                                                          for a, b in pairs) + ".")
    rise = ", ".join(f"{r['iteration']} (×{r['factor']:.0f})"
                     for dt in DTYPES for r in results[dt]["emsa_largest_rise"])
    note += f" E-MSA's largest rise of the cost, per seed in float64 then float32: {rise}."
    run.write_markdown(common.experiment_markdown(
        "Li et al.'s sin(x) toy problem", CLAIM,
        f"width {WIDTH}, {LAYERS} layers, T = {HORIZON}, tanh, l2 {L2}, ρ = {RHO}, "
        f"{iters} full-batch iterations, start zero + U(±{PERTURB}) (the same for every "
        f"solver), fixed summing readout; float64 (and float32 for the verdict).",
        table + "\n\n" + note + "\n\n" + times,
        [(fig, "Training cost per iteration and per second; test cost at checkpoints "
               "(first seed, float64)")], run))


def main(argv: list[str] | None = None) -> int:
    return common.main_wrapper(NAME, __doc__, body, argv, default_seeds=(0, 1, 2))


if __name__ == "__main__":
    sys.exit(main())
