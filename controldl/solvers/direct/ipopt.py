"""IPOPT's options, its return statuses as :class:`~controldl.status.Status`, and what its
statistics say about the work done.

The status table (:data:`IPOPT_STATUS`) is written once:

- ``Solve_Succeeded`` → ``converged``; ``Solved_To_Acceptable_Level`` → ``acceptable``;
- ``Feasible_Point_Found`` → ``stalled``: IPOPT returns it for a *square* problem (as many
  equalities as variables), where it looks for a feasible point and does not minimize;
  the point is feasible but not certified stationary (``stats["stationarity"]`` says how
  far it is). A controldl NLP always has free controls, so this signals an unusual setup;
- ``Search_Direction_Becomes_Too_Small`` → ``stalled``;
- ``Maximum_Iterations_Exceeded`` → ``max_iter``; ``Maximum_CpuTime_Exceeded`` and
  ``Maximum_WallTime_Exceeded`` → ``max_time``;
- ``Diverging_Iterates`` → ``diverged``;
- ``User_Requested_Stop`` → the reason the monitor gave (target, time), else
  ``interrupted``;
- every error status (``Restoration_Failed``, ``Error_In_Step_Computation``,
  ``Invalid_Number_Detected``, ``Infeasible_Problem_Detected``, ``Insufficient_Memory``, …)
  and any unknown one → ``failed``, with ``stats["ipopt_status"]`` and the ``direct`` hint.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from controldl.status import Status

IPOPT_STATUS: dict[str, Status] = {
    "Solve_Succeeded": Status.CONVERGED,
    "Solved_To_Acceptable_Level": Status.ACCEPTABLE,
    "Feasible_Point_Found": Status.STALLED,
    "Search_Direction_Becomes_Too_Small": Status.STALLED,
    "Maximum_Iterations_Exceeded": Status.MAX_ITER,
    "Maximum_CpuTime_Exceeded": Status.MAX_TIME,
    "Maximum_WallTime_Exceeded": Status.MAX_TIME,
    "Diverging_Iterates": Status.DIVERGED,
    "User_Requested_Stop": Status.INTERRUPTED,  # replaced by the monitor's reason
}
"""IPOPT return status → controldl status; any status not listed is ``failed``."""

FAILURE_HINTS: dict[str, str] = {
    "Error_In_Step_Computation": (
        "IPOPT could not compute a step. With multiple shooting this is usually the linear "
        "solver: the shared controls make the KKT factorization fill in, and MUMPS may fail "
        "to allocate its workspace (IPOPT's default mumps_mem_percent=1000 asks for 11x its "
        "estimate). Use transcription='single', fewer samples, or "
        "ipopt_options=(('mumps_mem_percent', '100'),)."),
    "Restoration_Failed": (
        "IPOPT's restoration phase failed: the iterate is returned as it is. Try another "
        "start (warm-start from gradient descent) or hessian='exact'."),
}
"""What to try when IPOPT ends with one of these statuses, before the generic hint."""

LBFGS_HISTORY = 20
"""IPOPT's L-BFGS memory (``limited_memory_max_history``)."""

WARM_IPOPT_OPTIONS: dict[str, Any] = {
    "mu_init": 1e-6,
    "bound_push": 1e-8,
    "bound_frac": 1e-8,
    "slack_bound_push": 1e-8,
    "slack_bound_frac": 1e-8,
}
"""A warm start: a small barrier parameter and small bound pushes, so that a good start
is not pushed away from the bounds."""


def status_of(ipopt_status: str, monitor_reason: str | None) -> Status:
    """The controldl status of an IPOPT return status (see the module docstring)."""
    if ipopt_status == "User_Requested_Stop" and monitor_reason is not None:
        return Status(monitor_reason)
    return IPOPT_STATUS.get(ipopt_status, Status.FAILED)


def hint_of(ipopt_status: str, status: Status) -> str | None:
    """The next step for an unsuccessful status: IPOPT's specific hint, then the generic
    ``direct`` one."""
    if status.succeeded:
        return None
    parts = [FAILURE_HINTS.get(ipopt_status, ""), status.hint("direct")]
    return " ".join(p for p in parts if p) or None


