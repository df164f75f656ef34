"""The formulation of the canonical problem: every key declared once, its defaults and its
validation against the data.

:class:`Formulation` holds every parameter of the problem except the data (hashable, and a
JAX pytree whose leaves are the numeric values, :data:`TRACED_KEYS`); :class:`Params` the
optimization variables ``θ = (A, b)`` and the readout ``(W, c)``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import numpy as np

from controldl import model
from controldl.data import Dataset


class Params(NamedTuple):
    """All optimization variables: controls ``A`` (L, d, d), ``b`` (L, d) and readout
    ``W`` (m, d), ``c`` (m,). A JAX pytree."""

    A: Any
    b: Any
    W: Any
    c: Any


@dataclasses.dataclass(frozen=True)
class ProblemDefaults:
    """The one set of defaults of a problem built without options: the library's
    :class:`Problem`, ``controldl train``, ``compare`` and ``turnpike`` all read it.

    Every default problem has a minimizer: with the logistic or cross-entropy loss on
    separable data and an unpenalized readout, ``J`` has its infimum at ``‖W‖ → ∞``, so
    ``readout_l2`` is positive. The width is ``n + extra_width`` (one augmented dimension:
    a width-2 ResNet of invertible layers cannot truly separate the ring, width 3 can),
    ``h = T / L = 0.25`` is a small, stable step, and a quarter of a built-in dataset is
    held out so that a separation is checked on fresh points.
    """

    extra_width: int = 1
    layers: int = 20
    horizon: float = 5.0
    l2: float = 1e-3
    readout_l2: float = 1e-3
    terminal: float = 1.0
    dataset: str = "ring"
    n_samples: int = 600
    test_fraction: float = 0.25

    def width(self, n_inputs: int) -> int:
        """The default width for ``n_inputs`` input features."""
        return int(n_inputs) + self.extra_width

    def describe(self) -> str:
        """One line for ``--help``."""
        return (f"the {self.dataset} ({self.n_samples} points, {self.test_fraction:g} held "
                f"out), width n+{self.extra_width}, L = {self.layers}, T = {self.horizon:g} "
                f"(h = {self.horizon / self.layers:g}), l2 {self.l2:g}, "
                f"readout_l2 {self.readout_l2:g}")


DEFAULTS = ProblemDefaults()
"""The defaults of every problem built without options (see :class:`ProblemDefaults`)."""

READOUT_L2_ZERO_NOTE = ("readout_l2 = 0: with the {loss} loss on separable data J has no "
                        "minimizer (its infimum is at ‖W‖ → ∞), so no solver can converge")
"""What a user who sets ``readout_l2`` to 0 with a classification loss is told."""


@dataclasses.dataclass(frozen=True)
class Formulation:
    """Every parameter of the problem except the data; hashable (a static jit argument).

    ``n_inputs`` (n) and ``n_outputs`` (m) follow from the data; ``task`` is
    ``"classification"`` or ``"regression"``.
    """

    n_inputs: int
    n_outputs: int
    task: str = "classification"
    n_classes: int | None = 2
    model: str = "resnet"
    activation: str = "tanh"
    width: int = 3
    layers: int = DEFAULTS.layers
    horizon: float = DEFAULTS.horizon
    loss: str = "logistic"
    l2: float = DEFAULTS.l2
    l1: float = 0.0
    smooth: float = 0.0
    running: float = 0.0
    readout_l2: float = DEFAULTS.readout_l2
    terminal: float = 1.0
    train_readout: bool = True
    lipschitz_bound: float | None = None
    box_bound: float | None = None

    @property
    def h(self) -> float:
        """The step ``h = T / L`` (a traced scalar when the formulation is a jit argument)."""
        return self.horizon / self.layers

    def uses(self, term: str) -> bool:
        """Whether the cost term ``term`` (a key of :data:`WEIGHT_KEYS`) is present, i.e. its
        weight is non-zero. Static: it stays known when the weights are traced."""
        active = self.__dict__.get("_active")
        if active is not None:
            return term in active
        return getattr(self, term) != 0.0

    def static_key(self) -> tuple:
        """What a compiled program depends on: every structural field, which terms are
        present and which constraints exist, but not the numeric values (horizon, weights,
        bounds), which are traced when the formulation is passed to ``jax.jit``."""
        return jax.tree_util.tree_structure(self)

    def public_dict(self) -> dict[str, Any]:
        """The formulation as recorded in ``meta.json`` (``problem``)."""
        return dataclasses.asdict(self)


WEIGHT_KEYS: tuple[str, ...] = ("l2", "l1", "smooth", "running", "readout_l2", "terminal")
"""The cost weights; with ``horizon`` and the bounds they are the traced numbers."""

TRACED_KEYS: tuple[str, ...] = ("horizon", *WEIGHT_KEYS, "lipschitz_bound", "box_bound")
"""Fields of :class:`Formulation` that are leaves when it is a JAX pytree (a bound that is
``None`` has no leaf, so whether a constraint exists is part of the structure)."""


def _flatten_formulation(form: Formulation) -> tuple[tuple, tuple]:
    static = tuple((f.name, getattr(form, f.name)) for f in dataclasses.fields(form)
                   if f.name not in TRACED_KEYS)
    active = tuple(k for k in WEIGHT_KEYS if form.uses(k))
    return tuple(getattr(form, k) for k in TRACED_KEYS), (static, active)


def _unflatten_formulation(aux: tuple, children: tuple) -> Formulation:
    static, active = aux
    form = object.__new__(Formulation)
    for k, v in (*static, *zip(TRACED_KEYS, children, strict=True)):
        object.__setattr__(form, k, v)
    object.__setattr__(form, "_active", frozenset(active))
    return form


jax.tree_util.register_pytree_node(Formulation, _flatten_formulation, _unflatten_formulation)


FORMULATION_KEYS: tuple[str, ...] = (
    "model", "activation", "width", "layers", "horizon", "loss", "l2", "l1", "smooth",
    "running", "readout_l2", "train_readout", "lipschitz_bound", "box_bound", "terminal",
)


def _default_loss(data: Dataset) -> str:
    if data.task == "regression":
        return "squared"
    return "logistic" if data.n_classes == 2 else "cross_entropy"


def _output_dim(data: Dataset, loss: str) -> int:
    if data.task == "regression":
        if loss != "squared":
            raise ValueError(f"loss {loss!r} is for classification; regression uses 'squared'")
        return data.n_targets
    K = int(data.n_classes or 2)
    if loss in ("logistic", "sigmoid_mse"):
        if K != 2:
            raise ValueError(f"loss {loss!r} is binary but the data has {K} classes; "
                             "use 'cross_entropy'")
        return 1
    if loss == "cross_entropy":
        return K
    if loss == "squared":
        return 1 if K == 2 else K  # targets ±1 (binary) or one-hot (K classes)
    raise ValueError(f"unknown loss {loss!r}; expected one of {', '.join(model.LOSSES)}")


def _nonnegative(name: str, value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return v


def _weight_option(options: dict[str, Any], key: str) -> Any:
    """The weight ``key`` given in ``options``, or its default (``None`` means default)."""
    value = options.get(key)
    return getattr(DEFAULTS, key, 0.0) if value is None else value


def make_formulation(data: Dataset, **options: Any) -> Formulation:
    """Validate ``options`` (the keys of :data:`FORMULATION_KEYS`) against ``data``."""
    unknown = set(options) - set(FORMULATION_KEYS)
    if unknown:
        raise ValueError(f"unknown problem option(s): {', '.join(sorted(unknown))}")
    n = data.n_features
    width = options.get("width")
    width = DEFAULTS.width(n) if width is None else width
    if not isinstance(width, int | np.integer) or isinstance(width, bool) or width < 1:
        raise ValueError(f"width must be a positive integer, got {width!r}")
    if width < n:
        raise ValueError(f"width {width} is smaller than the input dimension {n}")
    layers = options.get("layers")
    layers = DEFAULTS.layers if layers is None else layers
    if not isinstance(layers, int | np.integer) or isinstance(layers, bool) or layers < 1:
        raise ValueError(f"layers must be an integer >= 1, got {layers!r}")
    horizon = options.get("horizon")
    horizon = DEFAULTS.horizon if horizon is None else horizon
    try:
        horizon = float(horizon)
    except (TypeError, ValueError):
        raise ValueError(f"horizon must be a number, got {horizon!r}") from None
    if not math.isfinite(horizon) or horizon <= 0:
        raise ValueError(f"horizon must be a finite number > 0, got {horizon!r}")
    mdl = options.get("model", "resnet")
    if mdl not in model.MODELS:
        raise ValueError(f"unknown model {mdl!r}; expected one of {', '.join(model.MODELS)}")
    act = options.get("activation", "tanh")
    if act not in model.ACTIVATIONS:
        raise ValueError(
            f"unknown activation {act!r}; expected one of {', '.join(model.ACTIVATIONS)}"
        )
    loss = options.get("loss") or _default_loss(data)
    if loss not in model.LOSSES:
        raise ValueError(f"unknown loss {loss!r}; expected one of {', '.join(model.LOSSES)}")
    m = _output_dim(data, loss)
    weights = {k: _nonnegative(k, _weight_option(options, k)) for k in WEIGHT_KEYS}
    if weights["terminal"] == 0 and weights["running"] == 0:
        raise ValueError("terminal 0 and running 0 leave no loss in the cost; give a "
                         "running weight > 0 for a purely integral cost")
    bounds = {}
    for k in ("lipschitz_bound", "box_bound"):
        v = options.get(k)
        if v is not None:
            v = _nonnegative(k, v)
            if v == 0:
                raise ValueError(f"{k} must be > 0, got {v}")
        bounds[k] = v
    return Formulation(
        n_inputs=n, n_outputs=m, task=data.task,
        n_classes=data.n_classes if data.task == "classification" else None,
        model=mdl, activation=act, width=int(width), layers=int(layers), horizon=horizon,
        loss=loss, train_readout=bool(options.get("train_readout", True)), **weights, **bounds,
    )


def encode_targets(form: Formulation, y: np.ndarray) -> np.ndarray:
    """Labels → numeric targets ``(N, m)``: ``y`` itself for binary losses (m = 1), one-hot
    for ``cross_entropy``, the values for regression; for the ``squared`` loss on class
    labels ``2y − 1 ∈ {−1, +1}`` (binary, m = 1) or one-hot (K classes)."""
    if form.task == "regression":
        return np.asarray(y, np.float64).reshape(len(y), -1)
    y = np.asarray(y).astype(np.int64)
    if form.loss == "squared" and form.n_outputs == 1:
        return (2.0 * y - 1.0)[:, None]
    if form.loss in ("cross_entropy", "squared"):
        return np.eye(form.n_outputs)[y]
    return y[:, None].astype(np.float64)
