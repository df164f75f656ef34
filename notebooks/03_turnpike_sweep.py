# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # A turnpike sweep
#
# Esteve, Geshkovski, Pighin & Zuazua ("Large-time asymptotics in deep learning") study
# what happens when the horizon $T$ of the ResNet-as-ODE grows:
#
# - with the L² control cost $\frac{\lambda}{2} h \sum_t \|\theta_t\|^2$ alone, the optimal
#   terminal training error decays like $O(1/T)$;
# - with a running (integral) loss $\gamma h \sum_{t} \frac1N \sum_i \ell(z_i(t), y_i)$,
#   the optimal controls and the running error decay exponentially inside the horizon,
#   $\|\theta(t)\| \lesssim C e^{-\mu t}$: the *turnpike*.
#
# `controldl.turnpike.sweep` solves one problem for several horizons (each warm-started
# from the previous one, its controls interpolated in rescaled time $t/T$), measures
# profiles inside each horizon and fits both laws. This notebook runs two small sweeps;
# `controldl turnpike` does the same from the command line.
#
# `CONTROLDL_NOTEBOOK_QUICK=1` makes the sweeps tiny (the fits are then meaningless).

# %%
import os
import shutil
import sys
from pathlib import Path

import controldl as cdl
from controldl import turnpike, turnpike_plots

QUICK = os.environ.get("CONTROLDL_NOTEBOOK_QUICK", "0") == "1"
OUT = Path(os.environ.get("CONTROLDL_NOTEBOOK_OUT", "runs/notebooks")) / "03_turnpike_sweep"
shutil.rmtree(OUT, ignore_errors=True)  # a sweep refuses a directory it did not write
OUT.mkdir(parents=True, exist_ok=True)
N_SAMPLES = 60 if QUICK else 200
HORIZONS = [1.0, 2.0] if QUICK else [1.0, 2.0, 4.0, 8.0]
RUNNING_HORIZONS = [2.0] if QUICK else [4.0, 8.0]
STEP = 0.5 if QUICK else 0.25
MAX_ITER = 10 if QUICK else 300


def show(fig, name):
    """Save a figure under OUT; display it when running in Jupyter."""
    path = OUT / f"{name}.png"
    fig.savefig(path, dpi=90, bbox_inches="tight")
    turnpike_plots.plt.close(fig)
    if "ipykernel" in sys.modules:
        from IPython.display import Image, display

        display(Image(filename=str(path)))


def fit_text(fit, key):
    """A fit's value with its 95 % interval, or why there is none."""
    if fit is None or fit.get(key) is None:
        return "n/a" + (f" ({fit['note']})" if fit and fit.get("note") else "")
    ci = fit.get("ci95")
    return f"{fit[key]:.3g}" + ("" if ci is None else f" (95% CI {ci[0]:.3g} .. {ci[1]:.3g})")


# %% [markdown]
# ## Sweep 1: the L² penalty alone
#
# The ring, width 3, $\lambda = 10^{-3}$ and a small readout penalty, a fixed step
# $h = 0.25$ (so $L = T/h$ layers) and L-BFGS (Adam in quick mode, cheaper to compile).
# The template problem's `layers` and `horizon` are replaced for each horizon. Each
# horizon is a new problem for JAX (the number of layers and the step are static), so the
# solver is compiled once per horizon: on a small CPU that, not the iterations, is most
# of the time of a sweep.

# %%
data = cdl.data.ring(N_SAMPLES, seed=0)
template = cdl.Problem(data, width=3, layers=4, horizon=1.0, l2=1e-3, readout_l2=1e-3)
solver = cdl.GradientDescent("adam", lr=0.05) if QUICK else cdl.GradientDescent("lbfgs")
result = turnpike.sweep(template, HORIZONS, solver, fixed="step", step=STEP,
                        out=OUT / "l2", max_iter=MAX_ITER)
for e in result.report["horizons"]:
    print(f"T={e['horizon']:g}  L={e['layers']}  terminal error {e['terminal_error']:.4g}  "
          f"cost {e['cost']['total']:.5g}  {e['status']}")
print("slope of log error against log T:",
      fit_text(result.report["error_vs_horizon_slope"], "slope"))

# %% [markdown]
# The terminal error against $T$ on log–log axes, with the fitted slope (the theory's
# $O(1/T)$ is a slope of −1 for the optimal controls; a solver that stops early, or a
# horizon so short that the error is dominated by the control cost, bends the line).

# %%
show(turnpike_plots.error_vs_horizon_figure(result.report), "l2_error_vs_horizon")

# %% [markdown]
# ## Sweep 2: a running loss
#
# The same problem with a running loss $\gamma = 1$ (horizons 4 and 8): the loss of the
# final readout is charged at every layer. The profiles inside the horizons show the controls
# $\|\theta(t)\|$ and the running error decaying in $t$; the exponential fits leave out the
# final quarter of each horizon (the final transient).

# %%
running = template.replace(running=1.0)
result2 = turnpike.sweep(running, RUNNING_HORIZONS, solver, fixed="step", step=STEP,
                         out=OUT / "running", max_iter=MAX_ITER)
print("control decay rate μ (longest T):",
      fit_text(result2.report["control_decay_rate"], "rate"))
print("running error decay rate (longest T):",
      fit_text(result2.report["running_error_decay_rate"], "rate"))

# %%
show(turnpike_plots.profiles_figure(result2.report), "running_profiles")

# %%
show(turnpike_plots.controls_heatmap_figure(result2.solutions), "running_controls")

# %% [markdown]
# ## Resuming
#
# Every horizon is saved as it finishes (`OUT/T=<T>/`, a solution directory) and
# `turnpike.json` is rewritten after each one, so an interrupted sweep loses nothing.
# `resume=True` loads what is there and solves only the missing horizons:

# %%
again = turnpike.sweep(template, HORIZONS, solver, fixed="step", step=STEP,
                       out=OUT / "l2", resume=True, max_iter=MAX_ITER)
print("solved:", again.solved, "loaded:", again.loaded)
