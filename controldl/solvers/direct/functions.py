"""The CasADi functions of one sample and the penalties, built from :mod:`controldl.model`.

Nothing here restates a formula: the step, the readout, the loss and the per-layer cost
terms are :mod:`controldl.model`'s, evaluated with CasADi's primitives
(``model.ops_for("casadi")``).
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace
from typing import Any, NamedTuple

import casadi as ca

from controldl import model
from controldl.solvers.direct.layout import Layout

CA = model.ops_for("casadi")


class SampleFunctions(NamedTuple):
    """SX functions of one sample: ``step(x, A, b) = f(x, θ)`` (d,), ``loss(z, y) = ℓ``,
    ``readout_loss(x, W, c, y) = ℓ(Wx + c, y)`` and ``curvature(z, y) = ∇²_z ℓ`` (m×m,
    its negative part dropped for one output: only ``sigmoid_mse`` is not convex in z)."""

    step: ca.Function
    loss: ca.Function
    readout_loss: ca.Function
    curvature: ca.Function


def sample_functions(form: Any) -> SampleFunctions:
    """The :class:`SampleFunctions` of ``form`` (its model, activation, loss and ``h``)."""
    d, m, h, geo = form.width, form.n_outputs, form.h, form.geometry
    a_shape, nb = (d, d), d
    if geo is not None:
        a_shape, nb = (geo.channels, geo.kernel_size ** 2 * geo.channels), geo.channels
    x, A, b = ca.SX.sym("x", d), ca.SX.sym("A", *a_shape), ca.SX.sym("b", nb)
    step = ca.Function("step", [x, A, b],
                       [model.step(CA, form.model, form.activation, h, x, A, b, geo)],
                       ["x", "A", "b"], ["x_next"])
    W, c, y, z = (ca.SX.sym("W", m, form.feature_dim), ca.SX.sym("c", m), ca.SX.sym("y", m),
                  ca.SX.sym("z", m))
    loss_z = model.loss(CA, form.loss, z, y)
    loss = ca.Function("loss", [z, y], [loss_z], ["z", "y"], ["loss"])
    readout_loss = ca.Function("readout_loss", [x, W, c, y],
                               [loss(model.readout(W, c, readout_features(form, x)), y)],
                               ["x", "W", "c", "y"], ["loss"])
    curv = ca.hessian(loss_z, z)[0]
    if m == 1:
        curv = ca.fmax(curv, 0)
    curvature = ca.Function("curvature", [z, y], [ca.densify(curv)], ["z", "y"], ["d2l"])
    return SampleFunctions(step, loss, readout_loss, curvature)


def readout_features(form: Any, x: Any) -> Any:
    """The readout's input of the CasADi state column ``x`` (:func:`model.features`)."""
    if form.model != "conv":
        return x
    return model.features(CA, form.readout, form.channels, x)


@dataclasses.dataclass(frozen=True)
class Mapper:
    """``fn.map`` over ``n`` samples, serially or on ``threads`` threads."""

    threads: int = 1

    def __call__(self, fn: ca.Function, n: int, reduce_in: list[int],
                 reduce_out: list[int]) -> ca.Function:
        if self.threads > 1:
            return fn.map(f"{fn.name()}_map{n}", "thread", n, reduce_in, reduce_out,
                          {"max_num_threads": self.threads})
        return fn.map(f"{fn.name()}_map{n}", "serial", n, reduce_in, reduce_out, {})


def layer_blocks(lay: Layout, theta: Any) -> tuple[list[Any], list[Any]]:
    """``([A_0, …, A_{L-1}], [b_0, …, b_{L-1}])`` as CasADi expressions of ``θ``."""
    L, (r, c), na, nb = lay.L, lay.a_shape, lay.n_a, lay.n_b
    As = [ca.reshape(theta[t * na:(t + 1) * na], r, c) for t in range(L)]
    bs = [theta[L * na + t * nb: L * na + (t + 1) * nb] for t in range(L)]
    return As, bs


def penalties(form: Any, lay: Layout, ctrl: Any, W: Any, c: Any) -> Any:
    """``R = l2 + l1 + smooth + readout_l2`` from :mod:`controldl.model`, in terms of the
    NLP's control block. With the L1 split (``A = A⁺ − A⁻``) the l1 term is evaluated on
    ``A⁺ + A⁻ ≥ 0`` with ``|u| = u``: ``β·h·Σ(A⁺ + A⁻)``, the linear cost of the split
    (CasADi's ``|·|`` would flip its slope where IPOPT's relaxed bounds let a part dip
    below 0)."""
    L, h = lay.L, form.h
    As, bs = layer_blocks(lay, lay.theta_of(ctrl))
    total = 0
    if form.l2 > 0:
        total += sum(model.layer_l2(CA, form.l2, h, As[t], bs[t]) for t in range(L))
    if form.l1 > 0:
        nonneg = SimpleNamespace(**{**vars(CA), "abs": lambda u: u})
        Ms, ms = layer_blocks(lay, ctrl[: lay.n_theta] + ctrl[lay.n_theta:])
        total += sum(model.layer_l1(nonneg, form.l1, h, Ms[t], ms[t]) for t in range(L))
    if form.smooth > 0 and L > 1:
        total += sum(model.layer_smooth(CA, form.smooth, h, As[t], bs[t], As[t + 1], bs[t + 1])
                     for t in range(L - 1))
    if form.readout_l2 > 0:
        total += model.readout_l2(CA, form.readout_l2, W, c)
    return total
