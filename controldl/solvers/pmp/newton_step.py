r"""One compiled iteration of the pmp-newton method (see :mod:`.newton` for the method).

The iteration from ``θ_k`` (controls ``V`` (L, n), readout ``φ``):

1. :func:`expand`: forward pass, costates, every layer's model (:mod:`.newton_models`) and
   the readout's, all at ``θ_k``;
2. :func:`trial` for a penalty ``ρ``: the Newton step of every layer
   ``δ_t = (B_t + ρG_t)^{-1} g_t`` (:func:`propose`), plus ``β·m`` with momentum, and the
   true cost ``J`` there;
3. :func:`search`: trials with growing ``ρ`` until one passes the acceptance test, inside
   a ``lax.while_loop``; then the ``ρ`` update from the ratio of actual to predicted
   decrease.

The predicted decrease is the model's for the step actually taken, ``D = θ - θ_k``
(:func:`predicted_decrease`): ``pred = Σ_t (g_t·D_t - ½D_tᵀB_tD_t) - Δl1 + (readout)``.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from controldl import model, parallel
from controldl import problem as P
from controldl.compilation import compile_or_load
from controldl.problem import Formulation, Params
from controldl.solvers.base import COMPILED
from controldl.solvers.pmp import hamiltonian as H
from controldl.solvers.pmp import newton_algebra as LA
from controldl.solvers.pmp import newton_models as NM

RATIO_GOOD, RATIO_POOR, POOR_FACTOR = 0.5, 0.25, 2.0
"""After an accepted step: ``ρ /= rho_decrease`` if the ratio of actual to predicted
decrease exceeds ``RATIO_GOOD``, ``ρ *= POOR_FACTOR`` if it is below ``RATIO_POOR``."""


class Knobs(NamedTuple):
    """The numeric options (traced: changing them does not compile again)."""

    rho_min: Any
    rho_max: Any
    rho_increase: Any
    rho_decrease: Any
    sufficient_decrease: Any
    max_retries: Any
    costate_weight: Any
    momentum: Any


class Structure(NamedTuple):
    """The structural options (static: part of the compile-cache key)."""

    curvature: str
    inner_steps: int
    prox_iters: int
    batch_size: int | None
    costate: bool
    momentum: bool
    layer_block: int | None


class Expansion(NamedTuple):
    """Everything at ``θ_k`` that the trials need: ``params``, the cost ``J``, outputs
    ``z`` (N, m), states ``xs`` and costates ``ps`` (L+1, N, d); the layers' flat controls
    ``V`` (L, n), gradient ``g = ∇_θ H_t - ∂(smooth)/∂θ_t`` (L, n), curvature ``B``
    (L, n, n), penalty matrix ``G``, smoothness gradient ``gS`` and curvature ``s_curv``
    (L,), costate map ``gx`` (L, N, d) or ``None``; the readout's ``phi``, ``gR``, ``BR``,
    ``GR``; ``finite``: every one of them is finite."""

    params: Params
    J: jax.Array
    z: jax.Array
    xs: jax.Array
    ps: jax.Array
    V: jax.Array
    g: jax.Array
    B: jax.Array
    G: jax.Array
    gS: jax.Array
    s_curv: jax.Array
    gx: jax.Array | None
    phi: jax.Array
    gR: jax.Array
    BR: jax.Array
    GR: jax.Array
    finite: jax.Array


class Trial(NamedTuple):
    """One trial point ``params`` with its cost ``J`` and outputs ``z``, the predicted
    decrease ``pred`` of the step taken, ``ok`` (accepted), the ratio
    ``(J_k - J)/pred`` and ``failed`` (the Newton step was not finite)."""

    params: Params
    J: jax.Array
    z: jax.Array
    pred: jax.Array
    ok: jax.Array
    ratio: jax.Array
    failed: jax.Array


class StepOut(NamedTuple):
    """What one compiled call returns (all device arrays; see :func:`step`)."""

    params: Params
    displacement: Params
    J_start: jax.Array
    J: jax.Array
    accepted: jax.Array
    failed: jax.Array
    trials: jax.Array
    rejected: jax.Array
    rho_used: jax.Array
    rho: jax.Array
    ratio: jax.Array
    pred: jax.Array
    full_J_start: jax.Array
    full_accuracy_start: jax.Array
    full_J: jax.Array
    full_accuracy: jax.Array
    stationarity: jax.Array
    stationarity_start: jax.Array


# --------------------------------------------------------------------------- at θ_k


def has_prox(form: Formulation) -> bool:
    """Whether the step needs the proximal iterations: ``l1`` or a constraint."""
    return (form.uses("l1") or form.box_bound is not None
            or form.lipschitz_bound is not None)


def _smooth_split(form: Formulation, V: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Jacobi splitting of ``smooth``, ``(α/2h)Σ_t‖θ_{t+1}-θ_t‖²``: its gradient ``gS``
    (L, n) at ``θ_k`` and the separable majorizer's curvature ``s_curv = (2α/h)·n_t``
    (L,), ``n_t`` the neighbours of layer ``t``. Since
    ``‖δ_{t+1}-δ_t‖² ≤ 2‖δ_t‖² + 2‖δ_{t+1}‖²``, the model bounds the term from above."""
    L, d = form.layers, form.width
    if not form.uses("smooth") or L < 2:
        return jnp.zeros_like(V), jnp.zeros((L,), V.dtype)
    gS = jax.grad(lambda v: P.smooth_cost(form, *LA.split_rows(d, d, v)))(V)
    neighbours = jnp.full((L,), 2.0, V.dtype).at[0].set(1.0).at[-1].set(1.0)
    return gS, 2.0 * form.smooth / form.h * neighbours


