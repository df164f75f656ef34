r"""Quadratic models of the layers' augmented Hamiltonians (the pmp-newton method).

Layer ``t`` of the pmp-newton method (:mod:`.newton`) maximizes the rescaled augmented
Hamiltonian

.. math::

    \tilde H_t(θ) = H_t(x(t), p(t+1), θ)
        - \frac{ρ\,s_t}{2h}\,\frac1N \sum_i ‖x_i(t+1) - f(x_i(t), θ)‖^2
        - \frac{w\,ρ}{2h\,s_t}\,\frac1N \sum_i ‖N\,(p_i(t) - ∇_x H_t(x_i(t), p_i(t+1), θ))‖^2

with ``H_t`` the flow part ``Σ_i p_i(t+1)·f(x_i(t), θ)`` minus the layer's smooth control
cost (``l2``; ``l1`` goes by a proximal step, the running cost does not depend on ``θ``),
``w`` the costate weight, ``h = T/L`` and the layer weight ``s_t = σ_t²/σ̄``:
``σ_t = √((1/N)Σ_i ‖N p_i(t+1)‖²)`` is the root-mean-square per-sample costate entering
the layer and ``σ̄`` its mean over the layers. (Li, Chen, Tai & E's E-MSA has ``s_t = 1``
and the plain sums; this rescaling makes ``ρ`` independent of ``N``, of ``L`` at a fixed
horizon and of the scale of the loss.)

The model of layer ``t`` at the controls ``V`` is its value ``H``, gradient
``g = ∇_θ H_t``, curvature ``C = -∇²_θ H_t`` and the penalties' Gauss–Newton matrix
``G`` (plus, away from the current controls, the penalties' value ``res2`` and gradient
``g_res``): the model of ``\tilde H_t`` is ``H - ½ρ·res2``, gradient ``g + ρ·g_res``,
curvature ``C + ρG``. The readout, the terminal control, has the same kind of model
(:func:`readout_model`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from controldl import model
from controldl import problem as P
from controldl.problem import Formulation, Params
from controldl.solvers.pmp import newton_algebra as LA


class FlowTerms(NamedTuple):
    """Per layer and sample (leading axes (L, N)), the derivatives of the flow part of
    ``H_t`` in the pre-activation ``u = A x + b``: ``f`` the next state, ``q = ∇_u(p·F)``,
    ``K = diag ∇²_u(p·F)``, ``Fu = diag ∂F/∂u``, ``gx = ∇_x(p·f)`` (the costate map);
    and ``A`` (L, d, d), ``Xt = x̃ = (x, 1)`` (L, N, d+1)."""

    f: jax.Array
    q: jax.Array
    K: jax.Array
    Fu: jax.Array
    gx: jax.Array
    A: jax.Array
    Xt: jax.Array


class LayerModel(NamedTuple):
    """The model of every layer (leading axis L): ``H`` (L,), ``g`` (L, n), ``C``, ``G``
    (L, n, n), the costate map ``gx`` (L, N, d) (``None`` when built by blocks), and the
    penalties ``g_res`` (L, n), ``res2`` (L,) (``None`` at the reference controls)."""

    H: jax.Array
    g: jax.Array
    C: jax.Array
    G: jax.Array
    gx: jax.Array | None = None
    g_res: jax.Array | None = None
    res2: jax.Array | None = None


class ReadoutModel(NamedTuple):
    """The model of the readout ``φ`` (the rows of ``[W | c]``, ``m(d+1)`` numbers): value
    ``H = -R(φ)``, gradient ``g = -∇R``, curvature ``C = ∇²R``, penalty matrix ``G``, and
    ``g_res``, ``res2`` away from the reference (``None`` at it)."""

    H: jax.Array
    g: jax.Array
    C: jax.Array
    G: jax.Array
    g_res: jax.Array | None = None
    res2: jax.Array | None = None


def layer_l2(form: Formulation, v: jax.Array) -> jax.Array:
    """The smooth control cost of one layer, ``(λ/2)·h·‖[A | b]‖²``, at ``v`` (d(d+1),)."""
    d = form.width
    return model.layer_l2(P.JAX, form.l2, form.h, *LA.split_rows(d, d, v))


def costates(form: Formulation, params: Params, xs: jax.Array, Y: jax.Array) -> jax.Array:
    """The costates ``ps`` (L+1, N, d), as :func:`controldl.problem.costates`.

    Without a running cost the recursion ``p(t) = ∇_x[Σ_i p_i(t+1)·f(x_i(t), θ_t)]`` is a
    vector–Jacobian product of :func:`controldl.problem.step_batch` (this skips the running
    term, zero there); with one it is :func:`controldl.problem.costates`.
    """
    if form.uses("running"):
        return P.costates(form, params, xs, Y)
    A, b, W, c = params
    p_L = P.terminal_costate(form, W, c, xs[-1], Y)

    def body(p_next, inputs):
        X, A_t, b_t = inputs
        _, vjp = jax.vjp(lambda X_: P.step_batch(form, X_, A_t, b_t), X)
        p = vjp(p_next)[0]
        return p, p

    _, ps = jax.lax.scan(body, p_L, (xs[:-1], A, b), reverse=True)
    return jnp.concatenate([ps, p_L[None]], axis=0)


def layer_flow_terms(form: Formulation, V: jax.Array, X: jax.Array, P_next: jax.Array
                     ) -> FlowTerms:
    """The flow derivatives of every layer (:class:`FlowTerms`).

    Every layer of the canonical model is ``f(x, θ) = F(x, A x + b)`` with
    ``F(x, u) = step(x, 0, u)`` (:func:`controldl.problem.step` with ``A = 0, b = u``), and
    ``F(x, u) = G(x) + Φ(u)`` with ``Φ`` entrywise (``resnet``: ``G(x) = x``, ``Φ = hσ``;
    ``mlp``: ``G = 0``, ``Φ = σ``). So ``∂F/∂u`` and ``∇²_u(p·F)`` are diagonal — one
    nested forward-mode pass along the all-ones direction of ``u`` gives them — and
    ``∇_x(p·F)`` does not depend on ``u``. The derivatives in ``θ`` follow by the chain
    rule ``∂u/∂[A | b] = x̃ᵀ ⊗ I``.

    ``V`` (L, d(d+1)) are the controls, ``X`` (L, N, d) the states ``x(t)``, ``P_next``
    (L, N, d) the costates ``p(t+1)``.
    """
    L, N, d = X.shape
    Ab = V.reshape(L, d, d + 1)
    A = Ab[..., :d]
    Xt = jnp.concatenate([X, jnp.ones((L, N, 1), X.dtype)], axis=-1)
    U = jnp.einsum("tak,tik->tia", Ab, Xt)
    zero = jnp.zeros((d, d), X.dtype)
    F = jax.vmap(jax.vmap(lambda x, u: P.step(form, x, zero, u)))
    ones = jnp.ones_like(U)

    def F_and_slope(U_):
        return jax.jvp(lambda U__: F(X, U__), (U_,), (ones,))

    (f, d1), (_, d2) = jax.jvp(F_and_slope, (U,), (ones,))
    _, vjp = jax.vjp(lambda X_: F(X_, U), X)
    a = vjp(P_next)[0]  # ∇_x(p·F(x, u)) at fixed u
    q, K = P_next * d1, P_next * d2
    gx = a + jnp.einsum("taj,tia->tij", A, q)
    return FlowTerms(f=f, q=q, K=K, Fu=d1, gx=gx, A=A, Xt=Xt)


def rms_costate(Pc: jax.Array) -> jax.Array:
    """``s = √((1/N) Σ_i ‖N p_i‖²)`` over the last two axes (N, d) of ``Pc``: the
    root-mean-square per-sample costate, floored away from zero."""
    N = Pc.shape[-2]
    s = N * jnp.sqrt(jnp.mean(jnp.sum(Pc * Pc, axis=-1), axis=-1))
    return jnp.maximum(s, jnp.sqrt(jnp.finfo(Pc.dtype).tiny))


def penalty_scale(P_next: jax.Array) -> jax.Array:
    """The layer weights ``s_t = σ_t²/σ̄`` (L,) of the penalties, ``σ_t`` the RMS
    per-sample costate ``N p(t+1)`` (:func:`rms_costate`) of ``P_next`` (L, N, d)."""
    sigma = rms_costate(P_next)
    return sigma * sigma / jnp.mean(sigma)


def _layer_penalty(t: FlowTerms, X_next: jax.Array, gx_ref: jax.Array, cx: jax.Array,
                   cp: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """The penalties' gradient ``g_res`` (L, n) and value ``res2`` (L,) at the controls of
    ``t``: ``res2 = cx·Σ_i‖x_i(t+1) - f‖² + cp·Σ_i‖gx_ref,i - gx_i‖²`` (times ``½ρ`` in
    ``\\tilde H_t``) and ``g_res = -½∇_θ res2 = cx·J_fᵀ r_x + cp·J_gxᵀ r_p``."""
    L = t.f.shape[0]
    rx = X_next - t.f
    g_res = cx[:, None] * jnp.einsum("tia,tik->tak", t.Fu * rx, t.Xt).reshape(L, -1)
    res2 = cx * jnp.sum(rx * rx, axis=(1, 2))
    if cp is not None:
        rp = gx_ref - t.gx
        g_res = g_res + cp[:, None] * LA.layer_costate_jvec(t.A, t.K, t.q, t.Xt, rp)
        res2 = res2 + cp * jnp.sum(rp * rp, axis=(1, 2))
    return g_res, res2


def layer_models(form: Formulation, w: jax.Array | None, V: jax.Array, X: jax.Array,
                 X_next: jax.Array, P_next: jax.Array, gx_ref: jax.Array | None = None,
                 scale: jax.Array | None = None) -> LayerModel:
    """The model (:class:`LayerModel`) of every layer's augmented Hamiltonian at the
    controls ``V`` (L, d(d+1)), given the states ``X = x(t)``, ``X_next = x(t+1)`` and
    costates ``P_next = p(t+1)`` (L, N, d) of the current iterate.

    ``G = cx·Σ_i J_f,iᵀJ_f,i + cp·Σ_i J_gx,iᵀJ_gx,i`` (then :func:`~.newton_algebra.ridge`)
    with ``cx = s_t/(N h)`` and ``cp = w N/(h s_t)``: the Hessian of the penalties where
    their residuals vanish. ``w`` ``None`` drops the costate penalty. With ``gx_ref`` (the
    costate map at the current controls) the residual terms ``g_res``, ``res2`` are
    added. ``scale`` (L,) is ``s_t`` (:func:`penalty_scale` of ``P_next`` by default;
    pass it when ``V`` holds a block of the layers).
    """
    L, N, d = X.shape
    h = form.h
    t = layer_flow_terms(form, V, X, P_next)
    s = penalty_scale(P_next) if scale is None else scale
    cx = s / (N * h)
    KC, GX = LA.diag_kron_sums(jnp.stack([t.K, cx[:, None, None] * t.Fu * t.Fu]), t.Xt)

    def cc(v):
        return layer_l2(form, v)

    H = jnp.einsum("tid,tid->t", P_next, t.f) - jax.vmap(cc)(V)
    g = jnp.einsum("tia,tik->tak", t.q, t.Xt).reshape(L, -1) - jax.vmap(jax.grad(cc))(V)
    C = -KC + jax.vmap(jax.hessian(cc))(V)
    cp = None
    G = GX
    if w is not None:
        cp = w * N / (h * s)
        G = G + cp[:, None, None] * LA.layer_costate_gram(t.A, t.K, t.q, t.Xt)
    out = LayerModel(H=H, g=g, C=C, G=LA.ridge(G), gx=t.gx)
    if gx_ref is None:
        return out
    g_res, res2 = _layer_penalty(t, X_next, gx_ref, cx, cp)
    return out._replace(g_res=g_res, res2=res2)


def blocked_layer_models(form: Formulation, w: jax.Array | None, V: jax.Array,
                         xs: jax.Array, ps: jax.Array, block: int | None) -> LayerModel:
    """:func:`layer_models` at ``V`` (no residual terms), ``block`` layers at a time.

    ``xs``, ``ps`` (L+1, N, d) are the states and costates. The per-sample temporaries of
    the models then exist for ``block`` layers at once instead of all ``L``: memory
    ``O(N·block·d)`` on top of the stored states and costates. The costate map ``gx`` is
    only returned when all layers are built at once (``block`` ``None`` or ``≥ L``).
    """
    L = V.shape[0]
    if block is None or block >= L:
        return layer_models(form, w, V, xs[:-1], xs[1:], ps[1:])
    scale = penalty_scale(ps[1:])
    n = V.shape[1]
    dtype = V.dtype
    out0 = LayerModel(H=jnp.zeros((L,), dtype), g=jnp.zeros((L, n), dtype),
                      C=jnp.zeros((L, n, n), dtype), G=jnp.zeros((L, n, n), dtype))

    def body(i, out):
        # The last block may overlap the one before it: its layers are recomputed, equal.
        t0 = jnp.minimum(i * block, L - block)

        def take(a, shift=0):
            return jax.lax.dynamic_slice_in_dim(a, t0 + shift, block)

        lm = layer_models(form, w, take(V), take(xs), take(xs, 1), take(ps, 1),
                          scale=take(scale))._replace(gx=None)
        return jax.tree.map(lambda o, new: jax.lax.dynamic_update_slice_in_dim(o, new, t0, 0),
                            out, lm)

    return jax.lax.fori_loop(0, -(-L // block), body, out0)


class _ReadoutTerms(NamedTuple):
    """The readout objective ``R`` at ``φ``: value, gradient, Hessian; the outputs ``Z``
    (N, m), ``∇_z ℓ`` (N, m), ``x̃(L)`` (1, N, d+1); without a running cost also the
    terminal costate ``p_now`` (N, d) and its derivatives ``E`` (1, N, d, m), ``q``
    (1, N, m) (:func:`~.newton_algebra.costate_gram`)."""

    value: jax.Array
    grad: jax.Array
    hess: jax.Array
    Z: jax.Array
    dl: jax.Array
    Xt: jax.Array
    p_now: jax.Array | None = None
    E: jax.Array | None = None
    q: jax.Array | None = None


def _readout_terms(form: Formulation, phi: jax.Array, xs: jax.Array, Y: jax.Array
                   ) -> _ReadoutTerms:
    """:class:`_ReadoutTerms`. Without a running cost ``R`` depends on ``φ`` through
    ``z = [W | c] x̃`` only, so everything follows from the loss derivatives in ``z`` and
    the chain rule; with one ``R`` (:func:`controldl.problem.readout_objective`) is
    differentiated directly."""
    m, d = form.n_outputs, form.width
    N = xs.shape[1]
    W, c = LA.split_rows(m, d, phi)
    x_L = xs[-1]
    Xt = jnp.concatenate([x_L, jnp.ones((N, 1), xs.dtype)], axis=-1)[None]
    Z = jax.vmap(model.readout, in_axes=(None, None, 0))(W, c, x_L)

    def loss(z, target):
        return model.loss(P.JAX, form.loss, z, target)

    dl = jax.vmap(jax.grad(loss))(Z, Y)  # (N, m)
    if form.uses("running"):
        def R(f):
            return P.readout_objective(form, *LA.split_rows(m, d, f), xs, Y)

        return _ReadoutTerms(R(phi), jax.grad(R)(phi), jax.hessian(R)(phi), Z, dl, Xt)

    def reg(f):
        return model.readout_l2(P.JAX, form.readout_l2, *LA.split_rows(m, d, f))

    d2l = jax.vmap(jax.hessian(loss))(Z, Y)  # (N, m, m)
    value = jnp.mean(jax.vmap(loss)(Z, Y)) + reg(phi)
    grad = jnp.einsum("ia,ik->ak", dl, Xt[0]).reshape(-1) / N + jax.grad(reg)(phi)
    hess = LA.kron_sum(d2l[None], Xt)[0] / N + jax.hessian(reg)(phi)
    p_now = -jnp.einsum("aj,ia->ij", W, dl) / N
    E = -jnp.einsum("bj,iba->ija", W, d2l)[None] / N
    return _ReadoutTerms(value, grad, hess, Z, dl, Xt, p_now, E, -dl[None] / N)


def _readout_costate_penalty(form: Formulation, phi: jax.Array, xs: jax.Array,
                             Y: jax.Array, r: _ReadoutTerms, p_ref: jax.Array | None
                             ) -> tuple[jax.Array, jax.Array | None, jax.Array | None]:
    """``(Σ_i J_iᵀJ_i, Σ_i J_iᵀ r_i, Σ_i ‖r_i‖²)`` for the Jacobian ``J`` of the terminal
    costate ``p(L)(φ)`` and its residual ``r = p_ref - p(L)(φ)`` (the last two ``None``
    without ``p_ref``)."""
    if r.E is not None:
        G = LA.costate_gram(r.E, r.q, r.Xt)[0]
        if p_ref is None:
            return G, None, None
        rp = p_ref - r.p_now
        return G, LA.costate_jvec(r.E, r.q, r.Xt, rp[None])[0], jnp.sum(rp * rp)
    m, d = form.n_outputs, form.width

    def fp(f):
        return P.terminal_costate(form, *LA.split_rows(m, d, f), xs[-1], Y)

    Jp = jax.jacfwd(fp)(phi)  # (N, d, m(d+1))
    G = jnp.einsum("idk,idl->kl", Jp, Jp)
    if p_ref is None:
        return G, None, None
    rp = p_ref - fp(phi)
    return G, jnp.einsum("idk,id->k", Jp, rp), jnp.sum(rp * rp)


def readout_model(form: Formulation, w: jax.Array | None, phi: jax.Array, xs: jax.Array,
                  Y: jax.Array, z_ref: jax.Array | None = None,
                  p_ref: jax.Array | None = None) -> ReadoutModel:
    """The model of the terminal control (:class:`ReadoutModel`): the readout maximizes
    ``-R(φ) - (ρ s_z/2)(1/N)Σ_i‖z_i - (W x_i(L) + c)‖² - (wρ/(2 s_z))(1/N)Σ_i‖N(p_i(L) -
    p_i^L(φ))‖²`` with ``R`` the part of ``J`` that contains the readout
    (:func:`controldl.problem.readout_objective`), ``z_ref`` (N, m) and ``p_ref`` (N, d)
    the outputs and terminal costate of the current iterate (given: the residual terms
    are added), ``p^L(φ)`` the terminal costate (:func:`controldl.problem.terminal_costate`)
    and ``s_z`` the RMS of ``∇_z ℓ(z_i, y_i)`` (unlike ``N p(L) = -Wᵀ∇_z ℓ`` it does not
    vanish at a flat start ``W = 0``).
    """
    N, m = xs.shape[1], form.n_outputs
    r = _readout_terms(form, phi, xs, Y)
    sz = rms_costate(r.dl / N)
    eye_m = jnp.broadcast_to(jnp.eye(m, dtype=xs.dtype), (1, N, m, m))
    G = sz * LA.kron_sum(eye_m, r.Xt)[0] / N
    g_res = res2 = None
    if z_ref is not None:
        rz = z_ref - r.Z
        g_res = sz * jnp.einsum("ia,ik->ak", rz, r.Xt[0]).reshape(-1) / N
        res2 = sz * jnp.sum(rz * rz) / N
    if w is not None:
        cp = w * N / sz
        Gp, gp, rp2 = _readout_costate_penalty(form, phi, xs, Y, r,
                                               None if z_ref is None else p_ref)
        G = G + cp * Gp
        if z_ref is not None:
            g_res, res2 = g_res + cp * gp, res2 + cp * rp2
    return ReadoutModel(H=-r.value, g=-r.grad, C=r.hess, G=LA.ridge(G), g_res=g_res,
                        res2=res2)
