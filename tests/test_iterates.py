"""The iterates of MSA, E-MSA, pmp-newton and L-BFGS are those of the code before issue
25's changes (inner maximizations started from the costate pass, one backward pass for
the costates and the gradient, the two-loop recursion unrolled, several outer iterations
per dispatch, one stationarity pass per pmp-newton iteration, L-BFGS reusing its line
search's evaluations): ``tests/fixtures/iterates.npz`` was recorded from that code by
``tests/fixtures/record_iterates.py``. The same status at the same iteration; the same
costs to round-off (bit-equal where the arithmetic is the same: pmp-newton, L-BFGS
without constraints; else the round-off of a different arithmetic, amplified over the
iterations: at most 3e-9 measured, ``benchmarks/iterates.py`` for every case). A few
cases here: the suite's time."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

FIXTURE = Path(__file__).parent / "fixtures"
spec = importlib.util.spec_from_file_location("record_iterates", FIXTURE / "record_iterates.py")
RECORD = importlib.util.module_from_spec(spec)
spec.loader.exec_module(RECORD)


@pytest.fixture(scope="module")
def recorded():
    with np.load(FIXTURE / "iterates.npz") as f:
        return dict(f)


@pytest.mark.parametrize("name, exact", [("emsa_tol", False), ("msa_stalled", False),
                                         ("pmp_newton", True), ("lbfgs", True)])
def test_the_iterates_are_those_recorded_before(recorded, name, exact):
    result = RECORD.compare(name, recorded)
    assert result["same_stop"], result
    bound = 0.0 if exact else 1e-8
    assert result["cost_rel"] <= bound, result
    assert result["last_iterate_rel"] <= (0.0 if exact else 1e-6), result
