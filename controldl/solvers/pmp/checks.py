"""Validation of the Pontryagin solvers' numeric options (shared by ``solvers`` and
``newton``)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def check_number(obj: Any, name: str, low: float, strict: bool) -> None:
    """``obj.name`` is a finite number ``> low`` (``strict``) or ``>= low``."""
    v = getattr(obj, name)
    if isinstance(v, bool) or not isinstance(v, int | float | np.integer | np.floating):
        raise ValueError(f"{name} must be a number, got {v!r}")
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v!r}")
    if v < low or (strict and v == low):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {low}, got {v!r}")


def check_integer(obj: Any, name: str, low: int, allow_none: bool = False) -> None:
    """``obj.name`` is an integer ``>= low`` (or ``None`` when ``allow_none``)."""
    v = getattr(obj, name)
    if v is None and allow_none:
        return
    if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {v!r}")
