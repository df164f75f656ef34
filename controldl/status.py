"""The one status enumeration every solver reports, with its message and next steps.

A status says how a solve ended. ``Status.completed`` tells whether the run did what a
run can do (a stopping rule was met or a limit was hit); ``exit_code`` is what
``controldl train`` and ``compare`` return for it (0 completed, 1 diverged / failed /
constraint violated, 130 interrupted). Hints name solver options, never command-line
flags (the CLI owns those).
"""

from __future__ import annotations

import enum


class Status(enum.StrEnum):
    """How a solve ended. A ``str`` enumeration: ``Status.CONVERGED == "converged"``."""

    CONVERGED = "converged"
    ACCEPTABLE = "acceptable"
    TARGET_REACHED = "target_reached"
    MAX_ITER = "max_iter"
    MAX_TIME = "max_time"
    STALLED = "stalled"
    DIVERGED = "diverged"
    FAILED = "failed"
    CONSTRAINT_VIOLATED = "constraint_violated"
    INTERRUPTED = "interrupted"

    @property
    def message(self) -> str:
        """What the status means, whatever the solver."""
        return _MESSAGES[self]

    @property
    def completed(self) -> bool:
        """The run ended by a stopping rule or a limit (not a failure or an interruption)."""
        return self in _COMPLETED

    @property
    def succeeded(self) -> bool:
        """Converged or at the target cost."""
        return self in _SUCCEEDED

    @property
    def exit_code(self) -> int:
        """0 when completed, 130 when interrupted, 1 otherwise."""
        if self.completed:
            return 0
        return 130 if self is Status.INTERRUPTED else 1

    def hint(self, family: str = "") -> str:
        """The next step that fits a solver family: ``gd``, ``pmp`` or ``direct``."""
        by_family = _HINTS.get(self, {})
        return by_family.get(family, by_family.get("", ""))

    def describe(self, family: str = "") -> str:
        """The message followed by the hint."""
        hint = self.hint(family)
        return f"{self.message} {hint}".strip()


_COMPLETED = frozenset({Status.CONVERGED, Status.ACCEPTABLE, Status.TARGET_REACHED,
                        Status.MAX_ITER, Status.MAX_TIME, Status.STALLED})
_SUCCEEDED = frozenset({Status.CONVERGED, Status.TARGET_REACHED})

_MESSAGES: dict[Status, str] = {
    Status.CONVERGED: "The stationarity tolerance was met: the solution is (near-)stationary.",
    Status.ACCEPTABLE: "IPOPT stopped at its 'acceptable' level: the KKT error is below "
                       "acceptable_tol but not below tol.",
    Status.TARGET_REACHED: "The target cost was reached.",
    Status.MAX_ITER: "Stopped at the iteration limit before converging.",
    Status.MAX_TIME: "Stopped at the time limit before converging.",
    Status.STALLED: "No further decrease was possible within the solver's safeguards.",
    Status.DIVERGED: "The cost became non-finite or grew far above its starting value.",
    Status.FAILED: "The solver itself failed (see stats for its message).",
    Status.CONSTRAINT_VIOLATED: "The returned controls violate a constraint beyond round-off.",
    Status.INTERRUPTED: "The solve was interrupted; the best iterate so far was kept.",
}

_LIMIT = "Raise max_iter or max_time, or warm-start from this solution."
_HINTS: dict[Status, dict[str, str]] = {
    Status.ACCEPTABLE: {"": "Tighten acceptable_tol, or warm-start from this solution."},
    Status.MAX_ITER: {"": _LIMIT},
    Status.MAX_TIME: {"": _LIMIT},
    Status.STALLED: {
        "": "Try another solver, or warm-start a second-order solver from this solution.",
        "pmp": "Raise the penalty rho (E-MSA) or the damping mu (MSA), or warm-start "
               "L-BFGS or IPOPT from this solution.",
    },
    Status.DIVERGED: {
        "": "Shorten the step h (more layers or a smaller horizon), or add l2.",
        "gd": "Lower the learning rate lr, shorten the step h (more layers or a smaller "
              "horizon), or add l2.",
        "pmp": "Basic MSA is known to diverge (Li et al. 2018): use emsa with a larger rho, "
               "or msa with damping mu > 0.",
        "direct": "Check the problem's scaling, or start from a gradient-descent solution.",
    },
    Status.FAILED: {
        "": "See stats['message'].",
        "direct": "See stats['ipopt_status']; a warm start from a gradient-descent solution, "
                  "or the other transcription, often helps.",
        "pmp": "The inner maximization failed (a non-finite value or a singular model); "
               "raise rho or mu, or use the matrix-free inner solver.",
    },
    Status.CONSTRAINT_VIOLATED: {"": "See stats for the worst violation; tighten the "
                                     "solver's constraint tolerance."},
    Status.INTERRUPTED: {"": "Resume from its checkpoint (solve(resume=...)) to continue with "
                                "the optimizer's state, or warm-start from it."},
}


def as_status(value: str | Status) -> Status:
    """``Status(value)`` with a precise error for an unknown name."""
    try:
        return Status(value)
    except ValueError:
        raise ValueError(f"unknown status {value!r}; expected one of "
                         f"{', '.join(s.value for s in Status)}") from None
