"""The turnpike figures, :mod:`controldl.plotting.turnpike`; re-exported under this name."""

from controldl.plotting.turnpike import *  # noqa: F403