def _curvature(form: Formulation, st: Structure, C: jax.Array, V: jax.Array) -> jax.Array:
    """``|C|`` (saddle-free, ``curvature="exact"``) or the control cost's Hessian only
    (``"gauss_newton"``)."""
    if st.curvature == "exact":
        return LA.abs_psd(C)
    return jax.vmap(jax.hessian(functools.partial(NM.layer_l2, form)))(V)


def _readout_expansion(form: Formulation, w: Any, phi: jax.Array, xs: jax.Array,
                       Y: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(gR, BR, GR)`` of the readout at ``φ_k`` (zero gradient when it is frozen);
    ``∇²R`` is positive semidefinite for the convex losses, only ``sigmoid_mse`` needs
    :func:`~.newton_algebra.abs_psd`."""
    nr = phi.shape[0]
    if not form.train_readout:
        eye = jnp.eye(nr, dtype=phi.dtype)
        return jnp.zeros((nr,), phi.dtype), eye, eye
    rm = NM.readout_model(form, w, phi, xs, Y)
    BR = LA.abs_psd(rm.C) if form.loss == "sigmoid_mse" else rm.C
    return rm.g, BR, rm.G


def expand(form: Formulation, st: Structure, knobs: Knobs, params: Params,
           X0: jax.Array, Y: jax.Array) -> Expansion:
    """Forward pass, costates and every model at ``params`` (:class:`Expansion`)."""
    A, b, W, c = params
    xs = P.trajectory(form, params, X0)
    # Without a running cost only x(L) enters the loss terms.
    states = xs if form.uses("running") else xs[-1:]
    J = P.cost_terms_from_states(form, params, states, Y)["total"]
    z = jax.vmap(model.readout, in_axes=(None, None, 0))(W, c, xs[-1])
    ps = NM.costates(form, params, xs, Y)
    V, phi = LA.join_rows(A, b), LA.join_rows(W, c)
    w = knobs.costate_weight if st.costate else None
    # The residual terms of inner steps > 1 need the costate map of every layer.
    block = st.layer_block if st.inner_steps == 1 else None
    lm = NM.blocked_layer_models(form, w, V, xs, ps, block)
    gS, s_curv = _smooth_split(form, V)
    eye = jnp.eye(V.shape[1], dtype=V.dtype)
    B = _curvature(form, st, lm.C, V) + s_curv[:, None, None] * eye
    gR, BR, GR = _readout_expansion(form, w, phi, xs, Y)
    g = lm.g - gS
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in (J, g, B, lm.G, gR, BR,
                                                                     GR)]))
    return Expansion(params, J, z, xs, ps, V, g, B, lm.G, gS, s_curv, lm.gx, phi, gR, BR,
                     GR, finite)


# --------------------------------------------------------------------------- the Newton step


def _l1(form: Formulation, V: jax.Array) -> jax.Array:
    """``β·h·‖θ_t‖₁`` per layer (L,)."""
    return form.l1 * form.h * jnp.sum(jnp.abs(V), axis=-1)


def _prox(form: Formulation, V: jax.Array, tau: jax.Array, ex: Expansion) -> jax.Array:
    """Soft threshold at ``τ·β·h`` (``τ`` (L, 1) or a scalar), then the projection
    :func:`controldl.problem.project` onto the constraints."""
    d = form.width
    if form.uses("l1"):
        V = LA.soft_threshold(V, tau * form.l1 * form.h)
    if form.box_bound is not None or form.lipschitz_bound is not None:
        pr = P.project(form, Params(*LA.split_rows(d, d, V), ex.params.W, ex.params.c))
        V = LA.join_rows(pr.A, pr.b)
    return V


def solve_layers(form: Formulation, st: Structure, ex: Expansion, V_from: jax.Array,
                 g: jax.Array, M: jax.Array) -> jax.Array:
    """``argmax_U g·(U - V_from) - ½(U - V_from)ᵀM(U - V_from) - l1(U)`` over the
    constraints, per layer: the Newton step ``M⁻¹g`` (:func:`~.newton_algebra.psd_solve`),
    then, with ``l1`` or constraints, ``prox_iters`` FISTA iterations (step
    ``1/‖M‖_F ≤ 1/λ_max(M)``) started from the thresholded Newton point. ``g`` (L, n),
    ``M`` (L, n, n)."""
    delta = LA.psd_solve(M, g)
    if not has_prox(form):
        return V_from + delta
    Ms = LA.levenberg_shift(M)
    step = 1.0 / jnp.sqrt(jnp.sum(Ms * Ms, axis=(-2, -1)))[:, None]

    def fista(_, carry):
        U, Z, tk = carry
        grad = g - jnp.einsum("tkl,tl->tk", Ms, Z - V_from)
        U_new = _prox(form, Z + step * grad, step, ex)
        t_new = 0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * tk * tk))
        return U_new, U_new + ((tk - 1.0) / t_new) * (U_new - U), t_new

    U0 = _prox(form, V_from + delta, 1.0 / jnp.diagonal(Ms, axis1=-2, axis2=-1), ex)
    U, _, _ = jax.lax.fori_loop(0, st.prox_iters, fista, (U0, U0, jnp.ones((), g.dtype)))
    return U


def _layer_objective(form: Formulation, ex: Expansion, V: jax.Array, lm: NM.LayerModel,
                     r: jax.Array) -> jax.Array:
    """``\\tilde H_t`` per layer (L,) at ``V`` from its model ``lm`` (with residual
    terms), less the smoothness majorizer and ``l1``."""
    D = V - ex.V
    smooth = jnp.einsum("tk,tk->t", ex.gS, D) + 0.5 * ex.s_curv * jnp.sum(D * D, axis=-1)
    return lm.H - 0.5 * r * lm.res2 - smooth - _l1(form, V)


def _inner_layers(form: Formulation, st: Structure, knobs: Knobs, ex: Expansion,
                  V1: jax.Array, r: jax.Array) -> jax.Array:
    """``inner_steps - 1`` further Newton steps on every layer's full augmented
    Hamiltonian (the residuals no longer vanish), keeping a layer's new point only where
    ``\\tilde H_t`` increased."""
    w = knobs.costate_weight if st.costate else None
    ctx = (ex.xs[:-1], ex.xs[1:], ex.ps[1:], ex.gx)

    def objective(Vj):
        lm = NM.layer_models(form, w, Vj, *ctx)
        return _layer_objective(form, ex, Vj, lm, r), lm

    def body(_, carry):
        Vj, fj = carry
        _, lm = objective(Vj)
        eye = jnp.eye(Vj.shape[1], dtype=Vj.dtype)
        C = _curvature(form, st, lm.C, Vj) + ex.s_curv[:, None, None] * eye
        gj = lm.g + r * lm.g_res - ex.gS - ex.s_curv[:, None] * (Vj - ex.V)
        Vc = solve_layers(form, st, ex, Vj, gj, C + r * lm.G)
        fc = objective(Vc)[0]
        better = fc > fj
        return jnp.where(better[:, None], Vc, Vj), jnp.where(better, fc, fj)

    V1, _ = jax.lax.fori_loop(0, st.inner_steps - 1, body, (V1, objective(V1)[0]))
    return V1


def _inner_readout(form: Formulation, st: Structure, knobs: Knobs, ex: Expansion,
                   Y: jax.Array, phi1: jax.Array, r: jax.Array) -> jax.Array:
    """The readout's ``inner_steps - 1`` further Newton steps (as :func:`_inner_layers`)."""
    w = knobs.costate_weight if st.costate else None
    psd = LA.abs_psd if form.loss == "sigmoid_mse" else (lambda C: C)

    def objective(f):
        rm = NM.readout_model(form, w, f, ex.xs, Y, ex.z, ex.ps[-1])
        return rm.H - 0.5 * r * rm.res2, rm

    def body(_, carry):
        fj, oj = carry
        rm = objective(fj)[1]
        fc = fj + LA.psd_solve(psd(rm.C) + r * rm.G, rm.g + r * rm.g_res)
        oc = objective(fc)[0]
        return jnp.where(oc > oj, fc, fj), jnp.maximum(oc, oj)

    phi1, _ = jax.lax.fori_loop(0, st.inner_steps - 1, body, (phi1, objective(phi1)[0]))
    return phi1


def propose(form: Formulation, st: Structure, knobs: Knobs, ex: Expansion, Y: jax.Array,
            r: jax.Array) -> Params:
    """The trial point of penalty ``ρ = r`` before momentum: every layer's step
    ``argmax_δ g_t·δ - ½δᵀ(B_t + ρG_t)δ - l1`` (:func:`solve_layers`; more inner steps
    with ``inner_steps > 1``), the readout's ``(BR + ρGR)⁻¹gR``."""
    d, m = form.width, form.n_outputs
    V1 = solve_layers(form, st, ex, ex.V, ex.g, ex.B + r * ex.G)
    if st.inner_steps > 1:
        V1 = _inner_layers(form, st, knobs, ex, V1, r)
    phi1 = ex.phi
    if form.train_readout:
        phi1 = ex.phi + LA.psd_solve(ex.BR + r * ex.GR, ex.gR)
        if st.inner_steps > 1:
            phi1 = _inner_readout(form, st, knobs, ex, Y, phi1, r)
    return Params(*LA.split_rows(d, d, V1), *LA.split_rows(m, d, phi1))


def predicted_decrease(form: Formulation, ex: Expansion, new: Params) -> jax.Array:
    """The model's decrease of ``J`` for the step ``D = new - θ_k`` actually taken:
    ``pred = Σ_t (g_t·D_t - ½D_tᵀB_tD_t) - l1(θ_k + D) + l1(θ_k) + gR·D_φ - ½D_φᵀBR D_φ``
    (without the ``ρ`` term: the penalty is the trust region's damping, not part of the
    model of ``J``; so ``pred > 0`` for every Newton step of :func:`propose`)."""
    V1 = LA.join_rows(new.A, new.b)
    D = V1 - ex.V
    pred = jnp.sum(jnp.einsum("tk,tk->t", ex.g, D)
                   - 0.5 * jnp.einsum("tk,tkl,tl->t", D, ex.B, D)
                   - _l1(form, V1) + _l1(form, ex.V))
    Dr = LA.join_rows(new.W, new.c) - ex.phi
    return pred + ex.gR @ Dr - 0.5 * Dr @ ex.BR @ Dr


def uses_momentum(form: Formulation, st: Structure) -> bool:
    """Momentum is used unless the step has a prox (the extrapolation would leave it)."""
    return st.momentum and not has_prox(form)


def trial(form: Formulation, st: Structure, knobs: Knobs, ex: Expansion, prev: Params,
          r: jax.Array, with_momentum: jax.Array, X0: jax.Array, Y: jax.Array) -> Trial:
    """One trial: :func:`propose` at ``ρ = r``, plus ``β·prev`` (the previous accepted
    step) when ``with_momentum``; accepted when ``J`` is finite and
    ``J_k - J ≥ η·pred > 0`` with ``pred`` the :func:`predicted_decrease` of the step
    taken, momentum included."""
    new = propose(form, st, knobs, ex, Y, r)
    proposal_finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in new]))
    if uses_momentum(form, st):
        beta = jnp.where(with_momentum, knobs.momentum, 0.0)
        new = jax.tree.map(lambda a, m_: a + beta * m_, new, prev)
    pred = predicted_decrease(form, ex, new)
    J, z = P.cost_and_outputs(form, new, X0, Y)
    decrease = ex.J - J
    ok = (proposal_finite & jnp.isfinite(J) & (pred > 0)
          & (decrease >= knobs.sufficient_decrease * pred))
    ratio = decrease / jnp.where(pred > 0, pred, 1.0)
    return Trial(new, J, z, pred, ok, ratio, ~proposal_finite)


