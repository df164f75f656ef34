"""The direct method's solver: the NLP of :mod:`.transcription`, solved by IPOPT."""

from __future__ import annotations

import dataclasses
import shutil
import time
from typing import Any, ClassVar, NamedTuple

import casadi as ca
import numpy as np

from controldl import problem as P
from controldl.problem import Params, Problem
from controldl.solvers import memory as M
from controldl.solvers.base import Monitor, RunResult, Solver
from controldl.solvers.direct import certificates, ipopt
from controldl.solvers.direct import options as opt
from controldl.solvers.direct import size as nlp_size
from controldl.solvers.direct.callbacks import IterationCallback
from controldl.solvers.direct.transcription import (
    LIPSCHITZ_DESCRIPTIONS,
    LIPSCHITZ_FORMS,
    STRATEGIES,
    TRANSCRIPTIONS,
    Transcription,
    build_transcription,
)
from controldl.solvers.options import check_options, option
from controldl.status import Status

_NLPSOL_OUT = [ca.nlpsol_out(i) for i in range(ca.nlpsol_n_out())]
F_INDEX, X_INDEX, G_INDEX = (_NLPSOL_OUT.index(k) for k in ("f", "x", "g"))
LAM_X_INDEX, LAM_G_INDEX = (_NLPSOL_OUT.index(k) for k in ("lam_x", "lam_g"))


class IpoptState(NamedTuple):
    """IPOPT's iterate as its iteration callback sees it: the NLP's variables ``x`` (n,)
    and the multipliers of the bounds ``lam_x`` (n,) and of the constraints ``lam_g``
    (n_g,). What a checkpoint of the direct method holds; a resume warm-starts IPOPT from
    it (``warm_start_init_point``), which is not bit-equal to an uninterrupted run: the
    barrier parameter and IPOPT's internal state (filter, quasi-Newton memory) restart."""

    x: np.ndarray
    lam_x: np.ndarray
    lam_g: np.ndarray

    @classmethod
    def of(cls, arg: Any) -> IpoptState:
        return cls(*(np.array(arg[i], np.float64).ravel()
                     for i in (X_INDEX, LAM_X_INDEX, LAM_G_INDEX)))

EXPAND_AUTO_MAX_WORK = 100_000
"""``expand="auto"`` expands the MX graph to SX while ``N·L·(d² + d)`` is at most this"""
EXPAND_AUTO_MAX_OPS = 1_000_000
"""and while the expanded graph, about ``N·L·φ`` scalar operations (φ: one layer on one
sample, :func:`.size.layer_flops`), is at most this: expanding MNIST's conv problem
(φ = 232,000) for 25 samples took 444 s and 8.8 GB (``benchmarks/casadi_scaling.py
--cap``)."""
EXACT_AUTO_MAX_WORK = 2_000_000
EXACT_AUTO_MAX_WORK_CONSTRAINED = 100_000_000
"""``hessian="auto"`` (single shooting) takes the exact Hessian while ``N·P²`` (P: controls
and readout) is at most these (unconstrained, with box or Lipschitz constraints: IPOPT's
L-BFGS does poorly with the constraints; the constrained limit covers the default
problem, see docs/solvers.md)."""
CODEGEN_OPTIONS: dict[str, Any] = {"jit": True, "compiler": "shell",
                                   "jit_options": {"flags": ["-O1"], "verbose": False},
                                   "jit_cleanup": True}
"""CasADi's code generation: the NLP's functions written as C, compiled by the system's
C compiler (``gcc``/``cc``) and loaded, instead of CasADi's virtual machine."""


