"""The markdown table of docs/solvers.md ("Measured: benchmarks/pmp.py") from the JSON that
``benchmarks/pmp.py --out FILE`` writes: one row per problem and solver (Adam: the best of
its lr grid per seed, the lrs named), medians over the seeds, as ``pmp.py`` summarizes them.

    python benchmarks/pmp_table.py benchmarks/results/pmp.json
"""

from __future__ import annotations

import json
import sys
from typing import Any

COLUMNS = ("problem", "solver", "status (runs at target)", "final J", "iterations", "s / it",
           "compile [s]", "to target (+c) [s]", "to target [s]", "work to target",
           "to tol (+c) [s]", "to tol [s]", "to target (+c) / L-BFGS")
LABELS = ("msa", "emsa", "pmp-newton", "adam", "lbfgs")


def _fmt(v: Any, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def _adam_lrs(records: list[dict]) -> str:
    """The lr of the best Adam run per seed (``adam`` in ``runs`` carries it)."""
    lrs = [r["runs"]["adam"].get("lr") for r in records]
    return "/".join("?" if lr is None else f"{lr:g}" for lr in lrs)


def row(problem: str, label: str, s: dict, records: list[dict]) -> str:
    """One row of the table from a solver's summary ``s``."""
    name = f"adam (lr {_adam_lrs(records)})" if label == "adam" else label
    statuses = ",".join(sorted(set(s["statuses"])))
    cells = (problem, name, f"{statuses} ({s['reached_target']}/{len(s['statuses'])})",
             _fmt(s["final_cost"], ".3g"), _fmt(s["iterations"], ".0f"),
             _fmt(s["s_per_iteration"], ".2g"), _fmt(s["compile_s"], ".1f"),
             _fmt(s["time_to_target_s"], ".1f"),
             _fmt(s["time_to_target_without_compile_s"], ".2f"),
             _fmt(s["work_to_target"], ".0f"), _fmt(s["time_to_tol_s"], ".1f"),
             _fmt(s["time_to_tol_without_compile_s"], ".2f"),
             _fmt(s["time_to_target_over_lbfgs"], ".2f"))
    return "| " + " | ".join(cells) + " |"


def table(result: dict) -> str:
    """The whole table: a header and a row per problem and solver present."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for problem, p in result["problems"].items():
        for label in LABELS:
            if label in p["summary"]:
                lines.append(row(problem, label, p["summary"][label], p["records"]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python benchmarks/pmp_table.py PMP_JSON", file=sys.stderr)
        return 2
    with open(args[0], encoding="utf-8") as f:
        print(table(json.load(f)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