class _Search(NamedTuple):
    """The state of the acceptance loop: the last trial, the trials made, the ``ρ`` of
    the next trial, whether it adds momentum, whether a step failed."""

    last: Trial
    tries: jax.Array
    r: jax.Array
    with_momentum: jax.Array
    failed: jax.Array


def search(form: Formulation, st: Structure, knobs: Knobs, ex: Expansion, prev: Params,
           r0: jax.Array, X0: jax.Array, Y: jax.Array, go: jax.Array = True) -> _Search:
    """Trials until one is accepted, ``max_retries`` were made, ``ρ`` exceeds
    ``rho_max``, or a step is not finite (``failed``). A rejected trial multiplies ``ρ``
    by ``rho_increase``, except that a rejected trial with momentum is repeated without
    it at the same ``ρ``. Nothing is tried when the expansion is not finite, nor without
    ``go`` (the solve stops at ``θ_k``)."""
    dtype = ex.J.dtype
    has_prev = jnp.any(jnp.stack([jnp.any(a != 0) for a in prev]))
    none = Trial(ex.params, ex.J, ex.z, jnp.zeros((), dtype), jnp.zeros((), jnp.bool_),
                 jnp.zeros((), dtype), jnp.zeros((), jnp.bool_))
    init = _Search(none, jnp.zeros((), jnp.int32), r0,
                   has_prev & uses_momentum(form, st), ~ex.finite)

    def cond(s):
        return ((~s.last.ok) & (~s.failed) & (s.tries < knobs.max_retries)
                & (s.r <= knobs.rho_max) & go)

    def body(s):
        t = trial(form, st, knobs, ex, prev, s.r, s.with_momentum, X0, Y)
        r_next = jnp.where(t.ok | s.with_momentum, s.r, s.r * knobs.rho_increase)
        return _Search(t, s.tries + 1, r_next, s.with_momentum & t.ok, s.failed | t.failed)

    return jax.lax.while_loop(cond, body, init)


