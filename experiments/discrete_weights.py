"""Binary and ternary ResNets trained by Li & Hao's discrete MSA, against the
straight-through baselines and full precision, on digits and MNIST.

Claim tested (Li & Hao, ICML 2018, their MNIST study): the maximum principle, maximizing
the Hamiltonian over the discrete set itself, trains binary networks as accurately as the
straight-through estimator (BinaryConnect) and ternary networks that are very sparse at
nearly the accuracy of the binary ones.

Set-up: a dense ResNet ``x + h·tanh(A_t x + b_t)`` (the images flattened, width = the
pixels: 64 on digits, 784 on MNIST), cross-entropy on ``W x(L) + c``, ``l2 = 0`` (a
binary ``A_t`` has a constant norm), ``readout_l2`` at its default. Rows, every one
started from the real ``init_params(seed)`` (``init=``: the discrete MSA projects it onto
the set, the straight-through estimator takes it as its latent weights, as BinaryConnect
starts; binary, both start from the network of the shared projected initialization;
ternary, TWN's threshold ``0.7·mean|u|`` zeroes about 34 % of the entries where the
projection zeroes 38 %), mini-batches of 100, the same number of epochs:

- ``adam``: full precision (``controls=real``), Adam;
- ``binaryconnect``: ``controls=binary``, gradient descent = the straight-through estimator
  (latent weights clipped to [−1, 1], the sign in the forward pass), Adam;
- ``msa-binary``: ``controls=binary``, ``discrete-msa`` with the paper's defaults;
- ``twn``: ``controls=ternary``, the straight-through estimator with the
  ternary-weight-network threshold, Adam;
- ``msa-ternary``: ``controls=ternary`` with a sparsity weight, ``discrete-msa``.

Adam's learning rates (full precision; the straight-through rows) were tuned per dataset
(:data:`SETTINGS`); the discrete MSA runs with the paper's defaults, untuned. Each seed
draws one initialization and one batch order, shared by its rows.

Each row runs in a child process of its own; its peak resident memory is the child's
``ru_maxrss`` at the last history entry (the training), reported with its growth from the
peak before the solve (after the data were loaded) and with the peak after the solve's
final float64 evaluation. With ``--jax-cache off`` every row compiles cold.
``results.json`` is rewritten after every row and a run with the same ``--out`` and
settings skips the rows already done (resumable).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import multiprocessing
import resource
import sys
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from experiments import common

NAME = "discrete_weights"
CLAIM = ("Li & Hao's discrete MSA trains a binary ResNet at least as accurately as "
         "BinaryConnect at the same number of epochs (within 0.5 points) and within 2 points "
         "of full precision, and a ternary one with at least 50 % zero weights within 1 point "
         "of the binary one (Li & Hao, ICML 2018).")
ROWS: dict[str, str] = {"adam": "real", "binaryconnect": "binary", "msa-binary": "binary",
                        "twn": "ternary", "msa-ternary": "ternary"}
"""Each row's control set."""


@dataclasses.dataclass(frozen=True)
class Setting:
    """One problem and budget: the dataset, the ResNet's ``layers`` (``horizon`` =
    ``layers``, h = 1), dense over the flattened images or, with ``channels``, convolutional
    (3 × 3 kernels, the flattened state read out), the batch, the epochs, the precision, the
    ternary rows' sparsity weight, Adam's learning rates (full precision ``lr_real``;
    straight-through ``lr_ste``) and an optional training subset."""

    dataset: str
    layers: int
    epochs: int
    sparsity: float
    lr_real: float = 0.01
    lr_ste: float = 0.03
    batch: int = 100
    dtype: str | None = None
    n_samples: int | None = None
    channels: int | None = None


