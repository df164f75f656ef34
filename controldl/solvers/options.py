"""Solver specs: the one parser of ``name[:key=value[:key=value…]]``.

``compare``, :func:`controldl.solve`, :func:`controldl.make_solver` and the command line read
solver options through this module, from the solver dataclasses' own field annotations:

- ``gd:optimizer=adam:lr=0.03``, ``msa``, ``emsa:rho=1``, ``casadi:transcription=multiple``;
- any optax optimizer name is short for gradient descent with it: ``adam``, ``sgd``,
  ``lbfgs``, ``adam:lr=0.1``;
- inside a comparison only: ``from=LABEL`` warm-starts from the solution of an earlier spec,
  ``max_iter=K`` overrides the iteration limit for that solver alone, ``label=TEXT`` names
  the row (default: the spec itself), ``until=target`` also stops the row at the common
  target known when it starts (the comparison's target factor times the lowest final cost
  of the rows before it).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable
from typing import Any

from controldl import solvers as registry  # the registry (_REGISTRY, solver_class)

COMPARE_KEYS: tuple[str, ...] = ("from", "max_iter", "label", "until")
"""Spec keys that belong to a comparison's row rather than to the solver."""


@dataclasses.dataclass(frozen=True)
class Spec:
    """A parsed solver spec: the row ``label``, the registered ``solver`` name, its
    ``options`` (dataclass fields, converted), and the comparison keys."""

    label: str
    solver: str
    options: dict[str, Any]
    warm_from: str | None = None
    max_iter: int | None = None
    until_target: bool = False

    def make(self) -> Any:
        """The solver instance."""
        return registry.solver_class(self.solver)(**self.options)


def parse_bool(text: str) -> bool:
    """``true/false``, ``yes/no``, ``on/off``, ``1/0``."""
    t = text.strip().lower()
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def parse_finite_float(text: str) -> float:
    """A finite number."""
    v = float(text)
    if not math.isfinite(v):
        raise ValueError(f"expected a finite number, got {text!r}")
    return v


def parse_key_value(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` → ``(KEY, VALUE)``."""
    if "=" not in text:
        raise ValueError(f"expected KEY=VALUE, got {text!r}")
    k, v = text.split("=", 1)
    return k.strip(), v.strip()


def _bool_or_str(text: str) -> bool | str:
    try:
        return parse_bool(text)
    except ValueError:
        return text


def value_parser(annotation: Any) -> tuple[Callable[[str], Any], bool]:
    """``(parse, repeatable)`` for a solver dataclass field's annotation: the function that
    reads one value from text, and whether the field is a tuple of ``KEY=VALUE`` items."""
    args, origin = typing.get_args(annotation), typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return value_parser(inner[0])
        if set(inner) == {str, bool}:
            return _bool_or_str, False
        return (parse_finite_float, False) if float in inner else (str, False)
    if origin is tuple:
        return parse_key_value, True
    return {bool: parse_bool, int: int, float: parse_finite_float}.get(annotation, str), False


def convert_option(cls: type, key: str, text: str) -> Any:
    """The value of option ``key`` of solver class ``cls`` read from ``text`` (``none``
    means ``None``; a repeatable option takes ``;``-separated items)."""
    hints = typing.get_type_hints(cls)
    if key not in hints or key not in {f.name for f in dataclasses.fields(cls)}:
        names = ", ".join(f.name for f in dataclasses.fields(cls))
        raise ValueError(f"solver {cls.name!r} has no option {key!r} (options: {names})")
    parse, repeat = value_parser(hints[key])
    if text.lower() == "none":
        return None
    try:
        if repeat:
            return tuple(parse(item) for item in text.split(";") if item)
        return parse(text)
    except Exception as exc:
        raise ValueError(f"bad value {text!r} for option {key!r}: {exc}") from None


def solver_name(head: str) -> str:
    """The registered solver a spec's head names: itself, or ``gd`` for an optimizer."""
    return head if head in registry._REGISTRY else "gd"


def parse_spec(text: str) -> Spec:
    """Parse ``name[:key=value…]`` (see the module docstring); the options are validated by
    building the solver once."""
    if not isinstance(text, str):
        raise ValueError(f"a solver spec is a string such as 'adam:lr=0.03', got {text!r}")
    parts = [p for p in text.strip().split(":") if p]
    if not parts:
        raise ValueError("empty solver spec")
    head, rest = parts[0].strip(), parts[1:]
    name = solver_name(head)
    options: dict[str, Any] = {} if name == head else {"optimizer": head}
    cls = registry.solver_class(name)
    warm, max_iter, label, until = None, None, text, False
    for item in rest:
        if "=" not in item:
            raise ValueError(f"solver spec {text!r}: expected key=value, got {item!r}")
        key, value = (s.strip() for s in item.split("=", 1))
        if key == "from":
            warm = value
        elif key == "max_iter":
            try:
                max_iter = int(value)
            except ValueError:
                raise ValueError(f"solver spec {text!r}: max_iter must be an integer") from None
        elif key == "label":
            label = value
        elif key == "until":
            if value != "target":
                raise ValueError(f"solver spec {text!r}: until takes 'target', got {value!r}")
            until = True
        else:
            options[key] = convert_option(cls, key, value)
    spec = Spec(label=label, solver=name, options=options, warm_from=warm, max_iter=max_iter,
                until_target=until)
    spec.make()  # validate now, before anything runs
    return spec


def solver_from_spec(text: str, **options: Any) -> Any:
    """The solver a spec names, with ``options`` (dataclass fields) added; the keys that
    only mean something inside a comparison (``from``, ``max_iter``, ``label``) are
    refused here."""
    spec = parse_spec(text)
    if (spec.warm_from is not None or spec.max_iter is not None or spec.label != text
            or spec.until_target):
        raise ValueError(f"solver spec {text!r}: {', '.join(COMPARE_KEYS)} only apply inside "
                         "compare; pass init= and max_iter= to solve instead")
    return registry.solver_class(spec.solver)(**{**spec.options, **options})