class _Recorder:
    """IPOPT's per-iteration hook: records the cost in the monitor (for multiple shooting,
    the cost of the iterate's controls, simulated) and keeps the monitor's stop reason."""

    def __init__(self, tr: Transcription, monitor: Monitor, controls_cost: Any,
                 first: int = 0) -> None:
        self.tr, self.monitor, self.controls_cost = tr, monitor, controls_cost
        self.first, self.k = first, 0  # ``first``: the iteration a resumed run starts at
        self.stop: str | None = None

    def __call__(self, arg: Any) -> bool:
        k, self.k = self.first + self.k, self.k + 1
        self.monitor.snapshot(k, IpoptState.of(arg))
        if self.controls_cost is None:  # single shooting: the objective is J(θ, W, c)
            stop = self.monitor.record(k, float(arg[F_INDEX]))
        else:
            # the objective is evaluated at states that need not satisfy the dynamics yet
            g = np.asarray(arg[G_INDEX]).ravel()
            infeasibility = float(np.max(np.maximum(self.tr.lbg - g, g - self.tr.ubg),
                                         initial=0.0))
            J = self.controls_cost(self.tr.params(np.asarray(arg[X_INDEX]).ravel()))
            stop = self.monitor.record(k, J, objective=float(arg[F_INDEX]),
                                       infeasibility=infeasibility)
        if stop is not None:
            self.stop = stop
            return True
        return False


def _controls_cost(problem: Problem, params: Params) -> Any:
    """``params ↦ J(params)`` on the training set: the problem's own (JAX) cost, compiled
    here, with the simulated states."""
    import jax

    form, X0, Y = problem.formulation, problem.initial_states(), problem.targets()
    compiled = jax.jit(lambda q: P.cost(form, q, X0, Y)).lower(params).compile()
    return lambda q: float(compiled(Params(*(np.asarray(v, np.float64) for v in q))))


class _Setup(NamedTuple):
    """A built NLP and its IPOPT solver object."""

    tr: Transcription
    nlpsol: ca.Function
    recorder: _Recorder
    hook: IterationCallback  # kept alive while IPOPT runs
    hessian: str
    expand: bool
    warm: bool
    build_s: float


