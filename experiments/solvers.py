"""Solvers against gradient descent: one problem, one initialization, every solver.

Claim tested: the solvers of optimal control — Pontryagin's MSA and E-MSA, and the
direct method (CasADi + IPOPT, single and multiple shooting, and warm-started from Adam)
— are honest competitors of gradient descent (SGD, Adam, L-BFGS) on the same problem from
the same initialization: final cost, training and test accuracy, iterations, wall time
and time to a target cost, over several seeds (mean and spread).

Problems: the ring, the spiral, a noisy ring (Gaussian input noise and mislabelled points)
and scikit-learn's 8×8 digits (bundled with scikit-learn, read from disk, no download;
skipped with a message when scikit-learn is not installed). The digits (64 pixels) are
projected on their first k principal components (computed on the training split),
standardized, and solved with width k for two values of k, so that the controls per layer
``k(k+1)`` grow about fourfold: how each solver scales with them.

Everything goes through ``controldl.compare.compare`` (one call per problem and seed).
Seed s draws the data (and the split) with seed s and initializes with seed s. "SGD" is
``optax.sgd`` on the full batch (plain gradient descent). The target of "time to target"
is compare's default: 1.1 × the best final cost of that seed's run. CasADi warm-started
from Adam is charged Adam's time too (column "incl. warm start").
"""

from __future__ import annotations

import sys

import matplotlib.pyplot as plt
import numpy as np

import controldl as cdl
from controldl import plotting
from controldl.compare import compare
from experiments import common

NAME = "solvers"


def specs(iters: dict[str, int], hessian: str = "exact") -> list[str]:
    """The line-up with iteration limits ``iters`` (keys gd, lbfgs, pmp, casadi, multiple,
    polish). ``hessian`` is CasADi's: ``exact`` for the small 2-D problems,
    ``limited-memory`` for the digits (with hundreds of controls per layer, CasADi's
    construction of the exact-Hessian NLP did not finish in 13 minutes)."""
    h = f"hessian={hessian}"
    return [f"sgd:lr=0.1:max_iter={iters['gd']}:label=sgd",
            f"adam:lr=0.03:max_iter={iters['gd']}:label=adam",
            f"lbfgs:max_iter={iters['lbfgs']}:label=lbfgs",
            f"msa:max_iter={iters['pmp']}:label=msa",
            f"emsa:max_iter={iters['pmp']}:label=emsa",
            f"casadi:{h}:max_iter={iters['casadi']}:label=casadi-single",
            f"casadi:transcription=multiple:{h}:max_iter={iters['multiple']}"
            ":label=casadi-multiple",
            f"casadi:{h}:from=adam:max_iter={iters['polish']}:label=casadi-from-adam"]


def sizes(quick: bool) -> dict:
    """Sizes and limits. The time limit is a safety net (it counts compilation, so on a
    busy machine a tight one would stop a solver before its first iteration); the
    iteration limits are what ends most solves."""
    if quick:
        it = dict(gd=150, lbfgs=40, pmp=10, casadi=15, multiple=4, polish=10)
        return dict(n=80, layers=5, horizon=5.0, l2=1e-3, iters=it, max_time=120.0,
                    digits_n=120, digits_k=(4,), digits_layers=3, digits_horizon=2.0,
                    digits_iters=it, digits_max_time=120.0, digits_seeds=1)
    return dict(n=160, layers=10, horizon=5.0, l2=1e-3,
                iters=dict(gd=3000, lbfgs=500, pmp=300, casadi=60, multiple=15, polish=40),
                max_time=90.0, digits_n=400, digits_k=(8, 16), digits_layers=4,
                digits_horizon=2.0,
                digits_iters=dict(gd=400, lbfgs=300, pmp=20, casadi=60, multiple=10,
                                  polish=40),
                digits_max_time=45.0, digits_seeds=2)


def load_digits_or_reason() -> tuple[np.ndarray, np.ndarray] | str:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        return ("scikit-learn is not installed, so the digits problem was skipped "
                "(pip install scikit-learn to include it; it is not a controldl dependency)")
    X, y = load_digits(return_X_y=True)
    return X / 16.0, y.astype(np.int64)


