"""Figures; none of them switches matplotlib's backend (the command line chooses a file
backend for itself; a notebook keeps its own).

- :mod:`controldl.plotting.solution`: the figures of a solution (the data carried through
  the layers, decision regions, a deformed grid, the controls, the histories), re-exported
  here as ``controldl.plotting.X``;
- :mod:`controldl.plotting.turnpike`: the figures of a horizon sweep.
"""

from controldl.plotting import turnpike  # noqa: F401  (controldl.plotting.turnpike.X)
from controldl.plotting.solution import *  # noqa: F403
