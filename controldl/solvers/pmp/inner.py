r"""The inner maximizers: strategy objects that run ``steps`` iterations of a maximizer
on one objective. The outer loop ``vmap``\ s them over the layers, so every layer's
Hamiltonian is maximized at once inside one compiled iteration.

Each strategy is a small frozen dataclass (hashable: part of the compile-cache key) with
a pure ``maximize(objective, theta0, steps, prox=None, start=None) -> InnerResult``.
``objective`` maps a pytree ``θ`` to a scalar to be *maximized* (the smooth part);
``prox(θ, s)`` is the proximal map of the non-smooth terms and constraints for a step
``s`` (only :class:`ProximalGradient` takes one); ``start`` is the objective's value and
gradient at ``theta0`` when the caller has them (the outer iteration has them from the
costate pass): the first evaluation is then not made, and not counted. A layer stops
early once its gradient norm is at most ``gtol``. No strategy factors a matrix that can
be singular: a non-finite result can only come from a non-finite objective, and the outer
loop reports it as ``failed``.

Cost per iteration and per layer (``n = d² + d`` unknowns, N samples): L-BFGS and
proximal gradient take ``O(N d²)`` per evaluation (one evaluation per accepted
line-search trial), Newton–CG ``O(N d²)`` per Hessian-vector product (``jax.jvp`` of
``jax.grad``, ``cg_iters`` of them per step); memory ``O(N d)`` per layer. Only
:class:`DenseNewton` builds the ``n × n`` Hessian (``n`` HVPs, ``O(N d⁴)``, and an
``O(d⁶)`` eigendecomposition): an option for tiny widths.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import optax
import optax.tree_utils as otu
from jax.flatten_util import ravel_pytree

Array = jax.Array
Objective = Callable[[Any], Array]
Prox = Callable[[Any, Array], Any]
ARMIJO = 1e-4
"""Sufficient-decrease constant of the backtracking line searches."""
BACKTRACK_MIN = 1e-3
"""The smallest factor by which one backtracking trial shrinks the step."""


class InnerResult(NamedTuple):
    """One maximization: the point reached, the objective at the start (``value0``) and
    there (``value``), the iterations done (``steps``), the value-and-gradient
    evaluations (``evaluations``), the Hessian-vector products (``hvps``) and the
    rejected line-search trials (``rejected``)."""

    theta: Any
    value0: Array
    value: Array
    steps: Array
    evaluations: Array
    hvps: Array
    rejected: Array


def _zero_int() -> Array:
    return jnp.zeros((), jnp.int32)


Start = tuple[Array, Any]
"""The objective's value and gradient (a pytree like ``θ``) at the start, when known."""


def _negated(start: Start) -> tuple[Array, Array]:
    """``(F, ∇F)`` on the flat vector for ``F = −objective`` from ``start``."""
    return -start[0], -ravel_pytree(start[1])[0]


def _first_count(start: Start | None) -> Array:
    """The evaluations counted before the loop: the one at the start unless given."""
    return jnp.asarray(0 if start is not None else 1, jnp.int32)


class LBFGSMemory(NamedTuple):
    """The L-BFGS memory of :func:`lbfgs_direction` on a flat vector (n,): the updates
    done (``count``), the last point ``v`` and gradient ``g``, and the last ``m`` pairs
    ``S`` (m, n) of point differences and ``Y`` (m, n) of gradient differences with their
    weights ``rho = 1/(yᵀs)`` (m,), oldest first (a pair never stored is zero, weight 0)."""

    count: Array
    v: Array
    g: Array
    S: Array
    Y: Array
    rho: Array


def lbfgs_memory(v: Array, size: int) -> LBFGSMemory:
    """The empty memory of ``size`` pairs for vectors shaped like ``v``."""
    pairs = jnp.zeros((size, *v.shape), v.dtype)
    return LBFGSMemory(_zero_int(), jnp.zeros_like(v), jnp.zeros_like(v), pairs, pairs,
                       jnp.zeros((size,), v.dtype))


def _vdot(a: Array, b: Array) -> Array:
    return jnp.tensordot(a, b, a.ndim, precision=jax.lax.Precision.HIGHEST)


