"""Epochs, as a user expects them, for every solver that iterates over the training data.

- **Batches** (:class:`controldl.parallel.BatchOrder`): with ``batch_size`` B of N
  samples, an epoch is ``⌊N/B⌋`` iterations; epoch ``e`` takes the permutation of the
  samples drawn from ``(batch_seed, e)`` in consecutive batches, in order, and leaves out
  the ``N mod B`` samples at the end of that permutation (every batch has B rows). A
  full-batch iteration is one epoch.
- **Length**: ``epochs=E`` (:func:`controldl.solve`, ``--epochs``) is ``max_iter = E ×``
  :meth:`Epochs.per_epoch`.
- **Recording**: a mini-batch run records, in its history, the full training cost and
  accuracy and the test accuracy and cost (``J`` on the test split) at every epoch
  boundary (iteration ``k`` with ``k mod per_epoch = 0``), every ``record_every``
  iterations when asked, and at the last iteration (also when a signal or the time limit
  stops it between two records). A
  full-batch run records every iteration (its step's own cost), with the test accuracy
  every ``record_every`` iterations when asked. Each entry carries ``epoch = k /
  per_epoch``.

The solvers hold one :class:`Epochs` and one :class:`FullData` (the compiled evaluation on
all training samples and on the test split), so a new mini-batch solver inherits these
semantics by using them.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import numpy as np

from controldl import parallel
from controldl import problem as P
from controldl.compilation import COMPILED, compile_or_load, signature
from controldl.problem import Params, Problem


def iterations_per_epoch(n_train: int, batch_size: int | None) -> int:
    """Iterations in one epoch: :func:`controldl.parallel.batches_per_epoch` with
    mini-batches, 1 for the full batch."""
    return 1 if batch_size is None else parallel.batches_per_epoch(n_train, batch_size)


@dataclasses.dataclass
class Epochs:
    """Which batch iteration ``k`` takes (``order``, ``None`` for the full batch) and
    which iterations the history records on all the data (see the module docstring)."""

    order: parallel.BatchOrder | None
    record_every: int | None = None

    @classmethod
    def of(cls, problem: Problem, batch_size: int | None, batch_seed: int = 0,
           record_every: int | None = None) -> Epochs:
        order = (None if batch_size is None
                 else parallel.BatchOrder(problem.data.n_train, batch_size, batch_seed))
        return cls(order, record_every)

    @property
    def batched(self) -> bool:
        return self.order is not None

    @property
    def per_epoch(self) -> int:
        return 1 if self.order is None else self.order.per_epoch

    def rows(self, iteration: int) -> np.ndarray:
        """The rows of iteration ``iteration``'s batch (:data:`~controldl.parallel.NO_ROWS`
        for the full batch)."""
        return parallel.NO_ROWS if self.order is None else self.order.rows(iteration)

    def recorded(self, iteration: int, max_iter: int) -> bool:
        """Whether a mini-batch run records the full cost at ``iteration`` (every
        iteration of a full-batch run is recorded)."""
        k = int(iteration)
        every = self.record_every
        return (self.order is None or k % self.per_epoch == 0 or k == max_iter
                or (every is not None and k % every == 0))

    def next_evaluated(self, iteration: int, max_iter: int) -> int:
        """The first iteration after ``iteration`` whose record evaluates the iterate on
        more than the step's batch: the full-data cost of a mini-batch run
        (:meth:`recorded`), the test split every ``record_every`` iterations
        (:meth:`with_test`), ``max_iter``."""
        k = int(iteration)
        steps = ([self.per_epoch] if self.order is not None else []) + (
            [self.record_every] if self.record_every else [])
        return min(max(int(max_iter), k + 1), *((k // s + 1) * s for s in steps))

    def with_test(self, iteration: int, max_iter: int) -> bool:
        """Whether the record of ``iteration`` carries the test accuracy: every record of a
        mini-batch run; for the full batch every ``record_every`` iterations and the last."""
        if self.order is not None:
            return True
        every = self.record_every
        return every is not None and (iteration % every == 0 or iteration == max_iter)


class FullData:
    """The compiled evaluations of a run on all its samples: the full training cost and
    accuracy (one forward pass, no stored states) and the test accuracy and cost
    (``None`` without a test split or for regression), at parameters placed as the solver
    places them.
    Each program is compiled at its first use (a full-batch run that records no test
    accuracy builds neither), its time counted as the monitor's compile time."""

    def __init__(self, problem: Problem, train: tuple, params: Params, mesh: Any,
                 monitor: Any) -> None:
        form = problem.formulation
        self.form, self.train, self.problem, self.mesh = form, train, problem, mesh
        self.monitor = monitor
        self.dtype = params.A.dtype
        self._programs: dict[str, Any] = {}

    def _program(self, name: str, params: Params) -> Any:
        if name not in self._programs:
            fn, args = ((_cost_and_accuracy, self.train) if name == "cost"
                        else (_cost_and_accuracy, self.test_data))
            with self.monitor.compiling():
                self._programs[name] = _compiled(fn, self.form, (params, *args))
        return self._programs[name]

    @functools.cached_property
    def test_data(self) -> tuple | None:
        """The test split's ``(X0, Y, y)`` placed as the parameters (replicated on a
        mesh)."""
        data = self.problem.data
        if self.form.task != "classification" or not data.has_test:
            return None
        X = self.problem.initial_states(self.dtype, test=True)
        Y = self.problem.targets(self.dtype, test=True)
        return parallel.replicate(self.mesh, (X, Y, parallel.device_array(data.y_test)))

    def cost(self, params: Params) -> tuple[float, float]:
        """``(J, training accuracy)`` at ``params`` on every training sample (the
        accuracy is 0 for regression)."""
        program = self._program("cost", params)
        with self.monitor.evaluating():
            J, acc = jax.device_get(program(params, *self.train))
        return float(J), float(acc)

    def test(self, params: Params) -> dict[str, float]:
        """``{"test_accuracy", "test_cost"}`` at ``params`` (``J`` with the test split's
        mean loss); empty without a test split or for regression."""
        if self.test_data is None:
            return {}
        program = self._program("test", params)
        with self.monitor.evaluating():
            J, acc = jax.device_get(program(params, *self.test_data))
        return {"test_accuracy": float(acc), "test_cost": float(J)}


def _cost_and_accuracy(form: P.Formulation, params: Params, X0: jax.Array, Y: jax.Array,
                       y: jax.Array) -> tuple[jax.Array, jax.Array]:
    J, z = P.cost_and_outputs(form, params, X0, Y)
    return J, P.accuracy_or_zero(form, z, y)


def _compiled(fn: Any, form: P.Formulation, args: tuple) -> Any:
    """``fn(form, *args)`` compiled once per formulation structure and argument signature."""
    key = ("epochs", fn.__name__, form.static_key(), signature(args))
    compiled = COMPILED.get(key, lambda: compile_or_load(fn, (form, *args), key))
    return functools.partial(compiled, form)
