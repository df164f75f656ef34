"""Solvers behind one interface (:class:`~controldl.solvers.base.Solver`).

The registry of solver classes and the one vocabulary of solver names are
:mod:`controldl.solvers.registry` (a new solver is one entry of its ``_REGISTRY``);
:func:`names`, :func:`resolve`, :func:`solver_class` and :func:`available` are
re-exported here.
"""

from __future__ import annotations

from typing import Any

from controldl.solvers.base import Monitor, RunResult, Solver, Stopping, evaluate, solve
from controldl.solvers.checkpoint import SolveInterrupted
from controldl.solvers.gd import GradientDescent
from controldl.solvers.options import solver_from_spec
from controldl.solvers.registry import (
    available,
    names,
    optax_optimizers,
    resolve,
    solver_class,
    unknown_solver,
)


def make_solver(name: str, **options: Any) -> Solver:
    """An instance of solver ``name`` with ``options`` (its dataclass fields). ``name`` is a
    name of :func:`names` or any spec that ``compare`` accepts (``adam``, ``adam:lr=0.03``,
    ``emsa:rho=1``; see :mod:`controldl.solvers.options`)."""
    return solver_from_spec(name, **options)


__all__ = ["GradientDescent", "Monitor", "RunResult", "SolveInterrupted", "Solver",
           "Stopping", "available", "evaluate", "make_solver", "names", "optax_optimizers",
           "resolve", "solve", "solver_class", "unknown_solver"]