def lbfgs_direction(g: Array, memory: LBFGSMemory, v: Array) -> tuple[Array, LBFGSMemory]:
    """``optax.scale_by_lbfgs``'s update, the same arithmetic in the same order: store the
    pair ``s = v − v_prev``, ``y = g − g_prev`` (weight ``1/(yᵀs)``, 0 when ``yᵀs = 0``;
    none before the first update), then ``p = H g`` by the two-loop recursion (Nocedal &
    Wright 2006, Algorithm 7.4) from ``H₀ = γI``, ``γ = sᵀy/yᵀy`` (``min(1, 1/‖g‖)`` at the
    first update). The memory is kept oldest first, so the recursion runs over static
    indices, unrolled: optax's ring buffer takes a ``lax.scan`` with a gather per pair,
    which made a fifth of an E-MSA iteration on the CPU (docs/solvers.md). Returns ``p``
    and the new memory."""
    s, y = v - memory.v, g - memory.g
    sy = _vdot(y, s)
    weight = jnp.where(sy == 0.0, 0.0, 1.0 / sy)
    stored = memory.count > 0
    s, y, weight = (jnp.where(stored, a, jnp.zeros_like(a)) for a in (s, y, weight))
    S = jnp.concatenate([memory.S[1:], s[None]])
    Y = jnp.concatenate([memory.Y[1:], y[None]])
    rho = jnp.concatenate([memory.rho[1:], weight[None]])
    yy = jnp.sum(y * y)
    gamma = jnp.where(yy > 0.0, _vdot(y, s) / yy, 1.0)
    gamma = jnp.where(stored, gamma, jnp.minimum(1.0, 1.0 / jnp.sqrt(jnp.sum(g * g))))
    p, alphas = g, [None] * rho.shape[0]
    for i in reversed(range(rho.shape[0])):
        alphas[i] = rho[i] * _vdot(S[i], p)
        p = p + (-alphas[i]) * Y[i]
    p = gamma * p
    for i in range(rho.shape[0]):
        p = p + (alphas[i] - rho[i] * _vdot(Y[i], p)) * S[i]
    count = jnp.minimum(memory.count + 1, jnp.iinfo(jnp.int32).max)
    return p, LBFGSMemory(count, v, g, S, Y, rho)


class LBFGSState(NamedTuple):
    """The backtracking L-BFGS between two evaluations of ``F = −objective`` on the flat
    vector ``θ`` (n,): the accepted point ``v``, ``F`` there (``value``) and its gradient
    ``g``, ``F`` at the start (``value0``), the :class:`LBFGSMemory`, the search direction
    ``d``, its slope ``gᵀd`` and the next trial step ``t``, the trials of the current
    search, the searches done (``steps``), the ``evaluations``, the ``rejected`` trials and
    whether the first evaluation has been made (``started``)."""

    v: Array
    value: Array
    g: Array
    value0: Array
    memory: LBFGSMemory
    d: Array
    slope: Array
    t: Array
    trials: Array
    steps: Array
    evaluations: Array
    rejected: Array
    started: Array


