"""The final evaluation of a solve: every cost term, the accuracies and the stationarity at
the returned parameters, in float64, on every training sample, in bounded memory.

``J`` is a mean over the samples plus terms of the parameters alone, so for blocks of
samples ``c`` of sizes ``n_c`` (``Σ n_c = N``), ``J = Σ_c (n_c/N)·J_c`` where ``J_c`` is the
cost on block ``c`` alone — every term, the accuracy and the gradient ``∇J = Σ_c
(n_c/N)·∇J_c`` too. A training set whose states would take more than
:data:`EVALUATION_BLOCK_BYTES` is evaluated block by block and the sums combined (MNIST's
60,000 images with a 1,568-dimensional state need about 4 GB in one program, a few hundred
MB per block), with at most two block sizes, so at most two compiled programs.

Compiler options: the programs run once per solve, so XLA's backend optimizations are
skipped (:data:`~controldl.compilation.RUN_ONCE_OPTIONS`), except for the conv model:
XLA:CPU's unoptimized backend computes a convolution by plain loops, 15 times slower in
float64 (2.45 s against 0.16 s for 1,000 images of 8 × 14 × 14 measured on the development
box), which made the final evaluation of an MNIST run take minutes.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from controldl import parallel
from controldl import problem as P
from controldl.compilation import RUN_ONCE_OPTIONS
from controldl.problem import Params, Problem

EVALUATION_BLOCK_BYTES: int = 2 ** 29
"""The memory a block of the final float64 evaluation may take: about three copies of the
block's states ``(L+1) × rows × d`` (the trajectory and the gradient's pass)."""


def blocks(form: P.Formulation, n: int) -> list[slice]:
    """The blocks of rows ``0..n`` evaluated one at a time: as few as keep each under
    :data:`EVALUATION_BLOCK_BYTES`, of equal sizes up to one row."""
    per_row = 3 * (form.layers + 1) * form.width * 8
    rows = max(1, EVALUATION_BLOCK_BYTES // per_row)
    count = max(1, -(-n // rows))
    bounds = np.linspace(0, n, count + 1).round().astype(int)
    return [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def _block(form: P.Formulation, params: Params, X0: jax.Array, Y: jax.Array, y: jax.Array,
           with_gradient: bool) -> tuple[dict[str, jax.Array], jax.Array, Any]:
    """``(cost terms, accuracy on labels y (0 for regression), ∇f or None)`` on one block
    of initial states ``X0`` (n, d) and targets ``Y`` (n, m): ``f`` is J without its l1
    term (:func:`controldl.problem.smooth_gradient`)."""
    terms = P.cost_terms(form, params, X0, Y)
    acc = P.accuracy_or_zero(form, P.predict(form, params, X0), y)
    grad = P.smooth_gradient(form, params, X0, Y) if with_gradient else None
    return terms, acc, grad


def _accuracy(form: P.Formulation, params: Params, X0: jax.Array, y: jax.Array) -> jax.Array:
    return P.accuracy_from_outputs(form, P.predict(form, params, X0), y)


_PROGRAMS = {fast: (jax.jit(_block, static_argnames="with_gradient",
                            compiler_options=RUN_ONCE_OPTIONS if fast else None),
                    jax.jit(_accuracy, compiler_options=RUN_ONCE_OPTIONS if fast else None))
             for fast in (True, False)}


@functools.partial(jax.jit, compiler_options=RUN_ONCE_OPTIONS)
def _stationarity(form: P.Formulation, params: Params, grad: Params) -> jax.Array:
    return P.stationarity_from_gradient(form, params, grad)


def evaluation(problem: Problem, params: Params, with_stationarity: bool
               ) -> tuple[dict[str, float], float | None, float | None, float | None]:
    """Every cost term, the training accuracy, the test accuracy and, with
    ``with_stationarity``, :func:`controldl.stationarity` at ``params`` (float64; the
    accuracies ``None`` for regression, the test accuracy without a test split, the
    stationarity when the cost is not finite)."""
    form = problem.formulation
    params = Params(*(parallel.device_array(v, np.float64) for v in params))
    block, accuracy = _PROGRAMS[form.model != "conv"]
    classify = form.task == "classification"
    n = problem.data.n_train
    labels = problem.data.y_train if classify else np.zeros(n, np.int32)
    terms: dict[str, float] = {}
    train, grad = 0.0, None
    for rows in blocks(form, n):
        w = (rows.stop - rows.start) / n
        t, acc, g = block(form, params, problem.initial_states(rows=rows),
                          problem.targets(rows=rows), parallel.device_array(labels[rows]),
                          with_gradient=with_stationarity)
        for k, v in jax.device_get(t).items():
            terms[k] = terms.get(k, 0.0) + w * float(v)
        train += w * float(acc)
        if with_stationarity:
            g = jax.tree.map(lambda a, w=w: w * np.asarray(a), g)
            grad = g if grad is None else jax.tree.map(np.add, grad, g)
    residual = None
    if with_stationarity and math.isfinite(terms["total"]):
        residual = float(_stationarity(form, params, Params(*map(jnp.asarray, grad))))
    if not classify:
        return terms, None, None, residual
    test = None
    if problem.data.has_test:
        test = float(accuracy(form, params, problem.initial_states(test=True),
                              parallel.device_array(problem.data.y_test)))
    return terms, train, test, residual
