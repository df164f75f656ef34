"""Pontryagin-type solvers: MSA, E-MSA and the layer-wise trust-region Newton method."""