@dataclasses.dataclass(frozen=True)
class LBFGS:
    """L-BFGS on ``F = −objective``: the direction from optax's two-loop recursion
    (``optax.scale_by_lbfgs``: ``memory`` pairs, the first step scaled by
    ``min(1, 1/‖∇F‖)``, later ones by ``sᵀy/yᵀy``), then a line search:

    - ``"backtracking"`` (default): Armijo backtracking from the unit step, halving, at
      most ``max_linesearch_steps`` trials, the point kept when none passes. Without
      the Wolfe curvature condition a pair with ``sᵀy ≤ 0`` can make the L-BFGS matrix
      indefinite: a direction that does not descend is replaced by the scaled
      steepest-descent step and the memory is cleared;
    - ``"zoom"``: ``optax.lbfgs`` with optax's zoom line search (strong Wolfe
      conditions, initial step one).

    Smooth objectives only."""

    memory: int = 10
    max_linesearch_steps: int = 20
    gtol: float = 0.0
    linesearch: str = "backtracking"

    name: ClassVar[str] = "lbfgs"
    LINESEARCHES: ClassVar[tuple[str, ...]] = ("backtracking", "zoom")

    def __post_init__(self) -> None:
        if self.linesearch not in self.LINESEARCHES:
            raise ValueError(f"unknown L-BFGS line search {self.linesearch!r}; expected one "
                             f"of {', '.join(self.LINESEARCHES)}")

    def maximize(self, objective: Objective, theta0: Any, steps: int,
                 prox: Prox | None = None, start: Start | None = None) -> InnerResult:
        if prox is not None:
            raise ValueError("L-BFGS maximizes smooth unconstrained objectives: use the "
                             "proximal-gradient inner solver for l1 or constraints")
        if self.linesearch == "zoom":
            return self._zoom(objective, theta0, steps, start)
        state = jax.lax.while_loop(lambda s: ~self.finished(s, steps),
                                   lambda s: self.advance(objective, s, theta0),
                                   self.start(theta0, start))
        return self.outcome(state, theta0)

    # The backtracking variant one evaluation at a time (init / step / terminate): the
    # outer iteration runs every layer's and the readout's maximization in one loop.
    @property
    def stepwise(self) -> bool:
        """Whether it runs one evaluation at a time (:meth:`start` / :meth:`advance`): the
        backtracking line search does, optax's zoom does not."""
        return self.linesearch == "backtracking"

    def start(self, theta0: Any, start: Start | None = None) -> LBFGSState:
        """The state before the first evaluation (at ``theta0``); with ``start``, the
        objective's value and gradient there, the state after it (that evaluation not
        counted): the first direction is computed from them."""
        if not self.stepwise:
            raise ValueError("only the backtracking L-BFGS runs one evaluation at a time")
        v0, _ = ravel_pytree(theta0)
        zero, scalar = _zero_int(), jnp.zeros((), v0.dtype)
        state = LBFGSState(v0, scalar, v0, scalar, lbfgs_memory(v0, self.memory),
                           jnp.zeros_like(v0), scalar, jnp.ones((), v0.dtype), zero, zero,
                           zero, zero, jnp.zeros((), bool))
        if start is None:
            return state
        value, grad = _negated(start)
        return self._evaluated(state, value, grad)._replace(evaluations=zero)

    def advance(self, objective: Objective, state: LBFGSState, theta0: Any) -> LBFGSState:
        """One evaluation of ``F = −objective``: the first at the start, then the trials of
        the line searches (:meth:`_evaluated`)."""
        F, _, _ = _flat(objective, theta0)
        s = state
        value_t, g_t = F(jnp.where(s.started, s.v + s.t * s.d, s.v))
        return self._evaluated(s, value_t, g_t)

    def _evaluated(self, s: LBFGSState, value_t: Array, g_t: Array) -> LBFGSState:
        """The state after the evaluation ``F = value_t``, ``∇F = g_t`` at the trial point
        (the start before the first evaluation). Each search starts at the unit step along
        the L-BFGS direction (the scaled steepest-descent step when that does not descend,
        the memory then cleared), backtracks by :func:`_shrink` and ends at the first trial
        that meets Armijo's condition (taken) or after ``max_linesearch_steps`` trials
        (the point stays); then the next direction is computed."""
        started = s.started
        ok = started & _armijo(s.value, s.slope, s.t, value_t)
        trials = s.trials + started.astype(jnp.int32)
        ended = started & (ok | (trials >= self.max_linesearch_steps))
        take = ok | ~started
        v = jnp.where(ok, s.v + s.t * s.d, s.v)
        value, g = jnp.where(take, value_t, s.value), jnp.where(take, g_t, s.g)
        p, memory = lbfgs_direction(g, s.memory, v)
        descent = jnp.vdot(g, p) > 0
        memory = jax.tree.map(lambda a, b: jnp.where(descent, a, b), memory,
                              lbfgs_memory(v, self.memory))
        d = -jnp.where(descent, p, g * jnp.minimum(1.0, 1.0 / jnp.sqrt(jnp.vdot(g, g))))
        new = ended | ~started  # a search begins: its direction, the unit step
        keep = lambda a, b: jax.tree.map(lambda x, y: jnp.where(new, x, y), a, b)  # noqa: E731
        return LBFGSState(
            v, value, g, jnp.where(started, s.value0, value_t), keep(memory, s.memory),
            keep(d, s.d), keep(jnp.vdot(g, d), s.slope),
            jnp.where(new, 1.0, _shrink(s.t, s.value, s.slope, value_t)),
            jnp.where(new, 0, trials), s.steps + ended.astype(jnp.int32),
            s.evaluations + 1, s.rejected + jnp.where(ended, jnp.maximum(trials - 1, 0), 0),
            jnp.ones((), bool))

    def finished(self, state: LBFGSState, steps: int) -> Array:
        """Whether the maximization is over: ``steps`` searches done, the gradient norm at
        most ``gtol`` or the objective not finite (never before the first evaluation)."""
        small = jnp.sqrt(jnp.vdot(state.g, state.g)) <= self.gtol
        return state.started & ((state.steps >= steps) | small
                                | ~jnp.isfinite(state.value))

    def outcome(self, state: LBFGSState, theta0: Any) -> InnerResult:
        """The :class:`InnerResult` of a finished state (objective signs restored)."""
        _, unravel = ravel_pytree(theta0)
        return InnerResult(unravel(state.v), -state.value0, -state.value, state.steps,
                           state.evaluations, _zero_int(), state.rejected)

    def _zoom(self, objective: Objective, theta0: Any, steps: int, start: Start | None
              ) -> InnerResult:
        F = lambda th: -objective(th)  # noqa: E731
        search = optax.scale_by_zoom_linesearch(self.max_linesearch_steps,
                                                initial_guess_strategy="one")
        opt = optax.lbfgs(memory_size=self.memory, linesearch=search)
        if start is None:
            v0, g0 = jax.value_and_grad(F)(theta0)
        else:
            v0, g0 = -start[0], jax.tree.map(jnp.negative, start[1])

        def cond(c):
            _, _, value, grad, i, _, _ = c
            return (i < steps) & (otu.tree_norm(grad) > self.gtol) & jnp.isfinite(value)

        def body(c):
            theta, state, value, grad, i, ev, rej = c
            updates, state = opt.update(grad, state, theta, value=value, grad=grad,
                                        value_fn=F)
            theta = optax.apply_updates(theta, updates)
            n = otu.tree_get(state, "num_linesearch_steps").astype(jnp.int32)
            return (theta, state, otu.tree_get(state, "value"), otu.tree_get(state, "grad"),
                    i + 1, ev + n, rej + jnp.maximum(n - 1, 0))

        init = (theta0, opt.init(theta0), v0, g0, _zero_int(), _first_count(start),
                _zero_int())
        theta, _, value, _, i, ev, rej = jax.lax.while_loop(cond, body, init)
        return InnerResult(theta, -v0, -value, i, ev, _zero_int(), rej)


