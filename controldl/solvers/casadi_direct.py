r"""The direct method: the whole training problem as one NLP, solved by IPOPT via CasADi.

Discretize-then-optimize. The canonical problem of DESIGN.md is already discrete, so the
NLP *is* the problem: no approximation is made, and a converged IPOPT run ends at a KKT
point of ``J`` (with its constraints) to the tolerance ``tol``.

Every formula comes from :mod:`controldl.model` evaluated with CasADi primitives
(``model.ops_for("casadi")``): one layer ``x ↦ f(x, θ_t)`` becomes a ``casadi.Function``
of one sample, which is ``mapaccum``-ed over the layers and ``map``-ped over the samples.
Nothing here restates a dynamics, loss or penalty formula.

Transcriptions (``transcription``):

- ``single`` (single shooting, the default): the variables are the controls
  ``θ = (A_t, b_t)_{t<L}`` and the readout ``(W, c)``; the states are eliminated,
  ``x_i(t) = f(…f(x_i(0), θ_0)…, θ_{t-1})`` is a function of θ. The objective is

  .. math:: J(θ, W, c) = \frac1N\sum_i φ(x_i(0), y_i; θ, W, c) + R(θ, W, c)

  with ``φ`` the per-sample terminal (+ running) loss along the trajectory (one SX
  function of one sample, mapped over the N samples) and ``R`` the penalties.
- ``multiple`` (multiple shooting / simultaneous): the states ``x_i(t)``, ``t = 1..L``,
  are variables too, and the dynamics are equality constraints
  ``x_i(t+1) - f(x_i(t), θ_t) = 0`` (a mapped step per layer). Many more variables
  (``N·L·d``) and a sparse KKT system; the initial states are simulated from the initial
  controls.

Hessians (``hessian``):

- ``exact``: the exact Hessian of the Lagrangian. With single shooting it is assembled as
  ``(1/N) Σ_i ∇²φ_i`` from a per-sample SX Hessian mapped over the samples (plus the exact
  Hessians of the penalties and constraints, and ``Tᵀ(·)T`` for the linear map ``T`` from
  the NLP variables to ``(θ, W, c)``) — about 3x cheaper per evaluation and 6x faster to
  build than CasADi's generic Hessian of the MX graph, but still ``O(N·P²)`` work per
  iteration for ``P`` controls. Converges in a handful of iterations (8 from an Adam
  solution of the acceptance problem, against 117 for L-BFGS).
- ``gauss-newton``: the generalized Gauss-Newton model of the loss terms,
  ``(1/N) Σ_{i,t} J_{z_i(t)}ᵀ ∇²_z ℓ(z_i(t), y_i) J_{z_i(t)}`` where ``z_i(t) = W x_i(t) + c``
  (t = L, plus every t for the running cost) and ``J_z`` its Jacobian with respect to the
  variables, plus the exact Hessian of the penalties and of the Lipschitz constraints (the
  curvature of the dynamics constraints is dropped, as constrained Gauss-Newton does).
  ``∇²_z ℓ`` is positive semidefinite for logistic, cross_entropy and squared; for
  sigmoid_mse (not convex in z, one output) its negative part is dropped
  (``max(ℓ'', 0)``), which keeps the model convex. Single shooting forms the dense product
  with BLAS (``numpy``) inside a ``casadi.Callback``; multiple shooting with CasADi's
  sparse products. It is exact at zero residual but converges only linearly otherwise:
  the neglected network curvature ``Σ ℓ'(z) ∇²z`` does not vanish at a classification
  optimum, and the model has rank at most ``N·m`` (below the number of controls on small
  data sets). Measured: 170 iterations where the exact Hessian needs 8.
- ``limited-memory``: IPOPT's L-BFGS approximation, with a history of 20 pairs (measured
  on the acceptance problem: history 6 → 247 iterations at 13.5 ms, 20 → 117 at 16 ms,
  50 → 50 at 33 ms of CPU each; IPOPT's low-rank update costs two back-solves per pair).
  The cheapest iterations; it needs many of them, and does poorly with bounds.
- ``auto`` (default): single shooting uses ``exact`` when ``N·P²`` is small (≤ 2e6, where
  an exact iteration costs a few ms) or when the problem has box or Lipschitz
  constraints and ``N·P² ≤ 3e7`` (there IPOPT's L-BFGS needed 258 and 432 iterations, and
  once stopped at a worse point than its warm start, against 11 and 9 for the exact
  Hessian), otherwise ``limited-memory``; multiple shooting uses ``exact`` (its KKT
  factorization dominates, so fewer iterations win: 0.77 s per iteration against 0.93 s
  for Gauss-Newton and 1.8 s for L-BFGS at N = 200, L = 20).

Cost terms and constraints (DESIGN.md): ``terminal``, ``l2``, ``smooth``, ``running``,
``readout_l2`` enter the objective as they are. ``l1`` is transcribed by the standard
split ``A_t = A_t⁺ - A_t⁻``, ``b_t = b_t⁺ - b_t⁻`` with ``A⁺, A⁻, b⁺, b⁻ ≥ 0`` and the
linear cost ``β·h·Σ(A⁺ + A⁻ + b⁺ + b⁻)`` (equal to ``β·h·(‖A‖₁ + ‖b‖₁)`` at a solution);
an interior-point method leaves an active part at ``≈ μ`` rather than 0, so at the end a
part is set to exactly 0 when it is identified as active (value below its bound
multiplier, the complementarity test), which makes the zeros of the solution exact.
``box_bound`` M: variable bounds ``|A|, |b| ≤ M``. ``lipschitz_bound`` B
(``h·‖A_t‖₂ ≤ B``) is a real NLP constraint in one of two smooth forms
(``lipschitz_form``):

- ``spectral`` (default): exact. ``I - (h/B)² A_tᵀA_t = R_tᵀR_t`` with an upper-triangular
  ``R_t`` of extra variables: a symmetric matrix is positive semidefinite iff it has such a
  factor, so the feasible set is exactly ``h·‖A_t‖₂ ≤ B``. The constraint Jacobian with
  respect to ``A_t`` is onto whenever ``A_t`` is invertible, so the constraint is regular.
- ``frobenius``: ``(h/B)²‖A_t‖_F² ≤ 1``, sufficient (``‖A‖₂ ≤ ‖A‖_F``) and conservative: it
  excludes matrices with several large singular values that the bound allows.

Whichever form, a final check computes ``h·‖A_t‖₂`` with numpy; a layer that exceeds B by
round-off (IPOPT satisfies equalities to ~1e-9) is scaled back onto the bound and counted
in ``stats["lipschitz_rescaled_layers"]``.

A frozen readout (``train_readout=False``) makes ``W, c`` NLP parameters fixed at their
initial values. Warm starts: the given parameters are IPOPT's initial point (states
simulated for multiple shooting); with ``ipopt_warm_start="auto"`` a start whose biases ``b`` and
``c`` are not all zero (the shared initialization sets them to zero) is treated as warm,
and IPOPT then starts with a small barrier parameter (``mu_init = 1e-6``) and small bound
pushes (1e-8) so that the good starting point is not pushed away from the bounds (measured
from Adam solutions at N = 200, L = 20: with l1, 219 instead of 372 L-BFGS iterations and
a lower final cost; with a box bound, 11 instead of 26 exact-Hessian iterations; without
bounds or inequalities the barrier plays no part). No multipliers are passed
(``warm_start_init_point`` stays off): gradient-descent and MSA solutions have none.
"""

