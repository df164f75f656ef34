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
from controldl.model import ACTIVATIONS, CONTROL_SETS, LOSSES, MODELS, READOUTS


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

@dataclasses.dataclass(frozen=True)
class DatasetDefaults:
    """What ``controldl train`` and ``compare`` take for one built-in dataset where a flag
    is not given, over :data:`DEFAULTS`: formulation keys for every model (``formulation``)
    and for the conv model (``conv``), and solver options (``solver``, applied to each
    solver that takes them as they are: L-BFGS keeps the full batch). ``chosen`` says what
    they were chosen on. The library's :class:`~controldl.problem.Problem` does not apply
    them (pass them: ``Problem(data, **d.formulation, **d.conv)``)."""

    formulation: dict[str, Any] = dataclasses.field(default_factory=dict)
    conv: dict[str, Any] = dataclasses.field(default_factory=dict)
    solver: dict[str, Any] = dataclasses.field(default_factory=dict)
    chosen: str = ""

    def problem_options(self, model: str | None) -> dict[str, Any]:
        """The formulation defaults for ``model`` (``None``: the default model)."""
        return {**self.formulation, **(self.conv if model == "conv" else {})}


DATASET_DEFAULTS: dict[str, DatasetDefaults] = {
    "mnist": DatasetDefaults(
        conv={"channels": 8, "input_pool": 2, "layers": 4, "horizon": 2.0},
        solver={"batch_size": 128},
        chosen="on MNIST itself, so that `controldl train --dataset mnist --model conv "
               "--solver gd --optimizer adam --epochs 1` (lr 0.01, float32) reaches 97 % "
               "test accuracy in about a minute of a 2-core CPU: 14 × 14 states (the "
               "images averaged over 2 × 2 blocks) of 8 channels, 4 layers with h = 0.5, "
               "mini-batches of 128 (docs/mnist.md)"),
}
"""The per-dataset defaults (:class:`DatasetDefaults`), by dataset name."""

READOUT_L2_ZERO_NOTE = ("readout_l2 = 0: with the {loss} loss on separable data J has no "
                        "minimizer (its infimum is at ‖W‖ → ∞), so no solver can converge")
"""What a user who sets ``readout_l2`` to 0 with a classification loss is told."""


CONV_DEFAULT_CHANNELS = 4
"""The conv model's channels when none are given (at least the inputs' channels)."""

CONV_KEYS: tuple[str, ...] = ("channels", "kernel_size", "readout", "input_pool")
"""The conv model's keys, checked together against the data (:func:`_conv_options`)."""

KEY_INFO = "controldl.formulation_key"
"""The key of a :class:`Formulation` field's metadata that holds its :class:`KeyInfo`."""

KINDS: tuple[str, ...] = ("choice", "count", "positive", "weight", "bound", "switch")
"""What a formulation key holds: one of its ``choices``; an integer >= 1; a finite number
> 0; a weight (finite, >= 0); an optional bound (``None`` or a finite number > 0); a
boolean."""


@dataclasses.dataclass(frozen=True)
class KeyInfo:
    """The declaration of a formulation key beside its name, type and default: its ``kind``
    (:data:`KINDS`), its ``choices``, a ``help`` text (formula and meaning), and whether a
    ``None`` value takes a default that depends on the data (``from_data``)."""

    kind: str
    help: str
    choices: tuple[str, ...] = ()
    from_data: bool = False