def _armijo(value: Array, slope: Array, t: Array, value_t: Array) -> Array:
    """Armijo's sufficient decrease for the trial step ``t``: ``F(v + t d)`` finite and at
    most ``F(v) + ARMIJO·t·gᵀd``."""
    return jnp.isfinite(value_t) & (value_t <= value + ARMIJO * t * slope)


def _shrink(t: Array, value: Array, slope: Array, value_t: Array) -> Array:
    """The next backtracking step after the trial ``t`` failed: the minimizer of the
    quadratic through ``F(v) = value``, the slope ``gᵀd`` and ``F(v + t d) = value_t``,
    ``t² |gᵀd| / (2(F(v+td) − F(v) − t gᵀd))``, kept in ``[BACKTRACK_MIN t, ½ t]``
    (halving when the trial is not finite; Nocedal & Wright, 2006, §3.5)."""
    excess = value_t - value - t * slope
    quad = -slope * t * t / (2.0 * jnp.where(excess > 0, excess, 1.0))
    return jnp.where(jnp.isfinite(value_t) & (excess > 0),
                     jnp.clip(quad, BACKTRACK_MIN * t, 0.5 * t), 0.5 * t)


def _backtrack(F: Callable[[Array], tuple[Array, Array]], v: Array, value: Array,
               g: Array, d: Array, max_trials: int) -> tuple[Array, Array, Array, Array]:
    """Armijo backtracking along ``d`` from ``v``, from the unit step, a failed trial
    followed by :func:`_shrink`'s. Returns the new point, its value and gradient, and the number
    of trials; when no trial passes within ``max_trials``, the point stays ``v``."""
    slope = jnp.vdot(g, d)

    def cond(c):
        _, value_t, _, k, ok = c
        return (~ok) & (k < max_trials)

    def body(c):
        t, _, _, k, _ = c
        value_t, g_t = F(v + t * d)
        ok = _armijo(value, slope, t, value_t)
        return (jnp.where(ok, t, _shrink(t, value, slope, value_t)), value_t, g_t, k + 1, ok)

    t, value_t, g_t, k, ok = jax.lax.while_loop(
        cond, body, (jnp.ones((), v.dtype), value, g, _zero_int(), jnp.zeros((), bool)))
    return (jnp.where(ok, v + t * d, v), jnp.where(ok, value_t, value),
            jnp.where(ok, g_t, g), k)


