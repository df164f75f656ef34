"""The experiments: one module per claim (``layers``, ``topology``, ``solvers``,
``scaling``, ``turnpike``, ``flat_start``, ``noise``, ``li_sin``), their shared helpers in
:mod:`experiments.common`, and :mod:`experiments.run_all`. Run from the repository's root:
``python -m experiments.run_all --out DIR [--quick]`` or ``python -m experiments.NAME
--out DIR``. Importing them changes no global setting."""