def next_rho(knobs: Knobs, s: _Search) -> jax.Array:
    """After an accepted trial with ratio ``r``: ``ρ/rho_decrease`` if ``r > 1/2``,
    ``2ρ`` if ``r < 1/4``, ``ρ`` otherwise, within ``[rho_min, rho_max]``."""
    ratio, r = s.last.ratio, s.r
    up = jnp.where(ratio > RATIO_GOOD, r / knobs.rho_decrease,
                   jnp.where(ratio < RATIO_POOR, r * POOR_FACTOR, r))
    return jnp.clip(jnp.where(s.last.ok, up, r), knobs.rho_min, knobs.rho_max)


# --------------------------------------------------------------------------- the iteration


def iteration(form: Formulation, st: Structure, params: Params, prev: Params,
              rho: jax.Array, knobs: Knobs, X0: jax.Array, Y: jax.Array,
              go: Any = True) -> tuple[Expansion, _Search, Params]:
    """One outer iteration on the samples ``X0`` (N, d), ``Y`` (N, m) from ``params``
    with the previous accepted step ``prev`` and the penalty ``rho``: the expansion, the
    acceptance loop's final state and the returned point (``params`` unless a trial was
    accepted). ``go`` a function of the expansion: whether to search at all."""
    ex = expand(form, st, knobs, params, X0, Y)
    s = search(form, st, knobs, ex, prev, jnp.clip(rho, knobs.rho_min, knobs.rho_max), X0, Y,
               go(ex) if callable(go) else go)
    kept = jax.tree.map(lambda a, b_: jnp.where(s.last.ok, a, b_), s.last.params, params)
    return ex, s, kept