def parse_value(value: Any) -> Any:
    """An IPOPT option value: ints and floats from their strings, other strings kept."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _option_pair(item: Any) -> tuple[str, str]:
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
    return key, value


def normalize_ipopt_options(options: Any) -> tuple[tuple[str, str], ...]:
    """``ipopt_options`` as a tuple of ``(key, value)`` string pairs. Accepts pairs, a
    dict or ``"KEY=VALUE"`` strings."""
    if options is None:
        return ()
    if isinstance(options, dict):
        options = list(options.items())
    if isinstance(options, str):
        options = [options]
    return tuple(_option_pair(item) for item in options)


class IpoptRun(NamedTuple):
    """What one IPOPT run is given: the tolerance, the output level, the linear solver,
    the resolved Hessian, the iteration limit, the wall time left (or ``None``), whether
    the start is warm and the user's extra options (applied last)."""

    tol: float
    print_level: int
    linear_solver: str
    hessian: str
    max_iter: int
    remaining_s: float | None
    warm: bool
    extra: tuple[tuple[str, str], ...]


def ipopt_settings(run: IpoptRun) -> dict[str, Any]:
    """IPOPT's option dictionary for ``run``."""
    opts: dict[str, Any] = {
        "tol": run.tol,
        "acceptable_tol": max(10 * run.tol, 1e-9),
        # an "acceptable" point is as feasible as a converged one (IPOPT's default, 1e-2,
        # would end runs with constraints exceeded far beyond round-off)
        "acceptable_constr_viol_tol": max(10 * run.tol, 1e-9),
        "print_level": int(run.print_level),
        "sb": "yes",
        "max_iter": int(run.max_iter),
        "linear_solver": run.linear_solver,
    }
    if run.hessian == "limited-memory":
        opts["hessian_approximation"] = "limited-memory"
        opts["limited_memory_max_history"] = LBFGS_HISTORY
        # No watchdog: with a quasi-Newton model its non-monotone trial steps serve no
        # purpose, and a limit that falls inside one returns a far worse iterate.
        opts["watchdog_shortened_iter_trigger"] = 0
    if run.remaining_s is not None:
        opts["max_wall_time"] = max(run.remaining_s, 1e-3)
    if run.warm:
        opts.update(WARM_IPOPT_OPTIONS)
    for k, v in run.extra:
        opts[k] = parse_value(v)
    return opts


class Work(NamedTuple):
    """An IPOPT run's work in gradient-evaluation equivalents (a forward plus a backward
    pass through the network on the training set = 1).

    Counted from IPOPT's evaluation counts (CasADi's ``n_call_nlp_*``): an evaluation of
    the network's first derivatives — the objective gradient for single shooting, the
    constraint Jacobian of all the dynamics for multiple shooting — counts 1 (for multiple
    shooting this under-counts: the Jacobian of one step has ``d`` rows per sample); an
    evaluation of its values (the objective, resp. the dynamics residual, in the line
    search) counts ½; an evaluation of the Hessian of the Lagrangian counts its measured
    wall time divided by the mean wall time of a first-derivative evaluation
    (``hessian_weight``). Evaluations that do not involve the network (the Lipschitz
    constraints of single shooting, the readout loss of multiple shooting) count 0.
    """

    total: float
    first_order: int
    values: int
    hessian: int
    hessian_weight: float


def work_of(stats: dict[str, Any], has_states: bool) -> Work:
    """The :class:`Work` of an IPOPT run from its ``nlpsol`` statistics."""
    first, value = ("nlp_jac_g", "nlp_g") if has_states else ("nlp_grad_f", "nlp_f")
    n_first = int(stats.get(f"n_call_{first}", 0))
    n_value = int(stats.get(f"n_call_{value}", 0))
    n_hess = int(stats.get("n_call_nlp_hess_l", 0))
    weight = 0.0
    if n_hess and n_first:
        t_first = float(stats.get(f"t_wall_{first}", 0.0)) / n_first
        t_hess = float(stats.get("t_wall_nlp_hess_l", 0.0)) / n_hess
        weight = t_hess / t_first if t_first > 0 else 0.0
    return Work(n_first + 0.5 * n_value + weight * n_hess, n_first, n_value, n_hess, weight)


def evaluation_stats(stats: dict[str, Any]) -> dict[str, Any]:
    """IPOPT's per-function evaluation counts and wall times (``n_call_*``, ``t_wall_*``)."""
    out: dict[str, Any] = {}
    for key in ("nlp_f", "nlp_g", "nlp_grad_f", "nlp_jac_g", "nlp_hess_l"):
        if f"t_wall_{key}" in stats:
            out[f"t_wall_{key}"] = float(stats[f"t_wall_{key}"])
            out[f"n_call_{key}"] = int(stats.get(f"n_call_{key}", 0))
    return out
