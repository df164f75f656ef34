r"""The canonical discrete optimal control problem, evaluated with JAX.

States ``x_i(t) ∈ R^d`` for samples ``i = 1..N`` and layers ``t = 0..L``, controls
``θ_t = (A_t, b_t)``, readout ``(W, c)``, step ``h = T / L``:

.. math::

    x_i(0) = (X_i, 0, …, 0), \qquad x_i(t+1) = f(x_i(t), θ_t), \qquad z_i(t) = W x_i(t) + c,

    J = \frac{w}{N} \sum_i ℓ(z_i(L), y_i) + \frac{λ}{2} h \sum_t (‖A_t‖_F^2 + ‖b_t‖^2)
        + β h \sum_t (‖A_t‖_1 + ‖b_t‖_1)
        + \frac{α}{2h} \sum_{t=0}^{L-2} (‖A_{t+1} - A_t‖_F^2 + ‖b_{t+1} - b_t‖^2)
        + γ h \sum_{t=1}^{L} \frac1N \sum_i ℓ(z_i(t), y_i) + \frac{κ}{2}(‖W‖_F^2 + ‖c‖^2).

``w`` is the ``terminal`` weight (default 1; 0 with ``γ > 0`` is a purely integral cost).
The per-sample and per-layer formulas come from :mod:`controldl.model`; this module only
assembles them over samples (``vmap``) and layers (``lax.scan``), and adds the discrete
maximum principle: the Hamiltonian, the costate recursion and the gradient it gives.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from controldl import model
from controldl.compilation import COMPILED, RUN_ONCE_OPTIONS, compile_or_load, signature
from controldl.data import Dataset

Array = jax.Array
JAX = model.ops_for("jax")

COST_TERMS: tuple[str, ...] = ("terminal", "l2", "l1", "smooth", "running", "readout_l2")
"""Names of the cost terms, in the order of DESIGN.md (``total`` is their sum)."""


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


class Problem:
    """The canonical problem: a :class:`Formulation` and a :class:`~controldl.data.Dataset`.

    Example::

        problem = Problem(controldl.data.ring(600, seed=0), width=3, layers=20,
                          horizon=5.0, l2=1e-3)

    Formulation fields (``problem.width``, ``problem.h``, …) read through.
    """

    def __init__(self, data: Any = None, y: Any = None, *, X: Any = None,
                 **options: Any) -> None:
        """``data`` is a :class:`~controldl.data.Dataset`, a pair ``(X, y)`` or the inputs
        ``X`` with ``y`` beside them (also as ``X=``, ``y=``); see
        :func:`controldl.data.as_dataset`. ``options`` are the formulation's keys
        (:data:`FORMULATION_KEYS`), defaults :data:`DEFAULTS`."""
        from controldl.data import as_dataset

        self.data = as_dataset(data, y, X)
        self.formulation = make_formulation(self.data, **options)

    @classmethod
    def from_formulation(cls, data: Dataset, formulation: Formulation) -> Problem:
        keys = {k: getattr(formulation, k) for k in FORMULATION_KEYS}
        return cls(data, **keys)

    def replace(self, data: Dataset | None = None, **options: Any) -> Problem:
        """A copy with some options (or the data) changed."""
        keys = {k: getattr(self.formulation, k) for k in FORMULATION_KEYS}
        keys.update(options)
        return Problem(self.data if data is None else data, **keys)

    def __getattr__(self, name: str) -> Any:
        if name in ("formulation", "data"):
            raise AttributeError(name)
        try:
            return getattr(self.formulation, name)
        except AttributeError:
            raise AttributeError(f"'Problem' object has no attribute {name!r}") from None

    def describe(self) -> str:
        """One line: the model, width, L, T, h, every weight, the constraints and the data
        with its split (what ``controldl train`` prints before it starts)."""
        f, data = self.formulation, self.data
        weights = ", ".join(f"{k} {getattr(f, k):g}" for k in WEIGHT_KEYS)
        bounds = "".join(f", {k} {getattr(f, k):g}" for k in ("lipschitz_bound", "box_bound")
                         if getattr(f, k) is not None)
        split = (f"{data.n_train} training and {len(data.X_test)} test points"
                 if data.has_test else f"{data.n_train} training points, no test split")
        return (f"{f.model} with σ = {f.activation}, width {f.width}, L = {f.layers}, "
                f"T = {f.horizon:g} (h = {f.h:g}), loss {f.loss}; {weights}{bounds}"
                f"{'' if f.train_readout else ', frozen readout'}; data "
                f"{data.source.get('name', 'arrays')}: {split}")

    def __repr__(self) -> str:
        f = self.formulation
        return (f"Problem({f.model}, σ={f.activation}, d={f.width}, L={f.layers}, "
                f"T={f.horizon:g}, loss={f.loss}, N={self.data.n_train})")

    # Arrays in the form the JAX functions take.
    def initial_states(self, dtype: Any = jnp.float64, test: bool = False) -> Array:
        """``x(0)`` (N, d) of the training (or test) inputs."""
        X = self.data.X_test if test else self.data.X_train
        return embed(self.formulation, jnp.asarray(X, dtype=dtype))

    def targets(self, dtype: Any = jnp.float64, test: bool = False) -> Array:
        """Numeric targets (N, m) of the training (or test) labels."""
        y = self.data.y_test if test else self.data.y_train
        return jnp.asarray(encode_targets(self.formulation, np.asarray(y)), dtype=dtype)


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


# --------------------------------------------------------------------------- forward pass


def embed(form: Formulation, X: Array) -> Array:
    """``x(0) = (X, 0, …, 0)``: pad the inputs (N, n) with zeros to width d → (N, d)."""
    return jnp.pad(X, ((0, 0), (0, form.width - X.shape[1])))


def step(form: Formulation, x: Array, A: Array, b: Array) -> Array:
    """One layer for one sample: ``f(x, θ)`` with ``x`` (d,), ``A`` (d, d), ``b`` (d,)."""
    return model.step(JAX, form.model, form.activation, form.h, x, A, b)


def step_batch(form: Formulation, X: Array, A: Array, b: Array) -> Array:
    """One layer for all samples: (N, d) → (N, d)."""
    return jax.vmap(step, in_axes=(None, 0, None, None))(form, X, A, b)


def trajectory(form: Formulation, params: Params, X0: Array) -> Array:
    """All states ``x(0..L)``, shape (L+1, N, d)."""

    def body(x, theta):
        x_next = step_batch(form, x, *theta)
        return x_next, x_next

    _, xs = jax.lax.scan(body, X0, (params.A, params.b))
    return jnp.concatenate([X0[None], xs], axis=0)


def final_state(form: Formulation, params: Params, X0: Array) -> Array:
    """``x(L)`` (N, d) without storing the intermediate states."""
    x, _ = jax.lax.scan(lambda x, th: (step_batch(form, x, *th), None), X0, (params.A, params.b))
    return x


def predict(form: Formulation, params: Params, X0: Array) -> Array:
    """Outputs ``z = W x(L) + c`` (N, m)."""
    return final_state(form, params, X0) @ params.W.T + params.c


def mean_loss(form: Formulation, W: Array, c: Array, X: Array, Y: Array) -> Array:
    """``(1/N) Σ_i ℓ(W x_i + c, y_i)`` for states ``X`` (N, d) and targets ``Y`` (N, m)."""
    per_sample = jax.vmap(lambda x, y: model.loss(JAX, form.loss, model.readout(W, c, x), y))
    return jnp.mean(per_sample(X, Y))


# --------------------------------------------------------------------------- cost


def control_cost(form: Formulation, A: Array, b: Array) -> Array:
    """The control cost of one layer: ``l2`` plus ``l1`` terms (what ``H_t`` subtracts); an
    absent term (weight 0, :meth:`Formulation.uses`) is left out of the program."""
    l2 = model.layer_l2(JAX, form.l2, form.h, A, b)
    return l2 + model.layer_l1(JAX, form.l1, form.h, A, b) if form.uses("l1") else l2


def smooth_cost(form: Formulation, A: Array, b: Array) -> Array:
    """``(α/(2h)) Σ_{t=0}^{L-2} (‖A_{t+1}-A_t‖² + ‖b_{t+1}-b_t‖²)`` for all layers."""
    if form.layers < 2 or not form.uses("smooth"):  # absent: left out of the program
        return jnp.zeros((), A.dtype)
    terms = jax.vmap(lambda A0, b0, A1, b1: model.layer_smooth(JAX, form.smooth, form.h,
                                                                A0, b0, A1, b1))
    return jnp.sum(terms(A[:-1], b[:-1], A[1:], b[1:]))


def cost_terms_from_states(form: Formulation, params: Params, xs: Array, Y: Array
                           ) -> dict[str, Array]:
    """Every cost term of DESIGN.md given the states ``xs`` (L+1, N, d); plus ``total``."""
    A, b, W, c = params
    layer = jax.vmap(lambda A_t, b_t: (model.layer_l2(JAX, form.l2, form.h, A_t, b_t),
                                       model.layer_l1(JAX, form.l1, form.h, A_t, b_t)))
    l2, l1 = layer(A, b)
    terms = {
        "terminal": form.terminal * mean_loss(form, W, c, xs[-1], Y),
        "l2": jnp.sum(l2),
        "l1": jnp.sum(l1),
        "smooth": smooth_cost(form, A, b),
        "running": form.running * form.h * jnp.sum(
            jax.vmap(lambda x: mean_loss(form, W, c, x, Y))(xs[1:])),
        "readout_l2": model.readout_l2(JAX, form.readout_l2, W, c),
    }
    terms["total"] = sum(terms[k] for k in COST_TERMS)
    return terms


def cost_terms(form: Formulation, params: Params, X0: Array, Y: Array) -> dict[str, Array]:
    """Every cost term at ``params`` for initial states ``X0`` (N, d), targets ``Y`` (N, m)."""
    return cost_terms_from_states(form, params, trajectory(form, params, X0), Y)


def forward(form: Formulation, params: Params, X0: Array, Y: Array,
            checkpoint_every: int | None = None) -> tuple[Array, Array]:
    """``x(L)`` (N, d) and the running sum ``Σ_{t=1}^{L} (1/N) Σ_i ℓ(z_i(t), y_i)`` in one
    pass that keeps no intermediate state (0 when ``running`` is 0).

    ``checkpoint_every = k`` rematerializes: under reverse-mode autodiff only every k-th
    state is stored and the layers in between are recomputed (``jax.checkpoint`` on
    blocks of k layers), so memory for the states drops from O(N·L·d) to O(N·(L/k + k)·d).
    """
    W, c = params.W, params.c
    with_running = form.uses("running")

    def layer(carry, theta):
        x, run = carry
        x = step_batch(form, x, *theta)
        if with_running:
            run = run + mean_loss(form, W, c, x, Y)
        return (x, run), None

    def block(carry, thetas):
        return jax.lax.scan(layer, carry, thetas)[0]

    carry = (X0, jnp.zeros((), X0.dtype))
    thetas = (params.A, params.b)
    L = form.layers
    if checkpoint_every is None or checkpoint_every >= L:
        carry = block(carry, thetas)
    else:
        k = int(checkpoint_every)
        if k < 1:
            raise ValueError(f"checkpoint_every must be >= 1, got {k}")
        nb = L // k
        saved = jax.checkpoint(block)
        head = jax.tree.map(lambda a: a[: nb * k].reshape(nb, k, *a.shape[1:]), thetas)
        carry = jax.lax.scan(lambda cr, th: (saved(cr, th), None), carry, head)[0]
        if nb * k < L:
            carry = saved(carry, jax.tree.map(lambda a: a[nb * k:], thetas))
    return carry


def cost_and_outputs(form: Formulation, params: Params, X0: Array, Y: Array,
                     checkpoint_every: int | None = None) -> tuple[Array, Array]:
    """The total cost ``J(θ, W, c)`` and the final outputs ``z(L)`` (N, m), in one forward
    pass (see :func:`forward` for ``checkpoint_every``)."""
    A, b, W, c = params
    x_L, run = forward(form, params, X0, Y, checkpoint_every)
    regular = (jnp.sum(jax.vmap(lambda A_t, b_t: control_cost(form, A_t, b_t))(A, b))
               + smooth_cost(form, A, b) + model.readout_l2(JAX, form.readout_l2, W, c))
    total = form.terminal * mean_loss(form, W, c, x_L, Y) + form.running * form.h * run + regular
    return total, x_L @ W.T + c


def cost(form: Formulation, params: Params, X0: Array, Y: Array) -> Array:
    """The total cost ``J(θ, W, c)``."""
    return cost_and_outputs(form, params, X0, Y)[0]


def accuracy_from_outputs(form: Formulation, z: Array, y: Array) -> Array:
    """Fraction of correct labels: ``z > 0`` for one output, ``argmax z`` for K outputs."""
    if form.n_outputs == 1:
        pred = (z[:, 0] > 0).astype(jnp.int32)
    else:
        pred = jnp.argmax(z, axis=1)
    return jnp.mean((pred == y).astype(z.dtype))


# --------------------------------------------------------------------------- Pontryagin


def running_cost_at(form: Formulation, W: Array, c: Array, X: Array, Y: Array) -> Array:
    """The running term contributed by one time ``t ≥ 1``: ``γ·h·(1/N) Σ_i ℓ(z_i(t), y_i)``."""
    return form.running * form.h * mean_loss(form, W, c, X, Y)


def hamiltonian(form: Formulation, X: Array, P_next: Array, A: Array, b: Array,
                W: Array, c: Array, Y: Array, with_running: bool | Array = True) -> Array:
    """``H_t(x, p, θ) = Σ_i p_i·f(x_i, θ) - (control cost of θ) - (running cost at x)``.

    ``X`` (N, d) are the states at ``t``, ``P_next`` (N, d) the costates at ``t+1``.
    The running cost at ``t`` is counted for ``t ≥ 1`` (``with_running``).
    """
    flow = jnp.sum(P_next * step_batch(form, X, A, b))
    run = jnp.where(with_running, running_cost_at(form, W, c, X, Y), 0.0)
    return flow - control_cost(form, A, b) - run


def terminal_costate(form: Formulation, W: Array, c: Array, X_L: Array, Y: Array) -> Array:
    """``p(L) = -∇_x [w·(1/N) Σ ℓ(z_i(L)) + running cost at L]`` (N, d), ``w`` the
    ``terminal`` weight."""
    phi = lambda X: (form.terminal * mean_loss(form, W, c, X, Y)  # noqa: E731
                     + running_cost_at(form, W, c, X, Y))
    return -jax.grad(phi)(X_L)


def costates(form: Formulation, params: Params, xs: Array, Y: Array) -> Array:
    """The backward recursion ``p(t) = ∇_x H_t(x(t), p(t+1), θ_t)``, ``t = L-1..0``.

    Returns ``ps`` (L+1, N, d) with ``ps[L]`` the terminal costate.
    """
    A, b, W, c = params
    p_L = terminal_costate(form, W, c, xs[-1], Y)
    grad_x = jax.grad(hamiltonian, argnums=1)

    def body(p_next, inputs):
        X, A_t, b_t, t = inputs
        p = grad_x(form, X, p_next, A_t, b_t, W, c, Y, t > 0)
        return p, p

    ts = jnp.arange(form.layers)
    _, ps = jax.lax.scan(body, p_L, (xs[:-1], A, b, ts), reverse=True)
    return jnp.concatenate([ps, p_L[None]], axis=0)


def readout_objective(form: Formulation, W: Array, c: Array, xs: Array, Y: Array) -> Array:
    """The part of J that depends on the readout given the states: the terminal loss, the
    running terms and ``readout_l2``."""
    run = form.running * form.h * jnp.sum(jax.vmap(lambda x: mean_loss(form, W, c, x, Y))(xs[1:]))
    return (form.terminal * mean_loss(form, W, c, xs[-1], Y) + run
            + model.readout_l2(JAX, form.readout_l2, W, c))


def gradient_from_costates(form: Formulation, params: Params, xs: Array, ps: Array, Y: Array
                           ) -> Params:
    """``∇J`` from the maximum principle: ``∂J/∂θ_t = -∇_θ H_t(x(t), p(t+1), θ_t)`` plus the
    derivative of the smoothness term (which couples layers), and the readout's gradient
    from the terms that contain it (zero when the readout is frozen)."""
    A, b, W, c = params
    grad_theta = jax.vmap(jax.grad(hamiltonian, argnums=(3, 4)),
                          in_axes=(None, 0, 0, 0, 0, None, None, None, None))
    gA, gb = grad_theta(form, xs[:-1], ps[1:], A, b, W, c, Y, False)
    sA, sb = jax.grad(lambda A_, b_: smooth_cost(form, A_, b_), argnums=(0, 1))(A, b)
    if form.train_readout:
        gW, gc = jax.grad(readout_objective, argnums=(1, 2))(form, W, c, xs, Y)
    else:
        gW, gc = jnp.zeros_like(W), jnp.zeros_like(c)
    return Params(-gA + sA, -gb + sb, gW, gc)


def costate_gradient(form: Formulation, params: Params, X0: Array, Y: Array) -> Params:
    """Forward pass, backward costate pass, and ``∇J`` from the Hamiltonian."""
    xs = trajectory(form, params, X0)
    return gradient_from_costates(form, params, xs, costates(form, params, xs, Y), Y)


# --------------------------------------------------------------------------- stationarity


def l1_cost(form: Formulation, A: Array, b: Array) -> Array:
    """``β·h·Σ_t (‖A_t‖₁ + ‖b_t‖₁)``: the non-smooth part of J."""
    return jnp.sum(jax.vmap(lambda A_t, b_t: model.layer_l1(JAX, form.l1, form.h, A_t, b_t))(A, b))


def smooth_gradient(form: Formulation, params: Params, X0: Array, Y: Array) -> Params:
    """``∇f`` where ``f = J − l1 term`` is the differentiable part of J; the readout's
    gradient is zero when the readout is frozen."""
    f = lambda p: cost(form, p, X0, Y) - l1_cost(form, p.A, p.b)  # noqa: E731
    g = jax.grad(f)(params)
    if not form.train_readout:
        g = g._replace(W=jnp.zeros_like(g.W), c=jnp.zeros_like(g.c))
    return g


def proximal_gradient_point(form: Formulation, params: Params, grad: Params) -> Params:
    """``Π(prox_{l1}(θ − ∇f))`` with a unit step: soft-thresholding of the controls at
    ``β·h`` (the l1 term's prox), then :func:`project` onto the constraints. For the box
    this is the exact prox of l1 plus the box; with the spectral bound it is the
    composition of the two (exact without l1)."""
    moved = jax.tree.map(jnp.subtract, params, grad)
    if form.uses("l1"):
        tau = form.l1 * form.h
        soft = lambda v: jnp.sign(v) * jnp.maximum(jnp.abs(v) - tau, 0.0)  # noqa: E731
        moved = moved._replace(A=soft(moved.A), b=soft(moved.b))
    return project(form, moved)


def stationarity_residual(form: Formulation, params: Params, X0: Array, Y: Array) -> Array:
    """The first-order stationarity measure ``‖θ − Π(prox_{l1}(θ − ∇f(θ)))‖₂`` over all
    optimization variables (controls and readout): the norm of the projected/proximal
    gradient step, zero exactly at a first-order critical point of J with its l1 term and
    its constraints. Without l1 and constraints it is ``‖∇J‖₂``. Traceable."""
    return stationarity_from_gradient(form, params, smooth_gradient(form, params, X0, Y))


def stationarity_from_gradient(form: Formulation, params: Params, grad: Params) -> Array:
    """:func:`stationarity_residual` given ``grad = ∇f(θ)``, the gradient of the smooth part
    (:func:`smooth_gradient`), for a solver that has computed it already. Traceable."""
    new = proximal_gradient_point(form, params, grad)
    return optax.tree_utils.tree_norm(jax.tree.map(jnp.subtract, params, new))


@functools.partial(jax.jit, compiler_options=RUN_ONCE_OPTIONS)
def _stationarity_jit(form: Formulation, params: Params, X0: Array, Y: Array) -> Array:
    return stationarity_residual(form, params, X0, Y)


def stationarity(problem: Problem, params: Params) -> float:
    """:func:`stationarity_residual` of ``problem`` at ``params`` on the training data, in
    the dtype of ``params`` — the same measure for every solver."""
    dtype = jnp.asarray(params.A).dtype
    params = Params(*(jnp.asarray(v, dtype) for v in params))
    X0, Y = problem.initial_states(dtype), problem.targets(dtype)
    return float(_stationarity_jit(problem.formulation, params, X0, Y))


# --------------------------------------------------------------------------- init, constraints


def init_params(form: Formulation, seed: int = 0, scheme: str = "normal", scale: float = 1.0,
                dtype: Any = jnp.float64) -> Params:
    """The initialization every solver shares, deterministic in ``seed``.

    ``normal``: ``A_t``, ``W`` entries ``N(0, scale²/d)``, ``b_t = 0``, ``c = 0``;
    ``zeros``: every control and the readout zero (Li et al.'s flat start).
    Constraints are enforced by :func:`project`. One compiled program (a cached second
    call costs one lookup, not one per operation).
    """
    if scheme not in ("normal", "zeros"):
        raise ValueError(f"unknown initialization {scheme!r}; expected 'normal' or 'zeros'")
    dtype = jnp.dtype(dtype)
    args = (form, jnp.asarray(seed), jnp.asarray(scale, jnp.float64))
    program = functools.partial(_init_program, scheme=scheme, dtype=dtype)
    key = ("init-params", form.static_key(), scheme, str(dtype), signature(args[1:]))
    compiled = COMPILED.get(key, lambda: compile_or_load(program, args, key, RUN_ONCE_OPTIONS))
    return compiled(*args)


def _init_program(form: Formulation, seed: Array, scale: Array, scheme: str,
                  dtype: Any) -> Params:
    L, d, m = form.layers, form.width, form.n_outputs
    zeros = Params(jnp.zeros((L, d, d), dtype), jnp.zeros((L, d), dtype),
                   jnp.zeros((m, d), dtype), jnp.zeros((m,), dtype))
    if scheme == "zeros":
        return project(form, zeros)
    kA, kW = jax.random.split(jax.random.PRNGKey(seed))
    s = (scale / math.sqrt(d)).astype(dtype) if hasattr(scale, "astype") else scale / math.sqrt(d)
    params = zeros._replace(A=s * jax.random.normal(kA, (L, d, d), dtype),
                            W=s * jax.random.normal(kW, (m, d), dtype))
    return project(form, params)


def clip_spectral_norm(A: Array, bound: float) -> Array:
    """Clip the singular values of each ``A_t`` (..., d, d) at ``bound``."""
    U, s, Vt = jnp.linalg.svd(A, full_matrices=False)
    return (U * jnp.minimum(s, bound)[..., None, :]) @ Vt


def project(form: Formulation, params: Params, rounds: int = 20) -> Params:
    """Euclidean-style projection onto the constraints: ``|A|, |b| ≤ M`` entrywise (clip) and
    ``h·‖A_t‖₂ ≤ B`` (clip singular values at ``B/h``). With both, alternate ``rounds``
    times, ending on the spectral clip so that the Lipschitz bound holds exactly."""
    A, b, W, c = params
    box, lip = form.box_bound, form.lipschitz_bound
    if box is not None:
        b = jnp.clip(b, -box, box)
    if box is not None and lip is None:
        A = jnp.clip(A, -box, box)
    elif lip is not None:
        for _ in range(rounds if box is not None else 1):
            if box is not None:
                A = jnp.clip(A, -box, box)
            A = clip_spectral_norm(A, lip / form.h)
    return Params(A, b, W, c)


def lipschitz_constants(form: Formulation, params: Params) -> np.ndarray:
    """``h·‖A_t‖₂`` for every layer (L,) — below 1 means the residual layer is invertible."""
    return form.h * np.linalg.norm(np.asarray(params.A), ord=2, axis=(1, 2))
