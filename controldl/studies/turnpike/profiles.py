r"""Profiles of one solution inside its horizon, and the steady set they are measured to.

For ``N`` samples, states ``x_i(k)`` at ``t_k = k·h`` (``k = 0..L``), controls ``θ_k`` on
``[t_k, t_{k+1}]`` (``k = 0..L−1``) and the readout ``(W, c)`` of the solution:

- ``control_norms[k] = ‖θ_k‖ = sqrt(‖A_k‖_F² + ‖b_k‖²)``;
- ``state_norms[k] = sqrt((1/N) Σ_i ‖x_i(k)‖²)`` (the drift of the states);
- ``running_errors[k] = E(t_k) = (1/N) Σ_i ℓ(W x_i(k) + c, y_i)``; ``terminal_error =
  E(T)`` is the empirical risk at the horizon;
- ``margins[k]``: mean and minimum over samples of the signed margin — binary:
  ``s_i·z_i(k)`` with ``s_i = ±1`` the label's sign; K classes: ``z_{i,y_i} − max_{j≠y_i}
  z_{i,j}`` — and ``misclassification[k]`` (classification only);
- where the steady set is defined (:func:`steady_set`): ``steady_state_distances[k] =
  sqrt((1/N) Σ_i dist(x_i(k), S_i)²)`` with ``S_i = {x : W x + c = y_i}``, so that
  ``dist(x, S_i) = ‖W⁺ (W x + c − y_i)‖`` (``W`` of full row rank), and
  ``turnpike_distances[k] = ‖θ_k − θ̄‖ + steady_state_distances[k]`` (``θ̄ = 0``) for
  ``k = 0..L−1``: the left side of Esteve et al.'s exponential turnpike estimate.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from controldl import problem as P
from controldl.problem import Params, Problem


class SteadySet(NamedTuple):
    """Whether the steady problem has a minimizer set to measure distances to, and why."""

    defined: bool
    reason: str


def steady_set(problem: Problem) -> SteadySet:
    r"""The steady problem ``min (1/N) Σ_i ℓ(W x̄_i + c, y_i) + (λ/2)‖θ̄‖²`` subject to
    ``f(x̄_i, θ̄) = x̄_i`` for every sample.

    ``θ̄ = 0`` makes every state steady (``inside`` always, ``resnet`` when σ(0) = 0) at
    zero control cost. With the ``squared`` loss the minimum 0 is then attained on the set
    ``{θ̄ = 0, W x̄_i + c = y_i}`` — a set, not a point — which is where Esteve et al.'s
    exponential turnpike applies. With the logistic or cross-entropy losses the infimum is
    approached only as ``‖x̄‖ → ∞``: there is no steady set, and the states drift.
    """
    form = problem.formulation
    if form.model == "mlp":
        return SteadySet(False, "mlp: steady states are fixed points x = σ(Ax + b) with "
                                "nonzero controls; not computed")
    if form.model == "resnet" and form.activation in ("sigmoid", "softplus"):
        return SteadySet(False, f"resnet with σ = {form.activation} > 0: no state is steady")
    if form.loss != "squared":
        return SteadySet(False, f"the {form.loss} loss has no minimizer (its infimum is at "
                                "infinity): no steady state exists, the states drift")
    return SteadySet(True, "θ̄ = 0 keeps every state steady at zero control cost; the "
                           "squared loss is 0 exactly on {x : W x + c = y_i}")


@dataclasses.dataclass(frozen=True)
class Profiles:
    """The profiles of one solution (definitions in the module docstring)."""

    times: list[float]
    control_times: list[float]
    control_norms: list[float]
    state_norms: list[float]
    running_errors: list[float]
    terminal_error: float
    mean_margins: list[float] | None
    min_margins: list[float] | None
    misclassification: list[float] | None
    steady_state_distances: list[float] | None
    turnpike_distances: list[float] | None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@jax.jit
def _states_and_errors(form: P.Formulation, params: Params, X0: jax.Array, Y: jax.Array
                       ) -> tuple[jax.Array, jax.Array]:
    """The states ``x(0..L)`` (L+1, N, d) and ``E(t_k)`` (L+1,)."""
    xs = P.trajectory(form, params, X0)
    errors = jax.vmap(lambda x: P.mean_loss(form, params.W, params.c, x, Y))(xs)
    return xs, errors


def _rms(v: np.ndarray) -> np.ndarray:
    """``sqrt((1/N) Σ_i ‖v_i‖²)`` over axis 1 of (K, N, d)."""
    return np.sqrt(np.mean(np.sum(v ** 2, axis=2), axis=1))


def _margins(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Signed margins (K, N) of outputs ``z`` (K, N, m) for labels ``y`` (N,)."""
    if z.shape[2] == 1:
        return (2.0 * y - 1.0)[None, :] * z[..., 0]
    own = np.take_along_axis(z, y[None, :, None], axis=2)[..., 0]
    other = np.where(np.eye(z.shape[2], dtype=bool)[y][None], -np.inf, z).max(axis=2)
    return own - other


def profiles(problem: Problem, params: Params) -> Profiles:
    """The profiles of ``params`` on ``problem``'s training data."""
    form = problem.formulation
    jp = Params(*(jnp.asarray(v, jnp.float64) for v in params))
    Y = problem.targets()
    xs, errors = (np.asarray(v) for v in _states_and_errors(form, jp, problem.initial_states(),
                                                              Y))
    A, b, W, c = (np.asarray(v, np.float64) for v in params)
    L, h = form.layers, form.h
    controls = np.sqrt(np.sum(A ** 2, axis=(1, 2)) + np.sum(b ** 2, axis=1))
    z = xs @ W.T + c  # (L+1, N, m)
    mean_m = min_m = wrong = None
    if form.task == "classification":
        y = np.asarray(problem.data.y_train).astype(int)
        marg = _margins(z, y)
        mean_m, min_m = marg.mean(axis=1).tolist(), marg.min(axis=1).tolist()
        wrong = np.mean(marg <= 0, axis=1).tolist()
    steady = turnpike = None
    if steady_set(problem).defined:
        resid = z - np.asarray(Y)[None]  # (L+1, N, m)
        steady_np = _rms(resid @ np.linalg.pinv(W).T)
        steady, turnpike = steady_np.tolist(), (controls + steady_np[:-1]).tolist()
    return Profiles(
        times=(np.arange(L + 1) * h).tolist(), control_times=(np.arange(L) * h).tolist(),
        control_norms=controls.tolist(), state_norms=_rms(xs).tolist(),
        running_errors=errors.tolist(), terminal_error=float(errors[-1]),
        mean_margins=mean_m, min_margins=min_m, misclassification=wrong,
        steady_state_distances=steady, turnpike_distances=turnpike)
