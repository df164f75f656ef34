# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Three solvers, one problem
#
# The same training problem solved three ways, from the same initialization:
#
# 1. **gradient descent** (backpropagation with optax's Adam, and L-BFGS),
# 2. **Pontryagin's maximum principle**: Li et al.'s extended method of successive
#    approximations (E-MSA, every layer maximizes its augmented Hamiltonian with a few
#    inner L-BFGS steps, ρ fixed), and `pmp-newton` (a layer-wise trust-region Newton
#    method on the augmented Hamiltonian, with momentum),
# 3. the **direct method**: the whole problem as one nonlinear program for IPOPT (CasADi),
#    alone and warm-started from Adam's solution.
#
# `controldl.compare.compare` runs them and keeps every solution; its table counts time
# from the start of each solve, compilation included. The numbers printed below come from
# the machine that runs the notebook: read them, don't quote them.
#
# `CONTROLDL_NOTEBOOK_QUICK=1` makes the problem and the budgets small.

# %%
import os
from pathlib import Path

import jax

import controldl as cdl
from controldl import plotting
from controldl.compare import compare, table_markdown

jax.config.update("jax_enable_x64", True)  # float64: importing controldl sets nothing

QUICK = os.environ.get("CONTROLDL_NOTEBOOK_QUICK", "0") == "1"
OUT = Path(os.environ.get("CONTROLDL_NOTEBOOK_OUT", "runs/notebooks")) / "02_three_solvers"
OUT.mkdir(parents=True, exist_ok=True)
N_SAMPLES = 80 if QUICK else 300
LAYERS = 6 if QUICK else 20
MAX_ITER = 15 if QUICK else None  # None: each solver's own limit
MAX_TIME = None if QUICK else 15.0  # seconds per solver, compilation included
if QUICK:
    print(f"QUICK RUN (CONTROLDL_NOTEBOOK_QUICK=1): reduced sizes, {N_SAMPLES} ring points, "
          f"L = {LAYERS} and {MAX_ITER} iterations per solver, so most rows stop at their "
          "iteration limit; the notebook's own sizes are 300 points, L = 20 and 15 s per "
          "solver.")


# %% [markdown]
# ## The problem
#
# The ring with a quarter of the points held out, width 3, $T = 5$, and an L² control
# cost. Which solvers are installed?

# %%
data = cdl.data.train_test_split(cdl.data.ring(N_SAMPLES, seed=1), 0.25, seed=1)
problem = cdl.Problem(data, width=3, layers=LAYERS, horizon=5.0, l2=1e-3)
print(problem)
print("available solvers:", cdl.available())

# %% [markdown]
# ## One solver at a time
#
# Every solver goes through `controldl.solve`; `make_solver` builds one by name with its
# options. The solution says how it stopped and what to do next.

# %%
emsa = cdl.solve(problem, cdl.make_solver("emsa", rho=1.0), max_iter=MAX_ITER or 200,
                 max_time=MAX_TIME)
print(emsa.summary())
gap = cdl.hamiltonian_gap(problem, emsa, cdl.EMSA(rho=1.0), starts=4)
print(f"stationarity {emsa.stats['stationarity']:.3g} (the same measure for every solver), "
      f"largest Hamiltonian gap ≥ {max(gap.layers):.3g} (how far a layer is from "
      f"maximizing its H̃_t, a lower bound from {gap.starts} perturbed starts), "
      f"ρ {emsa.stats['rho']:.3g} (fixed), "
      f"work {emsa.stats['work']:.0f} gradient evaluations")

# %% [markdown]
# ## All of them, from the same initialization
#
# A *spec* names a solver and its options: `adam:lr=0.03:label=adam` is gradient descent
# with Adam (learning rate 0.03, shown as `adam`), `lbfgs` the strongest first-order
# baseline, `emsa` the extended MSA, `pmp-newton` the tuned Pontryagin method, `casadi` IPOPT
# from the shared initialization and `casadi:from=adam` IPOPT warm-started from Adam's
# result (a second-order polish).

# %%
specs = ["adam:lr=0.03:label=adam", "lbfgs", "emsa", "pmp-newton", "casadi",
         "casadi:from=adam"]
comparison = compare(problem, specs, seed=0, max_iter=MAX_ITER, max_time=MAX_TIME)
print(table_markdown(comparison))
print(f"\ntarget for 'time to target': {comparison.target:.4g} ({comparison.target_rule})")

# %% [markdown]
# Cost against iterations and against wall time: the Pontryagin and direct methods take
# far fewer (and far more expensive) iterations than gradient descent.

# %%
fig = plotting.history_figure({k: s.history for k, s in comparison.solutions.items()},
                              title=repr(problem))

# %% [markdown]
# The solution with the lowest cost, in input space (training points as dots, test points
# as crosses).

# %%
best_label, best = min(comparison.solutions.items(), key=lambda kv: kv[1].cost["total"])
print("lowest cost:", best_label, f"{best.cost['total']:.5g}")
fig = plotting.decision_regions_figure(best)

# %% [markdown]
# `controldl compare` on the command line does the same and writes a report:
# `write_report` is what it calls.

# %%
from controldl.compare import write_report  # noqa: E402

report_dir = write_report(comparison, OUT / "report", figures=False)
print((report_dir / "report.md").read_text()[:1200])