SETTINGS: dict[str, Setting] = {
    "digits": Setting("digits", layers=4, epochs=30, sparsity=3e-5, lr_real=0.01,
                      lr_ste=0.03),
    "mnist": Setting("mnist", layers=3, epochs=10, sparsity=3e-7, lr_real=1e-3,
                     lr_ste=0.01),
    "digits-conv": Setting("digits", layers=3, epochs=30, sparsity=1e-3, lr_real=0.01,
                           lr_ste=0.01, channels=4),
}
"""The problems and budgets. Adam's learning rates were tuned per dataset on seed 0 by the
training cost (digits: 20 epochs, lr in {1e-3, 3e-3, 1e-2, 3e-2} (real), {1e-3, 3e-3, 1e-2,
3e-2, 1e-1} (straight-through), seeds 0 and 1; MNIST: 2 epochs, {3e-4, 1e-3, 3e-3, 1e-2}
(real), {1e-3, 3e-3, 1e-2, 3e-2} (BinaryConnect)); the sparsity weight was chosen on seed 0
for at least 50 % zeros in a short run (digits 20 epochs: 1e-5 gave 47 %, 3e-5 75 %; a first
full run with 1e-5 gave 29-32 % after 30 epochs with the per-epoch permutations; MNIST 2
epochs: 1e-7 gave 31 %, 3e-7 64 %, 1e-5 99.5 %; conv digits, 30 epochs: 1e-4 gave 38 %,
1e-3 74 %); the conv rows' learning rates on seed 0 ({1e-2, 3e-2} straight-through, 1e-2
real). The discrete MSA was not tuned."""
QUICK: dict[str, Setting] = {"digits": Setting("digits", layers=2, epochs=2, sparsity=1e-5,
                                               n_samples=600)}


def configure(p: Any) -> None:
    p.add_argument("--datasets", default=None, metavar="NAMES",
                   help=f"comma-separated subset of {','.join(SETTINGS)} (default all; "
                        "quick: digits)")
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs of every row (default: "
                        + ", ".join(f"{s.epochs} on {n}" for n, s in SETTINGS.items()) + ")")
    p.add_argument("--rows", default=None, metavar="NAMES",
                   help=f"comma-separated subset of {','.join(ROWS)} (default all)")


# --------------------------------------------------------------------------- one row


def problem_of(s: Setting, controls: str) -> Any:
    """The problem of a row (a dense ResNet over the flattened images, or a conv ResNet)."""
    import controldl as cdl

    size = {} if s.n_samples is None else {"n_samples": s.n_samples}
    data = cdl.data.make_dataset(s.dataset, seed=0, **size)
    extra = {"sparsity": s.sparsity} if controls == "ternary" else {}
    if s.channels is None:
        extra["width"] = int(np.prod(data.X_train.shape[1:]))
    else:
        extra.update(model="conv", channels=s.channels, kernel_size=3)
    return cdl.Problem(data, controls=controls, layers=s.layers, horizon=float(s.layers),
                       loss="cross_entropy", l2=0.0, **extra)


def solver_of(s: Setting, row: str, seed: int) -> Any:
    """The row's solver (Adam's learning rates from :class:`Setting`; the discrete MSA's
    defaults are the paper's), its batches in the order of ``batch_seed = seed`` (the same
    order for every row of a seed)."""
    import controldl as cdl
    from controldl.solvers.pmp.discrete import DiscreteMSA

    if row.startswith("msa"):
        return DiscreteMSA(batch_size=s.batch, batch_seed=seed, dtype=s.dtype)
    lr = s.lr_real if row == "adam" else s.lr_ste
    return cdl.GradientDescent("adam", lr=lr, batch_size=s.batch, batch_seed=seed,
                               dtype=s.dtype, return_best=False)


