r"""The NLP of one problem: single or multiple shooting as strategy objects.

A transcription strategy (:class:`SingleShooting`, :class:`MultipleShooting`) is handed
only what it needs — a :class:`Context` with the layout, the CasADi functions of one
sample, the data and the symbolic controls and readout — and returns the loss part of
the objective, its equality constraints and, on request, a model of the loss's Hessian
(:class:`ShootingNLP`). :func:`build_transcription` adds what both share: the
penalties, the Lipschitz constraints, the variable bounds and the custom Hessian of the
Lagrangian.

- ``single``: the states are eliminated, ``x_i(t) = f(…f(x_i(0), θ_0)…, θ_{t-1})``; the
  objective is :math:`\frac1N\sum_i φ(x_i(0), y_i; θ, W, c) + R(θ, W, c)` with ``φ`` the
  per-sample terminal (+ running) loss along the trajectory (one SX function of one
  sample, mapped over the samples).
- ``multiple``: the states ``x_i(t)``, ``t = 1..L``, are variables and the dynamics are the
  equality constraints ``g_t = x(t+1) − f(x(t), θ_t) = 0`` (a mapped step per layer,
  ``N·d`` rows per layer, ordered layer, sample, component). With CasADi's (and IPOPT's)
  Lagrangian ``f + λᵀg`` their multipliers are the PMP costates ``λ_t = p(t+1)``
  (see :mod:`controldl.solvers.direct.certificates`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, NamedTuple

import casadi as ca
import numpy as np

from controldl import model
from controldl.problem import Params, Problem
from controldl.solvers.direct.callbacks import GramCallback
from controldl.solvers.direct.functions import (
    CA,
    Mapper,
    SampleFunctions,
    penalties,
    readout_features,
)
from controldl.solvers.direct.functions import sample_functions as make_sample_functions
from controldl.solvers.direct.layout import (
    Layout,
    block_diagonal,
    effective_map,
    factor_init,
    triu_to_matrix,
)

LIPSCHITZ_FORMS: tuple[str, ...] = ("spectral", "frobenius")
LIPSCHITZ_DESCRIPTIONS: dict[str, str] = {
    "spectral": "spectral (exact): I - (h/B)^2 A_t^T A_t = R_t^T R_t with R_t upper "
                "triangular, equivalent to h*||A_t||_2 <= B",
    "frobenius": "frobenius (sufficient, conservative): (h/B)^2 ||A_t||_F^2 <= 1, which "
                 "implies h*||A_t||_2 <= B",
    "conv-frobenius": "conv-frobenius (sufficient, conservative by up to k): "
                      "(h*k/B)^2 ||K_t||_F^2 <= 1, which implies h*||K_t * .||_2 <= B since "
                      "||K * .||_2 <= sum_ij ||K[:,:,i,j]||_2 <= k*||K||_F",
}
"""How each Lipschitz form is reported; ``conv-frobenius`` is the only one of the conv
model (chosen whatever ``lipschitz_form`` says)."""


class ConstraintBounds(NamedTuple):
    """The bounds the NLP is built with: ``lipschitz`` B (``h‖A_t‖₂ ≤ B``) and ``box`` M."""

    lipschitz: float | None
    box: float | None


def constraint_bounds(form: Any) -> ConstraintBounds:
    """The formulation's constraint bounds, as the transcription imposes them (the one
    place the NLP reads them; the checks on the result read the formulation itself)."""
    lip, box = form.lipschitz_bound, form.box_bound
    return ConstraintBounds(None if lip is None else float(lip),
                            None if box is None else float(box))


@dataclasses.dataclass(frozen=True)
class Context:
    """What a transcription strategy is handed: the layout ``lay``, the functions of one
    sample ``fns``, the embedded inputs ``X0`` (d × N) and targets ``Y`` (m × N), the step
    ``h``, the running weight ``γ·h`` (``run_w``), the terminal weight (``term_w``), the
    NLP variables ``w`` and the symbolic controls ``A_all`` (d × d·L, ``[A_0, …]``),
    ``b_all`` (d × L) and readout ``W``, ``c``."""

    lay: Layout
    fns: SampleFunctions
    X0: np.ndarray
    Y: np.ndarray
    run_w: float
    term_w: float
    w: Any
    theta: Any
    A_all: Any
    b_all: Any
    W: Any
    c: Any
    mapper: Mapper
    form: Any = None


class ShootingNLP(NamedTuple):
    """What a strategy contributes: the loss part of the objective ``f_loss``, the
    equality constraints ``g`` (a list of blocks, zero on both sides), the Hessian model
    ``(kind, H, T)`` of the loss (``kind`` "v": ``H`` in the effective variables ``v = Tw``;
    "w": in the NLP variables; ``None`` for CasADi's or IPOPT's own), CasADi callbacks to
    keep alive, and ``simulate`` (θ ↦ states, multiple shooting only)."""

    f_loss: Any
    g: list[Any]
    hessian: tuple[str, Any, Any] | None
    keep_alive: list[Any]
    simulate: ca.Function | None


class _SampleCost(NamedTuple):
    """The per-sample SX loss ``φ`` of single shooting and its symbols."""

    args: list[Any]
    phi: Any
    zs: list[Any]
    weights: list[float]
    v: Any


class SingleShooting:
    """States eliminated: the variables are ``θ`` and the readout."""

    name: ClassVar[str] = "single"
    has_states: ClassVar[bool] = False

    def sample_cost(self, ctx: Context) -> _SampleCost:
        """``φ(x0, y; θ, W, c) = Σ_t w_t ℓ(W x(t) + c, y)``, ``w_t = γh (+1 at t = L)``."""
        lay, fns = ctx.lay, ctx.fns
        d, m, L, (r, cols), na = lay.d, lay.m, lay.L, lay.a_shape, lay.L * lay.n_a
        x0, y, th = ca.SX.sym("x0", d), ca.SX.sym("y", m), ca.SX.sym("theta", lay.n_theta)
        W, c = ca.SX.sym("W", m, lay.d_out), ca.SX.sym("c", m)
        traj = fns.step.mapaccum("trajectory", L)
        Xs = traj(x0, ca.reshape(th[:na], r, cols * L), ca.reshape(th[na:], lay.n_b, L))
        times = list(range(L)) if ctx.run_w > 0 else [L - 1]
        weights = [ctx.run_w + (ctx.term_w if t == L - 1 else 0.0) for t in times]
        zs = [model.readout(W, c, readout_features(ctx.form, Xs[:, t])) for t in times]
        phi = sum(wt * fns.loss(z, y) for wt, z in zip(weights, zs, strict=True))
        v = ca.vertcat(th, ca.vec(W), c) if lay.readout else th
        return _SampleCost([x0, y, th, W, c], phi, zs, weights, v)

    def transcribe(self, ctx: Context, hessian: str) -> ShootingNLP:
        sc = self.sample_cost(ctx)
        data = (ca.DM(ctx.X0), ca.DM(ctx.Y), ctx.theta, ctx.W, ctx.c)
        costs = ctx.mapper(ca.Function("sample_cost", sc.args, [sc.phi]), ctx.lay.N,
                           [2, 3, 4], [0])
        f_loss = costs(*data) / ctx.lay.N
        keep: list[Any] = []
        model_h = None
        if hessian == "exact":
            model_h = ("v", self._exact_hessian(ctx, sc, data), effective_map(ctx.lay))
        elif hessian == "gauss-newton":
            gram = self._gauss_newton(ctx, sc, data, keep)
            model_h = ("v", gram, effective_map(ctx.lay))
        return ShootingNLP(f_loss, [], model_h, keep, None)

    @staticmethod
    def _exact_hessian(ctx: Context, sc: _SampleCost, data: tuple) -> Any:
        """``(1/N) Σ_i ∇²_v φ_i`` from a per-sample SX Hessian mapped over the samples."""
        Hs = ca.triu(ca.hessian(sc.phi, sc.v)[0])
        fn = ca.Function("sample_hess", sc.args, [Hs])
        H = ca.densify(ctx.mapper(fn, ctx.lay.N, [2, 3, 4], [0])(*data))
        return (H + H.T - ca.diag(ca.diag(H))) / ctx.lay.N

    @staticmethod
    def _gauss_newton(ctx: Context, sc: _SampleCost, data: tuple, keep: list[Any]) -> Any:
        """``(1/N) Σ_{i,t} w_t J_{z_i(t)}ᵀ ∇²_z ℓ J_{z_i(t)}`` with BLAS (a Callback)."""
        y = sc.args[1]
        curv = [wt * ctx.fns.curvature(z, y) for wt, z in zip(sc.weights, sc.zs, strict=True)]
        G = ca.densify(ca.jacobian(ca.vertcat(*sc.zs), sc.v).T)  # P_v × R·m
        fn = ca.Function("sample_gn", sc.args, [G, ca.horzcat(*curv)])
        Gall, Dall = ctx.mapper(fn, ctx.lay.N, [2, 3, 4], [])(*data)
        gram = GramCallback("gauss_newton_gram", sc.v.shape[0], ctx.lay.N * len(sc.zs),
                            ctx.lay.m, 1.0 / ctx.lay.N)
        keep.append(gram)
        return gram(Gall, Dall)


class MultipleShooting:
    """States as variables, the dynamics ``x(t+1) − f(x(t), θ_t) = 0`` as constraints."""

    name: ClassVar[str] = "multiple"
    has_states: ClassVar[bool] = True

    def transcribe(self, ctx: Context, hessian: str) -> ShootingNLP:
        lay, fns = ctx.lay, ctx.fns
        N, d, L = lay.N, lay.d, lay.L
        Xv = ca.reshape(ctx.w[lay.blocks().states], d, N * L)  # [X_1, …, X_L], X_t d × N
        Xprev = ca.horzcat(ca.DM(ctx.X0), Xv[:, : N * (L - 1)])
        step_N = ctx.mapper(fns.step, N, [1, 2], [])
        g = [ca.vec(Xv[:, t * N:(t + 1) * N] - step_N(Xprev[:, t * N:(t + 1) * N],
                                                     ctx.A_all[:, t * d:(t + 1) * d],
                                                     ctx.b_all[:, t]))
             for t in range(L)]
        f_loss = ctx.term_w * ctx.mapper(fns.readout_loss, N, [1, 2], [0])(
            Xv[:, N * (L - 1):], ctx.W, ctx.c, ca.DM(ctx.Y)) / N
        if ctx.run_w > 0:
            f_loss += ctx.run_w * ctx.mapper(fns.readout_loss, N * L, [1, 2], [0])(
                Xv, ctx.W, ctx.c, ca.DM(np.tile(ctx.Y, (1, L)))) / N
        model_h = ("w", self._gauss_newton(ctx, Xv), None) if hessian == "gauss-newton" else None
        return ShootingNLP(f_loss, g, model_h, [], self.simulator(ctx))

    @staticmethod
    def simulator(ctx: Context) -> ca.Function:
        """θ (P_θ) ↦ the states ``[X_1, …, X_L]`` (d × N·L): the step mapped over the
        samples, accumulated over the layers."""
        lay = ctx.lay
        L, d = lay.L, lay.d
        th = ca.MX.sym("theta", lay.n_theta)
        traj = ctx.mapper(ctx.fns.step, lay.N, [1, 2], []).mapaccum("layers", L)
        return ca.Function("simulate", [th], [traj(
            ca.DM(ctx.X0), ca.reshape(th[: L * d * d], d, d * L), ca.reshape(th[L * d * d:],
                                                                             d, L))])

    @staticmethod
    def _gauss_newton(ctx: Context, Xv: Any) -> Any:
        """``(1/N) Σ_k w_k J_kᵀ ∇²_z ℓ(z_k) J_k`` over the residual outputs ``z_k = W x_k + c``
        (sparse products; the curvature of the dynamics is dropped)."""
        lay = ctx.lay
        N, L, m = lay.N, lay.L, lay.m
        if ctx.run_w > 0:
            Xres, Yres, wts = Xv, np.tile(ctx.Y, (1, L)), np.full(N * L, ctx.run_w)
            wts[-N:] += ctx.term_w
        else:
            Xres, Yres, wts = Xv[:, N * (L - 1):], ctx.Y, np.full(N, ctx.term_w)
        K = Xres.shape[1]
        Z = ca.mtimes(ctx.W, Xres) + ca.repmat(ctx.c, 1, K)  # m × K
        D = ctx.mapper(ctx.fns.curvature, K, [], [])(Z, ca.DM(Yres))  # m × K·m
        D = D * ca.repmat(ca.DM(np.repeat(wts, m)).T, m, 1)
        J = ca.jacobian(ca.vec(Z), ctx.w)
        Dbd = ca.sparsity_cast(ca.vec(D), block_diagonal(K, m))
        return ca.mtimes(J.T, ca.mtimes(Dbd, J)) / N


STRATEGIES: dict[str, type] = {"single": SingleShooting, "multiple": MultipleShooting}
TRANSCRIPTIONS: tuple[str, ...] = tuple(STRATEGIES)


def lipschitz_rows(lay: Layout, w: Any, A_all: Any, h: float, bound: float, form_kind: str
                   ) -> tuple[list[Any], list[np.ndarray], list[np.ndarray]]:
    """The constraints ``h‖A_t‖₂ ≤ B`` of every layer, with their lower and upper bounds.

    ``spectral`` (exact): ``I − (h/B)² A_tᵀA_t − R_tᵀR_t = 0`` (its upper triangle) with
    an upper-triangular ``R_t`` of extra variables: a symmetric matrix is positive
    semidefinite iff it has such a factor. ``frobenius`` (sufficient):
    ``(h/B)²‖A_t‖_F² ≤ 1``.
    """
    d, s = lay.d, h / bound
    g, lo, hi = [], [], []
    cols = lay.a_shape[1]
    for t in range(lay.L):
        At = A_all[:, t * cols:(t + 1) * cols]
        if form_kind == "conv-frobenius":
            g.append((s * lay.kernel) ** 2 * CA.sum(At * At))
            lo.append(np.array([-np.inf]))
            hi.append(np.array([1.0]))
        elif form_kind == "spectral":
            Rt = triu_to_matrix(w[lay.blocks().factors][t * lay.n_tri:(t + 1) * lay.n_tri], d)
            M = ca.DM.eye(d) - s * s * ca.mtimes(At.T, At) - ca.mtimes(Rt.T, Rt)
            g.append(ca.vertcat(*[M[i, j] for j in range(d) for i in range(j + 1)]))
            lo.append(np.zeros(lay.n_tri))
            hi.append(np.zeros(lay.n_tri))
        else:
            g.append(s * s * CA.sum(At * At))
            lo.append(np.array([-np.inf]))
            hi.append(np.array([1.0]))
    return g, lo, hi


def variable_bounds(lay: Layout, box: float | None) -> tuple[np.ndarray, np.ndarray]:
    """``(lbw, ubw)``: the L1 split's parts are ``≥ 0``; the box ``|θ| ≤ M`` bounds the
    controls (each part by ``M`` when split)."""
    lbw, ubw = np.full(lay.n, -np.inf), np.full(lay.n, np.inf)
    sl = lay.blocks().controls
    if lay.split:
        lbw[sl] = 0.0
    if box is not None:
        ubw[sl] = box
        if not lay.split:
            lbw[sl] = -box
    return lbw, ubw


def lagrangian_hessian(ctx: Context, p: Any, g: Any, pen: Any, loss_model: tuple,
                       n_dynamics: int) -> ca.Function:
    """``triu(σ·H_loss + ∇²(σ·R + λ_cᵀ c))``: the loss's Hessian model ``H_loss`` (mapped
    through ``Tᵀ(·)T`` when given in the effective variables), the exact Hessians of the
    penalties ``R`` and of the constraints ``c`` after the first ``n_dynamics`` rows (the
    dynamics' curvature is dropped with a loss model, as constrained Gauss-Newton does)."""
    kind, H_loss, T = loss_model
    w = ctx.w
    sigma, lam_g = ca.MX.sym("lam_f"), ca.MX.sym("lam_g", g.shape[0])
    if kind == "v":
        H_loss = ca.mtimes(T.T, ca.mtimes(H_loss, T))
    rest = sigma * pen
    if g.shape[0] > n_dynamics:
        rest += ca.dot(lam_g[n_dynamics:], g[n_dynamics:])
    H = ca.triu(sigma * H_loss + ca.hessian(rest, w)[0])
    return ca.Function("nlp_hess_l", [w, p, sigma, lam_g], [H],
                       ["x", "p", "lam_f", "lam_g"], ["hess_gamma_x_x"])


@dataclasses.dataclass
class Transcription:
    """The NLP of one problem: the CasADi expressions (variables ``w``, parameters ``p``,
    objective ``f``, constraints ``g`` — the ``n_dynamics`` dynamics rows first), bounds,
    the initial point ``w0``/``p0``, the custom Hessian of the Lagrangian (or ``None``)
    and what translates between ``w`` and :class:`~controldl.problem.Params`."""

    layout: Layout
    shooting: Any
    w: Any
    p: Any
    f: Any
    g: Any
    p0: np.ndarray
    lbw: np.ndarray
    ubw: np.ndarray
    lbg: np.ndarray
    ubg: np.ndarray
    n_dynamics: int
    hess_lag: ca.Function | None
    keep_alive: list[Any]
    frozen_readout: tuple[np.ndarray, np.ndarray]
    simulate: ca.Function | None
    lipschitz_form: str | None
    bounds: ConstraintBounds
    h: float
    w0: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))

    def params(self, w: np.ndarray, lam_w: np.ndarray | None = None) -> Params:
        """The parameters encoded by ``w``. With the L1 split, a part identified as active
        at its lower bound 0 (value below its bound multiplier, the complementarity test)
        is set to exactly 0, and the parts are clipped at 0."""
        lay = self.layout
        bl = lay.blocks()
        ctrl = np.asarray(w, np.float64)[bl.controls].copy()
        if lay.split:
            if lam_w is not None:
                z_lower = np.maximum(-np.asarray(lam_w, np.float64)[bl.controls], 0.0)
                ctrl[ctrl <= z_lower] = 0.0
            ctrl = np.maximum(ctrl, 0.0)
        A, b = lay.unpack_theta(lay.theta_of(ctrl))
        if lay.readout:
            W, c = lay.unpack_readout(np.asarray(w, np.float64)[bl.readout])
        else:
            W, c = (v.copy() for v in self.frozen_readout)
        return Params(A, b, W, c)

    def raw_params(self, w: np.ndarray) -> Params:
        """The parameters of ``w`` exactly as IPOPT returned them (``θ = θ⁺ − θ⁻`` when
        split, no identification of zeros, no clipping): what the constraint checks read."""
        lay = self.layout
        bl = lay.blocks()
        A, b = lay.unpack_theta(lay.theta_of(np.asarray(w, np.float64)[bl.controls]))
        if lay.readout:
            W, c = lay.unpack_readout(np.asarray(w, np.float64)[bl.readout])
        else:
            W, c = (v.copy() for v in self.frozen_readout)
        return Params(A, b, W, c)

    def pack(self, params: Params) -> np.ndarray:
        """The variable vector of ``params`` (states simulated, factors fitted)."""
        lay = self.layout
        A = np.asarray(params.A, np.float64)
        theta = lay.pack_theta(A, params.b)
        parts = [np.concatenate([np.maximum(theta, 0.0), np.maximum(-theta, 0.0)])
                 if lay.split else theta]
        if lay.readout:
            parts.append(lay.pack_readout(params.W, params.c))
        if lay.states:
            parts.append(np.asarray(self.simulate(theta)).ravel(order="F"))
        if lay.factors:
            B = self.bounds.lipschitz
            parts.append(np.concatenate([factor_init(A[t], self.h, B) for t in range(lay.L)]))
        return np.concatenate(parts)

    def states(self, w: np.ndarray) -> np.ndarray:
        """IPOPT's state variables ``x_i(t)``, t = 1..L, as ``(L, N, d)`` (multiple
        shooting; the columns of ``[X_1, …, X_L]``, d × N·L)."""
        lay = self.layout
        block = np.asarray(w, np.float64)[lay.blocks().states]
        return block.reshape((lay.d, lay.N * lay.L), order="F").T.reshape(lay.L, lay.N, lay.d)

    def dynamics_multipliers(self, lam_g: np.ndarray) -> np.ndarray:
        """The multipliers of the dynamics rows as ``(L, N, d)``: ``[t, i]`` belongs to
        ``x_i(t+1) − f(x_i(t), θ_t) = 0``."""
        lay = self.layout
        return np.asarray(lam_g, np.float64).ravel()[: self.n_dynamics].reshape(
            lay.L, lay.N, lay.d)


