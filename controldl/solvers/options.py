"""Solver options, declared once, and the one parser of solver specs.

**Declaration.** Every option of a solver is a dataclass field declared with
:func:`option`: its default, its help text, its range (``low``/``high``, open or closed),
its choices, and whether it is *traced* (a number the compiled step takes as an argument,
so changing it does not compile again) or *static* (part of the compiled program). The
command line's flags and help (:mod:`controldl.cli.common`), ``compare``'s specs, the
validation in the solvers' ``__post_init__`` (:func:`check_options`) and the ``solver``
section of ``meta.json`` (:meth:`~controldl.solvers.base.Solver.options`) are generated
from these fields (:func:`solver_options`).

**Specs** ``name[:key=value[:key=value…]]``: ``compare``, :func:`controldl.solve`,
:func:`controldl.make_solver` and the command line read them here:

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

import numpy as np

from controldl.solvers import registry  # the vocabulary of names (resolve, solver_class)

OPTION_KEY = "controldl.option"
"""The key of a solver field's metadata that holds its :class:`OptionInfo`."""

DTYPES: dict[str, Any] = {"float64": np.float64, "float32": np.float32}
"""The floating-point precisions of the JAX solvers' ``dtype`` option."""


@dataclasses.dataclass(frozen=True)
class OptionInfo:
    """What is declared about one solver option beside its name, type and default: the help
    text, the range (``low``/``high``; ``open_low``/``open_high`` exclude the bound), the
    allowed strings ``choices``, and ``traced`` (see the module docstring)."""

    help: str
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    choices: tuple[str, ...] = ()
    traced: bool = False

    def describe_range(self) -> str:
        """``> 0``, ``>= 1``, ``in [0, 1)``, ``in 0..12``… (empty without a range)."""
        if self.low is not None and self.high is not None:
            return (f"in {'(' if self.open_low else '['}{self.low:g}, {self.high:g}"
                    f"{')' if self.open_high else ']'}")
        if self.low is not None:
            return f"{'>' if self.open_low else '>='} {self.low:g}"
        if self.high is not None:
            return f"{'<' if self.open_high else '<='} {self.high:g}"
        return ""

    def in_range(self, v: float) -> bool:
        """Whether ``v`` lies in the declared range."""
        low_ok = self.low is None or v > self.low or (not self.open_low and v == self.low)
        high_ok = self.high is None or v < self.high or (not self.open_high and v == self.high)
        return low_ok and high_ok


def option(default: Any, help: str, *, low: float | None = None, high: float | None = None,
           open_low: bool = False, open_high: bool = False, choices: tuple[str, ...] = (),
           traced: bool = False) -> Any:
    """A solver option: a dataclass field with ``default`` whose metadata is its
    :class:`OptionInfo` (the one declaration the CLI, ``compare``, the validation and
    ``meta.json`` read)."""
    info = OptionInfo(help, low, high, open_low, open_high, tuple(choices), traced)
    return dataclasses.field(default=default, metadata={OPTION_KEY: info})


def dtype_option() -> Any:
    """The ``dtype`` option the JAX solvers share."""
    return option(None, "float64 or float32; None: the data's default (float32 for images "
                  "stored in single precision, such as MNIST; float64 otherwise: "
                  "controldl.solvers.options.default_dtype).", choices=tuple(DTYPES))


def default_dtype(data: Any) -> str:
    """The one place where the JAX solvers' default precision is decided (their ``dtype``
    option left ``None``): ``"float32"`` for image data stored in single precision (inputs
    ``(N, C, H, W)`` of float32, as :func:`controldl.data.mnist` gives), ``"float64"``
    otherwise (the generated 2-D problems, tabular files, and scikit-learn's digits, whose
    standardized pixels are float64). A given ``dtype`` overrides it."""
    single = np.asarray(data.X_train).dtype == np.float32
    return "float32" if single and data.image_shape is not None else "float64"


def resolve_dtype(dtype: str | None, data: Any) -> Any:
    """The NumPy dtype of a ``dtype`` option: itself, or :func:`default_dtype` of
    ``data`` when ``None``."""
    return DTYPES[default_dtype(data) if dtype is None else dtype]


def devices_option() -> Any:
    """The ``devices`` option the JAX solvers share."""
    return option(None, "shard the samples over this many devices (controls replicated); the "
                  "result equals the single-device one. None: one device.", low=1)


def batch_size_option(note: str = "") -> Any:
    """The ``batch_size`` option of the solvers that take mini-batches (the batches and
    the epochs: :mod:`controldl.solvers.epochs`)."""
    return option(None, "mini-batch size B (None: full batch). An epoch is ⌊N/B⌋ batches "
                  "taken in order from a permutation of the samples drawn per epoch; the N "
                  "mod B samples left over are skipped in that epoch. The history records "
                  "the full cost and the test accuracy once per epoch."
                  + (f" {note}" if note else ""), low=1)


def batch_seed_option() -> Any:
    """The ``batch_seed`` option of the solvers that draw mini-batches."""
    return option(0, "seed of the mini-batch order: epoch e's permutation is drawn from "
                  "(batch_seed, e).", low=0)


def record_every_option() -> Any:
    """The ``record_every`` option of the solvers that iterate over the data."""
    return option(None, "also record the full training cost and the test accuracy every "
                  "this many iterations (batches) inside an epoch; on the full batch, the "
                  "test accuracy every this many iterations (None: once per epoch).", low=1)