def run_row(name: str, s: Setting, row: str, seed: int, jax_cache: str | None
            ) -> dict[str, Any]:
    """One row, in this (child) process: the solve's record and the process's peak
    resident memory (``ru_maxrss``, MiB) before the solve, at its last history entry (the
    training, per-epoch evaluations included) and after it (with the solve's final
    evaluation in float64 on every training sample, which can exceed the training's)."""
    common.configure_process()
    common.configure_jax_cache(jax_cache or "off")
    import controldl as cdl
    from controldl import problem as P

    problem = problem_of(s, ROWS[row])
    real = P.init_params(problem.replace(controls="real", sparsity=0.0).formulation, seed=seed)
    before = _peak_rss_mib()
    epoch = problem.data.n_train // s.batch
    during: list[float] = []  # the peak so far at every history entry (training only)
    sol = cdl.solve(problem, solver_of(s, row, seed), init=real, epochs=s.epochs,
                    callback=lambda entry: during.append(_peak_rss_mib()))
    peak = _peak_rss_mib()
    history = [{"epoch": h["iteration"] / epoch, "time_s": h["time_s"], "cost": h["cost"],
                "train_accuracy": h.get("train_accuracy"),
                "test_accuracy": h.get("test_accuracy"),
                "zero_fraction": h.get("zero_fraction")} for h in sol.history]
    return {"dataset": name, "row": row, "seed": seed, "controls": ROWS[row],
            "solver": sol.solver.get("label"), "status": sol.status,
            "cost": sol.cost["total"], "train_accuracy": sol.train_accuracy,
            "test_accuracy": sol.test_accuracy,
            "zero_fraction": sol.stats.get("zero_fraction", 0.0),
            "dtype": sol.stats.get("dtype"),
            "compile_time_s": sol.compile_time_s, "wall_time_s": sol.wall_time_s,
            "train_time_s": history[-1]["time_s"], "epoch_iterations": epoch,
            "peak_rss_mib": peak, "training_peak_rss_mib": during[-1],
            "rss_before_solve_mib": before, "history": history}


