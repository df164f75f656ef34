r"""The λ ↔ T correspondence of the L² problem.

For dynamics homogeneous in the parameters (``inside``: ``x + h·(A σ(x) + b)``) on a grid of
``L`` layers, substitute ``θ̃ = T·θ``: the step becomes ``x + (1/L)·(Ã σ(x) + b̃)`` whatever
``T``, and the L² term ``(λ/2)·(T/L)·Σ‖θ_t‖² = (λ/(2T))·(1/L)·Σ‖θ̃_t‖²``. So, without
running and smoothness terms, the problem ``(T, λ)`` *is* the problem ``(1, λ/T)`` with the
controls multiplied by ``T``: a long horizon is a small regularization. :func:`lambda_sweep`
solves a fixed horizon for decreasing λ, each to the stationarity tolerance; comparing its
``E`` with a fixed-layers horizon sweep at ``λ·T`` checks the correspondence (exact for
``inside``, not for ``resnet``, whose ``σ(A x + b)`` is not homogeneous).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from controldl.problem import Problem
from controldl.solvers.base import Solver
from controldl.studies.turnpike.starts import cold_start, final_error, price_starts
from controldl.studies.turnpike.sweep import SweepOptions, solve_to_tolerance


def lambda_sweep(problem: Problem, lambdas: Sequence[float], solver: Solver,
                 options: SweepOptions | None = None, **solve_kwargs: Any
                 ) -> list[dict[str, Any]]:
    """Solve ``problem`` (its horizon and layers fixed) for every ``l2`` in ``lambdas``
    (in the given order, each warm-started from the cheaper of the previous solution and
    the cold start) to ``options.tol``; one record per λ: ``l2``, ``equivalent_horizon``
    ``T·λ_0/λ`` (λ_0 the first), ``terminal_error`` ``E``, ``cost``, ``stationarity``,
    ``status``."""
    options = options or SweepOptions()
    if not lambdas or any(not lam > 0 for lam in lambdas):
        raise ValueError(f"lambdas must be numbers > 0, got {list(lambdas)!r}")
    lam0, T = float(lambdas[0]), problem.horizon
    previous, out = None, []
    for lam in lambdas:
        prob = problem.replace(l2=float(lam))
        cands = {"cold": cold_start(prob, options.seed, options.init_scheme,
                                    options.projector)}
        if previous is not None:
            cands["previous"] = previous
        start = price_starts(prob, cands)[0]
        sol = solve_to_tolerance(prob, start.params, solver, options, **solve_kwargs)
        previous = sol.params
        out.append({"l2": float(lam), "equivalent_horizon": T * lam0 / float(lam),
                    "terminal_error": final_error(prob, sol.params),
                    "cost": sol.cost["total"], "stationarity": sol.stats["stationarity"],
                    "status": str(sol.status), "start": start.kind})
    return out