def step(form: Formulation, st: Structure, params: Params, prev: Params, rho: jax.Array,
         knobs: Knobs, X0: jax.Array, Y: jax.Array, y: jax.Array, rows: jax.Array,
         record: jax.Array, first: jax.Array, go: jax.Array, tol: jax.Array) -> StepOut:
    """One iteration on the full batch, or on the mini-batch of ``rows``
    (:mod:`controldl.solvers.epochs`).

    On the full batch the stationarity (:func:`controldl.problem.stationarity_residual`)
    at ``params`` comes from the expansion's costates
    (:func:`.hamiltonian.stationarity_from_costates`), and the trials are made only with
    ``go`` and where it exceeds ``tol`` (else the solve ends at ``params``: converged,
    ``max_iter`` or stalled); the cost, accuracy and stationarity of the returned point are
    those the next call reports at its start (not computed twice). With mini-batches,
    ``record`` asks for the full cost and accuracy before and after and the stationarity on
    all the samples at the returned point (NaN otherwise), and ``first`` for the
    stationarity at ``params``; so that the solve compiles no other program."""
    nan = jnp.full((), jnp.nan, X0.dtype)
    if st.batch_size is None:
        stationarity = lambda ex: H.stationarity_from_costates(  # noqa: E731
            form, params, ex.xs, ex.ps, Y)
        ex, s, kept = iteration(form, st, params, prev, rho, knobs, X0, Y,
                                lambda ex: go & (stationarity(ex) > tol))
        ok = s.last.ok
        z1 = jnp.where(ok, s.last.z, ex.z)
        recorded = (ex.J, P.accuracy_or_zero(form, ex.z, y), jnp.where(ok, s.last.J, ex.J),
                    P.accuracy_or_zero(form, z1, y), nan)
        stationarity_start = stationarity(ex)
    else:
        Xb, Yb = parallel.draw_batch(rows, X0, Y)  # sharded (on_mesh)
        ex, s, kept = iteration(form, st, params, prev, rho, knobs, Xb, Yb, go)
        ok = s.last.ok

        def full():
            J0, z0 = P.cost_and_outputs(form, params, X0, Y)
            J1, z1 = P.cost_and_outputs(form, kept, X0, Y)
            return (J0, P.accuracy_or_zero(form, z0, y), J1, P.accuracy_or_zero(form, z1, y),
                    P.stationarity_residual(form, kept, X0, Y))

        recorded = jax.lax.cond(record, full, lambda: (nan,) * 5)
        stationarity_start = jax.lax.cond(
            first, lambda: P.stationarity_residual(form, params, X0, Y), lambda: nan)
    displacement = jax.tree.map(lambda a, b_: jnp.where(ok, a - b_, 0.0), kept, params)
    return StepOut(kept, displacement, ex.J, jnp.where(ok, s.last.J, ex.J), ok, s.failed,
                   s.tries, s.tries - ok.astype(s.tries.dtype), s.r, next_rho(knobs, s),
                   s.last.ratio, s.last.pred, *recorded, stationarity_start)


