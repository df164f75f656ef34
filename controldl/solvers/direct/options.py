"""The accepted spellings of :class:`~controldl.solvers.direct.solver.CasadiDirect`'s
options (each returns the normalized value or raises a ``ValueError`` that names the
option); the types and ranges are checked from the option declarations
(:func:`controldl.solvers.options.check_options`)."""

from __future__ import annotations

from typing import Any

import numpy as np

HESSIANS: tuple[str, ...] = ("auto", "exact", "gauss-newton", "limited-memory")
WARM_START_MODES: tuple[str, ...] = ("auto", "yes", "no")
_HESSIAN_ALIASES = {"gn": "gauss-newton", "gaussnewton": "gauss-newton",
                    "lbfgs": "limited-memory", "l-bfgs": "limited-memory"}


def hessian(value: Any) -> str:
    """A Hessian option, aliases (``gn``, ``lbfgs``, underscores) resolved."""
    hess = value.replace("_", "-") if isinstance(value, str) else value
    hess = _HESSIAN_ALIASES.get(hess, hess)
    if hess not in HESSIANS:
        raise ValueError(f"unknown hessian {value!r}; expected one of {', '.join(HESSIANS)}")
    return hess


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
