"""The turnpike figures, moved to :mod:`controldl.studies.turnpike.plots`; re-exported here."""

from controldl.studies.turnpike.plots import *  # noqa: F403
