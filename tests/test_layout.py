"""The house rules that a reader can check from the source alone: no function of the
library is longer than 80 lines (its ``def`` line to its last line, docstring included)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "controldl"
MAX_LINES = 80


def function_lengths(root: Path) -> dict[str, int]:
    """``{"path:line name": length}`` of every function and method under ``root``."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                key = f"{path.relative_to(root.parent)}:{node.lineno} {node.name}"
                out[key] = node.end_lineno - node.lineno + 1
    return out


def test_function_lengths_are_measured():
    lengths = function_lengths(PACKAGE)
    assert len(lengths) > 100  # the walk reaches every module, nested functions included
    assert lengths[next(k for k in lengths if k.endswith(" make_formulation"))] > 5


def test_no_function_is_longer_than_80_lines():
    long = {k: n for k, n in function_lengths(PACKAGE).items() if n > MAX_LINES}
    assert not long, long