def _context(problem: Problem, lay: Layout, params: Params, threads: int
             ) -> tuple[Context, Any, np.ndarray]:
    """The :class:`Context` of ``problem``, the NLP parameter ``p`` (the frozen readout,
    or empty) and its value ``p0``."""
    form = problem.formulation
    m, L, d, (r, cols), na = lay.m, lay.L, lay.d_out, lay.a_shape, lay.L * lay.n_a
    w = ca.MX.sym("w", lay.n)
    theta = lay.theta_of(w[lay.blocks().controls])
    if lay.readout:
        p, p0, ro = ca.MX.sym("p", 0), np.zeros(0), w[lay.blocks().readout]
    else:
        p = ca.MX.sym("p", m * d + m)
        p0, ro = lay.pack_readout(params.W, params.c), p
    ctx = Context(
        lay=lay, fns=make_sample_functions(form),
        X0=np.asarray(problem.initial_states(), np.float64).T.copy(),
        Y=np.asarray(problem.targets(), np.float64).T.copy(),
        run_w=float(form.running) * form.h, term_w=float(form.terminal), w=w, theta=theta,
        A_all=ca.reshape(theta[:na], r, cols * L), b_all=ca.reshape(theta[na:], lay.n_b, L),
        W=ca.reshape(ro[: m * d], m, d), c=ro[m * d:], mapper=Mapper(max(int(threads), 1)),
        form=form)
    return ctx, p, p0


