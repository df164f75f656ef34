"""The iterates of MSA, E-MSA, pmp-newton and L-BFGS against those recorded from the code
before issue 25's changes (``tests/fixtures/iterates.npz``, written by
``tests/fixtures/record_iterates.py``): per case the status and iterations (then and
now), the largest relative difference of the history's costs, the first entry where it
exceeds 1e-12, and the normwise relative difference of the 4th and of the last iterate.
JSON on stdout.

    python benchmarks/iterates.py [CASE ...]
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import jax
import numpy as np

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures"


def main(argv: list[str] | None = None) -> int:
    jax.config.update("jax_enable_x64", True)
    spec = importlib.util.spec_from_file_location("record_iterates",
                                                  FIXTURE / "record_iterates.py")
    record = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(record)
    with np.load(FIXTURE / "iterates.npz") as f:
        recorded = dict(f)
    names = (argv if argv else None) or list(record.cases())
    out = {}
    for name in names:
        out[name] = record.compare(name, recorded)
        print(f"  {name}: {out[name]['cost_rel']:.2g}", file=sys.stderr)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