def digits_problem(raw: tuple[np.ndarray, np.ndarray], k: int, n: int, seed: int,
                   S: dict) -> cdl.Problem:
    """``n`` digits drawn with ``seed``, a stratified quarter held out, projected on the
    first ``k`` principal directions of the training split, then standardized."""
    X, y = raw
    idx = np.random.default_rng(seed).permutation(len(y))[:n]
    data = cdl.data.train_test_split(
        cdl.data.classification(X[idx], y[idx], {"name": "digits", "n_samples": n,
                                                  "seed": seed}), 0.25, seed=seed)
    mean = data.X_train.mean(axis=0)
    _, _, vt = np.linalg.svd(data.X_train - mean, full_matrices=False)
    basis = vt[:k].T
    projected = cdl.Dataset((data.X_train - mean) @ basis, data.y_train,
                            (data.X_test - mean) @ basis, data.y_test,
                            n_classes=data.n_classes,
                            source={**data.source, "projection": f"PCA to {k} of 64 pixels "
                                    "(fitted on the training split)"})
    return cdl.Problem(cdl.data.standardize(projected), width=k, layers=S["digits_layers"],
                       horizon=S["digits_horizon"], l2=S["l2"])


def problems(S: dict, seed: int, digits: tuple | str, with_digits: bool = True
             ) -> dict[str, cdl.Problem]:
    split = lambda d: cdl.data.train_test_split(d, 0.25, seed=seed)  # noqa: E731
    form = dict(width=3, layers=S["layers"], horizon=S["horizon"], l2=S["l2"])
    out = {
        "ring": cdl.Problem(split(cdl.data.ring(S["n"], seed=seed)), **form),
        "spiral": cdl.Problem(split(cdl.data.spiral(S["n"], seed=seed)), **form),
        "noisy-ring": cdl.Problem(split(cdl.data.ring(S["n"], seed=seed, noise=0.05,
                                                      flip=0.05)), **form),
    }
    if with_digits and not isinstance(digits, str):
        for k in S["digits_k"]:
            out[f"digits-pca{k}"] = digits_problem(digits, k, S["digits_n"], seed, S)
    return out


METRICS = ("cost", "train_accuracy", "test_accuracy", "iterations", "wall_time_s",
           "compile_time_s", "seconds_per_iteration", "time_to_target_s",
           "time_to_target_excl_compile_s", "time_to_target_incl_warm_start_s",
           "time_to_loose_target_s", "time_to_loose_target_excl_compile_s")
LOOSE = 2.0  # the loose target: LOOSE × the best final cost of the seed's run


