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
# # Topology: the ring in two and three dimensions
#
# A residual layer $x \mapsto x + h\,\sigma(A_t x + b_t)$ with $\sigma = \tanh$
# (1-Lipschitz) is invertible when $h\|A_t\|_2 < 1$: the residual part is then a
# contraction, and $x + g(x) = y$ has exactly one solution for every $y$ (Banach's fixed
# point theorem; Behrmann et al. 2019). Its inverse is continuous, so the layer is a
# homeomorphism of $\mathbb{R}^d$, and so is the composition of all layers.
#
# A homeomorphism of the plane cannot take the inner disk of the ring out of the annulus
# around it, so with width $d = 2$ and the bound no hyperplane (a line) can separate the
# two classes at $t = L$ — on the whole ring. With one more dimension ($d = 3$) the disk
# can be lifted out, and it can. Without the bound, large steps let a width-2 network
# fold the plane and fit the training points anyway.
#
# This notebook trains the three networks and judges them on **fresh samples** of the
# ring, not only on the training set. It also measures folding directly: the sign of the
# Jacobian determinant of the whole network on a grid of the plane (a homeomorphism that
# preserves orientation never changes it).
#
# `CONTROLDL_NOTEBOOK_QUICK=1` makes the data and the budgets small.

# %%
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

import controldl as cdl
from controldl import plotting
from controldl import problem as P

jax.config.update("jax_enable_x64", True)  # float64: importing controldl sets nothing

QUICK = os.environ.get("CONTROLDL_NOTEBOOK_QUICK", "0") == "1"
N_TRAIN = 80 if QUICK else 400
N_FRESH = 400 if QUICK else 5000
MAX_ITER = 40 if QUICK else 1500
if QUICK:
    print(f"QUICK RUN (CONTROLDL_NOTEBOOK_QUICK=1): reduced sizes, {N_TRAIN} training points, "
          f"{N_FRESH} fresh ones and {MAX_ITER} iterations, so the networks are not trained "
          "out; the notebook's own sizes are 400, 5000 and 1500.")


# %% [markdown]
# ## Three networks
#
# All three have $L = 10$ layers over $T = 10$ (step $h = 1$, large on purpose) and a small
# L² cost; they differ only in the width and the constraint
# `lipschitz_bound` $B$: $h\|A_t\|_2 \le B$, kept by every solver (gradient descent
# projects: it clips the singular values after each step).

# %%
train = cdl.data.ring(N_TRAIN, seed=0)
fresh = cdl.data.ring(N_FRESH, seed=12345)  # never seen in training
configs = {
    "d=2, h‖A‖₂ ≤ 0.9": dict(width=2, lipschitz_bound=0.9),
    "d=2, unconstrained": dict(width=2),
    "d=3, h‖A‖₂ ≤ 0.9": dict(width=3, lipschitz_bound=0.9),
}
solutions = {}
for name, options in configs.items():
    problem = cdl.Problem(train, layers=10, horizon=10.0, l2=1e-4, **options)
    solutions[name] = cdl.solve(problem, cdl.GradientDescent("adam", lr=0.05),
                                max_iter=MAX_ITER)
    print(f"{name}: {solutions[name].summary()}")

# %% [markdown]
# ## Accuracy on fresh samples, Lipschitz constants, folds
#
# `fold fraction` is the fraction of a grid of $[-1.2, 1.2]^2$ (embedded in
# $\mathbb{R}^d$ as $(x, y, 0, \dots)$) where the determinant of the $d \times d$ Jacobian
# of the whole map $x(0) \mapsto x(L)$ is $\le 0$. For a composition of layers with
# $h\|A_t\|_2 < 1$ it is 0: each layer's Jacobian $I + h\,\mathrm{diag}(\sigma')A_t$ has
# $\|h\,\mathrm{diag}(\sigma')A_t\|_2 < 1$, so its eigenvalues have positive real parts
# and its determinant is positive.

# %%
grid_1d = np.linspace(-1.2, 1.2, 41 if QUICK else 121)
G = np.stack(np.meshgrid(grid_1d, grid_1d), -1).reshape(-1, 2)


@functools.partial(jax.jit, static_argnums=0)
def accuracy(form, params, X, y):
    """Accuracy of the network on inputs X (N, 2) with labels y."""
    z = P.predict(form, params, P.embed(form, X))
    return P.accuracy_from_outputs(form, z, y)


@functools.partial(jax.jit, static_argnums=0)
def jacobian_determinants(form, params, X):
    """det ∂x(L)/∂x(0) at the embedded points (x, y, 0, …) of X (N, 2)."""

    def network(x0):
        return P.final_state(form, params, x0[None, :])[0]

    return jnp.linalg.det(jax.vmap(jax.jacfwd(network))(P.embed(form, X)))


def fresh_accuracy(solution):
    params = P.Params(*(jnp.asarray(v) for v in solution.params))
    return float(accuracy(solution.problem.formulation, params, jnp.asarray(fresh.X_train),
                          jnp.asarray(fresh.y_train)))


def fold_fraction(solution):
    """Fraction of the grid where the network folds or flips: det ∂x(L)/∂x(0) ≤ 0."""
    params = P.Params(*(jnp.asarray(v) for v in solution.params))
    det = jacobian_determinants(solution.problem.formulation, params, jnp.asarray(G))
    return float(jnp.mean(det <= 0.0))


rows = []
for name, s in solutions.items():
    lip = P.lipschitz_constants(s.problem.formulation, s.params)
    rows.append((name, s.train_accuracy, fresh_accuracy(s), float(lip.max()), fold_fraction(s)))
print(f"{'network':<22s} {'train acc':>9s} {'fresh acc':>9s} {'max h‖A_t‖₂':>12s} "
      f"{'fold fraction':>13s}")
for name, tr, fr, lip, fold in rows:
    print(f"{name:<22s} {tr:9.4f} {fr:9.4f} {lip:12.3f} {fold:13.4f}")

# %% [markdown]
# Read the table with the theory: the bounded width-2 network is a homeomorphism (fold
# fraction 0, every $h\|A_t\|_2 \le 0.9$) and cannot reach full accuracy on the whole
# ring; whatever it gains on the training points it gains by squeezing the flow through
# the gaps between samples, and fresh samples expose it. The unconstrained width-2
# network may fold the plane (a nonzero fold fraction) to fit the training set. The
# width-3 network needs no fold: the extra dimension lets it lift the disk out.
#
# ## Decision regions
#
# In input space, for each network (training points as dots).

# %%
for name, s in solutions.items():
    fig = plotting.decision_regions_figure(s)
    fig.axes[0].set_title(f"{name}: train acc {s.train_accuracy:.3f}")

# %% [markdown]
# ## How the flow deforms the plane
#
# Grid lines of the input plane carried through the layers. For the bounded width-2
# network the grid is stretched but never folds over itself.

# %%
for name, s in solutions.items():
    fig = plotting.deformed_grid_figure(s)
    fig.suptitle(name)
