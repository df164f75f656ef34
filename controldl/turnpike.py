"""The turnpike study, moved to :mod:`controldl.studies.turnpike`; this name re-exports it."""

from controldl.studies.turnpike import *  # noqa: F403
from controldl.studies.turnpike import __all__  # noqa: F401
