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
# # A first ResNet as a control problem
#
# A residual network with $L$ layers of width $d$ is the explicit Euler scheme of an ODE
# with step $h = T/L$:
#
# $$x_i(t+1) = x_i(t) + h\,\sigma(A_t x_i(t) + b_t), \qquad x_i(0) = (X_i, 0, \dots, 0).$$
#
# The data points are the initial states, the layers are time steps, and the weights
# $\theta_t = (A_t, b_t)$ are the controls. Training means choosing the controls (and the
# readout $z = Wx(L) + c$) to minimize a terminal loss plus a control cost. This notebook
# builds that problem for the ring data set, looks at its pieces, checks that the
# costates of the maximum principle are exactly backpropagation, solves it with gradient
# descent and draws the data flowing through the layers.
#
# Open `notebooks/01_first_control.ipynb` in Jupyter (it is paired with this `.py` by
# jupytext, which keeps the two in sync), or run it as a script
# (`python notebooks/01_first_control.py`).
# `CONTROLDL_NOTEBOOK_QUICK=1` makes everything small (the test suite uses that);
# the saved solution goes under `CONTROLDL_NOTEBOOK_OUT` (default `runs/notebooks`). The
# figures show inline.

# %%
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import controldl as cdl
from controldl import plotting
from controldl import problem as P

jax.config.update("jax_enable_x64", True)  # float64: importing controldl sets nothing

QUICK = os.environ.get("CONTROLDL_NOTEBOOK_QUICK", "0") == "1"
OUT = Path(os.environ.get("CONTROLDL_NOTEBOOK_OUT", "runs/notebooks")) / "01_first_control"
OUT.mkdir(parents=True, exist_ok=True)
N_SAMPLES = 120 if QUICK else 600
MAX_ITER = 60 if QUICK else 1500
if QUICK:
    print(f"QUICK RUN (CONTROLDL_NOTEBOOK_QUICK=1): reduced sizes, {N_SAMPLES} ring points and "
          f"{MAX_ITER} Adam iterations, so the solve stops at its iteration limit; the "
          "notebook's own sizes are 600 points and 1500 iterations.")


# %% [markdown]
# ## The data and the problem
#
# The ring: an inner disk (class 0) inside an annulus (class 1). A quarter of the points
# is held out as a test split. Width $d = 3$ embeds the plane in $\mathbb{R}^3$ (one
# extra dimension, see the topology notebook), $L = 20$ layers over the horizon $T = 5$
# ($h = 0.25$), and a small L² control cost $\lambda = 10^{-3}$.

# %%
data = cdl.data.train_test_split(cdl.data.ring(N_SAMPLES, seed=0), 0.25, seed=0)
problem = cdl.Problem(data, width=3, layers=20, horizon=5.0, l2=1e-3)
form = problem.formulation
print(problem)
print(f"step h = {form.h}, outputs m = {form.n_outputs}, loss = {form.loss}")

# %% [markdown]
# ## States, cost terms and costates at the initialization
#
# Every solver starts from the same deterministic initialization
# (`controldl.init_params`). The forward pass gives the states $x(0..L)$; the cost
# splits into its terms. The functions of `controldl.problem` take the formulation as
# their first argument, a static argument of `jax.jit`.

# %%
params = cdl.init_params(form, seed=0)
X0, Y = problem.initial_states(), problem.targets()
xs = jax.jit(P.trajectory, static_argnums=0)(form, params, X0)
print("states x(0..L):", xs.shape)
for name, value in jax.jit(P.cost_terms, static_argnums=0)(form, params, X0, Y).items():
    print(f"  {name:>10s} = {float(value):.6f}")

# %% [markdown]
# The discrete maximum principle: with the Hamiltonian
# $H_t(x, p, \theta) = \sum_i p_i \cdot f(x_i, \theta) - (\text{control cost of layer } t)$,
# the costates run backwards, $p(L) = -\nabla_x \frac1N\sum_i \ell(z_i(L), y_i)$ and
# $p(t) = \nabla_x H_t(x(t), p(t+1), \theta_t)$, and the gradient of the cost is
# $\partial J/\partial\theta_t = -\nabla_\theta H_t$. The costate recursion *is*
# backpropagation: the two gradients agree to rounding.

# %%
g_pmp = jax.jit(P.costate_gradient, static_argnums=0)(form, params, X0, Y)
g_ad = jax.jit(jax.grad(P.cost, argnums=1), static_argnums=0)(form, params, X0, Y)
diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(g_pmp, g_ad, strict=True))
print(f"max |costate gradient - autodiff gradient| = {diff:.2e}")
assert diff < 1e-10

# %% [markdown]
# ## Solve with gradient descent
#
# `controldl.solve` is the single entry point for every solver. Adam with learning rate
# 0.03, full batch.

# %%
solution = cdl.solve(problem, cdl.GradientDescent("adam", lr=0.03), max_iter=MAX_ITER)
print(solution.summary())
print("cost terms:", {k: round(v, 6) for k, v in solution.cost.items()})

# %% [markdown]
# The solution is a directory (`arrays.npz` + `meta.json`) that every tool of the package
# reads back.

# %%
saved = solution.save(OUT / "solution")
again = cdl.load(saved)
assert np.allclose(again.params.A, solution.params.A)
print("saved to", saved, "- status:", again.status)

# %% [markdown]
# ## The data flowing through the layers
#
# Each panel is one layer $t$: the training points $x_i(t)$, coloured by class. The flow
# uses the third dimension to pull the inner disk out of the annulus; at $t = L$ a plane of
# $\mathbb{R}^3$ separates the classes.

# %%
fig = plotting.layers_figure(solution)

# %%
fig = plotting.decision_regions_figure(solution)

# %%
fig = plotting.history_figure({"adam": solution.history})
