"""Deprecated location of the direct method, kept importable for one release: use
:mod:`controldl.solvers.direct`."""

from __future__ import annotations

from controldl.solvers.direct import (
    LIPSCHITZ_DESCRIPTIONS,
    CasadiDirect,
    MultipleShooting,
    SingleShooting,
    Transcription,
    build_transcription,
    cost_and_gradient,
)

__all__ = ["LIPSCHITZ_DESCRIPTIONS", "CasadiDirect", "MultipleShooting", "SingleShooting",
           "Transcription", "build_transcription", "cost_and_gradient"]
