"""The work of one pmp-newton iteration in gradient-evaluation equivalents.

One gradient evaluation — a forward and a backward pass over all ``N`` training samples —
counts 1. The count is a flop estimate: a forward pass costs ``2·N·L·d(d+1)`` flops (the
products ``[A_t | b_t] x̃``) and the backward pass twice that, so one gradient is
``G = 6·N·L·d(d+1)`` flops and a forward pass alone (a trial's cost) ``1/3``. The other
parts of an iteration are converted at the same rate:

- the expansion at ``θ_k``: a forward pass and the costates (1), and the layers' models:
  the sums over the samples of the Kronecker products, ``2·N'·(d+1)²·(2d + w·d²)`` flops
  per layer (``w = 1`` with the costate penalty), the readout counted as one more layer;
- the dense algebra, independent of ``N``: with ``curvature="exact"`` a symmetric
  eigendecomposition (``9n³``) and the product ``V|Λ|Vᵀ`` (``2n³``) per layer and model;
  per trial a Cholesky factorization (``n³/3``) and two triangular solves (``4n²``) per
  layer, ``n = d(d+1)``, and ``prox_iters`` products by the ``n×n`` matrix (``2n²``)
  with ``l1`` or constraints (the readout's small solve, ``m(d+1)`` unknowns, is left
  out);
- ``inner_steps > 1``: per trial and extra inner step, two models with their residuals
  (the layers' and the readout's; their one-layer forward passes are in the model count)
  and the dense algebra;
- the stationarity at the returned point: on the full batch from the next expansion's
  costates (:func:`.hamiltonian.stationarity_from_costates`: the step again and the
  control gradient, two layer products of three, 2/3); with mini-batches (``N'`` the
  batch size) one gradient on all samples, and the full cost before and after the step
  (2/3), when an entry is recorded.

Flops of the activations, losses and element-wise work are left out (as in ``G``).
"""

from __future__ import annotations

from typing import NamedTuple


class WorkShape(NamedTuple):
    """What the count depends on: samples ``N``, samples per iteration ``batch``, layers
    ``L``, width ``d``, ``costate`` penalty present, ``exact`` curvature, ``inner_steps``,
    ``prox_iters`` (0 without ``l1`` or constraints)."""

    N: int
    batch: int
    L: int
    d: int
    costate: bool
    exact: bool
    inner_steps: int
    prox_iters: int


def gradient_flops(s: WorkShape) -> float:
    """``G = 6·N·L·d(d+1)``: one gradient evaluation on all samples."""
    return 6.0 * s.N * s.L * s.d * (s.d + 1)


def _model_flops(s: WorkShape) -> float:
    """The per-sample sums of every layer's model and the readout's, on the batch."""
    d = s.d
    return (s.L + 1) * 2.0 * s.batch * (d + 1) ** 2 * (2 * d + (d * d if s.costate else 0))


def _dense_model_flops(s: WorkShape) -> float:
    """The eigendecompositions of one set of models (``curvature="exact"``)."""
    n = s.d * (s.d + 1)
    return s.L * 11.0 * n ** 3 if s.exact else 0.0


def _solve_flops(s: WorkShape) -> float:
    """One set of Newton solves: Cholesky, two triangular solves, the prox products."""
    n = s.d * (s.d + 1)
    return s.L * (n ** 3 / 3.0 + 4.0 * n * n + s.prox_iters * 2.0 * n * n)


def iteration_work(s: WorkShape, trials: int, recorded: bool) -> float:
    """The work of one iteration with ``trials`` trials, in gradient-evaluation
    equivalents (module docstring); ``recorded``: the full cost was evaluated for the
    history (mini-batches only)."""
    G = gradient_flops(s)
    fraction = s.batch / s.N  # a pass over the batch
    expansion = fraction + (_model_flops(s) + _dense_model_flops(s)) / G
    per_trial = fraction / 3.0 + _solve_flops(s) / G
    inner = (s.inner_steps - 1) * (2.0 * _model_flops(s) + _dense_model_flops(s)
                                   + _solve_flops(s)) / G
    full_batch = s.batch >= s.N
    stationarity = 2.0 / 3.0 if full_batch else (1.0 if recorded else 0.0)
    full_costs = 2.0 / 3.0 if (recorded and not full_batch) else 0.0
    return expansion + trials * (per_trial + inner) + stationarity + full_costs


def start_work(s: WorkShape) -> float:
    """The stationarity at the starting point: from the first expansion's costates on
    the full batch (2/3, as every later one); a gradient on all samples with
    mini-batches (1)."""
    return 2.0 / 3.0 if s.batch >= s.N else 1.0
