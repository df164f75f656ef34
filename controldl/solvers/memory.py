"""Sizes estimated before allocating: what a solve will hold at its peak, from N, d, L, the
model and the solver, checked against the memory the machine has now.

Every solver declares its own estimate next to itself
(:meth:`~controldl.solvers.base.Solver.memory_estimate`, from the problem's
:class:`Sizes`), built from the parts below; :func:`check_fits` (called by
:func:`controldl.solve` and, before anything runs, by the command line) refuses a solve
whose estimate exceeds the memory available, with one line that names the largest part,
the estimate, the memory available and the ways out that would fit (an option of the
solver such as ``--checkpoint-every``, or the largest number of layers, samples or width
that fits).

The estimates count the arrays a solve holds at once, in units of the problem's sizes;
their factors were measured on CPU at N = 1000–4000, d = 10–20, L = 100–400 (peak
resident memory of two iterations, docs/cli.md): gradient descent holds about 4 copies of
the states ``(L+1)·N·d`` while it backpropagates, E-MSA about 10 (states, costates, the
Hamiltonian's terms of every layer), pmp-newton about 5 per-sample Kronecker blocks
``L·N·(d+1)²``. They are estimates (XLA's buffers and fusion decide the exact peak), good
to a small factor; a size below the limit may still run out of memory, one far above is
refused before it allocates anything.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from controldl.data import available_memory_bytes
from controldl.solvers.options import default_dtype


class Sizes(NamedTuple):
    """What the memory of a solve depends on: ``N`` training samples, ``n`` inputs, state
    dimension ``d`` (C·H·W for ``conv``), ``L`` layers, ``m`` outputs, the readout's input
    ``features``, the control entries of one layer ``per_layer`` (``d² + d``; ``C²k² + C``
    for ``conv``), whether the readout is trained and whether constraints are present."""

    N: int
    n: int
    d: int
    L: int
    m: int
    features: int
    per_layer: int
    train_readout: bool = True
    constrained: bool = False
    conv: bool = False
    default_dtype: str = "float64"

    @classmethod
    def of(cls, problem: Any) -> Sizes:
        form = problem.formulation
        shapes = form.param_shapes()
        per_layer = (int(np.prod(shapes["A"])) + int(np.prod(shapes["b"]))) // form.layers
        return cls(N=problem.data.n_train, n=form.n_inputs, d=int(form.width),
                   L=int(form.layers), m=int(form.n_outputs), features=int(form.feature_dim),
                   per_layer=per_layer, train_readout=bool(form.train_readout),
                   constrained=form.box_bound is not None or form.lipschitz_bound is not None,
                   conv=form.geometry is not None, default_dtype=default_dtype(problem.data))

    def itemsize(self, dtype: str | None) -> int:
        """The bytes of one number of a solver whose ``dtype`` option is ``dtype``
        (``None``: the data's default precision, :func:`controldl.solvers.options.
        default_dtype`)."""
        return np.dtype(self.default_dtype if dtype is None else dtype).itemsize

    def resized(self, **changes: int) -> Sizes:
        """These sizes with ``L``, ``N`` or ``d`` changed (the per-layer count follows
        ``d`` for the dense models)."""
        new = self._replace(**changes)
        if "d" in changes and not self.conv:
            new = new._replace(per_layer=new.d * new.d + new.d, features=new.d)
        return new

    @property
    def params(self) -> int:
        """Every parameter: the controls of all layers and the readout."""
        return self.L * self.per_layer + self.m * (self.features + 1)


class Part(NamedTuple):
    """One thing a solve holds: ``what`` it is, its ``count`` of numbers of ``itemsize``
    bytes, the ``formula`` of the count in the sizes; ``sharded`` parts are split over
    the devices with the samples (the others are replicated); ``phase``: ``run`` (while
    iterating), ``final`` (the final evaluation, not at the same time) or ``always``."""

    what: str
    count: float
    formula: str
    itemsize: int = 8
    sharded: bool = True
    phase: str = "run"

    @property
    def bytes(self) -> float:
        return self.count * self.itemsize


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    """The parts a solve holds (:class:`Part`); ``host``: in the host's memory whatever
    the JAX backend (CasADi and IPOPT)."""

    parts: tuple[Part, ...]
    host: bool = False

    def total(self, devices: int = 1) -> float:
        """Bytes on one device with the samples split over ``devices`` devices (the
        replicated parts whole on each); on the host (``host``, or JAX on the CPU, whose
        devices share it) pass the number of copies the replicated parts have."""
        def phase(name: str) -> float:
            return sum(p.bytes / (devices if p.sharded else 1) for p in self.parts
                       if p.phase == name)

        return phase("always") + max(phase("run"), phase("final"))

    def largest(self) -> Part:
        return max(self.parts, key=lambda p: p.bytes)


def gib(n_bytes: float) -> str:
    """``n_bytes`` for a reader (MiB, GiB, TiB or PiB, 3 significant digits)."""
    for unit, size in (("PiB", 2**50), ("TiB", 2**40), ("GiB", 2**30)):
        if n_bytes >= size:
            return f"{n_bytes / size:.3g} {unit}"
    return f"{n_bytes / 2**20:.3g} MiB"


# --------------------------------------------------------------------------- common parts


def stored_layers(L: int, every: int | None) -> int:
    """The states a backward sweep keeps: all ``L+1``, or with rematerialization every
    ``every``-th plus one block recomputed (``⌈L/k⌉ + k + 1``)."""
    return L + 1 if every is None or every >= L else -(-L // every) + every + 1


def data_parts(s: Sizes, itemsize: int) -> list[Part]:
    """The embedded inputs and targets on the devices, and the host's float64 copy."""
    return [Part("the embedded inputs and targets", s.N * (s.d + s.m), "N × (d + m)",
                 itemsize, phase="always"),
            Part("the data on the host", s.N * (s.n + s.m), "N × (n + m)", 8, False, "always")]


def params_part(s: Sizes, copies: int, itemsize: int, what: str) -> Part:
    """``copies`` of every parameter (the iterate, gradients, an optimizer's state)."""
    return Part(what, copies * s.params, f"{copies} × (L × {s.per_layer} + m × (d + 1))",
                itemsize, sharded=False, phase="always")


def states_part(s: Sizes, copies: int, batch: int | None, every: int | None, itemsize: int,
                what: str) -> Part:
    """``copies`` arrays of the states of the stored layers over a batch."""
    kept = stored_layers(s.L, every)
    layers = "(L + 1)" if kept == s.L + 1 else f"{kept} stored layers"
    samples = "N" if batch is None else "batch"
    return Part(what, copies * kept * (batch or s.N) * s.d,
                f"{copies} × {layers} × {samples} × d", itemsize)


def final_evaluation_part(s: Sizes) -> Part:
    """The final evaluation of :func:`controldl.solve`: the gradient of J at the returned
    parameters (the stationarity) on all samples, in float64, every state kept."""
    return Part("the final full-batch gradient (stationarity)", 4 * (s.L + 1) * s.N * s.d,
                "4 × (L + 1) × N × d", 8, phase="final")


# --------------------------------------------------------------------------- the check


def memory_budget(estimate: MemoryEstimate, devices: int) -> tuple[float | None, float, str]:
    """``(bytes available, bytes needed, where)``: on a GPU or TPU (JAX's backend, not
    for a ``host`` estimate) one device's free memory against the per-device need;
    otherwise the host's available memory against the whole need (``None``: unknown)."""
    if not estimate.host:
        import jax

        if jax.default_backend() != "cpu":
            stats = jax.local_devices()[0].memory_stats() or {}
            if "bytes_limit" in stats:
                free = float(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
                return free, estimate.total(devices), f"{jax.default_backend()} device memory"
    replicated = sum(p.bytes for p in estimate.parts if not p.sharded)
    need = estimate.total(1) + (devices - 1) * replicated
    return available_memory_bytes(), need, "memory"


REMEDIES: tuple[tuple[str, str, Callable[[Sizes], Any]], ...] = (
    ("checkpoint_every", "--checkpoint-every {v}", lambda s: max(1, math.isqrt(s.L))),
    ("batch_size", "mini-batches (--batch-size {v})", lambda s: max(1, s.N // 100)),
    ("layer_block", "--layer-block {v}", lambda s: 1),
    ("hessian", "--hessian {v}", lambda s: "limited-memory"),
    ("transcription", "--transcription {v}", lambda s: "single"),
)
"""Solver options that trade time for memory: ``(option, how the message names it, the
value tried)``; a remedy is offered when the solver has the option and the estimate with
it fits."""


def _fits(solver: Any, sizes: Sizes, devices: int, free: float) -> bool:
    estimate = solver.memory_estimate(sizes)
    return memory_budget(estimate, devices)[1] <= free


def _largest_fitting(solver: Any, sizes: Sizes, key: str, devices: int, free: float
                     ) -> int | None:
    """The largest ``L``, ``N`` or ``d`` (``key``) that fits, the others kept (``None``:
    not even the smallest)."""
    lo, hi = {"L": 1, "N": 2, "d": max(sizes.n, 1)}[key], getattr(sizes, key)
    if not _fits(solver, sizes.resized(**{key: lo}), devices, free):
        return None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if _fits(solver, sizes.resized(**{key: mid}), devices, free) \
            else (lo, mid)
    return lo


def ways_out(solver: Any, sizes: Sizes, devices: int, free: float) -> list[str]:
    """The options of :data:`REMEDIES` that would fit, and the largest sizes that fit."""
    out = []
    fields = {f.name for f in dataclasses.fields(solver)} if dataclasses.is_dataclass(
        solver) else set()
    for option, text, value in REMEDIES:
        if option not in fields or getattr(solver, option) == value(sizes):
            continue
        try:
            other = dataclasses.replace(solver, **{option: value(sizes)})
        except ValueError:  # not valid for this solver's other options
            continue
        if _fits(other, sizes, devices, free):
            out.append(text.format(v=value(sizes)))
    flags = {"L": "--layers", "N": "samples", "d": "--width"}
    for key in ("L", "N", "d"):
        if key == "d" and sizes.conv:
            continue
        best = _largest_fitting(solver, sizes, key, devices, free)
        if best is not None and best < getattr(sizes, key):
            out.append(f"at most {best} {flags[key]}" if key == "N"
                       else f"{flags[key]} {best} or less")
    return out


def check_fits(problem: Any, solver: Any) -> None:
    """Raise ``ValueError`` (one line) when ``solver`` on ``problem`` needs more memory
    than is available now (see the module docstring); nothing is allocated."""
    sizes = Sizes.of(problem)
    estimate = solver.memory_estimate(sizes)
    if estimate is None:
        return
    devices = int(getattr(solver, "devices", None) or 1)
    free, need, where = memory_budget(estimate, devices)
    if free is None or need <= free:
        return
    big = estimate.largest()
    values = f"L = {sizes.L}, N = {sizes.N}, d = {sizes.d}"
    out = ways_out(solver, sizes, devices, free)
    raise ValueError(
        f"{solver.label()} needs about {gib(need)} but {gib(free)} of {where} is available "
        f"({values}): {big.what}, {big.formula} numbers, take {gib(big.bytes)}; "
        + (f"way out: {', or '.join(out)}" if out else
           "no smaller setting of this solver fits: use another solver or machine"))
