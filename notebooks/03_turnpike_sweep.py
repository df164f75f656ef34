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
# # A turnpike sweep
#
# Esteve, Geshkovski, Pighin & Zuazua ("Large-time asymptotics in deep learning") prove two
# things about long horizons $T$, for dynamics homogeneous in the parameters
# ($\dot x = W(t)\sigma(x) + b(t)$, our `model="inside"`):
#
# - with the L² control cost alone, the risk at the horizon is **bounded** by $C/T$;
# - with a tracking term toward fixed targets (a distance-type loss, so that a steady set
#   exists), the optimal controls and states satisfy the exponential **turnpike** estimate
#   $\|\theta_T(t)\| + \mathrm{dist}(x_T(t), \text{steady set}) \le C(e^{-\mu t} +
#   e^{-\mu(T-t)})$ with $C, \mu$ independent of $T$.
#
# `controldl.studies.turnpike.sweep` solves every horizon to a stationarity tolerance
# (L-BFGS finishes where the first solver stops short), starts each horizon from the
# cheapest of three candidate starts, checks the free padding certificate
# $J_{T'} \le J_T + \gamma (T'-T) E_T(T)$, and fits the two-arc model per horizon.
#
# `CONTROLDL_NOTEBOOK_QUICK=1` makes the sweeps tiny (the fits are then meaningless).

# %%
import os
import shutil
import sys
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import controldl as cdl  # noqa: E402
from controldl.plotting import turnpike as plots  # noqa: E402
from controldl.studies import turnpike  # noqa: E402

QUICK = os.environ.get("CONTROLDL_NOTEBOOK_QUICK", "0") == "1"
OUT = Path(os.environ.get("CONTROLDL_NOTEBOOK_OUT", "runs/notebooks")) / "03_turnpike_sweep"
shutil.rmtree(OUT, ignore_errors=True)  # a sweep refuses a directory it did not write
OUT.mkdir(parents=True, exist_ok=True)
N_SAMPLES = 30 if QUICK else 80
HORIZONS = [1.0, 2.0] if QUICK else [2.0, 4.0, 8.0, 12.0]
STEP = 0.5 if QUICK else 0.25
if QUICK:
    print(f"QUICK RUN (CONTROLDL_NOTEBOOK_QUICK=1): reduced sizes, {N_SAMPLES} points, "
          f"horizons {HORIZONS} at step {STEP}: the fits below are meaningless; the "
          "notebook's own sizes are 80 points and horizons 2, 4, 8, 12 at step 0.25.")


def show(fig, name):
    """Save a figure under OUT; display it when running in Jupyter."""
    path = OUT / f"{name}.png"
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plots.plt.close(fig)
    if "ipykernel" in sys.modules:
        from IPython.display import Image, display

        display(Image(filename=str(path)))


# %% [markdown]
# ## The tracking problem
#
# The ring, width 3, the `inside` dynamics, the squared loss on ±1 targets through the
# fixed projector $z = x_1$ (`train_readout=False`, `projector="coordinate"`), a running
# term $\gamma = 1$ and $\lambda = 10^{-2}$.

# %%
data = cdl.data.ring(N_SAMPLES, seed=0)
template = cdl.Problem(data, model="inside", width=3, layers=1, horizon=1.0, loss="squared",
                       running=1.0, l2=1e-2, train_readout=False)
# extend=(): only these horizons (by default a sweep whose horizons disagree adds longer ones)
options = turnpike.SweepOptions(tol=1e-6, projector="coordinate", n_boot=10 if QUICK else 50,
                                extend=())
result = turnpike.sweep(template, HORIZONS, cdl.GradientDescent("lbfgs", grad_tol=1e-7),
                        options=options, step=STEP, out=OUT / "tracking", max_iter=5000)
rep = result.report
for e in rep["horizons"]:
    print(f"T={e['horizon']:g}  {e['status']}  stationarity {e['stationarity']:.1e}  "
          f"J {e['cost']['total']:.6g}  start {e['start']['chosen']}")
print("certificate holds:", rep["certificate"]["holds"])
for r in rep["rate_per_horizon"]:
    print(f"mu(T={r['horizon']:g}) =", r["rate"], r["ci95"], r["model"])
print("verdict:", rep["verdict"]["summary"])

# %% [markdown]
# The profiles in absolute time and in $t/T$, and μ per horizon: the theorem predicts the
# same μ for every long horizon (docs/turnpike.md explains the fit and the verdict).

# %%
show(plots.profiles_figure(rep), "tracking_profiles")
show(plots.rates_figure(rep), "tracking_rates")

# %% [markdown]
# ## Resuming
#
# Every horizon is saved as it finishes and `turnpike.json` is rewritten after each one;
# `resume=True` loads what is there and solves only the missing horizons.

# %%
again = turnpike.sweep(template, HORIZONS, cdl.GradientDescent("lbfgs", grad_tol=1e-7),
                       options=options, step=STEP, out=OUT / "tracking", resume=True,
                       max_iter=5000)
print("solved:", again.solved, "loaded:", again.loaded)
