"""``train --resume DIR``: the flags given on the command line against the checkpoint's
problem and solver.

A resumed run continues the checkpoint's problem and solver, so a problem or solver flag
that is *given* (typed on the command line, whatever its value) must agree with the
checkpoint; one left out keeps the checkpoint's value (its default is not compared).
The limits (``--max-iter``, ``--max-time``, ``--target-cost``) and where the output goes
may change.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from controldl.io import jsonable
from controldl.problem import FORMULATION_KEYS
from controldl.solvers.checkpoint import Checkpoint


def given_values(parser: argparse.ArgumentParser, argv: Sequence[str]) -> dict[str, Any]:
    """``{dest: value}`` of the flags of ``parser`` that ``argv`` gives (parsed again with
    every default suppressed, so a flag left out is absent, not its default)."""
    saved = [(action, action.default) for action in parser._actions]
    try:
        for action, _ in saved:
            action.default = argparse.SUPPRESS
        namespace = parser.parse_args(list(argv))
    finally:
        for action, default in saved:
            action.default = default
    return {k: v for k, v in vars(namespace).items() if k not in parser._defaults}


def _source(key: str, default: Any = None) -> Callable[[Checkpoint], Any]:
    return lambda ck: ck.problem.data.source.get(key, default)


CHECKPOINT_VALUE: dict[str, Callable[[Checkpoint], Any]] = {
    "solver": lambda ck: ck.solver.get("name"),
    "seed": lambda ck: ck.solver.get("seed"),
    "init": lambda ck: ck.solver.get("init"),
    "tol": lambda ck: ck.stopping.get("tol"),
    "dataset": _source("name"),
    "data": _source("path"),
    "n_samples": _source("n_samples"),
    "noise": _source("noise", 0.0),
    "test_fraction": _source("test_fraction", 0.0),
    "standardize": lambda ck: "standardized" in ck.problem.data.source,
    "task": lambda ck: ck.problem.formulation.task,
    **{k: (lambda ck, k=k: getattr(ck.problem.formulation, k)) for k in FORMULATION_KEYS},
}
"""What the checkpoint says for each problem or solver flag (by ``dest``); the solver's
own options (``opt_FIELD``) are compared with its recorded options."""


def _same(mine: Any, theirs: Any, dest: str) -> bool:
    if dest == "data":
        return theirs is not None and Path(mine).resolve() == Path(theirs)
    numbers = (int, float)
    if (isinstance(mine, numbers) and isinstance(theirs, numbers)
            and not isinstance(mine, bool) and not isinstance(theirs, bool)):
        return math.isclose(float(mine), float(theirs), rel_tol=1e-12, abs_tol=0.0)
    return jsonable(mine) == jsonable(theirs)


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(_shown(v) for v in value)
    return "none" if value is None else str(value)


def differences(given: dict[str, Any], ck: Checkpoint, flags: dict[str, str],
                switches: frozenset[str] = frozenset()) -> list[str]:
    """``--FLAG VALUE (checkpoint: VALUE)`` for every given problem or solver flag that
    the checkpoint does not agree with; ``flags`` maps a ``dest`` to its flag, and a
    flag of ``switches`` (one without a value) is shown as ``--FLAG (checkpoint: DEST
    VALUE)``."""
    out = []
    options = ck.solver.get("options", {})
    for dest, value in given.items():
        if dest.startswith("opt_"):
            field = dest[4:]
            theirs = options.get(field, "not an option of its solver")
        elif dest in CHECKPOINT_VALUE:
            theirs = CHECKPOINT_VALUE[dest](ck)
        else:
            continue
        if _same(value, theirs, dest):
            continue
        flag = flags.get(dest, dest)
        out.append(f"{flag} (checkpoint: {dest} {_shown(theirs)})" if dest in switches
                   else f"{flag} {_shown(value)} (checkpoint: {_shown(theirs)})")
    return out


def check_given(parser: argparse.ArgumentParser, argv: Sequence[str], ck: Checkpoint,
                solver_flags: dict[str, str]) -> None:
    """Raise ``ValueError`` (one line) when a problem or solver flag in ``argv`` differs
    from the checkpoint ``ck``; ``--warm-start`` never applies to a resumed run."""
    given = given_values(parser, argv)
    if "warm_start" in given:
        raise ValueError("--warm-start does not apply with --resume (the run continues "
                         "from its checkpoint)")
    flags = {a.dest: a.option_strings[0] for a in parser._actions if a.option_strings}
    flags.update({f"opt_{field}": flag for field, flag in solver_flags.items()})
    switches = frozenset(a.dest for a in parser._actions if a.option_strings and a.nargs == 0)
    diff = differences(given, ck, flags, switches)
    if diff:
        raise ValueError("--resume continues the checkpoint's problem and solver, and "
                         f"{'this flag differs' if len(diff) == 1 else 'these flags differ'}"
                         f" from it: {', '.join(diff)}; drop "
                         f"{'it' if len(diff) == 1 else 'them'}, or start a new run "
                         "without --resume")
