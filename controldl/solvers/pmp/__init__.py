"""The Pontryagin solvers as published (Li, Chen, Tai & E, JMLR 2018).

- :mod:`~controldl.solvers.pmp.hamiltonian`: ``H_t``, the extended ``H̃_t`` and the
  readout's terminal objective, built on :mod:`controldl.problem`;
- :mod:`~controldl.solvers.pmp.inner`: the inner maximizers (L-BFGS, Newton–CG, dense
  Newton, proximal gradient), vmapped over the layers;
- :mod:`~controldl.solvers.pmp.iteration`: one compiled MSA / E-MSA iteration;
- :mod:`~controldl.solvers.pmp.solvers`: the outer loop, the classes :class:`MSA`
  (Algorithm 1) and :class:`EMSA` (Algorithm 2), and the diagnostic
  :func:`hamiltonian_gap` (a lower bound of the gap in the discrete maximum condition).
"""

from controldl.solvers.pmp.inner import LBFGS, DenseNewton, NewtonCG, ProximalGradient
from controldl.solvers.pmp.solvers import (
    EMSA,
    MSA,
    HamiltonianGap,
    PontryaginSolver,
    hamiltonian_gap,
)

__all__ = ["EMSA", "LBFGS", "MSA", "DenseNewton", "HamiltonianGap", "NewtonCG",
           "PontryaginSolver", "ProximalGradient", "hamiltonian_gap"]