def _truncated_cg(hvp: Callable[[Array], Array], g: Array, iters: int, rtol: Array
                  ) -> tuple[Array, Array]:
    """Conjugate gradients on ``B d = −g`` (``B`` through ``hvp``) for at most ``iters``
    products, stopped at ``‖r‖ ≤ rtol‖g‖`` or at the first direction of non-positive
    curvature. If that happens at the first product, the steepest-descent direction
    scaled by ``‖g‖²/|gᵀBg|`` is returned. Returns ``d`` and the number of products."""
    gnorm = jnp.sqrt(jnp.vdot(g, g))

    def cond(c):
        _, _, _, _, k, done = c
        return (~done) & (k < iters)

    def body(c):
        x, r, p, rr, k, _ = c
        Bp = hvp(p)
        curv = jnp.vdot(p, Bp)
        negative = curv <= 0
        scale = rr / jnp.where(negative, jnp.abs(curv) + jnp.finfo(g.dtype).tiny, curv)
        first = jnp.where(negative, scale * p, x + scale * p)
        x_new = jnp.where(negative & (k > 0), x, first)
        r_new = r - scale * Bp
        rr_new = jnp.vdot(r_new, r_new)
        done = negative | (jnp.sqrt(rr_new) <= rtol * gnorm)
        p_new = r_new + (rr_new / rr) * p
        return (x_new, r_new, p_new, rr_new, k + 1, done)

    r0 = -g
    init = (jnp.zeros_like(g), r0, r0, jnp.vdot(r0, r0), _zero_int(), gnorm == 0)
    x, _, _, _, k, _ = jax.lax.while_loop(cond, body, init)
    return x, k


def _flat(objective: Objective, theta0: Any) -> tuple[Callable, Array, Callable]:
    """``−objective`` on the flat vector of ``θ`` (value and gradient), the start, and
    the map back to the pytree."""
    v0, unravel = ravel_pytree(theta0)
    F = jax.value_and_grad(lambda v: -objective(unravel(v)))
    return F, v0, unravel


def _newton_loop(F: Callable, v0: Array, steps: int, gtol: float, max_trials: int,
                 direction: Callable[[Array, Array], tuple[Array, Array]],
                 start: Start | None = None
                 ) -> tuple[Array, Array, Array, Array, Array, Array, Array]:
    """The common loop of the Newton-type strategies: ``direction(v, g) -> (d, hvps)``,
    then Armijo backtracking, from ``start`` (the objective's value and gradient at
    ``v0``) when given. Returns ``v, value0, value, steps, evals, hvps, rejected``."""
    value0, g0 = F(v0) if start is None else _negated(start)

    def cond(c):
        _, value, g, i, _, _, _ = c
        return (i < steps) & (jnp.sqrt(jnp.vdot(g, g)) > gtol) & jnp.isfinite(value)

    def body(c):
        v, value, g, i, ev, hv, rej = c
        d, n_hvp = direction(v, g)
        v, value, g, trials = _backtrack(F, v, value, g, d, max_trials)
        return (v, value, g, i + 1, ev + trials, hv + n_hvp, rej + jnp.maximum(trials - 1, 0))

    init = (v0, value0, g0, _zero_int(), _first_count(start), _zero_int(), _zero_int())
    v, value, _, i, ev, hv, rej = jax.lax.while_loop(cond, body, init)
    return v, value0, value, i, ev, hv, rej


