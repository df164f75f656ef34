"""Turnpike diagnostics for long horizons (Esteve, Geshkovski, Pighin & Zuazua, "Large-time
asymptotics in deep learning"): horizon grids (:mod:`.grid`), priced starts, the
padding certificate and the truncation check (:mod:`.starts`), profiles and the steady set
(:mod:`.profiles`), fits of E(T) and of the controls (:mod:`.fits`), the turnpike rate on
the arc and the verdict (:mod:`.arcs`), the sweep (:mod:`.sweep`), the λ ↔ T
correspondence (:mod:`.tradeoff`); the figures are :mod:`controldl.plotting.turnpike`.
"""

from controldl.studies.turnpike.arcs import ArcFit, ArcRule, Verdict, fit_arc, verdict
from controldl.studies.turnpike.fits import (
    control_gap_to_longest,
    error_vs_horizon,
    fit_two_arc,
    rate_agreement,
    rescaled_controls_convergence,
)
from controldl.studies.turnpike.grid import (
    DEFAULT_STEP,
    FIXED_MODES,
    check_horizons,
    horizon_dirname,
    horizon_grid,
    parse_horizons,
)
from controldl.studies.turnpike.profiles import Profiles, SteadySet, profiles, steady_set
from controldl.studies.turnpike.starts import (
    PROJECTORS,
    START_KINDS,
    cold_start,
    cost_at,
    final_error,
    fixed_projector,
    interpolate_controls,
    pad_controls,
    padding_bound,
    price_starts,
    truncate_controls,
    truncation_check,
)
from controldl.studies.turnpike.sweep import (
    DEFAULT_TOL,
    REPORT_NAME,
    SweepOptions,
    TurnpikeResult,
    load_sweep,
    solve_to_tolerance,
    stderr_log,
    sweep,
)
from controldl.studies.turnpike.tradeoff import lambda_sweep

__all__ = [
    "ArcFit", "ArcRule", "Verdict", "fit_arc", "truncate_controls", "truncation_check",
    "verdict",
    "DEFAULT_STEP", "DEFAULT_TOL", "FIXED_MODES", "PROJECTORS", "REPORT_NAME", "START_KINDS",
    "Profiles", "SteadySet", "SweepOptions", "TurnpikeResult", "check_horizons", "cold_start",
    "control_gap_to_longest", "cost_at", "error_vs_horizon", "final_error", "fit_two_arc",
    "fixed_projector", "horizon_dirname", "horizon_grid", "interpolate_controls",
    "lambda_sweep", "load_sweep", "pad_controls", "padding_bound", "parse_horizons",
    "price_starts", "profiles", "rate_agreement", "rescaled_controls_convergence",
    "solve_to_tolerance", "stderr_log", "steady_set", "sweep",
]