@dataclasses.dataclass(frozen=True)
class OptionSpec:
    """One option of one solver class: its ``name``, ``default``, type ``annotation``,
    declaration ``info``, and how text is read into it (``parse``; ``repeat``: a tuple of
    ``KEY=VALUE`` items)."""

    name: str
    default: Any
    annotation: Any
    info: OptionInfo
    parse: Callable[[str], Any]
    repeat: bool


def solver_options(cls: type) -> dict[str, OptionSpec]:
    """Every option of the solver class ``cls``, in declaration order (a field declared
    without :func:`option` has an empty help text and no range)."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        info = f.metadata.get(OPTION_KEY) or OptionInfo("")
        parse, repeat = value_parser(hints[f.name])
        out[f.name] = OptionSpec(f.name, f.default, hints[f.name], info, parse, repeat)
    return out


def _kinds(annotation: Any) -> tuple[set[Any], bool]:
    """The non-``None`` types of an annotation and whether ``None`` is allowed."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = set(typing.get_args(annotation))
        return args - {type(None)}, type(None) in args
    return {annotation}, False


def check_value(name: str, value: Any, annotation: Any, info: OptionInfo) -> None:
    """Raise a ``ValueError`` naming ``name`` unless ``value`` has the declared type
    (``int``, ``float``, ``bool``, ``str``; ``None`` where allowed) and lies in the declared
    range or choices. Other types (``Any``, tuples, ``bool | str``) are the solver's to check."""
    kinds, nullable = _kinds(annotation)
    if value is None:
        if nullable:
            return
        raise ValueError(f"{name} must be given, got None")
    span = info.describe_range()
    if kinds == {int}:
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or (
                span and not info.in_range(value)):
            raise ValueError(f"{name} must be an integer{' ' + span if span else ''}, "
                             f"got {value!r}")
    elif kinds == {float}:
        if isinstance(value, bool) or not isinstance(value, int | float | np.integer
                                                     | np.floating):
            raise ValueError(f"{name} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value!r}")
        if not info.in_range(value):
            raise ValueError(f"{name} must be {span}, got {value!r}")
    elif kinds == {bool}:
        if not isinstance(value, bool | np.bool_):
            raise ValueError(f"{name} must be True or False, got {value!r}")
    elif kinds == {str} and (info.choices and value not in info.choices
                             or not isinstance(value, str) or not value):
        expected = f"one of {', '.join(info.choices)}" if info.choices else "a non-empty name"
        raise ValueError(f"{name} must be {expected}, got {value!r}")


def check_options(solver: Any) -> None:
    """The generated validation of a solver instance: :func:`check_value` on every option,
    then an option set away from its default that the solver does not have given the
    others (:meth:`~controldl.solvers.base.Solver.inapplicable`) is refused with one line
    naming the options it has (called by each solver's ``__post_init__`` before its own
    cross-option checks)."""
    specs = solver_options(type(solver))
    for spec in specs.values():
        check_value(spec.name, getattr(solver, spec.name), spec.annotation, spec.info)
    missing = type(solver).inapplicable({k: getattr(solver, k) for k in specs})
    for key, why in missing.items():
        if getattr(solver, key) != specs[key].default:
            raise ValueError(no_option_message(solver.label(), key, why,
                                               [k for k in specs if k not in missing]))


def no_option_message(label: str, key: str, why: str, options: list[str]) -> str:
    """``solver 'lbfgs' has no option 'lr' (why); its options: …`` (one line)."""
    return (f"solver {label!r} has no option {key!r}{f' ({why})' if why else ''}; its "
            f"options: {', '.join(options)}")


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


def convert_option(cls: type, key: str, text: str, label: str | None = None) -> Any:
    """The value of option ``key`` of solver class ``cls`` read from ``text`` (``none``
    means ``None``; a repeatable option takes ``;``-separated items); ``label`` names the
    solver in the message for an unknown key (default ``cls.name``)."""
    specs = solver_options(cls)
    if key not in specs:
        raise ValueError(no_option_message(label or cls.name, key, "", list(specs)))
    parse, repeat = specs[key].parse, specs[key].repeat
    if text.lower() == "none":
        return None
    try:
        if repeat:
            return tuple(parse(item) for item in text.split(";") if item)
        return parse(text)
    except Exception as exc:
        raise ValueError(f"bad value {text!r} for option {key!r}: {exc}") from None


def solver_name(head: str) -> str:
    """The registered solver a spec's head names: itself, or ``gd`` for an optimizer; an
    unknown name is a ``ValueError`` that lists every name and suggests the closest
    (:func:`controldl.solvers.resolve`)."""
    return registry.resolve(head)[0]


def parse_spec(text: str) -> Spec:
    """Parse ``name[:key=value…]`` (see the module docstring); the options are validated by
    building the solver once."""
    if not isinstance(text, str):
        raise ValueError(f"a solver spec is a string such as 'adam:lr=0.03', got {text!r}")
    parts = [p for p in text.strip().split(":") if p]
    if not parts:
        raise ValueError("empty solver spec")
    head, rest = parts[0].strip(), parts[1:]
    name, options = registry.resolve(head)
    options = dict(options)
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
            options[key] = convert_option(cls, key, value, head)
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
    cls = registry.solver_class(spec.solver)
    known = solver_options(cls)
    for key in options:
        if key not in known:
            raise ValueError(no_option_message(text.split(":", 1)[0].strip(), key, "",
                                               list(known)))
    return cls(**{**spec.options, **options})