@dataclasses.dataclass(frozen=True)
class NewtonCG:
    """Truncated Newton: each step solves ``∇²F d = −∇F`` (``F = −objective``) by at most
    ``cg_iters`` conjugate-gradient iterations with Hessian-vector products
    (``jax.jvp`` of ``jax.grad``), stopping at negative curvature or at a relative
    residual ``min(½, √‖∇F‖)``, then Armijo backtracking. Smooth objectives only."""

    cg_iters: int = 10
    max_backtracks: int = 30
    gtol: float = 0.0

    name: ClassVar[str] = "newton-cg"

    def maximize(self, objective: Objective, theta0: Any, steps: int,
                 prox: Prox | None = None, start: Start | None = None) -> InnerResult:
        if prox is not None:
            raise ValueError("Newton-CG maximizes smooth unconstrained objectives: use the "
                             "proximal-gradient inner solver for l1 or constraints")
        F, v0, unravel = _flat(objective, theta0)
        grad = lambda v: F(v)[1]  # noqa: E731

        def direction(v, g):
            hvp = lambda u: jax.jvp(grad, (v,), (u,))[1]  # noqa: E731
            rtol = jnp.minimum(0.5, jnp.sqrt(jnp.sqrt(jnp.vdot(g, g))))
            return _truncated_cg(hvp, g, self.cg_iters, rtol)

        v, value0, value, i, ev, hv, rej = _newton_loop(F, v0, steps, self.gtol,
                                                        self.max_backtracks, direction, start)
        return InnerResult(unravel(v), -value0, -value, i, ev, hv, rej)


@dataclasses.dataclass(frozen=True)
class DenseNewton:
    """Newton's method with the exact ``n × n`` Hessian of ``F = −objective``
    (``jax.hessian``), its eigenvalues replaced by their absolute values and floored at
    ``eig_floor`` times the largest (saddle-free; a flat direction, such as a padded
    coordinate without l2, gets no step), then Armijo backtracking. For tiny widths:
    ``n = d² + d`` HVPs and an ``O(n³)`` eigendecomposition per step."""

    eig_floor: float = 1e-10
    max_backtracks: int = 30
    gtol: float = 0.0

    name: ClassVar[str] = "dense-newton"

    def maximize(self, objective: Objective, theta0: Any, steps: int,
                 prox: Prox | None = None, start: Start | None = None) -> InnerResult:
        if prox is not None:
            raise ValueError("the dense Newton solver maximizes smooth unconstrained "
                             "objectives: use the proximal-gradient inner solver")
        F, v0, unravel = _flat(objective, theta0)
        hessian = jax.hessian(lambda v: F(v)[0])
        n = v0.shape[0]

        def direction(v, g):
            lam, V = jnp.linalg.eigh(hessian(v))
            mag = jnp.abs(lam)
            mag = jnp.maximum(mag, self.eig_floor * jnp.max(mag) + jnp.finfo(v.dtype).tiny)
            return -(V @ ((V.T @ g) / mag)), jnp.asarray(n, jnp.int32)

        v, value0, value, i, ev, hv, rej = _newton_loop(F, v0, steps, self.gtol,
                                                        self.max_backtracks, direction, start)
        return InnerResult(unravel(v), -value0, -value, i, ev, hv, rej)


