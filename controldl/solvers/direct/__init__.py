"""The direct method: the whole training problem as one NLP, solved by IPOPT via CasADi.

- :mod:`.layout` — where θ, the readout, the states and the Lipschitz factors live in
  the NLP's variable vector;
- :mod:`.functions` — the CasADi functions of one sample and the penalties, from
  :mod:`controldl.model`;
- :mod:`.transcription` — the strategies :class:`SingleShooting` and
  :class:`MultipleShooting`, the constraints and :func:`build_transcription`;
- :mod:`.ipopt` — IPOPT's options, its statuses as :class:`~controldl.status.Status`,
  the work it did;
- :mod:`.certificates` — costates = multipliers, the constraints on the raw iterate;
- :mod:`.solver` — :class:`CasadiDirect`;
- :mod:`.diagnostics` — ``J`` and ``∇J`` through the transcription;
- :mod:`.size` — the NLP's size estimated before it is built, and :data:`DIRECT_CAP`.
"""

from __future__ import annotations

from controldl.solvers.direct.diagnostics import cost_and_gradient
from controldl.solvers.direct.size import DIRECT_CAP, DirectCap, NlpSize
from controldl.solvers.direct.solver import CasadiDirect
from controldl.solvers.direct.transcription import (
    LIPSCHITZ_DESCRIPTIONS,
    MultipleShooting,
    SingleShooting,
    Transcription,
    build_transcription,
)

__all__ = ["DIRECT_CAP", "LIPSCHITZ_DESCRIPTIONS", "CasadiDirect", "DirectCap",
           "MultipleShooting", "NlpSize", "SingleShooting", "Transcription",
           "build_transcription", "cost_and_gradient"]