@dataclasses.dataclass(frozen=True)
class CasadiDirect(Solver):
    """The direct method: the NLP of the whole training problem, solved by IPOPT.

    Discretize-then-optimize: the canonical problem is already discrete, so the NLP is the
    problem and a converged run ends at a KKT point of ``J`` with its constraints. The
    transcription is a strategy object (:class:`~.transcription.SingleShooting`,
    :class:`~.transcription.MultipleShooting`); the measurements behind the defaults are
    in ``docs/solvers.md`` and ``benchmarks/casadi_scaling.py``.

    ``RunResult.stats``: ``ipopt_status``, ``iter_count``, ``primal_infeasibility``,
    ``dual_infeasibility``, ``barrier_parameter``, ``nlp_objective``; ``build_time_s``
    (the NLP and IPOPT's solver object, code generation included), ``solve_time_s``,
    ``solve_cpu_time_s``, ``time_per_iteration_s``; ``transcription``, ``hessian``
    (resolved), ``expand``, ``codegen``, ``warm_start``, ``n_variables``,
    ``n_constraints``; ``work`` and its parts (:class:`~.ipopt.Work`); ``stationarity``
    (:func:`controldl.stationarity` of the result); the constraints on IPOPT's raw iterate
    (``lipschitz_max_raw``, ``lipschitz_excess_raw``, ``box_violation_raw``,
    ``box_excess_raw``) and on the result (the same without ``_raw``), ``lipschitz_form``;
    ``costate_multiplier_gap`` (multiple shooting, :mod:`.certificates`); ``l1_split`` /
    ``n_exact_zeros``; IPOPT's evaluation counts and times (``n_call_*``, ``t_wall_*``);
    ``hint`` when the run did not converge.

    Options: the fields, declared with :func:`controldl.solvers.options.option`.
    """

    transcription: str = option("single", "``single`` (states eliminated) or ``multiple`` "
                                "(states as variables, the dynamics as equality constraints; "
                                "reports costate_multiplier_gap).", choices=TRANSCRIPTIONS)
    hessian: str = option("auto", "``auto`` (single shooting: exact when small or constrained, "
                          "else L-BFGS; multiple shooting: exact), ``exact``, ``gauss-newton`` "
                          "or ``limited-memory`` (IPOPT's L-BFGS).", choices=opt.HESSIANS)
    tol: float = option(1e-8, "IPOPT's convergence tolerance on the scaled KKT error "
                        "(max-norm).", low=0, open_low=True)
    ipopt_options: tuple[tuple[str, str], ...] = option(
        (), "extra IPOPT options, applied last: ``(name, value)`` pairs in Python, "
        "``--ipopt-options NAME=VALUE`` (repeatable) on the command line.")
    expand: bool | str = option("auto", "expand the MX graph to SX before IPOPT (faster "
                                "evaluations, slower build): ``true``, ``false`` or ``auto`` "
                                "(when ``N·L·(d²+d) ≤ 1e5``, and never for the single-shooting "
                                "exact Hessian, which has its own per-sample SX Hessian).")
    codegen: bool = option(False, "generate C code for the NLP's functions and compile it with "
                           "the system's C compiler (CasADi's jit) instead of evaluating them "
                           "in CasADi's virtual machine: a longer build, cheaper evaluations.")
    print_level: int = option(0, "IPOPT's output level, 0 (silent) to 12.", low=0, high=12)
    lipschitz_form: str = option("spectral", "``spectral`` (exact, ``I - (h/B)²AᵀA = RᵀR`` with "
                                 "extra variables) or ``frobenius`` (``h‖A_t‖_F ≤ B``: smooth, "
                                 "sufficient, conservative).", choices=LIPSCHITZ_FORMS)
    ipopt_warm_start: str = option("auto", "``auto`` (a start with nonzero biases is warm), "
                                   "``yes`` or ``no``: warm starts use a small initial barrier "
                                   "parameter and small bound pushes.",
                                   choices=opt.WARM_START_MODES)
    threads: int = option(1, "evaluate the samples on this many threads "
                          "(``map(N, \"thread\", k)``); 1 evaluates them serially.", low=1)
    linear_solver: str = option("mumps", "IPOPT's linear solver (``mumps``; ``ma27``… when HSL "
                                "is installed).")

    name: ClassVar[str] = "casadi"
    default_max_iter: ClassVar[int] = 1000
    resumable: ClassVar[bool] = True  # a warm start from IpoptState, not bit-equal

    def __post_init__(self) -> None:
        normalized = {  # the accepted spellings, normalized before the generated checks
            "hessian": opt.hessian(self.hessian),
            "ipopt_options": ipopt.normalize_ipopt_options(self.ipopt_options),
            "expand": opt.flag("expand", self.expand, allow_auto=True),
            "codegen": opt.flag("codegen", self.codegen),
            "ipopt_warm_start": opt.warm_start_mode(self.ipopt_warm_start),
        }
        for key, value in normalized.items():
            object.__setattr__(self, key, value)
        check_options(self)

    def refusal(self, controls: str) -> str:
        return ("the direct method on a discrete set is a mixed-integer nonlinear program, "
                "which IPOPT does not solve and controldl does not relax silently; use "
                "discrete-msa (Li & Hao) or gd (the straight-through estimator)")

    def label(self) -> str:
        return f"casadi/{self.transcription}/{self.hessian}"

    def shooting(self) -> Any:
        """The transcription strategy object."""
        return STRATEGIES[self.transcription]()

    def resolve_hessian(self, problem: Problem) -> str:
        """The Hessian option used for ``problem`` (``auto`` resolved)."""
        return self._hessian_for(M.Sizes.of(problem))

    def _hessian_for(self, sizes: M.Sizes) -> str:
        if self.hessian != "auto":
            return self.hessian
        if self.transcription == "multiple":
            return "exact"
        work = sizes.N * _n_controls(sizes) ** 2
        limit = EXACT_AUTO_MAX_WORK_CONSTRAINED if sizes.constrained else EXACT_AUTO_MAX_WORK
        return "exact" if work <= limit else "limited-memory"

    def memory_estimate(self, sizes: M.Sizes) -> M.MemoryEstimate:
        """The NLP in the host's memory. Single shooting: the per-sample evaluations (4
        copies of the states) and, with an exact or Gauss-Newton Hessian, the dense
        Hessian of the ``n_v`` controls and its factorization (2·n_v²); with IPOPT's
        limited-memory Hessian its pairs. Multiple shooting: the states as variables, the
        sparse Jacobian of the dynamics (``2d + 2`` entries per row, ``N·L·d`` rows) and
        the Hessian (``(2d + 2)²/2`` per row), with indices (1.5 numbers per entry), and
        MUMPS's factor of the KKT matrix (3 × those entries, plus the controls' block
        ``n_v²/2``, which every sample fills)."""
        s, nv = sizes, _n_controls(sizes)
        parts = [*M.data_parts(s, 8)]
        row = s.per_layer // max(s.d, 1) + s.d + 1  # the entries of one dynamics row
        if self.transcription == "single":
            parts.append(M.states_part(s, 4, None, None, 8, "the per-sample evaluations"))
            if self._hessian_for(s) == "limited-memory":
                parts.append(M.Part("IPOPT's limited-memory Hessian and vectors", 40 * nv,
                                    "40 × n_v", 8, sharded=False))
            else:
                parts.append(M.Part("the dense Hessian of the controls and its factor",
                                    2.0 * nv * nv, f"2 × n_v², n_v = {nv}", 8, sharded=False))
            return M.MemoryEstimate(tuple(parts), host=True)
        rows = s.N * s.L * s.d
        entries = rows * row * (1 + row / 2)
        parts += [M.Part("the sparse Jacobian and Hessian of the NLP", 1.5 * entries,
                         f"1.5 × N × L × d × {row} × (1 + {row}/2)", 8, sharded=False),
                  M.Part("MUMPS's factor of the KKT matrix", 3 * entries + nv * nv / 2,
                         f"3 × those entries + n_v²/2, n_v = {nv}", 8, sharded=False)]
        return M.MemoryEstimate(tuple(parts), host=True)

    def use_expand(self, problem: Problem, hessian: str) -> bool:
        """Whether the NLP is expanded to SX (``auto``: first-order functions of a small
        graph only; an expanded exact single-shooting Hessian takes minutes to build)."""
        if self.expand != "auto":
            return bool(self.expand)
        if hessian == "exact" and self.transcription == "single":
            return False
        form, n = problem.formulation, problem.data.n_train
        ops = n * form.layers * nlp_size.layer_flops(form)[0]
        return n * form.n_controls <= EXPAND_AUTO_MAX_WORK and ops <= EXPAND_AUTO_MAX_OPS

    def is_warm(self, params: Params) -> bool:
        if self.ipopt_warm_start != "auto":
            return self.ipopt_warm_start == "yes"
        return bool(np.any(np.asarray(params.b) != 0) or np.any(np.asarray(params.c) != 0))

    def build(self, problem: Problem, params: Params, hessian: str | None = None
              ) -> Transcription:
        """The transcription (exposed for tests and benchmarks)."""
        return build_transcription(problem, self.shooting(), params,
                                   hessian or self.resolve_hessian(problem),
                                   self.lipschitz_form, self.threads)

    # ------------------------------------------------------------------ run

    def nlpsol_options(self, tr: Transcription, hook: IterationCallback,
                       run: ipopt.IpoptRun, expand: bool) -> dict[str, Any]:
        """CasADi's ``nlpsol`` options: IPOPT's settings, the iteration hook, expansion,
        the custom Hessian and code generation."""
        opts: dict[str, Any] = {
            "ipopt": ipopt.ipopt_settings(run), "print_time": False, "expand": expand,
            "iteration_callback": hook, "error_on_fail": False,
        }
        if tr.hess_lag is not None:
            opts["hess_lag"] = tr.hess_lag
        if self.codegen:
            opts.update(CODEGEN_OPTIONS)
        return opts

    def _check_codegen(self, hessian: str) -> None:
        if not self.codegen:
            return
        if shutil.which("gcc") is None and shutil.which("cc") is None:
            raise ValueError("codegen needs a C compiler (gcc or cc) on PATH")
        if hessian == "gauss-newton" and self.transcription == "single":
            raise ValueError("codegen cannot compile the single-shooting Gauss-Newton "
                             "Hessian (a Python callback): use another hessian, or "
                             "codegen=False")

    def setup(self, problem: Problem, params: Params, monitor: Monitor) -> _Setup:
        """Build the NLP and IPOPT's solver object (timed as ``build_time_s``)."""
        warm = self.is_warm(params)
        hessian = self.resolve_hessian(problem)
        expand = self.use_expand(problem, hessian)
        self._check_codegen(hessian)
        controls_cost = _controls_cost(problem, params) if self.transcription == "multiple" \
            else None
        t0 = time.perf_counter()
        tr = self.build(problem, params, hessian)
        first = 0 if monitor.resumed is None else monitor.resumed.iteration
        recorder = _Recorder(tr, monitor, controls_cost, first)
        remaining = None
        if monitor.stopping.max_time is not None:
            remaining = monitor.stopping.max_time - monitor.elapsed()
        extra = self.ipopt_options
        if monitor.resumed is not None:  # IPOPT starts from the saved primal-dual point
            warm, extra = True, (("warm_start_init_point", "yes"), *extra)
        run = ipopt.IpoptRun(self.tol, self.print_level, self.linear_solver, hessian,
                             monitor.stopping.max_iter - first, remaining, warm, extra)
        hook = IterationCallback(tr.layout.n, tr.g.shape[0], tr.p.shape[0], recorder)
        try:
            nlpsol = ca.nlpsol("controldl_casadi", "ipopt",
                               {"x": tr.w, "p": tr.p, "f": tr.f, "g": tr.g},
                               self.nlpsol_options(tr, hook, run, expand))
        except RuntimeError as exc:
            raise ValueError(f"CasADi/IPOPT rejected the NLP or its options: "
                             f"{str(exc).splitlines()[-1]}") from None
        return _Setup(tr, nlpsol, recorder, hook, hessian, expand, warm,
                      time.perf_counter() - t0)

    def check_problem(self, problem: Problem) -> None:
        """The control set (:meth:`Solver.check_problem`), then the NLP's size
        (:meth:`check_size`): both refused before anything is built."""
        super().check_problem(problem)
        self.check_size(problem)

    def check_size(self, problem: Problem) -> nlp_size.NlpSize:
        """The NLP's estimated size (:mod:`.size`); a ``ValueError`` of one line when it
        is beyond :data:`~.size.DIRECT_CAP` (the conv model's multiple shooting is
        refused for what it is by the transcription instead)."""
        hessian = self.resolve_hessian(problem)
        if problem.formulation.geometry is not None and self.transcription == "multiple":
            return nlp_size.estimate(problem, self.transcription, hessian)
        return nlp_size.check(problem, self.transcription, hessian)

    def run(self, problem: Problem, params: Params, monitor: Monitor) -> RunResult:
        params = Params(*(np.asarray(v, np.float64) for v in params))
        estimate = self.check_size(problem)  # before anything is built
        with monitor.compiling():
            s = self.setup(problem, params, monitor)
        if monitor.stopping.max_time is not None and monitor.out_of_time():
            return RunResult(params, Status.MAX_TIME, 0, {"build_time_s": s.build_s})
        tr = s.tr
        start = {"x0": tr.w0}
        if monitor.resumed is not None:
            saved = monitor.resumed.restore(IpoptState(
                tr.w0, np.zeros_like(tr.w0), np.zeros(tr.g.shape[0])))
            start = {"x0": saved.x, "lam_x0": saved.lam_x, "lam_g0": saved.lam_g}
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            sol = s.nlpsol(**start, p=tr.p0, lbx=tr.lbw, ubx=tr.ubw, lbg=tr.lbg, ubg=tr.ubg)
        except RuntimeError as exc:
            raise ValueError(f"IPOPT failed: {str(exc).splitlines()[-1]}") from None
        timing = {"solve_time_s": time.perf_counter() - t0,
                  "solve_cpu_time_s": time.process_time() - c0}
        st = s.nlpsol.stats()
        if st.get("return_status") == "Invalid_Option":
            raise ValueError(f"IPOPT rejected an option in {dict(self.ipopt_options)!r}")
        result = self._result(problem, s, sol, st, timing, monitor)
        result.stats["nlp_estimate"] = dataclasses.asdict(estimate)
        return result

    def _result(self, problem: Problem, s: _Setup, sol: dict[str, Any], st: dict[str, Any],
                timing: dict[str, float], monitor: Monitor) -> RunResult:
        """Statuses, the raw-iterate checks, the certificates, the work and the stats."""
        tr, form = s.tr, problem.formulation
        ret = st.get("return_status", "unknown")
        status = ipopt.status_of(ret, s.recorder.stop)
        w = np.asarray(sol["x"], np.float64).ravel()
        raw = certificates.check_constraints(form, tr.raw_params(w))
        out = tr.params(w, np.asarray(sol["lam_x"], np.float64).ravel())
        if not np.all(np.isfinite(w)):
            status = Status.DIVERGED
        elif raw.violated and status.completed:
            status = Status.CONSTRAINT_VIOLATED
        elif not raw.violated:
            out = certificates.clean_round_off(form, out)
        iterations = s.recorder.first + int(st.get("iter_count", s.recorder.k))
        work = ipopt.work_of(st, tr.layout.states)
        _record_work(monitor.history, work.total, iterations, s.recorder.first)
        stats = {
            "ipopt_status": ret, **_ipopt_stats(st, sol), **timing,
            "build_time_s": s.build_s,
            "time_per_iteration_s": timing["solve_time_s"] / max(iterations, 1),
            "transcription": self.transcription, "hessian": s.hessian, "expand": s.expand,
            "codegen": self.codegen, "warm_start": s.warm, "n_variables": tr.layout.n,
            "n_constraints": int(tr.g.shape[0]),
            "work": work.total, "work_first_order": work.first_order,
            "work_values": work.values, "work_hessian": work.hessian,
            "work_hessian_weight": work.hessian_weight,
            "hint": ipopt.hint_of(ret, status),
            "lipschitz_form": LIPSCHITZ_DESCRIPTIONS[tr.lipschitz_form]
            if tr.lipschitz_form else None,
            **raw.stats("_raw"), **certificates.check_constraints(form, out).stats(""),
            "l1_split": tr.layout.split,
            "n_exact_zeros": int(np.sum(out.A == 0) + np.sum(out.b == 0))
            if tr.layout.split else None,
            "stationarity": P.stationarity(problem, out),
            **ipopt.evaluation_stats(st),
        }
        if tr.layout.states:
            cert = certificates.costate_certificate(
                problem, out, tr.dynamics_multipliers(np.asarray(sol["lam_g"])),
                tr.states(w), stats["primal_infeasibility"], stats["dual_infeasibility"], ret)
            stats["costate_multiplier_gap"] = cert.gap
            stats["costate_multiplier_certificate"] = cert._asdict()
        return RunResult(out, status, iterations, stats)


