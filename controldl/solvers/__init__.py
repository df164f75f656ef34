"""Solvers behind one interface (:class:`~controldl.solvers.base.Solver`).

``SOLVERS`` maps the command-line names to the classes; the modules of the heavier solvers
are imported on first use, so ``import controldl`` does not import CasADi.
"""

from __future__ import annotations

import importlib
from typing import Any

from controldl.solvers.base import Monitor, RunResult, Solver, Stopping, evaluate, solve
from controldl.solvers.checkpoint import SolveInterrupted
from controldl.solvers.gd import GradientDescent

_REGISTRY: dict[str, str] = {
    "gd": "controldl.solvers.gd:GradientDescent",
    "msa": "controldl.solvers.pmp:MSA",
    "emsa": "controldl.solvers.pmp:EMSA",
    "pmp-newton": "controldl.solvers.pmp.newton:PMPNewton",
    "discrete-msa": "controldl.solvers.pmp.discrete:DiscreteMSA",
    "casadi": "controldl.solvers.direct:CasadiDirect",
}


def available() -> list[str]:
    """Names of the solvers whose modules are present."""
    out = []
    for name, target in _REGISTRY.items():
        module = target.split(":")[0]
        if importlib.util.find_spec(module) is not None:
            out.append(name)
    return out


def solver_class(name: str) -> type[Solver]:
    """The solver class registered under ``name`` (``gd``, ``msa``, ``emsa``, ``casadi``)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown solver {name!r}; expected one of {', '.join(_REGISTRY)}")
    module, attr = _REGISTRY[name].split(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except ModuleNotFoundError as exc:
        raise ValueError(f"solver {name!r} is not available: {exc}") from None


def make_solver(name: str, **options: Any) -> Solver:
    """An instance of solver ``name`` with ``options`` (its dataclass fields). ``name`` is a
    registered solver or any spec that ``compare`` accepts (``adam``, ``adam:lr=0.03``,
    ``emsa:rho=1``; see :mod:`controldl.solvers.options`)."""
    if name in _REGISTRY:
        return solver_class(name)(**options)
    from controldl.solvers.options import solver_from_spec

    return solver_from_spec(name, **options)


__all__ = ["GradientDescent", "Monitor", "RunResult", "SolveInterrupted", "Solver",
           "Stopping", "available",
           "evaluate", "make_solver", "solve", "solver_class"]