def _peak_rss_mib() -> float:
    """This process's peak resident memory so far (``ru_maxrss``), MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(name: str, s: Setting, row: str, seed: int, jax_cache: str | None
              ) -> dict[str, Any]:
    """:func:`run_row` in a fresh child process (spawned: nothing compiled is shared)."""
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
        return pool.submit(run_row, name, s, row, seed, jax_cache).result()


# --------------------------------------------------------------------------- the run


def key(dataset: str, row: str, seed: int) -> str:
    return f"{dataset}/{row}/seed{seed}"


def load_done(run: common.Run, settings: dict[str, Setting]) -> dict[str, Any]:
    """The settings and rows of ``--out``'s earlier runs with this run's settings added
    (resumption): the rows of a setting that changed are dropped (run again), those of the
    settings this run does not touch are kept."""
    path = run.out / "results.json"
    old = json.loads(path.read_text()) if path.is_file() else {}
    kept = dict(old.get("settings", {}))
    rows = dict(old.get("rows", {}))
    for name, s in settings.items():
        if kept.get(name) != dataclasses.asdict(s):
            rows = {k: v for k, v in rows.items() if v.get("dataset") != name}
            kept[name] = dataclasses.asdict(s)
    return {"settings": kept, "rows": rows}


def chosen(run: common.Run) -> tuple[dict[str, Setting], list[str]]:
    """The settings of the datasets and the rows this run does."""
    base = QUICK if run.quick else SETTINGS
    names = (run.args.datasets.split(",") if run.args.datasets else list(base))
    unknown = [n for n in names if n not in SETTINGS]
    rows = run.args.rows.split(",") if run.args.rows else list(ROWS)
    bad_rows = [r for r in rows if r not in ROWS]
    if unknown or bad_rows:
        raise ValueError(f"unknown dataset(s) or row(s): {', '.join(unknown + bad_rows)}")
    settings = {n: base.get(n, SETTINGS[n]) for n in names}
    if run.args.epochs is not None:
        settings = {n: dataclasses.replace(s, epochs=run.args.epochs)
                    for n, s in settings.items()}
    return settings, rows


def body(run: common.Run) -> None:
    settings, rows = chosen(run)
    results = load_done(run, settings)
    for name, s in settings.items():
        for seed in run.seeds:
            for row in rows:
                k = key(name, row, seed)
                if k in results["rows"]:
                    continue
                rec = run_child(name, s, row, seed, run.jax_cache)
                results["rows"][k] = rec
                run.log(f"{k}: test acc {rec['test_accuracy']:.4f} after {s.epochs} epochs, "
                        f"zeros {rec['zero_fraction']:.3f}, {rec['train_time_s']:.0f} s, "
                        f"training peak {rec['training_peak_rss_mib']:.0f} MiB")
                run.write_json(results)
    every = {name: Setting(**v) for name, v in results["settings"].items()}
    results["summary"] = {name: summarize(results["rows"], name, rows, run.seeds)
                          for name in every}
    for name in every:
        run.save_figure(figure(results["rows"], name, rows, run.seeds),
                        f"discrete_{name}.png")
    run.write_json(results)
    run.write_markdown(markdown(results, every, rows, run))


# --------------------------------------------------------------------------- summary


def _at_epoch(rec: dict[str, Any], epoch: float, key_: str) -> Any:
    return next((h[key_] for h in rec["history"] if abs(h["epoch"] - epoch) < 1e-9), None)


def summarize(records: dict[str, Any], name: str, rows: list[str], seeds: list[int]
              ) -> dict[str, Any]:
    """Per row, over seeds: the test accuracy after the first epoch and at the end, the
    training cost, the zero fraction, the seconds per epoch, the compile time and the peak
    memory; and the claim's checks where the rows exist."""
    out: dict[str, Any] = {}
    for row in rows:
        recs = [records[key(name, row, s)] for s in seeds if key(name, row, s) in records]
        if not recs:
            continue
        epochs = recs[0]["history"][-1]["epoch"]
        out[row] = {
            "test_accuracy_epoch1": common.stats(_at_epoch(r, 1.0, "test_accuracy")
                                                 for r in recs),
            "test_accuracy": common.stats(r["test_accuracy"] for r in recs),
            "cost": common.stats(r["cost"] for r in recs),
            "zero_fraction": common.stats(r["zero_fraction"] for r in recs),
            "s_per_epoch": common.stats((r["train_time_s"] - r["history"][0]["time_s"])
                                        / epochs for r in recs),
            "compile_time_s": common.stats(r["compile_time_s"] for r in recs),
            "train_time_s": common.stats(r["train_time_s"] for r in recs),
            "peak_rss_mib": common.stats(r["peak_rss_mib"] for r in recs),
            "training_peak_rss_mib": common.stats(r["training_peak_rss_mib"] for r in recs),
            "training_rss_growth_mib": common.stats(r["training_peak_rss_mib"]
                                                    - r["rss_before_solve_mib"]
                                                    for r in recs),
            "rss_before_solve_mib": common.stats(r["rss_before_solve_mib"] for r in recs)}
    out["checks"] = checks(out)
    return out


def checks(rows: dict[str, Any]) -> dict[str, Any]:
    """The claim's three comparisons, in accuracy points, where the rows were run."""
    mean = lambda row, k="test_accuracy": rows[row][k]["mean"]  # noqa: E731
    found: dict[str, Any] = {}
    if {"msa-binary", "binaryconnect"} <= rows.keys():
        found["msa_binary_minus_binaryconnect_points"] = 100 * (mean("msa-binary")
                                                                - mean("binaryconnect"))
    if {"msa-binary", "adam"} <= rows.keys():
        found["adam_minus_msa_binary_points"] = 100 * (mean("adam") - mean("msa-binary"))
    if {"msa-ternary", "msa-binary"} <= rows.keys():
        found["msa_binary_minus_msa_ternary_points"] = 100 * (mean("msa-binary")
                                                              - mean("msa-ternary"))
        found["msa_ternary_zero_fraction"] = mean("msa-ternary", "zero_fraction")
    return found


