"""The problem instance: a :class:`~controldl.problem.formulation.Formulation` with its
:class:`~controldl.data.Dataset`, and the initialization every solver shares."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from controldl import rng
from controldl.compilation import COMPILED, RUN_ONCE_OPTIONS, compile_or_load, signature
from controldl.conv import init_kernels
from controldl.data import Dataset
from controldl.parallel import device_array
from controldl.problem import discrete
from controldl.problem.constraints import project
from controldl.problem.dynamics import embed
from controldl.problem.formulation import (
    FORMULATION_KEYS,
    WEIGHT_KEYS,
    Formulation,
    Params,
    encode_targets,
    make_formulation,
)

Array = jax.Array


class Problem:
    """The canonical problem: a :class:`Formulation` and a :class:`~controldl.data.Dataset`.

    Example::

        problem = Problem(controldl.data.ring(600, seed=0), width=3, layers=20,
                          horizon=5.0, l2=1e-3)

    Formulation fields (``problem.width``, ``problem.h``, …) read through.
    """

    def __init__(self, data: Any = None, y: Any = None, *, X: Any = None,
                 test_fraction: float | None = None, split_seed: int = 0,
                 **options: Any) -> None:
        """``data`` is a :class:`~controldl.data.Dataset`, a pair ``(X, y)`` or the inputs
        ``X`` with ``y`` beside them (also as ``X=``, ``y=``); see
        :func:`controldl.data.as_dataset`. ``test_fraction`` holds out that fraction of
        the points as a stratified test split drawn with ``split_seed``
        (:func:`controldl.data.train_test_split`; default: none, every point trains).
        ``options`` are the formulation's keys (:data:`FORMULATION_KEYS`), defaults
        :data:`DEFAULTS`."""
        from controldl.data import as_dataset, train_test_split

        self.data = as_dataset(data, y, X)
        if test_fraction:
            self.data = train_test_split(self.data, test_fraction, seed=split_seed)
        self.formulation = make_formulation(self.data, **options)

    @classmethod
    def from_formulation(cls, data: Dataset, formulation: Formulation) -> Problem:
        keys = {k: getattr(formulation, k) for k in FORMULATION_KEYS}
        return cls(data, **keys)

    def replace(self, data: Dataset | None = None, **options: Any) -> Problem:
        """A copy with some options (or the data) changed. The conv model's width is
        derived (channels × height × width) and derived again unless given."""
        keys = {k: getattr(self.formulation, k) for k in FORMULATION_KEYS}
        if self.formulation.model == "conv":
            keys["width"] = None
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
        weights = ", ".join(f"{k} {getattr(f, k):g}" for k in WEIGHT_KEYS
                            if k != "sparsity" or f.controls == "ternary")
        bounds = "".join(f", {k} {getattr(f, k):g}" for k in ("lipschitz_bound", "box_bound")
                         if getattr(f, k) is not None)
        split = (f"{data.n_train} training and {len(data.X_test)} test points"
                 if data.has_test else f"{data.n_train} training points, no test split")
        controls = f"{f.controls} controls (α = {discrete.scale(f):.4g}), " if f.discrete else ""
        return (f"{f.model} with σ = {f.activation}, {controls}width {f.width}, L = {f.layers}, "
                f"T = {f.horizon:g} (h = {f.h:g}), loss {f.loss}; {weights}{bounds}"
                f"{'' if f.train_readout else ', frozen readout'}; data "
                f"{data.source.get('name', 'arrays')}: {split}")

    def __repr__(self) -> str:
        f = self.formulation
        return (f"Problem({f.model}, σ={f.activation}, d={f.width}, L={f.layers}, "
                f"T={f.horizon:g}, loss={f.loss}, N={self.data.n_train})")

    # Arrays in the form the JAX functions take.
    def initial_states(self, dtype: Any = jnp.float64, test: bool = False,
                       rows: slice = slice(None)) -> Array:
        """``x(0)`` (N, d) of the training (or test) inputs, of ``rows`` only if given."""
        X = self.data.X_test if test else self.data.X_train
        return device_array(embed(self.formulation, np.asarray(X[rows], np.dtype(dtype))))

    def targets(self, dtype: Any = jnp.float64, test: bool = False,
                rows: slice = slice(None)) -> Array:
        """Numeric targets (N, m) of the training (or test) labels, of ``rows`` only if
        given."""
        y = self.data.y_test if test else self.data.y_train
        return device_array(encode_targets(self.formulation, np.asarray(y[rows])),
                            np.dtype(dtype))


def init_params(form: Formulation, seed: int = 0, scheme: str = "normal", scale: float = 1.0,
                dtype: Any = jnp.float64) -> Params:
    """The initialization every solver shares, deterministic in ``seed``.

    ``normal``: ``A_t``, ``W`` entries ``N(0, scale²/d)``, ``b_t = 0``, ``c = 0`` (for
    ``conv`` the kernels ``N(0, scale²/(C·k·k))``, :func:`controldl.conv.init_kernels`,
    and ``W`` with its own fan-in);
    ``zeros``: every control and the readout zero (Li et al.'s flat start).

    Discrete controls (``controls`` binary or ternary) start at the Euclidean projection of
    the drawn ``A`` onto ``α·{set}`` (:func:`controldl.problem.discrete.project`).

    The draws are ``jax.random``'s (``kA, kW = split(PRNGKey(seed))``, then
    ``normal(kA, …)`` for ``A`` and ``normal(kW, …)`` for ``W``, in ``dtype``), computed on
    the host by :mod:`controldl.rng`: the same numbers in every process and on every
    backend, and nothing to compile. Constraints are enforced by :func:`project`, one
    compiled program per formulation (only when the formulation has constraints).

    Raises:
        ValueError: unknown ``scheme``, ``seed`` not a non-negative integer, or ``scale``
            not a finite number.
    """
    if scheme not in ("normal", "zeros"):
        raise ValueError(f"unknown initialization {scheme!r}; expected 'normal' or 'zeros'")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not math.isfinite(float(scale)):
        raise ValueError(f"initialization scale must be finite, got {scale!r}")
    shapes, dtype = form.param_shapes(), np.dtype(dtype)
    drawn = {k: np.zeros(shapes[k], dtype) for k in Params._fields}
    if scheme == "normal":
        kA, kW = rng.split(rng.prng_key(seed))
        scale = dtype.type(scale)
        drawn["A"] = (init_kernels(kA, shapes["A"], scale, dtype) if form.geometry is not None
                      else scale / math.sqrt(form.width) * rng.normal(kA, shapes["A"], dtype))
        drawn["W"] = scale / math.sqrt(form.feature_dim) * rng.normal(kW, shapes["W"], dtype)
    if form.discrete:  # the projection onto the set: the same start for every solver
        drawn["A"] = discrete.project(form, drawn["A"]).astype(dtype)
    params = Params(*(device_array(drawn[k], dtype) for k in Params._fields))
    if scheme == "zeros" or (form.box_bound is None and form.lipschitz_bound is None):
        return params  # project() is the identity here
    key = ("init-project", form.static_key(), signature(params))
    compiled = COMPILED.get(key, lambda: compile_or_load(_project_program, (form, params), key,
                                                          RUN_ONCE_OPTIONS))
    return compiled(form, params)


def _project_program(form: Formulation, params: Params) -> Params:
    return project(form, params)