from __future__ import annotations

import dataclasses
import math
import time
from types import SimpleNamespace
from typing import Any, ClassVar

import casadi as ca
import numpy as np

from controldl import model
from controldl.problem import Params, Problem
from controldl.solvers.base import Monitor, RunResult, Solver

CA = model.ops_for("casadi")
_NLPSOL_OUT = [ca.nlpsol_out(i) for i in range(ca.nlpsol_n_out())]
F_INDEX, X_INDEX, G_INDEX = (_NLPSOL_OUT.index(k) for k in ("f", "x", "g"))

FAILURE_HINTS: dict[str, str] = {
    "Error_In_Step_Computation": (
        "IPOPT could not compute a step. With multiple shooting this is usually the linear "
        "solver: the shared controls make the KKT factorization fill in, and MUMPS fails to "
        "allocate its workspace (IPOPT's default mumps_mem_percent=1000 asks for 11x its "
        "estimate; measured: 3.5 GB requested, and refused, for 301 digits at width 16). "
        "Use transcription='single', fewer samples, or "
        "ipopt_options=(('mumps_mem_percent', '100'),) (slow, but it may run)."),
    "Restoration_Failed": (
        "IPOPT's restoration phase failed: the iterate is returned as it is. Try another "
        "start (warm-start from gradient descent) or hessian='exact'."),
}
"""What to try when IPOPT ends with one of these return statuses (``stats["hint"]``)."""

TRANSCRIPTIONS: tuple[str, ...] = ("single", "multiple")
HESSIANS: tuple[str, ...] = ("auto", "exact", "gauss-newton", "limited-memory")
LIPSCHITZ_FORMS: tuple[str, ...] = ("spectral", "frobenius")
WARM_START_MODES: tuple[str, ...] = ("auto", "yes", "no")

LIPSCHITZ_DESCRIPTIONS: dict[str, str] = {
    "spectral": "spectral (exact): I - (h/B)^2 A_t^T A_t = R_t^T R_t with R_t upper "
                "triangular, equivalent to h*||A_t||_2 <= B",
    "frobenius": "frobenius (sufficient, conservative): (h/B)^2 ||A_t||_F^2 <= 1, which "
                 "implies h*||A_t||_2 <= B",
}

# IPOPT return status -> controldl status (controldl.solution.STATUS_MESSAGES).
IPOPT_STATUS: dict[str, str] = {
    "Solve_Succeeded": "converged",
    "Solved_To_Acceptable_Level": "converged",
    "Feasible_Point_Found": "converged",
    "Search_Direction_Becomes_Too_Small": "stalled",
    "Maximum_Iterations_Exceeded": "max_iter",
    "Maximum_CpuTime_Exceeded": "max_time",
    "Maximum_WallTime_Exceeded": "max_time",
    "Diverging_Iterates": "diverged",
    "Invalid_Number_Detected": "diverged",
    "User_Requested_Stop": "failed",  # replaced by the monitor's reason
}

# Measured defaults (see the module docstring and benchmarks/casadi_scaling.py).
LBFGS_HISTORY = 20
WARM_IPOPT_OPTIONS: dict[str, Any] = {
    "mu_init": 1e-6,
    "bound_push": 1e-8,
    "bound_frac": 1e-8,
    "slack_bound_push": 1e-8,
    "slack_bound_frac": 1e-8,
}
# Expanding the MX graph to SX (whole-problem SX functions) pays off only while the
# expanded graph stays small; measured break-even for the first-order functions.
EXPAND_AUTO_MAX_WORK = 100_000
# hessian="auto" picks the exact Hessian when N·P² (P: controls + readout) is below these:
# its cost per iteration grows like N·P², while it needs ~10x fewer iterations than L-BFGS,
# and far fewer with box or Lipschitz constraints, where IPOPT's L-BFGS struggles.
EXACT_AUTO_MAX_WORK = 2_000_000
EXACT_AUTO_MAX_WORK_CONSTRAINED = 30_000_000