def compiled_step(form: Formulation, st: Structure, signature: tuple, devices: int | None
                  ) -> Any:
    """The AOT-compiled :func:`step` for one formulation structure
    (``form.static_key()``), structural options ``st`` and argument shapes ``signature``
    (params then ``X0, Y, y``: ``(shape, dtype)`` pairs), cached in
    :data:`controldl.solvers.base.COMPILED`. With ``devices`` the samples are sharded over
    that many devices (everything else replicated, see :mod:`controldl.parallel`). The
    formulation's numbers (horizon, weights, bounds) and the knobs are traced arguments:
    call it with :func:`traced_form` of the formulation."""
    key = ("pmp-newton", form.static_key(), st, signature, devices)
    return COMPILED.get(key, lambda: _build(form, st, signature, devices, key))


def traced_form(form: Formulation, dtype: Any) -> Formulation:
    """``form`` with its numeric leaves as ``dtype`` scalars, as :func:`compiled_step`
    takes it."""
    return jax.tree.map(lambda v: np.asarray(v, np.dtype(dtype)), form)


def _build(form: Formulation, st: Structure, signature: tuple, devices: int | None,
           cache_key: tuple) -> Any:
    mesh = parallel.data_mesh(devices)
    sample, whole = parallel.shardings(mesh)
    args = [jax.ShapeDtypeStruct(shape, jnp.dtype(dt), sharding=whole)
            for shape, dt in signature[:4]]
    args += [jax.ShapeDtypeStruct(shape, jnp.dtype(dt), sharding=sample)
             for shape, dt in signature[4:]]
    params = Params(*args[:4])
    X0, Y, y = args[4:]

    def scalar(dtype=X0.dtype):
        return jax.ShapeDtypeStruct((), dtype, sharding=whole)

    form_spec = jax.tree.map(lambda _: scalar(), form)
    knobs = Knobs(*(scalar() for _ in Knobs._fields))
    rows = jax.ShapeDtypeStruct((st.batch_size or 0,), jnp.int32, sharding=whole)

    def fn(f, params, prev, rho, knobs, X0, Y, y, rows, record, first, go, tol):
        return step(f, st, params, prev, rho, knobs, X0, Y, y, rows, record, first, go, tol)

    args = (form_spec, params, params, scalar(), knobs, X0, Y, y, rows, scalar(jnp.bool_),
            scalar(jnp.bool_), scalar(jnp.bool_), scalar())
    with parallel.on_mesh(mesh):  # a later process loads the saved executable
        return compile_or_load(fn, args, cache_key)
