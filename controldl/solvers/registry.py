"""The one vocabulary of solver names, and the registry of solver classes.

``_REGISTRY`` maps each solver's name to its class (``"module:Class"``); a class's module
is imported on first use (so ``import controldl`` does not import CasADi), and this
module imports nothing of controldl. **A new solver is one entry here.**

The names a user may write wherever a solver is named (``controldl train --solver``,
``compare --solvers``, :func:`controldl.solve`, :func:`controldl.make_solver`, every
message) are :func:`names`: the registered solvers, then every optax optimizer by name
(:func:`optax_optimizers`), which means gradient descent with it (``adam`` is
``gd:optimizer=adam``; :func:`resolve`). An unknown name is refused with the whole list
and the closest name (:func:`unknown_solver`).
"""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
from typing import Any

import optax

_REGISTRY: dict[str, str] = {
    "gd": "controldl.solvers.gd:GradientDescent",
    "msa": "controldl.solvers.pmp:MSA",
    "emsa": "controldl.solvers.pmp:EMSA",
    "pmp-newton": "controldl.solvers.pmp.newton:PMPNewton",
    "discrete-msa": "controldl.solvers.pmp.discrete:DiscreteMSA",
    "casadi": "controldl.solvers.direct:CasadiDirect",
}


HINTS: dict[str, str] = {"ipopt": "casadi", "direct": "casadi", "nlp": "casadi",
                         "pmp": "emsa", "pontryagin": "emsa", "backprop": "gd",
                         "binary": "discrete-msa", "ternary": "discrete-msa",
                         "binaryconnect": "gd", "ste": "gd"}
"""Words a user may try for a solver that no name resembles, and the solver they mean
(used only for the suggestion of :func:`unknown_solver`)."""


def names() -> list[str]:
    """The vocabulary of solver names: every registered solver whose module is present
    (:func:`available`), then every optax optimizer (gradient descent with it)."""
    return [*available(), *optax_optimizers()]


def unknown_solver(name: Any, what: str = "solver") -> str:
    """The one-line message for an unknown solver ``name``: the closest name of
    :func:`names` (case ignored: a word of :data:`HINTS`, else a name with the same
    letters in another order, else ``difflib``'s closest, else a name it begins), then
    every solver and every optimizer."""
    vocabulary = names()
    text = str(name).strip().lower()
    close = difflib.get_close_matches(text, vocabulary, n=1, cutoff=0.6)
    guesses = (HINTS.get(text), next((v for v in vocabulary if sorted(v) == sorted(text)), None),
               close[0] if close else None,
               next((v for v in vocabulary if text and v.startswith(text)), None))
    guess = next((g for g in guesses if g is not None), None)
    hint = f"; did you mean {guess!r}?" if guess else "."
    return (f"unknown {what} {name!r}{hint} The solvers: {', '.join(available())}; "
            f"gradient descent with an optax optimizer: {', '.join(optax_optimizers())}")


def resolve(name: str) -> tuple[str, dict[str, Any]]:
    """``(registered solver, options the name fixes)`` of a name of :func:`names`:
    ``("emsa", {})``, ``"adam"`` → ``("gd", {"optimizer": "adam"})``. An unknown name is a
    ``ValueError`` (:func:`unknown_solver`)."""
    if not isinstance(name, str):
        raise ValueError(f"a solver is named by a string such as 'adam' or 'emsa', got {name!r}")
    if name in _REGISTRY:
        return name, {}
    if name in optax_optimizers():
        return "gd", {"optimizer": name}
    raise ValueError(unknown_solver(name))


def available() -> list[str]:
    """Names of the solvers whose modules are present."""
    out = []
    for name, target in _REGISTRY.items():
        module = target.split(":")[0]
        if importlib.util.find_spec(module) is not None:
            out.append(name)
    return out


def solver_class(name: str) -> type:
    """The solver class registered under ``name`` (``gd``, ``msa``, ``emsa``, ``casadi``…).
    An optimizer's name (``adam``) is refused here: it fixes an option of
    :class:`GradientDescent` (:func:`make_solver` or :func:`resolve` read it)."""
    solver, fixed = resolve(name)
    if fixed:
        raise ValueError(f"{name!r} is gradient descent with optimizer {name}: "
                         f"make_solver({name!r}) builds it, solver_class('gd') is its class")
    module, attr = _REGISTRY[solver].split(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except ModuleNotFoundError as exc:
        raise ValueError(f"solver {name!r} is not available: {exc}") from None




@functools.cache
def optax_optimizers() -> tuple[str, ...]:
    """Every optax optimizer by name: the public functions of ``optax`` whose first
    parameter is ``learning_rate`` (the ``scale_by_*`` building blocks left out), sorted.
    Each name means gradient descent with that optimizer."""
    out = []
    for name in dir(optax):
        factory = getattr(optax, name)
        if name.startswith(("_", "scale_by")) or not inspect.isfunction(factory):
            continue
        try:
            first = next(iter(inspect.signature(factory).parameters), None)
        except (TypeError, ValueError):
            continue
        if first == "learning_rate":
            out.append(name)
    return tuple(sorted(out))