def figure(records: dict[str, Any], name: str, rows: list[str], seeds: list[int]) -> Any:
    """Test accuracy against epoch (mean over seeds, the band min..max) and against wall
    time (seed by seed), and the zero fraction against epoch."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for i, row in enumerate(rows):
        recs = [records[key(name, row, s)] for s in seeds if key(name, row, s) in records]
        if not recs:
            continue
        color = f"C{i}"
        ep = [h["epoch"] for h in recs[0]["history"]][1:]
        acc = np.array([[h["test_accuracy"] or np.nan for h in r["history"][1:]]
                        for r in recs], float)
        axes[0].plot(ep, np.nanmean(acc, 0), "o-", color=color, label=row)
        axes[0].fill_between(ep, np.nanmin(acc, 0), np.nanmax(acc, 0), color=color, alpha=0.2)
        for j, r in enumerate(recs):
            axes[1].plot([h["time_s"] for h in r["history"][1:]], acc[j], "o-", color=color,
                         alpha=0.8, label=row if j == 0 else None)
            axes[2].plot([h["epoch"] for h in r["history"]],
                         [h["zero_fraction"] if h["zero_fraction"] is not None
                          else r["zero_fraction"] for h in r["history"]], "-", color=color,
                         label=row if j == 0 else None)
    axes[0].set(xlabel="epoch", ylabel="test accuracy", title=f"{name}: per epoch")
    axes[1].set(xlabel="wall time from the start of the solve [s] (compilation included)",
                ylabel="test accuracy", title="against time")
    axes[2].set(xlabel="epoch", ylabel="fraction of zero entries of A",
                title="sparsity (straight-through rows: final only)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def markdown(results: dict[str, Any], settings: dict[str, Setting], rows: list[str],
             run: common.Run) -> str:
    """The summary page: one table per dataset and the checks."""
    parts = []
    for name, s in settings.items():
        summ = results["summary"][name]
        table = common.md_table(
            ["row", "test acc, epoch 1", f"test acc, epoch {s.epochs}", "training J",
             "zero fraction", "s / epoch", "compile [s]", "training peak RSS [MiB]",
             "its growth [MiB]", "peak RSS with the final evaluation [MiB]"],
            [[row, common.pm(r["test_accuracy_epoch1"]), common.pm(r["test_accuracy"]),
              common.pm(r["cost"]), common.pm(r["zero_fraction"], ".3f"),
              common.pm(r["s_per_epoch"], ".3g"), common.pm(r["compile_time_s"], ".3g"),
              common.pm(r["training_peak_rss_mib"], ".4g"),
              common.pm(r["training_rss_growth_mib"], ".4g"), common.pm(r["peak_rss_mib"], ".4g")]
             for row, r in summ.items() if row != "checks"])
        checks_ = ", ".join(f"{k} {common.fmt(v, '.3g')}" for k, v in summ["checks"].items())
        parts += [f"## {name}", "", table, "", f"Checks: {checks_ or '—'}.", ""]
    settings_text = "; ".join(
        f"{n}: L = {s.layers}, batch {s.batch}, {s.epochs} epochs, "
        f"{s.dtype or 'default precision'}, sparsity "
        f"{s.sparsity:g}, Adam lr {s.lr_real:g} (real) / {s.lr_ste:g} (straight-through)"
        for n, s in settings.items())
    return common.experiment_markdown(
        "Binary and ternary ResNets: discrete MSA against the straight-through estimator",
        CLAIM, settings_text, "\n".join(parts),
        [(f"discrete_{n}.png", f"{n}: test accuracy per epoch and against time, and the "
          "fraction of zero weights") for n in settings], run)


def main(argv: list[str] | None = None) -> int:
    return common.main_wrapper(NAME, __doc__, body, argv, configure=configure)


if __name__ == "__main__":
    sys.exit(main())
