"""Validation of :class:`~controldl.solvers.direct.solver.CasadiDirect`'s options (each
returns the normalized value or raises a ``ValueError`` that names the option)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

HESSIANS: tuple[str, ...] = ("auto", "exact", "gauss-newton", "limited-memory")
WARM_START_MODES: tuple[str, ...] = ("auto", "yes", "no")
_HESSIAN_ALIASES = {"gn": "gauss-newton", "gaussnewton": "gauss-newton",
                    "lbfgs": "limited-memory", "l-bfgs": "limited-memory"}


def one_of(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(choices)}")
    return value


def hessian(value: Any) -> str:
    """A Hessian option, aliases (``gn``, ``lbfgs``, underscores) resolved."""
    hess = value.replace("_", "-") if isinstance(value, str) else value
    hess = _HESSIAN_ALIASES.get(hess, hess)
    if hess not in HESSIANS:
        raise ValueError(f"unknown hessian {value!r}; expected one of {', '.join(HESSIANS)}")
    return hess


def tolerance(value: Any) -> float:
    try:
        tol = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"tol must be a number, got {value!r}") from None
    if not math.isfinite(tol) or tol <= 0:
        raise ValueError(f"tol must be a finite number > 0, got {value!r}")
    return tol


def integer(name: str, value: Any, low: int, high: int | None = None) -> int:
    """An integer in ``low..high`` (digit strings accepted)."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    ok = isinstance(value, int | np.integer) and not isinstance(value, bool)
    if not ok or value < low or (high is not None and value > high):
        span = f"in {low}..{high}" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be an integer {span}, got {value!r}")
    return int(value)


def flag(name: str, value: Any, allow_auto: bool = False) -> bool | str:
    """A boolean from a bool or a string (``true``/``false``/``yes``/``no``/``1``/``0``,
    and ``auto`` when allowed)."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, str):
        v = value.strip().lower()
        if allow_auto and v == "auto":
            return "auto"
        if v in ("true", "yes", "1", "on"):
            return True
        if v in ("false", "no", "0", "off"):
            return False
    expected = "true, false or 'auto'" if allow_auto else "true or false"
    raise ValueError(f"{name} must be {expected}, got {value!r}")


def warm_start_mode(value: Any) -> str:
    if isinstance(value, bool):
        value = "yes" if value else "no"
    if value not in WARM_START_MODES:
        raise ValueError(f"ipopt_warm_start must be one of {', '.join(WARM_START_MODES)}, "
                         f"got {value!r}")
    return value