@dataclasses.dataclass(frozen=True)
class ProximalGradient:
    """Proximal gradient ascent for objectives with l1 terms or constraints:
    ``θ⁺ = prox(θ + s∇f(θ), s)`` with ``prox`` the soft threshold at ``βh·s`` followed by
    the projection (:func:`controldl.solvers.pmp.hamiltonian.layer_prox`). The step
    ``s`` starts at ``‖g‖/‖∇²f g‖`` (one HVP), is doubled at each iteration and halved
    until the sufficient-ascent condition
    ``f(θ⁺) ≥ f(θ) + ∇f·(θ⁺−θ) − ‖θ⁺−θ‖²/(2s)`` holds (at most ``max_backtracks``
    halvings; otherwise the point stays). Without ``prox`` it is gradient ascent."""

    max_backtracks: int = 30
    gtol: float = 0.0

    name: ClassVar[str] = "proximal-gradient"

    def maximize(self, objective: Objective, theta0: Any, steps: int,
                 prox: Prox | None = None, start: Start | None = None) -> InnerResult:
        F, v0, unravel = _flat(objective, theta0)
        if prox is None:
            P = lambda v, s: v  # noqa: E731
        else:
            P = lambda v, s: ravel_pytree(prox(unravel(v), s))[0]  # noqa: E731
        value0, g0 = F(v0) if start is None else _negated(start)
        hg = jax.jvp(lambda v: F(v)[1], (v0,), (g0,))[1]
        tiny = jnp.finfo(v0.dtype).tiny
        s0 = jnp.sqrt(jnp.vdot(g0, g0)) / (jnp.sqrt(jnp.vdot(hg, hg)) + tiny)
        s0 = jnp.where(jnp.isfinite(s0) & (s0 > 0), s0, 1.0)

        def trial(c):
            v, value, g, s, k, _, _, _, _ = c
            v_t = P(v - s * g, s)
            value_t, g_t = F(v_t)
            D = v_t - v
            ok = jnp.isfinite(value_t) & (
                value_t <= value + jnp.vdot(g, D) + jnp.vdot(D, D) / (2 * s))
            return (v, value, g, jnp.where(ok, s, 0.5 * s), k + 1, ok, v_t, value_t, g_t)

        def step(c):
            v, value, g, s, i, ev, rej, _ = c
            first = (v, value, g, 2.0 * s, _zero_int(), jnp.zeros((), bool), v, value, g)
            out = jax.lax.while_loop(lambda t: (~t[5]) & (t[4] < self.max_backtracks),
                                     trial, first)
            ok, k = out[5], out[4]
            moved = jnp.where(ok, jnp.sqrt(jnp.vdot(out[6] - v, out[6] - v)) / out[3], 0.0)
            return (jnp.where(ok, out[6], v), jnp.where(ok, out[7], value),
                    jnp.where(ok, out[8], g), out[3], i + 1, ev + k,
                    rej + jnp.maximum(k - 1, 0), moved)

        def cond(c):
            return (c[4] < steps) & (c[7] > self.gtol) & jnp.isfinite(c[1])

        init = (v0, value0, g0, s0, _zero_int(), _first_count(start), _zero_int(),
                jnp.asarray(jnp.inf, v0.dtype))
        v, value, _, _, i, ev, rej, _ = jax.lax.while_loop(cond, step, init)
        return InnerResult(unravel(v), -value0, -value, i, ev, jnp.ones((), jnp.int32), rej)


INNER: dict[str, type] = {"lbfgs": LBFGS, "newton-cg": NewtonCG,
                          "dense-newton": DenseNewton, "proximal-gradient": ProximalGradient}
"""The inner maximizers by name (``auto`` picks L-BFGS, or proximal gradient where the
layers have l1 terms or constraints)."""


def make_inner(spec: Any) -> Any:
    """An inner maximizer from its name, or an instance of a strategy (anything hashable
    with a ``name`` and the ``maximize`` of this module's strategies)."""
    if not isinstance(spec, str) and callable(getattr(spec, "maximize", None)) \
            and hasattr(spec, "name"):
        return spec
    if isinstance(spec, str) and spec in INNER:
        return INNER[spec]()
    raise ValueError(f"unknown inner solver {spec!r}; expected one of auto, "
                     f"{', '.join(INNER)} or an instance of one")
