"""Horizon grids of a sweep.

With a fixed step ``h`` (``fixed="step"``), horizon ``T`` gets ``L = round(T/h)`` layers;
with a fixed number of layers (``fixed="layers"``), ``h = T/L``. Layer ``k`` acts on
``[k·h, (k+1)·h]``; the states ``x(k)`` sit at ``t_k = k·h``, ``k = 0..L``. Only a
fixed-step grid on which every ``T`` is a multiple of ``h`` lets a horizon be padded into
the next one (:mod:`controldl.studies.turnpike.starts`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

FIXED_MODES: tuple[str, ...] = ("step", "layers")
DEFAULT_STEP: float = 0.25



def parse_horizons(text: str) -> list[float]:
    """``"1,2,4"`` → ``[1.0, 2.0, 4.0]``; every horizon a finite number > 0, no repeats."""
    parts = [p.strip() for p in str(text).split(",")]
    if not any(parts):
        raise ValueError("--horizons is empty; give comma-separated numbers such as 1,2,4,8")
    values = []
    for p in parts:
        if not p:
            raise ValueError(f"--horizons has an empty entry: {text!r}")
        try:
            values.append(float(p))
        except ValueError:
            raise ValueError(f"--horizons expects comma-separated numbers, got {p!r}") from None
    return check_horizons(values)


def check_horizons(horizons: Sequence[float]) -> list[float]:
    """Validate horizons (finite, > 0, distinct) and return them sorted ascending."""
    try:
        values = [float(T) for T in horizons]
    except (TypeError, ValueError):
        raise ValueError(f"horizons must be numbers, got {horizons!r}") from None
    if not values:
        raise ValueError("at least one horizon is needed")
    for T in values:
        if not math.isfinite(T) or T <= 0:
            raise ValueError(f"every horizon must be a finite number > 0, got {T:g}")
    if len({f"{T:g}" for T in values}) != len(values):
        raise ValueError(f"horizons must be distinct, got {', '.join(f'{T:g}' for T in values)}")
    return sorted(values)


def horizon_grid(horizons: Sequence[float], fixed: str = "step", step: float | None = None,
                 layers: int | None = None) -> list[tuple[float, int]]:
    """``(T, L)`` for every horizon: ``fixed="step"``: ``L = round(T/h)`` (must be ≥ 1);
    ``fixed="layers"``: ``L`` given, ``h = T/L``."""
    horizons = check_horizons(horizons)
    if fixed == "step":
        if layers is not None:
            raise ValueError("layers applies to fixed='layers'; with fixed='step' give step")
        h = DEFAULT_STEP if step is None else float(step)
        if not math.isfinite(h) or h <= 0:
            raise ValueError(f"step must be a finite number > 0, got {step!r}")
        out = []
        for T in horizons:
            L = int(round(T / h))
            if L < 1:
                raise ValueError(f"horizon {T:g} with step {h:g} gives {T / h:.3g} layers; "
                                 "every horizon needs at least one layer (lower the step)")
            out.append((T, L))
        return out
    if fixed == "layers":
        if step is not None:
            raise ValueError("step applies to fixed='step'; with fixed='layers' give layers")
        if (not isinstance(layers, int | np.integer) or isinstance(layers, bool)
                or layers < 1):
            raise ValueError(f"layers must be an integer >= 1, got {layers!r}")
        return [(T, int(layers)) for T in horizons]
    raise ValueError(f"fixed must be one of {', '.join(FIXED_MODES)}, got {fixed!r}")


def horizon_dirname(T: float) -> str:
    """The directory of horizon ``T`` inside a sweep: ``T=<T:g>`` (``T=1``, ``T=0.5``)."""
    return f"T={T:g}"