def build_transcription(problem: Problem, shooting: SingleShooting | MultipleShooting,
                        params: Params, hessian: str, lipschitz_form: str = "spectral",
                        threads: int = 1) -> Transcription:
    """The NLP of ``problem`` transcribed by ``shooting``, with ``params`` as the initial
    point (and as the frozen readout when ``train_readout`` is False). ``hessian`` is
    ``exact``, ``gauss-newton`` or ``limited-memory`` (for the last two, and for the exact
    Hessian of multiple shooting, CasADi's or IPOPT's own is used when no model is given)."""
    form = problem.formulation
    bounds = constraint_bounds(form)
    params = Params(*(np.asarray(v, np.float64) for v in params))
    geo = form.geometry
    if geo is not None:
        if shooting.has_states:
            raise ValueError("the conv model is transcribed by single shooting only "
                             "(transcription='single')")
        lipschitz_form = "conv-frobenius"
    lay = Layout(L=form.layers, d=form.width, m=form.n_outputs, N=problem.data.n_train,
                 split=form.l1 > 0, readout=form.train_readout, states=shooting.has_states,
                 factors=bounds.lipschitz is not None and lipschitz_form == "spectral",
                 kernel=0 if geo is None else geo.kernel_size,
                 channels=0 if geo is None else geo.channels, features=form.feature_dim)
    ctx, p, p0 = _context(problem, lay, params, threads)
    nlp = shooting.transcribe(ctx, hessian)
    pen = penalties(form, lay, ctx.w[lay.blocks().controls], ctx.W, ctx.c)
    g_parts, lbg, ubg = list(nlp.g), [np.zeros(lay.n_states)], [np.zeros(lay.n_states)]
    if bounds.lipschitz is not None:
        rows, lo, hi = lipschitz_rows(lay, ctx.w, ctx.A_all, form.h, bounds.lipschitz,
                                      lipschitz_form)
        g_parts += rows
        lbg += lo
        ubg += hi
    g = ca.vertcat(*g_parts) if g_parts else ca.MX(0, 1)
    lbw, ubw = variable_bounds(lay, bounds.box)
    hess_lag = (None if nlp.hessian is None
                else lagrangian_hessian(ctx, p, g, pen, nlp.hessian, lay.n_states))
    tr = Transcription(
        layout=lay, shooting=shooting, w=ctx.w, p=p, f=nlp.f_loss + pen, g=g, p0=p0,
        lbw=lbw, ubw=ubw, lbg=np.concatenate(lbg), ubg=np.concatenate(ubg),
        n_dynamics=lay.n_states, hess_lag=hess_lag, keep_alive=nlp.keep_alive,
        frozen_readout=(params.W.copy(), params.c.reshape(-1).copy()), simulate=nlp.simulate,
        lipschitz_form=lipschitz_form if bounds.lipschitz is not None else None,
        bounds=bounds, h=form.h)
    tr.w0 = tr.pack(params)
    return tr
