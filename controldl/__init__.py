"""controldl: training residual networks as discrete optimal control.

The public API::

    import controldl as cdl
    data = cdl.data.ring(600, seed=0)
    problem = cdl.Problem(data, width=3, layers=20, horizon=5.0, l2=1e-3)
    solution = cdl.solve(problem, cdl.GradientDescent("adam", lr=0.01), max_iter=500)
    solution.save("out/ring")

Importing controldl changes no global setting. The library computes in the dtype it is
given; for double precision (as the CLI, the tests and the experiments use) turn on JAX's
float64 first::

    import jax
    jax.config.update("jax_enable_x64", True)
"""

# ruff: noqa: E402 (the imports follow the early signal handler on purpose)
from controldl import early_signals

early_signals.install()  # only in the controldl command's own process (see the module)

from controldl import data
from controldl.compilation import enable_compilation_cache
from controldl.data import Dataset
from controldl.problem import Formulation, Params, Problem, init_params, stationarity  # noqa: E501
from controldl.solution import Solution, load
from controldl.solvers import (
    GradientDescent,
    SolveInterrupted,
    Solver,
    available,
    make_solver,
    solve,
    solver_class,
)
from controldl.status import Status

__version__ = "0.1.0"

_LAZY = {"MSA": "msa", "EMSA": "emsa", "CasadiDirect": "casadi"}


def __getattr__(name: str):
    """``controldl.MSA``, ``controldl.EMSA``, ``controldl.CasadiDirect`` and
    ``controldl.hamiltonian_gap``, imported on first use (CasADi is not imported by
    ``import controldl``)."""
    if name in _LAZY:
        return solver_class(_LAZY[name])
    if name == "hamiltonian_gap":
        from controldl.solvers.pmp import hamiltonian_gap

        return hamiltonian_gap
    raise AttributeError(f"module 'controldl' has no attribute {name!r}")


__all__ = [
    "EMSA",
    "MSA",
    "CasadiDirect",
    "Dataset",
    "Formulation",
    "GradientDescent",
    "Params",
    "Problem",
    "Solution",
    "SolveInterrupted",
    "Solver",
    "Status",
    "available",
    "data",
    "enable_compilation_cache",
    "hamiltonian_gap",
    "init_params",
    "load",
    "make_solver",
    "solve",
    "solver_class",
    "stationarity",
]