def _parse_value(value: Any) -> Any:
    """An IPOPT option value: ints and floats from their strings, other strings kept."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def _normalize_ipopt_options(options: Any) -> tuple[tuple[str, str], ...]:
    """``ipopt_options`` as a tuple of ``(key, value)`` string pairs. Accepts pairs, a dict
    or ``"KEY=VALUE"`` strings."""
    if options is None:
        return ()
    if isinstance(options, dict):
        options = list(options.items())
    if isinstance(options, str):
        options = [options]
    out = []
    for item in options:
        if isinstance(item, str):
            if "=" not in item:
                raise ValueError(f"IPOPT option {item!r} must be KEY=VALUE")
            key, value = item.split("=", 1)
        else:
            try:
                key, value = item
            except (TypeError, ValueError):
                raise ValueError(f"IPOPT option {item!r} must be a (key, value) pair") from None
        key = str(key).strip()
        if not key or not key.replace("_", "").isalnum():
            raise ValueError(f"IPOPT option name {key!r} is not a valid option name")
        if isinstance(value, bool):
            value = "yes" if value else "no"
        value = str(value).strip()
        if not value:
            raise ValueError(f"IPOPT option {key!r} has an empty value")
        out.append((key, value))
    return tuple(out)


def _normalize_expand(value: Any) -> bool | str:
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, str):
        v = value.strip().lower()
        if v == "auto":
            return "auto"
        if v in ("true", "yes", "1", "on"):
            return True
        if v in ("false", "no", "0", "off"):
            return False
    raise ValueError(f"expand must be true, false or 'auto', got {value!r}")


# --------------------------------------------------------------------------- layout


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where each block of parameters lives in the NLP's variable vector ``w``.

    Blocks, in order: the controls — ``A`` (L·d·d, each ``A_t`` column-major) then ``b``
    (L·d), or with the L1 split ``A⁺, b⁺, A⁻, b⁻`` — the readout ``W`` (m·d, column-major)
    and ``c`` (m) when it is trained, the states ``x_i(t)``, t = 1..L (``d`` per sample,
    samples consecutive, layers consecutive) for multiple shooting, and the factors
    ``R_t`` (upper triangle, column-major) of the exact Lipschitz form.
    """

    L: int
    d: int
    m: int
    N: int
    split: bool
    readout: bool
    states: bool
    factors: bool

    @property
    def n_theta(self) -> int:
        """Number of effective controls ``P_θ = L·(d² + d)``."""
        return self.L * (self.d * self.d + self.d)

    @property
    def n_controls(self) -> int:
        return self.n_theta * (2 if self.split else 1)

    @property
    def n_readout(self) -> int:
        return self.m * self.d + self.m if self.readout else 0

    @property
    def n_states(self) -> int:
        return self.L * self.N * self.d if self.states else 0

    @property
    def n_tri(self) -> int:
        return self.d * (self.d + 1) // 2

    @property
    def n_factors(self) -> int:
        return self.L * self.n_tri if self.factors else 0

    @property
    def n(self) -> int:
        return self.n_controls + self.n_readout + self.n_states + self.n_factors

    def offsets(self) -> dict[str, slice]:
        o, out = 0, {}
        for name, size in (("controls", self.n_controls), ("readout", self.n_readout),
                           ("states", self.n_states), ("factors", self.n_factors)):
            out[name] = slice(o, o + size)
            o += size
        return out

    # numpy packing
    def pack_theta(self, A: np.ndarray, b: np.ndarray) -> np.ndarray:
        """``θ = (vec A_0, …, vec A_{L-1}, b_0, …, b_{L-1})`` (column-major ``vec``)."""
        return np.concatenate([np.asarray(A, np.float64).transpose(0, 2, 1).reshape(-1),
                               np.asarray(b, np.float64).reshape(-1)])

    def unpack_theta(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        L, d = self.L, self.d
        A = theta[: L * d * d].reshape(L, d, d).transpose(0, 2, 1)
        return np.ascontiguousarray(A), theta[L * d * d:].reshape(L, d).copy()

    def pack_readout(self, W: np.ndarray, c: np.ndarray) -> np.ndarray:
        return np.concatenate([np.asarray(W, np.float64).ravel(order="F"),
                               np.asarray(c, np.float64).reshape(-1)])

    def unpack_readout(self, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m, d = self.m, self.d
        return v[: m * d].reshape(m, d, order="F").copy(), v[m * d:].copy()


def _triu_to_matrix(v: Any, d: int) -> Any:
    """An upper-triangular ``d×d`` CasADi matrix from its column-major upper nonzeros."""
    return ca.sparsity_cast(v, ca.Sparsity.upper(d)) if d > 0 else v


def _effective_map(lay: Layout) -> ca.DM:
    """The constant sparse matrix ``T`` with ``v = T w``: ``v = (θ, vec W, c)`` the effective
    controls and readout (``θ = θ⁺ - θ⁻`` with the L1 split), ``w`` the NLP variables."""
    off = lay.offsets()
    P_ = lay.n_theta
    rows, cols, vals = list(range(P_)), list(range(off["controls"].start, off["controls"].start
                                                   + P_)), [1.0] * P_
    if lay.split:
        rows += list(range(P_))
        cols += list(range(off["controls"].start + P_, off["controls"].start + 2 * P_))
        vals += [-1.0] * P_
    if lay.readout:
        r0 = off["readout"].start
        rows += list(range(P_, P_ + lay.n_readout))
        cols += list(range(r0, r0 + lay.n_readout))
        vals += [1.0] * lay.n_readout
    sp = ca.Sparsity.triplet(P_ + lay.n_readout, lay.n, rows, cols)
    T = ca.DM(sp, 0.0)
    for r, c_, v in zip(rows, cols, vals, strict=True):
        T[r, c_] = v
    return T


def _block_diagonal(K: int, m: int) -> ca.Sparsity:
    """The sparsity of ``K`` dense ``m×m`` blocks on the diagonal (its column-major
    nonzeros are the columns of the blocks in order)."""
    rows = [k * m + i for k in range(K) for j in range(m) for i in range(m)]
    cols = [k * m + j for k in range(K) for j in range(m) for i in range(m)]
    return ca.Sparsity.triplet(K * m, K * m, rows, cols)


def _factor_init(A: np.ndarray, h: float, B: float) -> np.ndarray:
    """Upper-triangular ``R`` with ``RᵀR = I - (h/B)² AᵀA`` (negative eigenvalues clipped),
    returned as its column-major upper nonzeros."""
    d = A.shape[0]
    M = np.eye(d) - (h / B) ** 2 * A.T @ A
    lam, V = np.linalg.eigh((M + M.T) / 2)
    F = np.sqrt(np.maximum(lam, 0.0))[:, None] * V.T  # FᵀF = M⁺
    R = np.linalg.qr(F, mode="r")
    return np.concatenate([R[: j + 1, j] for j in range(d)])


# --------------------------------------------------------------------------- callbacks


class _GramCallback(ca.Callback):
    """``H = s·Σ_k G_k D_k G_kᵀ`` with BLAS: ``G`` is ``P × K·m`` (blocks ``G_k`` of ``m``
    columns), ``D`` is ``m × K·m`` (symmetric blocks ``D_k``). Output dense ``P × P``."""

    def __init__(self, name: str, P_: int, K: int, m: int, scale: float) -> None:
        ca.Callback.__init__(self)
        self.P, self.K, self.m, self.scale = P_, K, m, scale
        self.construct(name, {})

    def get_n_in(self) -> int:
        return 2

    def get_n_out(self) -> int:
        return 1

    def get_sparsity_in(self, i: int) -> ca.Sparsity:
        if i == 0:
            return ca.Sparsity.dense(self.P, self.K * self.m)
        return ca.Sparsity.dense(self.m, self.K * self.m)

    def get_sparsity_out(self, i: int) -> ca.Sparsity:
        return ca.Sparsity.dense(self.P, self.P)

    def has_eval_buffer(self) -> bool:
        return True

    def eval_buffer(self, arg: Any, res: Any) -> int:
        K, m, P_ = self.K, self.m, self.P
        Gt = np.frombuffer(arg[0], dtype=np.float64).reshape(K * m, P_)  # rows: columns of G
        Dt = np.frombuffer(arg[1], dtype=np.float64)
        if m == 1:
            GD = Gt * Dt[:, None]
        else:
            GD = np.einsum("kjl,klp->kjp", Dt.reshape(K, m, m),
                           Gt.reshape(K, m, P_)).reshape(K * m, P_)
        H = GD.T @ Gt
        H *= self.scale
        out = np.frombuffer(res[0], dtype=np.float64).reshape(P_, P_)
        out[:] = (H + H.T) * 0.5  # column-major = transpose; symmetric anyway
        return 0


def _controls_cost(problem: Problem, params: Params) -> Any:
    """``params ↦ J(params)`` on the training set: the problem's own (JAX) cost, compiled
    here, with the simulated states."""
    import jax

    from controldl import problem as P

    form, X0, Y = problem.formulation, problem.initial_states(), problem.targets()
    compiled = jax.jit(lambda q: P.cost(form, q, X0, Y)).lower(params).compile()
    return lambda q: float(compiled(Params(*(np.asarray(v, np.float64) for v in q))))


class _IterationCallback(ca.Callback):
    """Called by IPOPT (through CasADi) once per iteration with the current iterate;
    records the NLP objective in the monitor and asks IPOPT to stop when the monitor
    says so."""

    def __init__(self, nx: int, ng: int, np_: int, on_iteration: Any) -> None:
        ca.Callback.__init__(self)
        self.nx, self.ng, self.np_ = nx, ng, np_
        self.on_iteration = on_iteration
        self.construct("controldl_iteration", {})

    def get_n_in(self) -> int:
        return ca.nlpsol_n_out()

    def get_n_out(self) -> int:
        return 1

    def get_name_in(self, i: int) -> str:
        return ca.nlpsol_out(i)

    def get_name_out(self, i: int) -> str:
        return "ret"

    def get_sparsity_in(self, i: int) -> ca.Sparsity:
        name = ca.nlpsol_out(i)
        if name == "f":
            return ca.Sparsity.scalar()
        if name in ("x", "lam_x"):
            return ca.Sparsity.dense(self.nx)
        if name in ("g", "lam_g"):
            return ca.Sparsity.dense(self.ng)
        if name == "lam_p":
            return ca.Sparsity.dense(self.np_)
        return ca.Sparsity(0, 0)

    def eval(self, arg: Any) -> list[int]:
        return [int(bool(self.on_iteration(arg)))]


# --------------------------------------------------------------------------- transcription


@dataclasses.dataclass
class Transcription:
    """The NLP of one problem: CasADi expressions, bounds, initial point and the helpers
    that translate between its variable vector and :class:`~controldl.problem.Params`."""

    layout: Layout
    w: Any
    p: Any
    f: Any
    g: Any
    w0: np.ndarray
    p0: np.ndarray
    lbw: np.ndarray
    ubw: np.ndarray
    lbg: np.ndarray
    ubg: np.ndarray
    hess_lag: Any
    keep_alive: list[Any]
    frozen_readout: tuple[np.ndarray, np.ndarray]
    simulate: Any
    lipschitz_form: str | None
    lipschitz_bound: float | None
    h: float

    def params(self, w: np.ndarray, lam_w: np.ndarray | None = None) -> Params:
        """The parameters encoded by ``w``. With the L1 split, a part identified as active
        at its lower bound 0 (value below its bound multiplier) is set to exactly 0."""
        lay = self.layout
        off = lay.offsets()
        ctrl = np.asarray(w, np.float64)[off["controls"]].copy()
        if lay.split:
            if lam_w is not None:
                z_lower = np.maximum(-np.asarray(lam_w, np.float64)[off["controls"]], 0.0)
                ctrl[ctrl <= z_lower] = 0.0
            ctrl = np.maximum(ctrl, 0.0)
            theta = ctrl[: lay.n_theta] - ctrl[lay.n_theta:]
        else:
            theta = ctrl
        A, b = lay.unpack_theta(theta)
        if lay.readout:
            W, c = lay.unpack_readout(np.asarray(w, np.float64)[off["readout"]])
        else:
            W, c = (v.copy() for v in self.frozen_readout)
        return Params(A, b, W, c)

    def pack(self, params: Params) -> np.ndarray:
        """The variable vector of ``params`` (states simulated, factors fitted)."""
        lay = self.layout
        A = np.asarray(params.A, np.float64)
        b = np.asarray(params.b, np.float64)
        theta = lay.pack_theta(A, b)
        parts = [np.concatenate([np.maximum(theta, 0.0), np.maximum(-theta, 0.0)])
                 if lay.split else theta]
        if lay.readout:
            parts.append(lay.pack_readout(params.W, params.c))
        if lay.states:
            parts.append(np.asarray(self.simulate(theta)).ravel(order="F"))
        if lay.factors:
            B = float(self.lipschitz_bound)
            parts.append(np.concatenate([_factor_init(A[t], self.h, B) for t in range(lay.L)]))
        return np.concatenate(parts)


def _sample_model(form: Any) -> dict[str, Any]:
    """CasADi functions of one sample (SX), built from :mod:`controldl.model`."""
    d, m, h = form.width, form.n_outputs, form.h
    x = ca.SX.sym("x", d)
    A = ca.SX.sym("A", d, d)
    b = ca.SX.sym("b", d)
    step = ca.Function("step", [x, A, b],
                       [model.step(CA, form.model, form.activation, h, x, A, b)],
                       ["x", "A", "b"], ["x_next"])
    W = ca.SX.sym("W", m, d)
    c = ca.SX.sym("c", m)
    y = ca.SX.sym("y", m)
    z = ca.SX.sym("z", m)
    loss_z = model.loss(CA, form.loss, z, y)
    loss = ca.Function("loss", [z, y], [loss_z], ["z", "y"], ["loss"])
    readout_loss = ca.Function(
        "readout_loss", [x, W, c, y], [loss(model.readout(W, c, x), y)],
        ["x", "W", "c", "y"], ["loss"])
    # The outer curvature of the generalized Gauss-Newton model, ∇²_z ℓ (clipped at 0 for
    # one output: only sigmoid_mse is not convex in z).
    curv = ca.hessian(loss_z, z)[0]
    if m == 1:
        curv = ca.fmax(curv, 0)
    curvature = ca.Function("curvature", [z, y], [ca.densify(curv)], ["z", "y"], ["d2l"])
    return dict(step=step, loss=loss, readout_loss=readout_loss, curvature=curvature)


def _penalties(form: Any, lay: Layout, ctrl: Any, W: Any, c: Any) -> Any:
    """``R = l2 + l1 + smooth + readout_l2`` from :mod:`controldl.model`, in terms of the
    NLP's control block (with the L1 split: ``A = A⁺ - A⁻``, and the l1 term evaluated on
    ``A⁺ + A⁻ ≥ 0`` with ``|u| = u``: ``β·h·Σ(A⁺ + A⁻)``, the linear cost of the split)."""
    L, d, h = lay.L, lay.d, form.h
    nA = L * d * d

    def blocks(v: Any) -> tuple[list[Any], list[Any]]:
        As = [ca.reshape(v[t * d * d:(t + 1) * d * d], d, d) for t in range(L)]
        bs = [v[nA + t * d: nA + (t + 1) * d] for t in range(L)]
        return As, bs

    if lay.split:
        P_ = lay.n_theta
        pos, neg = ctrl[:P_], ctrl[P_:]
        theta = pos - neg
    else:
        theta = ctrl
    As, bs = blocks(theta)
    total = 0
    if form.l2 > 0:
        total += sum(model.layer_l2(CA, form.l2, h, As[t], bs[t]) for t in range(L))
    if form.l1 > 0:
        # |u| = u on the nonnegative parts: the linear cost of the split, exactly (|·| of
        # CasADi would flip its slope where IPOPT's relaxed bounds let a part dip below 0).
        nonneg = SimpleNamespace(**{**vars(CA), "abs": lambda u: u})
        Ms, ms = blocks(pos + neg)
        total += sum(model.layer_l1(nonneg, form.l1, h, Ms[t], ms[t]) for t in range(L))
    if form.smooth > 0 and L > 1:
        total += sum(model.layer_smooth(CA, form.smooth, h, As[t], bs[t], As[t + 1], bs[t + 1])
                     for t in range(L - 1))
    if form.readout_l2 > 0:
        total += model.readout_l2(CA, form.readout_l2, W, c)
    return total


def build_transcription(problem: Problem, solver: CasadiDirect, params: Params,
                        hessian: str | None = None) -> Transcription:
    """The NLP of ``problem`` for the options of ``solver``, with ``params`` as the
    initial point (and as the frozen readout when ``train_readout`` is False); ``hessian``
    is the resolved Hessian option (default: ``solver.resolve_hessian(problem)``)."""
    form = problem.formulation
    hessian = hessian or solver.resolve_hessian(problem)
    N = problem.data.n_train
    d, m, L, h = form.width, form.n_outputs, form.layers, form.h
    lip = form.lipschitz_bound
    lay = Layout(L=L, d=d, m=m, N=N, split=form.l1 > 0, readout=form.train_readout,
                 states=solver.transcription == "multiple",
                 factors=lip is not None and solver.lipschitz_form == "spectral")
    fns = _sample_model(form)
    X0 = np.asarray(problem.initial_states(), np.float64).T.copy()  # d × N
    Y = np.asarray(problem.targets(), np.float64).T.copy()  # m × N
    off = lay.offsets()
    P_ = lay.n_theta

    w = ca.MX.sym("w", lay.n)
    ctrl = w[off["controls"]]
    theta = ctrl[:P_] - ctrl[P_:] if lay.split else ctrl
    W0 = np.asarray(params.W, np.float64)
    c0 = np.asarray(params.c, np.float64).reshape(-1)
    if lay.readout:
        p = ca.MX.sym("p", 0)
        p0 = np.zeros(0)
        ro = w[off["readout"]]
    else:
        p = ca.MX.sym("p", m * d + m)
        p0 = lay.pack_readout(W0, c0)
        ro = p
    W = ca.reshape(ro[: m * d], m, d)
    c = ro[m * d:]
    A_all = ca.reshape(theta[: L * d * d], d, d * L)  # [A_0, …, A_{L-1}]
    b_all = ca.reshape(theta[L * d * d:], d, L)

    step, loss, readout_loss, curvature = (fns[k] for k in
                                           ("step", "loss", "readout_loss", "curvature"))
    nthreads = max(int(solver.threads), 1)
    par = "thread" if nthreads > 1 else "serial"
    map_opts = {"max_num_threads": nthreads} if nthreads > 1 else {}

    def mapped(fn: Any, n: int, reduce_in: list[int], reduce_out: list[int]) -> Any:
        return fn.map(f"{fn.name()}_map{n}", par, n, reduce_in, reduce_out, map_opts)

    penalties = _penalties(form, lay, ctrl, W, c)
    run_w = form.running * h
    keep: list[Any] = []
    g_parts: list[Any] = []
    lbg: list[np.ndarray] = []
    ubg: list[np.ndarray] = []
    hess_lag = None

    # Simulation of the states x(1..L) (d × N·L) from θ: the step mapped over samples,
    # accumulated over layers.
    simulate = None
    if lay.states:
        th_sym = ca.MX.sym("theta", P_)
        traj_all = mapped(step, N, [1, 2], []).mapaccum("layers", L)
        simulate = ca.Function("simulate", [th_sym], [traj_all(
            ca.DM(X0), ca.reshape(th_sym[: L * d * d], d, d * L),
            ca.reshape(th_sym[L * d * d:], d, L))])

    if not lay.states:
        # ---- single shooting: a per-sample SX function of (x0, y, θ, W, c)
        x0s = ca.SX.sym("x0", d)
        ys = ca.SX.sym("y", m)
        ths = ca.SX.sym("theta", P_)
        Ws = ca.SX.sym("W", m, d)
        cs = ca.SX.sym("c", m)
        traj = step.mapaccum("trajectory", L)
        Xs = traj(x0s, ca.reshape(ths[: L * d * d], d, d * L), ca.reshape(ths[L * d * d:], d, L))
        times = list(range(L)) if run_w > 0 else [L - 1]
        weights = [(run_w + (1.0 if t == L - 1 else 0.0)) for t in times]
        zs = [model.readout(Ws, cs, Xs[:, t]) for t in times]
        phi = sum(wt * loss(z_t, ys) for wt, z_t in zip(weights, zs, strict=True))
        sample_cost = ca.Function("sample_cost", [x0s, ys, ths, Ws, cs], [phi])
        costs = mapped(sample_cost, N, [2, 3, 4], [0])
        f = costs(ca.DM(X0), ca.DM(Y), theta, W, c) / N + penalties

        # The effective variables v = (θ, W, c) (θ only for a frozen readout) and the
        # linear map w ↦ v.
        vs = ca.vertcat(ths, ca.vec(Ws), cs) if lay.readout else ths
        T = _effective_map(lay)
        if hessian == "exact":
            Hs = ca.triu(ca.hessian(phi, vs)[0])
            sample_hess = ca.Function("sample_hess", [x0s, ys, ths, Ws, cs], [Hs])
            Hsum = mapped(sample_hess, N, [2, 3, 4], [0])(ca.DM(X0), ca.DM(Y), theta, W, c)
            Hsum = ca.densify(Hsum)
            Hv = (Hsum + Hsum.T - ca.diag(ca.diag(Hsum))) / N
            hess_lag = ("v", Hv, T)
        elif hessian == "gauss-newton":
            Z = ca.vertcat(*zs)  # R·m residuals of one sample
            curv = [wt * curvature(z_t, ys) for wt, z_t in zip(weights, zs, strict=True)]
            G = ca.densify(ca.jacobian(Z, vs).T)  # P_v × R·m
            D = ca.horzcat(*curv)  # m × R·m
            gn = ca.Function("sample_gn", [x0s, ys, ths, Ws, cs], [G, D])
            Gall, Dall = mapped(gn, N, [2, 3, 4], [])(ca.DM(X0), ca.DM(Y), theta, W, c)
            gram = _GramCallback("gauss_newton_gram", vs.shape[0], N * len(times), m, 1.0 / N)
            keep.append(gram)
            hess_lag = ("v", gram(Gall, Dall), T)
    else:
        # ---- multiple shooting: states are variables, dynamics are constraints
        Xv = ca.reshape(w[off["states"]], d, N * L)  # [X_1, …, X_L], X_t = d × N
        Xprev = ca.horzcat(ca.DM(X0), Xv[:, : N * (L - 1)])
        step_N = mapped(step, N, [1, 2], [])
        for t in range(L):
            nxt = step_N(Xprev[:, t * N:(t + 1) * N], A_all[:, t * d:(t + 1) * d], b_all[:, t])
            g_parts.append(ca.vec(Xv[:, t * N:(t + 1) * N] - nxt))
            lbg.append(np.zeros(N * d))
            ubg.append(np.zeros(N * d))
        XL = Xv[:, N * (L - 1):]
        costs = mapped(readout_loss, N, [1, 2], [0])
        f = costs(XL, W, c, ca.DM(Y)) / N
        if run_w > 0:
            costs_all = mapped(readout_loss, N * L, [1, 2], [0])
            f += run_w * costs_all(Xv, W, c, ca.DM(np.tile(Y, (1, L)))) / N
        f += penalties
        if hessian == "gauss-newton":
            if run_w > 0:
                Xres, Yres, wts = Xv, np.tile(Y, (1, L)), np.full(N * L, run_w)
                wts[-N:] += 1.0
            else:
                Xres, Yres, wts = XL, Y, np.ones(N)
            K = Xres.shape[1]
            Zr = ca.mtimes(W, Xres) + ca.repmat(c, 1, K)  # m × K residual outputs
            Dall = mapped(curvature, K, [], [])(Zr, ca.DM(Yres))  # m × K·m
            Dall = Dall * ca.repmat(ca.DM(np.repeat(wts, m)).T, m, 1)
            J = ca.jacobian(ca.vec(Zr), w)  # sparse K·m × n
            Dbd = ca.sparsity_cast(ca.vec(Dall), _block_diagonal(K, m))
            hess_lag = ("w", ca.mtimes(J.T, ca.mtimes(Dbd, J)) / N, None)

    # ---- Lipschitz constraints on the effective A_t
    if lip is not None:
        s = h / lip
        for t in range(L):
            At = A_all[:, t * d:(t + 1) * d]
            if lay.factors:
                Rt = _triu_to_matrix(w[off["factors"]][t * lay.n_tri:(t + 1) * lay.n_tri], d)
                M = ca.DM.eye(d) - s * s * ca.mtimes(At.T, At) - ca.mtimes(Rt.T, Rt)
                g_parts.append(ca.vertcat(*[M[i, j] for j in range(d) for i in range(j + 1)]))
                lbg.append(np.zeros(lay.n_tri))
                ubg.append(np.zeros(lay.n_tri))
            else:
                g_parts.append(s * s * CA.sum(At * At))
                lbg.append(np.array([-np.inf]))
                ubg.append(np.array([1.0]))
    g = ca.vertcat(*g_parts) if g_parts else ca.MX(0, 1)

    # ---- bounds
    lbw = np.full(lay.n, -np.inf)
    ubw = np.full(lay.n, np.inf)
    sl = off["controls"]
    if lay.split:
        lbw[sl] = 0.0
    if form.box_bound is not None:
        M_ = float(form.box_bound)
        ubw[sl] = M_
        if not lay.split:
            lbw[sl] = -M_

    # ---- custom Hessian of the Lagrangian
    if hess_lag is not None:
        kind, Hmain, T = hess_lag
        sigma = ca.MX.sym("lam_f")
        lam_g = ca.MX.sym("lam_g", g.shape[0])
        if kind == "v":
            Hmain = ca.mtimes(T.T, ca.mtimes(Hmain, T))
        rest = sigma * penalties
        if g.shape[0] > 0 and not lay.states:
            rest += ca.dot(lam_g, g)
        elif g.shape[0] > 0 and lip is not None:
            n_dyn = N * d * L
            rest += ca.dot(lam_g[n_dyn:], g[n_dyn:])
        Hrest = ca.hessian(rest, w)[0]
        H = ca.triu(sigma * Hmain + Hrest)
        hess_lag = ca.Function("nlp_hess_l", [w, p, sigma, lam_g], [H],
                               ["x", "p", "lam_f", "lam_g"], ["hess_gamma_x_x"])

    tr = Transcription(
        layout=lay, w=w, p=p, f=f, g=g, w0=np.zeros(0), p0=p0, lbw=lbw, ubw=ubw,
        lbg=np.concatenate(lbg) if lbg else np.zeros(0),
        ubg=np.concatenate(ubg) if ubg else np.zeros(0),
        hess_lag=hess_lag, keep_alive=keep, frozen_readout=(W0.copy(), c0.copy()),
        simulate=simulate, lipschitz_form=solver.lipschitz_form if lip is not None else None,
        lipschitz_bound=None if lip is None else float(lip), h=h,
    )
    tr.w0 = tr.pack(params)
    return tr


# --------------------------------------------------------------------------- the solver


@dataclasses.dataclass(frozen=True)
class CasadiDirect(Solver):
    """The direct method: the NLP of the whole training problem, solved by IPOPT.

    Defaults, chosen by measurement (``benchmarks/casadi_scaling.py`` on a 2-core CPU;
    ring data, width 3): single shooting — multiple shooting is exact and sparse, but the
    parameters couple every sample's chain of states, so its KKT factorization costs
    0.8-1.8 s per iteration at N = 200, L = 20 against 12-18 ms for single shooting with
    L-BFGS. ``hessian="auto"``: the exact Hessian for small or constrained problems,
    L-BFGS otherwise (see the module docstring for the measurements). At N = 200, L = 20
    the default builds its NLP in about 1.2 s of CPU and costs 12-18 ms of CPU per
    iteration; from an Adam solution it reaches a JAX gradient norm of 3e-8 in 117
    iterations (2.1 s of CPU). ``expand="auto"`` expands the MX graph to SX when
    ``N·L·(d² + d) ≤ 1e5`` (at N = 200, L = 20: 16 instead of 20 ms per iteration for 1.1 s
    more build; larger graphs take longer to expand than they save). Samples are mapped
    serially: ``map(N, "thread", 2)`` was slower on 2 cores. IPOPT's linear solver is
    MUMPS (SPRAL halves L-BFGS's back-solve time but is 5x slower on the dense
    exact/Gauss-Newton systems).

    ``RunResult.stats``: ``ipopt_status`` (IPOPT's return status), ``iter_count``,
    ``primal_infeasibility`` and ``dual_infeasibility`` (IPOPT's final KKT residuals: the
    unscaled constraint violation and the scaled dual infeasibility, max-norms),
    ``barrier_parameter``, ``nlp_objective``, ``nlp_build_time_s``, ``solve_time_s`` and
    ``solve_cpu_time_s`` (the IPOPT run), ``time_per_iteration_s``, ``transcription``,
    ``hessian`` (resolved), ``expand``, ``warm_start``, ``n_variables``, ``n_constraints``,
    ``lipschitz_form`` (which smooth form, and whether it is exact or sufficient),
    ``lipschitz_max`` / ``lipschitz_rescaled_layers``, ``l1_split`` / ``n_exact_zeros``, and
    IPOPT's per-function evaluation counts and times (``n_call_*``, ``t_wall_*``).

    Attributes:
        transcription: ``single`` (states eliminated) or ``multiple`` (states as variables,
            the dynamics as equality constraints).
        hessian: ``auto`` (exact when small or constrained, else L-BFGS), ``exact``,
            ``gauss-newton`` (generalized, for the loss's structure) or ``limited-memory``
            (IPOPT's L-BFGS).
        tol: IPOPT's convergence tolerance on the scaled KKT error (max-norm).
        ipopt_options: extra IPOPT options, applied last: ``(name, value)`` pairs in
            Python, ``--ipopt-options NAME=VALUE`` (repeatable) on the command line;
            numeric strings are converted (e.g. ``mu_strategy=adaptive``,
            ``max_cpu_time=60``).
        expand: expand the MX graph to SX before IPOPT (faster evaluations, slower build):
            ``true``, ``false`` or ``auto`` (when ``N·L·(d²+d) ≤ 1e5``, and never for the
            single-shooting exact Hessian, which has its own per-sample SX Hessian).
        print_level: IPOPT's output level, 0 (silent) to 12.
        lipschitz_form: ``spectral`` (exact, ``I - (h/B)²AᵀA = RᵀR`` with extra variables)
            or ``frobenius`` (``h‖A_t‖_F ≤ B``: smooth, sufficient, conservative).
        ipopt_warm_start: ``auto`` (a start with nonzero biases is warm), ``yes`` or
            ``no``: warm starts use a small initial barrier parameter and small bound
            pushes.
        threads: evaluate the samples on this many threads (``map(N, "thread", k)``);
            1 evaluates them serially (measured faster on 2 cores).
        linear_solver: IPOPT's linear solver (``mumps``; ``ma27``… when HSL is installed).
    """

    transcription: str = "single"
    hessian: str = "auto"
    tol: float = 1e-8
    ipopt_options: tuple[tuple[str, str], ...] = ()
    expand: bool | str = "auto"
    print_level: int = 0
    lipschitz_form: str = "spectral"
    ipopt_warm_start: str = "auto"
    threads: int = 1
    linear_solver: str = "mumps"

    name: ClassVar[str] = "casadi"
    default_max_iter: ClassVar[int] = 1000

    def __post_init__(self) -> None:
        if self.transcription not in TRANSCRIPTIONS:
            raise ValueError(f"unknown transcription {self.transcription!r}; expected one of "
                             f"{', '.join(TRANSCRIPTIONS)}")
        hess = self.hessian.replace("_", "-") if isinstance(self.hessian, str) else self.hessian
        aliases = {"gn": "gauss-newton", "gaussnewton": "gauss-newton", "lbfgs":
                   "limited-memory", "l-bfgs": "limited-memory"}
        hess = aliases.get(hess, hess)
        if hess not in HESSIANS:
            raise ValueError(f"unknown hessian {self.hessian!r}; expected one of "
                             f"{', '.join(HESSIANS)}")
        object.__setattr__(self, "hessian", hess)
        try:
            tol = float(self.tol)
        except (TypeError, ValueError):
            raise ValueError(f"tol must be a number, got {self.tol!r}") from None
        if not math.isfinite(tol) or tol <= 0:
            raise ValueError(f"tol must be a finite number > 0, got {self.tol!r}")
        object.__setattr__(self, "tol", tol)
        object.__setattr__(self, "ipopt_options", _normalize_ipopt_options(self.ipopt_options))
        object.__setattr__(self, "expand", _normalize_expand(self.expand))
        for name in ("print_level", "threads"):
            value = getattr(self, name)
            if isinstance(value, str) and value.strip().isdigit():
                object.__setattr__(self, name, int(value))
        if (not isinstance(self.print_level, int | np.integer) or isinstance(self.print_level, bool)
                or not 0 <= self.print_level <= 12):
            raise ValueError(f"print_level must be an integer in 0..12, got {self.print_level!r}")
        if self.lipschitz_form not in LIPSCHITZ_FORMS:
            raise ValueError(f"unknown lipschitz_form {self.lipschitz_form!r}; expected one of "
                             f"{', '.join(LIPSCHITZ_FORMS)}")
        ws = self.ipopt_warm_start
        if isinstance(ws, bool):
            ws = "yes" if ws else "no"
        if ws not in WARM_START_MODES:
            raise ValueError(f"ipopt_warm_start must be one of "
                             f"{', '.join(WARM_START_MODES)}, got {self.ipopt_warm_start!r}")
        object.__setattr__(self, "ipopt_warm_start", ws)
        if (not isinstance(self.threads, int | np.integer) or isinstance(self.threads, bool)
                or self.threads < 1):
            raise ValueError(f"threads must be an integer >= 1, got {self.threads!r}")
        if not isinstance(self.linear_solver, str) or not self.linear_solver:
            raise ValueError(f"linear_solver must be a name such as 'mumps', got "
                             f"{self.linear_solver!r}")

    def label(self) -> str:
        return f"casadi/{self.transcription}/{self.hessian}"

    def resolve_hessian(self, problem: Problem) -> str:
        """The Hessian option used for ``problem`` (``auto`` resolved, see the class
        docstring)."""
        if self.hessian != "auto":
            return self.hessian
        form = problem.formulation
        n_v = form.layers * (form.width ** 2 + form.width)
        if form.train_readout:
            n_v += form.n_outputs * (form.width + 1)
        work = problem.data.n_train * n_v * n_v
        if self.transcription == "multiple":
            return "exact"
        constrained = form.box_bound is not None or form.lipschitz_bound is not None
        if work <= (EXACT_AUTO_MAX_WORK_CONSTRAINED if constrained else EXACT_AUTO_MAX_WORK):
            return "exact"
        return "limited-memory"

    # ------------------------------------------------------------------ options

    def use_expand(self, problem: Problem, hessian: str) -> bool:
        """Whether the NLP is expanded to SX (``expand="auto"``: first-order functions of a
        small graph only; an expanded exact Hessian takes minutes to build)."""
        if self.expand != "auto":
            return bool(self.expand)
        if hessian == "exact" and self.transcription == "single":
            return False
        f = problem.formulation
        work = problem.data.n_train * f.layers * (f.width * f.width + f.width)
        return work <= EXPAND_AUTO_MAX_WORK

    def is_warm(self, params: Params) -> bool:
        if self.ipopt_warm_start != "auto":
            return self.ipopt_warm_start == "yes"
        return bool(np.any(np.asarray(params.b) != 0) or np.any(np.asarray(params.c) != 0))

    def ipopt_settings(self, stopping: Any, warm: bool, remaining: float | None,
                       hessian: str) -> dict[str, Any]:
        opts: dict[str, Any] = {
            "tol": self.tol,
            "acceptable_tol": max(10 * self.tol, 1e-9),
            "print_level": int(self.print_level),
            "sb": "yes",
            "max_iter": int(stopping.max_iter),
            "linear_solver": self.linear_solver,
        }
        if hessian == "limited-memory":
            opts["hessian_approximation"] = "limited-memory"
            opts["limited_memory_max_history"] = LBFGS_HISTORY
            # No watchdog: with a quasi-Newton model its non-monotone trial steps
            # (objective up by 1e4 on the ring, then back) serve no purpose, and a time or
            # iteration limit that falls inside one returns a far worse iterate.
            opts["watchdog_shortened_iter_trigger"] = 0
        if remaining is not None:
            opts["max_wall_time"] = max(remaining, 1e-3)
        if warm:
            opts.update(WARM_IPOPT_OPTIONS)
        for k, v in self.ipopt_options:
            opts[k] = _parse_value(v)
        return opts

    # ------------------------------------------------------------------ run

    def build(self, problem: Problem, params: Params, hessian: str | None = None
              ) -> Transcription:
        """The transcription (exposed for tests and benchmarks)."""
        return build_transcription(problem, self, params, hessian)

    def run(self, problem: Problem, params: Params, monitor: Monitor) -> RunResult:
        params = Params(*(np.asarray(v, np.float64) for v in params))
        warm = self.is_warm(params)
        hessian = self.resolve_hessian(problem)
        expand = self.use_expand(problem, hessian)
        t_build = time.perf_counter()
        with monitor.compiling():
            tr = self.build(problem, params, hessian)
            state: dict[str, Any] = {"k": 0, "stop": None}
            controls_cost = _controls_cost(problem, params) if tr.layout.states else None
            lbg, ubg = np.asarray(tr.lbg).ravel(), np.asarray(tr.ubg).ravel()

            def on_iteration(arg: Any) -> bool:
                k = state["k"]
                state["k"] = k + 1
                if controls_cost is None:  # single shooting: the objective is J(θ, W, c)
                    stop = monitor.record(k, float(arg[F_INDEX]))
                else:
                    # Multiple shooting: the objective is evaluated at state variables that
                    # need not satisfy the dynamics yet, so the history (and any target)
                    # uses the cost of the iterate's controls, simulated.
                    g = np.asarray(arg[G_INDEX]).ravel()
                    infeasibility = float(np.max(np.maximum(lbg - g, g - ubg), initial=0.0))
                    J = controls_cost(tr.params(np.asarray(arg[X_INDEX]).ravel()))
                    stop = monitor.record(k, J, objective=float(arg[F_INDEX]),
                                          infeasibility=infeasibility)
                if stop is not None:
                    state["stop"] = stop
                    return True
                return False

            cb = _IterationCallback(tr.layout.n, tr.g.shape[0], tr.p.shape[0], on_iteration)
            remaining = None
            if monitor.stopping.max_time is not None:
                remaining = monitor.stopping.max_time - monitor.elapsed()
            opts: dict[str, Any] = {
                "ipopt": self.ipopt_settings(monitor.stopping, warm, remaining, hessian),
                "print_time": False,
                "expand": expand,
                "iteration_callback": cb,
                "error_on_fail": False,
            }
            if tr.hess_lag is not None:
                opts["hess_lag"] = tr.hess_lag
            try:
                nlp_solver = ca.nlpsol("controldl_casadi", "ipopt",
                                       {"x": tr.w, "p": tr.p, "f": tr.f, "g": tr.g}, opts)
            except RuntimeError as exc:
                raise ValueError(f"CasADi/IPOPT rejected the NLP or its options: "
                                 f"{str(exc).splitlines()[-1]}") from None
        build_s = time.perf_counter() - t_build
        if remaining is not None and monitor.out_of_time():
            return RunResult(params, "max_time", 0, {"nlp_build_time_s": build_s})
        t_solve, c_solve = time.perf_counter(), time.process_time()
        try:
            sol = nlp_solver(x0=tr.w0, p=tr.p0, lbx=tr.lbw, ubx=tr.ubw, lbg=tr.lbg, ubg=tr.ubg)
        except RuntimeError as exc:
            raise ValueError(f"IPOPT failed: {str(exc).splitlines()[-1]}") from None
        solve_s = time.perf_counter() - t_solve
        solve_cpu_s = time.process_time() - c_solve
        st = nlp_solver.stats()
        ret = st.get("return_status", "unknown")
        if ret == "Invalid_Option":
            raise ValueError(f"IPOPT rejected an option in {dict(self.ipopt_options)!r}")
        status = IPOPT_STATUS.get(ret, "failed")
        if ret == "User_Requested_Stop" and state["stop"] is not None:
            status = state["stop"]
        w_opt = np.asarray(sol["x"], np.float64).ravel()
        lam_w = np.asarray(sol["lam_x"], np.float64).ravel()
        out = tr.params(w_opt, lam_w)
        out, lip_stats = _enforce_constraints(problem, out)
        its = st.get("iterations", {})
        stats = {
            "ipopt_status": ret,
            "iter_count": int(st.get("iter_count", 0)),
            "primal_infeasibility": float(its["inf_pr"][-1]) if its.get("inf_pr") else None,
            "dual_infeasibility": float(its["inf_du"][-1]) if its.get("inf_du") else None,
            "barrier_parameter": float(its["mu"][-1]) if its.get("mu") else None,
            "nlp_objective": float(sol["f"]),
            "nlp_build_time_s": build_s,
            "solve_time_s": solve_s,
            "solve_cpu_time_s": solve_cpu_s,
            "time_per_iteration_s": solve_s / max(int(st.get("iter_count", 0)), 1),
            "transcription": self.transcription,
            "hessian": hessian,
            "expand": expand,
            "warm_start": warm,
            "n_variables": tr.layout.n,
            "n_constraints": int(tr.g.shape[0]),
            "hint": FAILURE_HINTS.get(ret),
            "lipschitz_form": LIPSCHITZ_DESCRIPTIONS[tr.lipschitz_form]
            if tr.lipschitz_form else None,
            "l1_split": tr.layout.split,
            "n_exact_zeros": int(np.sum(out.A == 0) + np.sum(out.b == 0))
            if tr.layout.split else None,
            **lip_stats,
        }
        for key in ("nlp_f", "nlp_grad_f", "nlp_g", "nlp_jac_g", "nlp_hess_l"):
            if f"t_wall_{key}" in st:
                stats[f"t_wall_{key}"] = float(st[f"t_wall_{key}"])
                stats[f"n_call_{key}"] = int(st.get(f"n_call_{key}", 0))
        iterations = int(st.get("iter_count", state["k"]))
        return RunResult(out, status, iterations, stats)


def _enforce_constraints(problem: Problem, params: Params) -> tuple[Params, dict[str, Any]]:
    """Clip to the box and scale back any layer whose ``h·‖A_t‖₂`` exceeds the Lipschitz
    bound by round-off; report what was done."""
    form = problem.formulation
    A, b, W, c = (np.array(v, np.float64) for v in params)
    stats: dict[str, Any] = {}
    if form.box_bound is not None:
        M = float(form.box_bound)
        A = np.clip(A, -M, M)
        b = np.clip(b, -M, M)
    if form.lipschitz_bound is not None:
        B = float(form.lipschitz_bound)
        lips = form.h * np.linalg.norm(A, ord=2, axis=(1, 2))
        over = lips > B
        stats["lipschitz_max_before_fix"] = float(lips.max()) if lips.size else 0.0
        if np.any(over):
            A[over] *= (B / lips[over])[:, None, None]
        stats["lipschitz_rescaled_layers"] = int(np.sum(over))
        stats["lipschitz_max"] = float(np.max(form.h * np.linalg.norm(A, ord=2, axis=(1, 2))))
    return Params(A, b, W, c), stats


def cost_and_gradient(problem: Problem, params: Params, **options: Any) -> tuple[float, Params]:
    """``J`` and ``∇J`` at ``params`` evaluated through the CasADi transcription built with
    ``options`` (a :class:`CasadiDirect`'s fields), for tests and diagnostics.

    Single shooting: ``∇J`` is the NLP gradient mapped back to ``(A, b, W, c)`` (with the
    L1 split, the derivative along the part that is nonzero). Multiple shooting: the states
    are simulated and ``∇J`` is the reduced gradient ``∇_θ f - J_θᵀ (J_xᵀ)⁻¹ ∇_x f`` of
    the equality-constrained NLP. The readout's gradient is zero when it is frozen.
    """
    solver = CasadiDirect(**options)
    params = Params(*(np.asarray(v, np.float64) for v in params))
    tr = solver.build(problem, params)
    lay = tr.layout
    off = lay.offsets()
    fg = ca.Function("fg", [tr.w, tr.p], [tr.f, ca.gradient(tr.f, tr.w), tr.g,
                                          ca.jacobian(tr.g, tr.w)])
    f, gw, _, Jg = fg(tr.w0, tr.p0)
    gw = np.asarray(gw, np.float64).ravel()
    if lay.states:
        Jg = np.asarray(ca.densify(Jg), np.float64)
        n_dyn = lay.n_states
        sx = off["states"]
        Jx = Jg[:n_dyn, sx]
        lam = np.linalg.solve(Jx.T, -gw[sx])
        gw = gw + Jg[:n_dyn].T @ lam
    ctrl = gw[off["controls"]]
    if lay.split:
        theta = lay.pack_theta(params.A, params.b)
        P_ = lay.n_theta
        g_theta = np.where(theta > 0, ctrl[:P_], np.where(theta < 0, -ctrl[P_:],
                                                          0.5 * (ctrl[:P_] - ctrl[P_:])))
    else:
        g_theta = ctrl
    gA, gb = lay.unpack_theta(g_theta)
    if lay.readout:
        gW, gc = lay.unpack_readout(gw[off["readout"]])
    else:
        gW, gc = np.zeros_like(params.W), np.zeros_like(params.c)
    return float(f), Params(gA, gb, gW, gc)