def key(default: Any, kind: str, help: str, *, choices: tuple[str, ...] = (),
        from_data: bool = False) -> Any:
    """A formulation key: a :class:`Formulation` field with ``default`` whose metadata is
    its :class:`KeyInfo` (read by :func:`make_formulation`, the command line, ``meta.json``
    and :func:`controldl.solution.load`)."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    info = KeyInfo(kind, help, tuple(choices), from_data)
    return dataclasses.field(default=default, metadata={KEY_INFO: info})


@dataclasses.dataclass(frozen=True)
class Formulation:
    """Every parameter of the problem except the data; hashable (a static jit argument).

    ``n_inputs`` (n) and ``n_outputs`` (m) follow from the data; ``task`` is
    ``"classification"`` or ``"regression"``. The other fields are the formulation keys
    (:data:`FORMULATION_KEYS`), each declared once here with :func:`key`.
    """

    n_inputs: int
    n_outputs: int
    task: str = "classification"
    n_classes: int | None = 2
    model: str = key("resnet", "choice", "resnet: x+h·σ(Ax+b); mlp: σ(Ax+b); inside: "
                     "x+h·(Aσ(x)+b); conv: x+h·σ(K⋆x+b) on images (N, C, H, W)",
                     choices=MODELS)
    activation: str = key("tanh", "choice", "the activation σ", choices=ACTIVATIONS)
    width: int = key(3, "count", "state dimension d ≥ n; d > n pads the inputs with zeros "
                     f"(default n+{DEFAULTS.extra_width}: 3 for 2-D data)", from_data=True)
    layers: int = key(DEFAULTS.layers, "count", "number of layers L")
    horizon: float = key(DEFAULTS.horizon, "positive", "final time T > 0; the step is h = T/L")
    loss: str = key("logistic", "choice", "default: logistic (2 classes), cross_entropy "
                    "(K > 2), squared (regression)", choices=LOSSES, from_data=True)
    l2: float = key(DEFAULTS.l2, "weight", "weight λ of (λ/2)·h·Σ(‖A_t‖²+‖b_t‖²)")
    l1: float = key(0.0, "weight", "weight β of β·h·Σ(‖A_t‖₁+‖b_t‖₁)")
    smooth: float = key(0.0, "weight", "weight α of (α/2h)·Σ‖θ_{t+1}-θ_t‖²")
    running: float = key(0.0, "weight", "weight γ of γ·h·Σ_{t=1..L} mean ℓ(z(t))")
    readout_l2: float = key(DEFAULTS.readout_l2, "weight", "weight κ of (κ/2)·(‖W‖²+‖c‖²); "
                            "κ > 0 gives separable data a minimizer")
    terminal: float = key(DEFAULTS.terminal, "weight", "weight w of the terminal loss "
                          "w·(1/N)Σℓ(z(L)); 0 with running > 0 is a purely integral cost")
    train_readout: bool = key(True, "switch", "whether the readout W, c is trained; off keeps "
                              "it at its initial value (Esteve et al.'s fixed projection)")
    lipschitz_bound: float | None = key(None, "bound", "constrain h·‖A_t‖₂ ≤ B; B < 1 makes "
                                        "every residual layer invertible")
    box_bound: float | None = key(None, "bound", "constrain |A_t|, |b_t| ≤ M entrywise")
    channels: int | None = key(None, "count", "conv: channels C of the state, at least the "
                               f"inputs' (default max({CONV_DEFAULT_CHANNELS}, C₀))",
                               from_data=True)
    kernel_size: int | None = key(None, "count", "conv: odd kernel size k, 'same' padding "
                                  "(default 3)", from_data=True)
    readout: str = key("flatten", "choice", "conv: the readout's input, the whole state "
                       "(flatten), each channel's mean over the pixels (pool) or each "
                       "pixel's mean over the channels (channel_mean)", choices=READOUTS)
    input_pool: int | None = key(None, "count", "conv: average the input images over s × s "
                                 "blocks before the embedding (s divides H and W; default 1, "
                                 "none): the state is C × H/s × W/s", from_data=True)
    controls: str = key("real", "choice", "the set of every entry of A_t (a conv kernel's "
                        "too): real; binary α_t·{−1,+1}; ternary α_t·{−1,0,+1}, with "
                        "α_t = 1/√fan_in fixed (b_t and the readout stay real)",
                        choices=CONTROL_SETS)
    sparsity: float = key(0.0, "weight", "ternary controls: weight s of s·h·Σ_t nnz(A_t), the "
                          "number of non-zero entries, in J")
    image_shape: tuple[int, int, int] | None = None

    @property
    def geometry(self) -> model.ConvGeometry | None:
        """The convolutional state's shape (``model = "conv"``): C channels of the input
        images' size divided by ``input_pool``; else ``None``."""
        if self.model != "conv":
            return None
        _, H, W = self.image_shape
        s = int(self.input_pool or 1)
        return model.ConvGeometry(int(self.channels), int(H) // s, int(W) // s,
                                  int(self.kernel_size))

    @property
    def discrete(self) -> bool:
        """Whether the entries of ``A_t`` take values in a discrete set (``controls``
        binary or ternary, :mod:`controldl.problem.discrete`)."""
        return self.controls != "real"

    @property
    def feature_dim(self) -> int:
        """The readout's input dimension: the width; for the conv model's ``pool`` C and
        for ``channel_mean`` the pixels H·W of the state."""
        geo = self.geometry
        if geo is not None and self.readout == "pool":
            return geo.channels
        if geo is not None and self.readout == "channel_mean":
            return geo.pixels
        return int(self.width)

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """The shapes of :class:`Params`: ``A`` (L, d, d), ``b`` (L, d), ``W`` (m, d),
        ``c`` (m,); for ``conv`` the kernels ``A`` (L, C, C, k, k), ``b`` (L, C) and
        ``W`` (m, C·H·W) or (m, C) with pooling."""
        L, d, m = self.layers, self.width, self.n_outputs
        geo = self.geometry
        if geo is None:
            return {"A": (L, d, d), "b": (L, d), "W": (m, d), "c": (m,)}
        C, k = geo.channels, geo.kernel_size
        return {"A": (L, C, C, k, k), "b": (L, C), "W": (m, self.feature_dim), "c": (m,)}

    @property
    def n_controls(self) -> int:
        """The number of control entries, ``A`` and ``b`` of every layer: ``L·(d² + d)``
        (``L·(C²k² + C)`` for conv)."""
        shapes = self.param_shapes()
        return int(np.prod(shapes["A"])) + int(np.prod(shapes["b"]))

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


