r"""Certificates of a direct solve, computed independently of IPOPT's own claims.

**Costates = multipliers.** Multiple shooting's NLP is

.. math:: \min_{θ, W, c, x}\; J(θ, W, c; x) \quad\text{s.t.}\quad
          g_t := x(t+1) − f(x(t), θ_t) = 0,\; t = 0..L−1,

with ``J`` the cost of docs/design.md written in the state variables (``(1/N)Σℓ(z_i(L))``, the
running terms, the penalties). CasADi and IPOPT use the Lagrangian
``𝓛 = J + Σ_t λ_tᵀ g_t``. Its stationarity in the states gives, for ``x(L)``,
``∇_{x(L)} J + λ_{L−1} = 0``, i.e. ``λ_{L−1} = −∇_x[(1/N)ℓ + running at L] = p(L)``, and for
``x(t)``, ``1 ≤ t < L``, ``∇_{x(t)} J + λ_{t−1} − (∂f/∂x)ᵀλ_t = 0``, i.e.
``λ_{t−1} = (∂f/∂x)ᵀ λ_t − ∇_x(running at t) = ∇_x H_t(x(t), λ_t, θ_t)`` — the PMP costate
recursion ``p(t) = ∇_x H_t(x(t), p(t+1), θ_t)``. Hence, with the constraint written as
``x(t+1) − f(x(t), θ_t)`` and the objective ``J`` itself (not ``N·J``):

.. math:: λ_{t,i} = p_i(t+1), \qquad t = 0..L−1,

sign +1 and scale 1 (the constraint written ``f − x(t+1)`` flips the sign; an objective
scaled by ``s`` scales the multipliers by ``s``; IPOPT's internal scaling is undone by
CasADi). :func:`costate_multiplier_gap` measures
``max_{t,i,k} |λ_{t,i,k} − p_{i,k}(t+1)| / max_{t,i,k} |p_{i,k}(t+1)|`` with the costates of
:func:`controldl.problem.costates` on the simulated trajectory of the returned controls;
:func:`costate_certificate` reports it with what it has to be read against at an
``acceptable`` exit (IPOPT's primal and dual infeasibility, the states' distance to the
simulated ones).

**Constraints on the raw iterate.** :func:`check_constraints` measures ``h‖A_t‖₂``
(:func:`controldl.problem.lipschitz_constants`) and the box on IPOPT's raw iterate. An
excess up to :data:`ROUND_OFF` (relative to the bound) is round-off and is cleaned by the
one projection :func:`controldl.problem.project`; beyond it the solve is reported as
``constraint_violated`` and nothing is changed.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from controldl import problem as P
from controldl.problem import Params, Problem

ROUND_OFF = 1e-8
"""The relative excess over a bound that counts as round-off."""


def _relative_max(a: np.ndarray, b: np.ndarray) -> float:
    """``max |a − b| / max |b|`` (the absolute difference when ``b`` is 0 or empty)."""
    scale = float(np.max(np.abs(b))) if b.size else 0.0
    gap = float(np.max(np.abs(np.asarray(a) - b))) if b.size else 0.0
    return gap / scale if scale > 0 else gap


def _simulated(problem: Problem, params: Params) -> tuple[np.ndarray, np.ndarray]:
    """The states ``x(1..L)`` and costates ``p(1..L)`` (L, N, d) of ``params`` on the
    training set (float64)."""
    form = problem.formulation
    q = Params(*(jnp.asarray(np.asarray(v, np.float64)) for v in params))
    X0, Y = problem.initial_states(jnp.float64), problem.targets(jnp.float64)
    xs = P.trajectory(form, q, X0)
    return np.asarray(xs)[1:], np.asarray(P.costates(form, q, xs, Y))[1:]


def costate_multiplier_gap(problem: Problem, params: Params, multipliers: np.ndarray) -> float:
    """``max |λ − p(1..L)| / max |p(1..L)|`` (see the module docstring): ``multipliers``
    (L, N, d) are the dynamics constraints' multipliers, ``p`` the PMP costates of
    ``params`` on the training set (float64)."""
    return _relative_max(multipliers, _simulated(problem, params)[1])


class CostateCertificate(NamedTuple):
    """The costates = multipliers certificate with what it has to be read against
    (:func:`costate_certificate`): the ``gap`` (:func:`costate_multiplier_gap`), the
    ``state_gap`` ``max |x_IPOPT − x| / max |x|`` between IPOPT's state variables and the
    states simulated from the returned controls, IPOPT's last ``primal_infeasibility``
    (``inf_pr``, the largest dynamics residual, unscaled) and ``dual_infeasibility``
    (``inf_du``, scaled), the ``costate_scale`` ``max |p|`` the gap is relative to, and
    the ``ipopt_status``."""

    gap: float
    state_gap: float
    primal_infeasibility: float | None
    dual_infeasibility: float | None
    costate_scale: float
    ipopt_status: str


def costate_certificate(problem: Problem, params: Params, multipliers: np.ndarray,
                        states: np.ndarray, primal: float | None, dual: float | None,
                        ipopt_status: str) -> CostateCertificate:
    """:class:`CostateCertificate` of a multiple-shooting solve: ``multipliers`` and IPOPT's
    ``states`` (L, N, d). The costates are computed on the simulated trajectory; the
    multipliers belong to IPOPT's states, which satisfy the dynamics only to ``primal``:
    at an ``acceptable`` exit the gap mixes that infeasibility in (docs/solvers.md)."""
    xs, ps = _simulated(problem, params)
    scale = float(np.max(np.abs(ps))) if ps.size else 0.0
    return CostateCertificate(_relative_max(multipliers, ps), _relative_max(states, xs),
                              primal, dual, scale, ipopt_status)


class ConstraintReport(NamedTuple):
    """The constraints measured on one iterate: ``lipschitz_max`` (``max_t h‖A_t‖₂``),
    ``lipschitz_excess`` and ``box_excess`` (``max(value − bound, 0) / bound``), ``None``
    without that constraint; ``box_violation`` is the absolute ``max(|θ| − M, 0)``."""

    lipschitz_max: float | None
    lipschitz_excess: float | None
    box_violation: float | None
    box_excess: float | None

    @property
    def violated(self) -> bool:
        """An excess beyond round-off."""
        return any(e is not None and not e <= ROUND_OFF
                   for e in (self.lipschitz_excess, self.box_excess))

    @property
    def exceeds(self) -> bool:
        """Any positive excess (round-off included)."""
        return any(e is not None and not e <= 0 for e in (self.lipschitz_excess,
                                                            self.box_excess))

    def stats(self, suffix: str) -> dict[str, float | None]:
        return {f"lipschitz_max{suffix}": self.lipschitz_max,
                f"lipschitz_excess{suffix}": self.lipschitz_excess,
                f"box_violation{suffix}": self.box_violation,
                f"box_excess{suffix}": self.box_excess}


def check_constraints(form: Any, params: Params) -> ConstraintReport:
    """The :class:`ConstraintReport` of ``params`` against the formulation's bounds."""
    lip_max = lip_excess = box_violation = box_excess = None
    if form.lipschitz_bound is not None:
        B = float(form.lipschitz_bound)
        lips = P.lipschitz_constants(form, params)
        lip_max = float(np.max(lips)) if lips.size else 0.0
        lip_excess = max(lip_max - B, 0.0) / B
    if form.box_bound is not None:
        M = float(form.box_bound)
        theta = np.concatenate([np.ravel(params.A), np.ravel(params.b)])
        box_violation = float(np.max(np.maximum(np.abs(theta) - M, 0.0), initial=0.0))
        box_excess = box_violation / M
    return ConstraintReport(lip_max, lip_excess, box_violation, box_excess)


PROJECTION_MARGIN = 1e-12
"""The clean-up projects onto the bounds shrunk by this relative margin, so that the
projection's own round-off (an SVD and its product) cannot leave a bound exceeded."""


def clean_round_off(form: Any, params: Params) -> Params:
    """``params`` projected (:func:`controldl.problem.project`) onto the constraints, with
    the bounds shrunk by :data:`PROJECTION_MARGIN`, when they exceed a bound — call only
    when the excess is round-off; unchanged otherwise."""
    if not check_constraints(form, params).exceeds:
        return params
    shrink = 1.0 - PROJECTION_MARGIN
    tight = dataclasses.replace(
        form, lipschitz_bound=None if form.lipschitz_bound is None
        else form.lipschitz_bound * shrink,
        box_bound=None if form.box_bound is None else form.box_bound * shrink)
    projected = P.project(tight, Params(*(jnp.asarray(v) for v in params)))
    return Params(*(np.asarray(v, np.float64) for v in projected))
