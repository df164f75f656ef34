"""Studies built on the solvers: horizon sweeps (:mod:`controldl.studies.turnpike`)."""
