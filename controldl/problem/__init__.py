r"""The canonical discrete optimal control problem, evaluated with JAX.

States ``x_i(t) ∈ R^d`` for samples ``i = 1..N`` and layers ``t = 0..L``, controls
``θ_t = (A_t, b_t)``, readout ``(W, c)``, step ``h = T / L``:

.. math::

    x_i(0) = (X_i, 0, …, 0), \qquad x_i(t+1) = f(x_i(t), θ_t), \qquad z_i(t) = W x_i(t) + c,

and the cost ``J`` of :mod:`controldl.problem.cost`. ``w`` is the ``terminal`` weight
(default 1; 0 with ``γ > 0`` is a purely integral cost). The per-sample and per-layer
formulas come from :mod:`controldl.model`; this package assembles them over samples
(``vmap``) and layers (``lax.scan``) and adds the discrete maximum principle:

- :mod:`~controldl.problem.formulation`: the keys, their defaults and validation;
- :mod:`~controldl.problem.instance`: :class:`Problem` (formulation and data), the
  initialization;
- :mod:`~controldl.problem.dynamics`: the forward pass;
- :mod:`~controldl.problem.cost`: ``J``, assembled once;
- :mod:`~controldl.problem.pontryagin`: the Hamiltonian, the costates, the gradient;
- :mod:`~controldl.problem.constraints`: the projection and ``h·‖A_t‖₂``;
- :mod:`~controldl.problem.discrete`: binary and ternary controls (the scale, the
  projection, the sparsity term, the entrywise maximization, the straight-through
  estimator);
- :mod:`~controldl.problem.stationarity`: the first-order measure every solver reports.
"""

from controldl.problem.constraints import clip_spectral_norm, lipschitz_constants, project
from controldl.problem.cost import (
    COST_TERMS,
    READOUT_TERMS,
    assemble,
    control_cost,
    cost,
    cost_and_outputs,
    cost_terms,
    cost_terms_from_states,
    l1_cost,
    readout_objective,
    readout_terms,
    running_cost_at,
    running_term,
    smooth_cost,
    state_losses,
)
from controldl.problem.dynamics import (
    JAX,
    Array,
    accuracy_from_outputs,
    accuracy_or_zero,
    embed,
    features,
    final_state,
    forward,
    mean_loss,
    outputs,
    predict,
    step,
    step_batch,
    trajectory,
)
from controldl.problem.formulation import (
    DATASET_DEFAULTS,
    DEFAULTS,
    FORMULATION_KEYS,
    READOUT_L2_ZERO_NOTE,
    TRACED_KEYS,
    WEIGHT_KEYS,
    DatasetDefaults,
    Formulation,
    Params,
    ProblemDefaults,
    encode_targets,
    make_formulation,
)
from controldl.problem.instance import Problem, init_params
from controldl.problem.pontryagin import (
    costate_gradient,
    costates,
    gradient_from_costates,
    hamiltonian,
    terminal_costate,
)
from controldl.problem.stationarity import (
    cost_outputs_and_smooth_gradient,
    proximal_gradient_point,
    smooth_gradient,
    stationarity,
    stationarity_from_gradient,
    stationarity_residual,
)

__all__ = [
    "COST_TERMS", "DATASET_DEFAULTS", "DEFAULTS", "DatasetDefaults", "FORMULATION_KEYS", "JAX",
    "READOUT_L2_ZERO_NOTE",
    "READOUT_TERMS", "TRACED_KEYS", "WEIGHT_KEYS", "Array", "Formulation", "Params",
    "Problem", "ProblemDefaults", "accuracy_from_outputs", "accuracy_or_zero", "assemble",
    "clip_spectral_norm",
    "control_cost", "cost", "cost_and_outputs", "cost_outputs_and_smooth_gradient",
    "cost_terms", "cost_terms_from_states",
    "costate_gradient", "costates", "embed", "encode_targets", "features", "final_state",
    "forward", "outputs",
    "gradient_from_costates", "hamiltonian", "init_params", "l1_cost", "lipschitz_constants",
    "make_formulation", "mean_loss", "predict", "project", "proximal_gradient_point",
    "readout_objective", "readout_terms", "running_cost_at", "running_term", "smooth_cost",
    "smooth_gradient", "state_losses", "stationarity", "stationarity_from_gradient",
    "stationarity_residual", "step", "step_batch", "terminal_costate", "trajectory",
]