def _ipopt_stats(st: dict[str, Any], sol: dict[str, Any]) -> dict[str, Any]:
    """IPOPT's iteration count, final KKT residuals (unscaled constraint violation, scaled
    dual infeasibility, max-norms), barrier parameter and objective."""
    its = st.get("iterations", {})

    def last(key: str) -> float | None:
        return float(its[key][-1]) if its.get(key) else None

    return {"iter_count": int(st.get("iter_count", 0)), "primal_infeasibility": last("inf_pr"),
            "dual_infeasibility": last("inf_du"), "barrier_parameter": last("mu"),
            "nlp_objective": float(sol["f"])}


def _record_work(history: list[dict[str, Any]], total: float, iterations: int,
                 first: int = 0) -> None:
    """``work`` of each history entry: IPOPT's counts are known only at the end, so the
    run's total is spread evenly over its iterations (entry k: ``w₀ + total·(k−k₀)/(K−k₀)``
    for a run resumed at ``k₀`` whose earlier entries end at work ``w₀``; 0 and 0 for a
    fresh one)."""
    before = [e.get("work") or 0.0 for e in history if e["iteration"] < first]
    base, n = (before[-1] if before else 0.0), max(iterations - first, 1)
    for entry in history:
        if entry["iteration"] >= first:
            entry["work"] = base + total * (min(entry["iteration"], iterations) - first) / n


def _n_controls(sizes: M.Sizes) -> int:
    """The NLP's control variables: every layer's, and the readout's when trained."""
    return sizes.L * sizes.per_layer + (sizes.m * (sizes.features + 1)
                                        if sizes.train_readout else 0)