def body(run: common.Run) -> None:
    S = sizes(run.quick)
    used_specs: dict[str, list[str]] = {}
    digits = load_digits_or_reason()
    if isinstance(digits, str):
        run.log(digits)
    rows: dict[str, list[dict]] = {}
    controls: dict[str, int] = {}
    described: dict[str, dict] = {}
    for i, seed in enumerate(run.seeds):
        for pname, problem in problems(S, seed, digits, i < S["digits_seeds"]).items():
            controls[pname] = problem.width * (problem.width + 1)
            described[pname] = {"model": problem.model, "width": problem.width,
                                "layers": problem.layers, "horizon": problem.horizon,
                                "l2": problem.l2, "loss": problem.loss,
                                "n_train": problem.data.n_train,
                                "n_test": len(problem.data.X_test),
                                "data": problem.data.source}
            run.log(f"seed {seed}, {pname}: {problem!r}")
            digit = pname.startswith("digits")
            spec_list = specs(S["digits_iters" if digit else "iters"],
                              "limited-memory" if digit else "exact")
            used_specs[pname] = spec_list
            comp = compare(problem, spec_list, seed=seed,
                           max_time=S["digits_max_time" if digit else "max_time"])
            adam = comp.solutions["adam"]
            loose = LOOSE * comp.target / 1.1 if comp.target_rule.startswith("1.1") \
                else LOOSE * comp.target
            for record in comp.rows():
                # A warm-started row's times already include its predecessor's.
                row = dict(record.asdict(), seed=seed, problem=pname, target=comp.target,
                           loose_target=loose)
                sol = comp.solutions[row["solver"]]
                hit = next((h for h in sol.history
                            if h["cost"] is not None and h["cost"] <= loose), None)
                row["time_to_loose_target_s"] = (
                    None if hit is None else hit["time_s"] + row["predecessor_time_s"])
                row["time_to_loose_target_excl_compile_s"] = (
                    None if hit is None else hit["time_s"] - sol.compile_time_s)
                row["time_to_target_excl_compile_s"] = (
                    None if row["time_to_target_s"] is None
                    else row["time_to_target_s"] - row["compile_time_s"]
                    - row["predecessor_compile_time_s"])
                row["time_to_target_incl_warm_start_s"] = row["time_to_target_s"]
                rows.setdefault(pname, []).append(row)
                run.log(f"  {row['solver']:17s} {row['status']:14s} cost {row['cost']:.4g} "
                        f"test {common.fmt(row['test_accuracy'], '.3f')} it "
                        f"{row['iterations']} {row['wall_time_s']:.1f}s")
            if seed == run.seeds[0]:
                histories = comp.histories()  # warm-started rows drawn after their start
                if "casadi-from-adam" in histories:
                    histories["casadi-from-adam"] = [
                        dict(h, iteration=h["iteration"] + adam.iterations)
                        for h in histories["casadi-from-adam"]]
                fig = plotting.history_figure(histories, title=f"{pname}: {problem!r}, "
                                              f"seed {seed} (target {comp.target:.3g})")
                for ax in fig.axes[:2]:
                    ax.axhline(comp.target, color="k", lw=0.6, ls=":")
                run.save_figure(fig, f"history_{pname}.png")

    solvers_order = list(dict.fromkeys(r["solver"] for prow in rows.values() for r in prow))
    summary: dict[str, dict] = {}
    for pname, prow in rows.items():
        summary[pname] = {}
        for solver in solvers_order:
            mine = [r for r in prow if r["solver"] == solver]
            entry = {m: common.stats([r[m] for r in mine]) for m in METRICS}
            entry["reached_target"] = sum(r["time_to_target_s"] is not None for r in mine)
            entry["reached_loose_target"] = sum(r["time_to_loose_target_s"] is not None
                                                for r in mine)
            entry["statuses"] = [r["status"] for r in mine]
            summary[pname][solver] = entry

    # How the time per iteration grows with the controls per layer (digits).
    scaling = {}
    dig = [p for p in rows if p.startswith("digits")]
    if len(dig) == 2:
        small, large = sorted(dig, key=lambda p: controls[p])
        for solver in solvers_order:
            a = summary[small][solver]["seconds_per_iteration"]["mean"]
            b = summary[large][solver]["seconds_per_iteration"]["mean"]
            scaling[solver] = {
                "controls_per_layer": [controls[small], controls[large]],
                "seconds_per_iteration": [a, b],
                "ratio": None if not a or b is None else b / a,
                "exponent": None if not a or b is None
                else float(np.log(b / a) / np.log(controls[large] / controls[small])),
            }

    # Overview figure: final cost against wall time, every seed and solver.
    fig, axes = plt.subplots(1, len(rows), figsize=(3.6 * len(rows), 3.6), squeeze=False)
    for ax, (pname, prow) in zip(axes[0], rows.items(), strict=True):
        for k, solver in enumerate(solvers_order):
            mine = [r for r in prow if r["solver"] == solver]
            t = [r["wall_time_s"] + (_adam_wall(prow, r["seed"])
                                     if solver == "casadi-from-adam" else 0.0) for r in mine]
            ax.scatter(t, [r["cost"] for r in mine], s=14,
                       color=plotting.CLASS_COLORS[k % 10], label=solver)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("wall time [s]")
        ax.set_title(pname, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("final cost")
    axes[0][-1].legend(fontsize=6)
    fig.suptitle("Final cost against wall time (compilation included), every seed")
    fig.tight_layout()
    run.save_figure(fig, "cost_vs_time_all.png")

    results = {"sizes": S, "specs": used_specs, "problems": described,
               "controls_per_layer": controls, "rows": rows, "summary": summary,
               "controls_scaling": scaling,
               "digits": "included" if not isinstance(digits, str) else digits,
               "target_rule": "1.1 × the best final cost of the seed's run",
               "loose_target_rule": f"{LOOSE:g} × the best final cost of the seed's run"}
    run.write_json(results)

    parts = []
    for pname in rows:
        table_rows = []
        for solver in solvers_order:
            e = summary[pname][solver]
            table_rows.append([
                solver, common.pm(e["cost"], ".3g"), common.pm(e["train_accuracy"], ".3f"),
                common.pm(e["test_accuracy"], ".3f"), common.pm(e["iterations"], ".0f"),
                common.pm(e["wall_time_s"], ".2f"), common.pm(e["compile_time_s"], ".2f"),
                common.pm(e["seconds_per_iteration"], ".2e"),
                f"{e['reached_target']}/{len(e['statuses'])}: "
                f"{common.pm(e['time_to_target_excl_compile_s'], '.2f')}",
                f"{e['reached_loose_target']}/{len(e['statuses'])}: "
                f"{common.pm(e['time_to_loose_target_excl_compile_s'], '.2f')}",
                common.pm(e["time_to_loose_target_s"], ".2f"),
                ", ".join(sorted(set(e["statuses"])))])
        d = described[pname]
        parts.append(
            f"### {pname}\n\nwidth {d['width']} ({controls[pname]} controls per layer), "
            f"L = {d['layers']}, T = {d['horizon']:g}, {d['loss']} loss, l2 = {d['l2']:g}; "
            f"{d['n_train']} training and {d['n_test']} test points.\n\n"
            + common.md_table(["solver", "final cost", "train acc", "test acc", "iterations",
                               "wall [s]", "compile [s]", "s / iteration",
                               "reached 1.1× best: s to it (excl. compile)",
                               f"reached {LOOSE:g}× best: s to it (excl. compile)",
                               f"s to {LOOSE:g}× best (incl. compile and warm start)",
                               "status"],
                              table_rows))
    if scaling:
        srows = [[s, *(common.fmt(v, ".2e") for v in e["seconds_per_iteration"]),
                  common.fmt(e["ratio"], ".2f"), common.fmt(e["exponent"], ".2f")]
                 for s, e in scaling.items()]
        c0, c1 = next(iter(scaling.values()))["controls_per_layer"]
        parts.append("### Time per iteration against the controls per layer (digits)\n\n"
                     + common.md_table(["solver", f"s/it at {c0}", f"s/it at {c1}", "ratio",
                                        f"exponent (ratio = ({c1}/{c0})^e)"], srows))
    if isinstance(digits, str):
        parts.append(f"**Digits skipped:** {digits}.")
    first = next(iter(used_specs.values()), [])
    last = next(reversed(used_specs.values()), [])
    settings = (f"seeds {run.seeds} (the digits: the first {S['digits_seeds']}); a quarter "
                f"of every data set held out for the test accuracy; per-solve time limit "
                f"{S['max_time']:g} s "
                f"({S['digits_max_time']:g} s for the digits; compilation included); solver "
                "specs for the 2-D problems " + ", ".join(f"`{s}`" for s in first)
                + (("; for the digits " + ", ".join(f"`{s}`" for s in last))
                   if last != first else "")
                + ". Values are mean ± standard deviation over seeds. Targets: compare's, "
                f"1.1 × the best final cost of that seed's run, and a loose one, {LOOSE:g} × "
                "that cost; 'reached k/n: t' counts the seeds that reached it and averages "
                "the seconds over those. CasADi warm-started from Adam is charged Adam's "
                "wall time in the last time column.")
    figs = [(f"history_{p}.png", f"{p}: cost against iteration and against wall time "
             f"(seed {run.seeds[0]})") for p in rows]
    figs.append(("cost_vs_time_all.png", "Final cost against wall time, every seed"))
    run.write_markdown(common.experiment_markdown(
        "Solvers against gradient descent", "MSA / E-MSA and the direct method (CasADi) "
        "against SGD, Adam and L-BFGS on the same problems from the same initialization.",
        settings, "\n\n".join(parts), figs, run))


def _adam_wall(prow: list[dict], seed: int) -> float:
    return next(r["wall_time_s"] for r in prow if r["seed"] == seed and r["solver"] == "adam")


def main(argv: list[str] | None = None) -> int:
    return common.main_wrapper(NAME, __doc__, body, argv)


if __name__ == "__main__":
    sys.exit(main())