WEIGHT_KEYS: tuple[str, ...] = ("l2", "l1", "smooth", "running", "readout_l2", "terminal",
                                 "sparsity")
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


KEYS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(Formulation)
                                      if KEY_INFO in f.metadata}
"""The formulation keys' fields, in declaration order."""

FORMULATION_KEYS: tuple[str, ...] = tuple(KEYS)
"""The options of a problem (the fields of :class:`Formulation` declared with :func:`key`):
what :class:`~controldl.problem.Problem` takes, the command line's formulation flags and
the ``problem`` of ``meta.json``."""

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


def _number(name: str, value: Any) -> float:
    if isinstance(value, str | bytes | bool | np.bool_):  # float('5') would accept text
        raise ValueError(f"{name} must be a number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return v


def check_key(name: str, value: Any) -> Any:
    """``value`` of the formulation key ``name`` checked against its declared kind
    (:data:`KINDS`) and converted (a number to ``float``, an integer to ``int``)."""
    info: KeyInfo = KEYS[name].metadata[KEY_INFO]
    if info.kind == "choice":
        if value not in info.choices:
            raise ValueError(f"unknown {name} {value!r}; expected one of "
                             f"{', '.join(info.choices)}")
        return value
    if info.kind == "count":
        if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        return int(value)
    if info.kind == "switch":
        if not isinstance(value, bool | np.bool_):  # bool('false') is True
            raise ValueError(f"{name} must be True or False, got {value!r}")
        return bool(value)
    if value is None and info.kind == "bound":
        return None
    v = _number(name, value)
    if v < 0 or (v == 0 and info.kind != "weight"):
        raise ValueError(f"{name} must be a finite number {'>=' if info.kind == 'weight' else '>'}"
                         f" 0, got {value!r}")
    return v


def make_formulation(data: Dataset, **options: Any) -> Formulation:
    """Validate ``options`` (the keys of :data:`FORMULATION_KEYS`; ``None`` or absent: the
    declared default, or the data's for ``width`` and ``loss``) against ``data``."""
    unknown = set(options) - set(FORMULATION_KEYS)
    if unknown:
        raise ValueError(f"unknown problem option(s): {', '.join(sorted(unknown))}")
    n = data.n_features
    data_defaults = {"width": DEFAULTS.width(n), "loss": _default_loss(data)}
    values = {}
    for name, field in KEYS.items():
        if name in CONV_KEYS:
            continue
        value = options.get(name)
        if value is None or (name == "loss" and not value):
            value = data_defaults[name] if name in data_defaults else field.default
        values[name] = check_key(name, value)
    conv = _conv_options(data, values["model"], options)
    if conv:
        s = conv["input_pool"]
        wanted = conv["channels"] * (conv["image_shape"][1] // s) * (conv["image_shape"][2] // s)
        if options.get("width") is not None and options["width"] != wanted:
            raise ValueError(f"width {options['width']} is not channels × height × width = "
                             f"{wanted} for the conv model; give channels instead")
        values["width"] = wanted
    elif values["width"] < n:
        raise ValueError(f"width {values['width']} is smaller than the input dimension {n}")
    _check_controls(values)
    if values["terminal"] == 0 and values["running"] == 0:
        raise ValueError("terminal 0 and running 0 leave no loss in the cost; give a "
                         "running weight > 0 for a purely integral cost")
    return Formulation(
        n_inputs=n, n_outputs=_output_dim(data, values["loss"]), task=data.task,
        n_classes=data.n_classes if data.task == "classification" else None, **values,
        **conv)


def _check_controls(values: dict[str, Any]) -> None:
    """A sparsity weight only with ternary controls; no constraint on a discrete set (the
    box and the Lipschitz bound are projections onto convex sets of real matrices)."""
    if values["sparsity"] > 0 and values["controls"] != "ternary":
        raise ValueError(f"sparsity weighs the non-zero entries of ternary controls; with "
                         f"controls={values['controls']} give sparsity 0 or controls=ternary")
    bounds = [k for k in ("lipschitz_bound", "box_bound") if values[k] is not None]
    if values["controls"] != "real" and bounds:
        verb = "constrain" if len(bounds) > 1 else "constrains"
        raise ValueError(f"{' and '.join(bounds)} {verb} real controls; controls="
                         f"{values['controls']} fixes every entry of A_t to ±α_t"
                         f"{' or 0' if values['controls'] == 'ternary' else ''}: drop "
                         f"{' and '.join(bounds)}")


def _conv_options(data: Dataset, mdl: str, options: dict[str, Any]) -> dict[str, Any]:
    """``channels``, ``kernel_size``, ``readout``, ``input_pool`` and the data's
    ``image_shape`` for the conv model (checked); for the dense models only a readout of
    ``flatten`` (or none) and no pooling."""
    channels, k = options.get("channels"), options.get("kernel_size")
    readout = check_key("readout", options.get("readout") or "flatten")
    pool = options.get("input_pool")
    if mdl != "conv":
        if channels is not None or k is not None or readout != "flatten" or pool not in (
                None, 1):
            raise ValueError("channels, kernel_size, input_pool and readout='pool' or "
                             f"'channel_mean' are options of the conv model, not of {mdl!r}")
        return {}
    shape = data.image_shape
    if shape is None:
        raise ValueError("the conv model needs images: inputs X of shape (N, C, H, W), "
                         f"got (N, {data.n_features})")
    channels = max(CONV_DEFAULT_CHANNELS, shape[0]) if channels is None else \
        check_key("channels", channels)
    if channels < shape[0]:
        raise ValueError(f"channels {channels} is smaller than the input channels {shape[0]}")
    pool = 1 if pool is None else check_key("input_pool", pool)
    if shape[1] % pool or shape[2] % pool:
        raise ValueError(f"input_pool {pool} does not divide the {shape[1]}×{shape[2]} images")
    side = min(shape[1:]) // pool
    k = 3 if k is None else check_key("kernel_size", k)
    if k % 2 == 0 or k > 2 * side - 1:
        raise ValueError(f"kernel_size must be odd ('same' padding) and at most "
                         f"{2 * side - 1} for {shape[1] // pool}×{shape[2] // pool} states, "
                         f"got {k}")
    return dict(channels=channels, kernel_size=k, readout=readout, input_pool=pool,
                image_shape=shape)


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
