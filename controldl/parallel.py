"""Data parallelism with ``jax.sharding``: samples split over a mesh of devices, controls
replicated.

The JAX solvers place the initial states and targets with :func:`shard_samples` and the
parameters with :func:`replicate`; ``jax.jit`` then partitions every per-sample
computation (states, costates, losses) across the devices and inserts the reductions
(the means over samples) itself. Nothing else changes, so the result equals the
single-device one up to the order of floating-point sums.

Mini-batches (every solver that takes them draws here): :class:`BatchOrder` says which
rows iteration ``k`` uses — epoch ``e = k // per_epoch`` is the permutation of the samples
drawn from ``(batch_seed, e)``, cut into consecutive batches taken in order — and
:func:`draw_batch` gathers those rows inside the compiled step; traced under
:func:`on_mesh` the batch is sharded over the devices like the full data.

A sample count that does not divide: with one process, :func:`pad_samples` appends copies
of the first samples until every device holds as many rows, and gives the per-sample
arrays that enter the losses (the targets ``Y`` and labels ``y``) as :class:`Weighted`:
weight 1 for the real samples, 0 for the padding. The means over samples
(:func:`weighted_mean`: the losses, the accuracy) and E-MSA's sums over samples skip the
padding, and a padding sample's costate is exactly zero (its loss has weight zero), so
every number is the one of the real samples. Mini-batches are drawn from the real
samples only.

Several processes (:mod:`controldl.distributed`): the mesh spans the devices of every
process, each process builds only the rows that live on its own devices
(:func:`local_rows`, ``jax.make_array_from_process_local_data``) and the replicated
leaves are assembled from the same host value in every process. See ``docs/scale.md``.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

SAMPLES = "samples"


def device_array(x: Any, dtype: Any = None) -> jax.Array:
    """``x`` (a NumPy array, a number or a JAX array) as a JAX array of ``dtype`` (its own
    if ``None``) on the default device. Host data is converted by NumPy and placed with
    ``jax.device_put``, which compiles nothing (``jnp.asarray`` of a NumPy array compiles
    a small copy program for each new shape and dtype)."""
    if isinstance(x, jax.Array):
        return x if dtype is None or x.dtype == np.dtype(dtype) else x.astype(dtype)
    return jax.device_put(np.asarray(x, dtype))


def data_mesh(devices: int | None) -> Mesh | None:
    """A one-axis mesh over the first ``devices`` devices (``None``: no sharding). In a
    run of several processes the mesh spans every device of every process: ``None``
    means all of them and any other count is an error."""
    available = jax.devices()
    if jax.process_count() > 1:
        if devices is not None and devices != len(available):
            raise ValueError(f"with {jax.process_count()} processes the samples are sharded "
                             f"over all {len(available)} devices; drop --devices or give "
                             f"{len(available)}, not {devices}")
        devices = len(available)
    if devices is None:
        return None
    if not isinstance(devices, int | np.integer) or devices < 1:
        raise ValueError(f"devices must be a positive integer, got {devices!r}")
    if devices > len(available):
        raise ValueError(
            f"{devices} devices requested but JAX sees {len(available)} "
            f"({available[0].platform}); on a CPU set "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={devices} before starting")
    return Mesh(np.array(available[:devices]), (SAMPLES,))


def check_divisible(mesh: Mesh | None, n: int, what: str = "samples") -> None:
    """A ValueError unless ``n`` rows split evenly over the mesh's devices."""
    if mesh is None:
        return
    k = mesh.devices.size
    if n % k:
        raise ValueError(f"{n} {what} cannot be split evenly over {k} devices; use a number "
                         f"of {what} divisible by {k}")


@dataclasses.dataclass(frozen=True)
class Weighted:
    """Per-sample rows ``values`` (N, …) of which the first ``count`` are real samples and
    the rest padding (:func:`pad_samples`), with ``weight`` (N,): 1 for a real sample, 0
    for padding. A JAX pytree (``count`` is static). ``shape``, ``dtype`` and ``ndim`` are
    those of ``values``, so code that only passes the rows along (or reads their dtype)
    takes it for the array; whatever sums over samples reads the weights
    (:func:`weighted_mean`, :func:`sample_weight`)."""

    values: Any
    weight: Any
    count: int

    @property
    def shape(self) -> tuple[int, ...]:
        return self.values.shape

    @property
    def dtype(self) -> Any:
        return self.values.dtype

    @property
    def ndim(self) -> int:
        return self.values.ndim


jax.tree_util.register_dataclass(Weighted, data_fields=["values", "weight"],
                                 meta_fields=["count"])


def rows_of(samples: Any) -> Any:
    """The rows of per-sample ``samples``: its ``values`` if :class:`Weighted`, else itself."""
    return samples.values if isinstance(samples, Weighted) else samples


def sample_weight(samples: Any) -> Any:
    """The weights (N,) of :class:`Weighted` samples, ``None`` for a plain array (every
    sample weighs 1)."""
    return samples.weight if isinstance(samples, Weighted) else None


def sample_count(samples: Any) -> int:
    """The number of real samples: ``count`` of :class:`Weighted` rows, else the rows."""
    return samples.count if isinstance(samples, Weighted) else samples.shape[0]


def weighted_mean(per_sample: Any, samples: Any) -> Any:
    """``(1/N) Σ_i v_i`` over the real samples of ``samples`` (N of them) for ``per_sample``
    values ``v`` (leading axis the samples): ``jnp.mean`` for plain rows, the padding left
    out (weight 0, divided by the real count) for :class:`Weighted` rows."""
    import jax.numpy as jnp

    w = sample_weight(samples)
    if w is None:
        return jnp.mean(per_sample, axis=0)
    w = w.reshape(w.shape + (1,) * (per_sample.ndim - 1)).astype(per_sample.dtype)
    return jnp.sum(jnp.where(w > 0, per_sample, 0) * w, axis=0) / samples.count


def padded_count(mesh: Mesh | None, n: int) -> int:
    """``n`` rounded up to a multiple of the mesh's devices (``n`` without a mesh)."""
    k = 1 if mesh is None else int(mesh.devices.size)
    return -(-n // k) * k


def pad_samples(n_padded: int, X0: Any, Y: Any, y: Any) -> tuple[Any, Weighted, Weighted]:
    """``(X0, Y, y)`` of N samples padded to ``n_padded`` rows with copies of the first
    samples (finite, in the data's range); ``Y`` and ``y`` as :class:`Weighted` (weight 0
    on the padding). On the host (NumPy)."""
    n = X0.shape[0]
    extra = np.arange(n_padded - n) % n
    pad = lambda a: np.concatenate([np.asarray(a), np.asarray(a)[extra]])  # noqa: E731
    weight = np.concatenate([np.ones(n), np.zeros(n_padded - n)]).astype(np.asarray(Y).dtype)
    return pad(X0), Weighted(pad(Y), weight, n), Weighted(pad(y), weight, n)


def local_rows(mesh: Mesh | None, n: int) -> slice:
    """The rows ``lo:hi`` of an ``n``-row sample array that live on this process's devices
    (all rows without a mesh or with one process)."""
    if mesh is None or jax.process_count() == 1:
        return slice(0, n)
    sharding = NamedSharding(mesh, PartitionSpec(SAMPLES))
    spans = sorted({(i[0].start or 0, n if i[0].stop is None else i[0].stop)
                    for i in sharding.addressable_devices_indices_map((n,)).values()})
    for (_, hi), (lo, _) in zip(spans, spans[1:], strict=False):
        if hi != lo:
            raise ValueError("this process's devices do not hold one contiguous block of "
                             "samples; order jax.devices() by process")
    return slice(spans[0][0], spans[-1][1])


def shard_samples(mesh: Mesh | None, *arrays: Any, n: int | None = None) -> tuple[Any, ...]:
    """Split the leading (sample) axis of each array over the mesh. With several
    processes each array holds this process's rows only (:func:`local_rows` of the
    global count ``n``) and the result is the global array of ``n`` rows."""
    if mesh is None:
        return arrays
    n = arrays[0].shape[0] if n is None else n
    check_divisible(mesh, n)
    sharding = NamedSharding(mesh, PartitionSpec(SAMPLES))
    if jax.process_count() == 1:  # Weighted rows: values and weights split alike
        return tuple(jax.device_put(a, sharding) for a in arrays)
    return tuple(jax.make_array_from_process_local_data(sharding, np.asarray(a),
                                                        (n, *a.shape[1:]))
                 for a in arrays)


def replicate(mesh: Mesh | None, tree: Any) -> Any:
    """Put a copy of every leaf on every device of the mesh (with several processes,
    from the same host value in every process)."""
    if mesh is None:
        return tree
    sharding = NamedSharding(mesh, PartitionSpec())
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def whole(leaf: Any) -> jax.Array:
        host = np.asarray(leaf)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(whole, tree)


def mesh_of(array: Any) -> Mesh | None:
    """The samples mesh an array is placed on (``None`` when it is not on one)."""
    sharding = getattr(array, "sharding", None)
    if isinstance(sharding, NamedSharding) and SAMPLES in sharding.mesh.axis_names:
        return sharding.mesh
    return None


@contextlib.contextmanager
def on_mesh(mesh: Mesh | None) -> Iterator[None]:
    """Trace (lower) inside ``jax.set_mesh(mesh)``, so that :func:`draw_batch` shards the
    batches it draws; nothing without a mesh."""
    if mesh is None:
        yield
        return
    with jax.set_mesh(mesh):
        yield


def batches_per_epoch(n: int, batch: int) -> int:
    """Mini-batches in one epoch of ``n`` samples: ``⌊n / batch⌋`` (``batch ≤ n``). The
    ``n mod batch`` samples left at the end of an epoch's permutation are not used in that
    epoch (a different set in each epoch, since each epoch draws its own permutation):
    every batch has ``batch`` distinct rows, so one compiled step serves every batch."""
    if batch > n:
        raise ValueError(f"batch_size {batch} exceeds the {n} training samples")
    if batch < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch}")
    return n // batch


@dataclasses.dataclass
class BatchOrder:
    """The mini-batches of a run, as a user expects epochs: epoch ``e`` is the permutation
    of the ``n`` training samples drawn from ``(seed, e)``
    (``numpy.random.default_rng([seed, e]).permutation(n)``), cut into
    :func:`batches_per_epoch` consecutive batches of ``batch`` rows, taken in order.
    Iteration ``k`` uses batch ``k mod per_epoch`` of epoch ``k // per_epoch``: the order
    is a function of ``(seed, k)`` alone, so a resumed run draws what the uninterrupted run
    draws. Host-side NumPy, computed once per epoch; the rows go to the compiled step as
    an argument (:func:`draw_batch`)."""

    n: int
    batch: int
    seed: int = 0
    _cached: tuple[int, np.ndarray] | None = dataclasses.field(default=None, repr=False,
                                                               compare=False)

    @property
    def per_epoch(self) -> int:
        return batches_per_epoch(self.n, self.batch)

    def permutation(self, epoch: int) -> np.ndarray:
        """The order of the samples in ``epoch`` (n,)."""
        if self._cached is None or self._cached[0] != epoch:
            order = np.random.default_rng([int(self.seed), int(epoch)]).permutation(self.n)
            self._cached = (epoch, order.astype(np.int32))
        return self._cached[1]

    def rows(self, iteration: int) -> np.ndarray:
        """The rows (batch,) int32 of iteration ``iteration``'s batch."""
        epoch, j = divmod(int(iteration), self.per_epoch)
        return self.permutation(epoch)[j * self.batch:(j + 1) * self.batch]


NO_ROWS = np.zeros(0, np.int32)
"""What a full-batch step takes in place of a batch's rows (it draws nothing)."""


def draw_batch(rows: Any, *arrays: Any) -> tuple[Any, ...]:
    """The rows ``rows`` (batch,) (:meth:`BatchOrder.rows`) of each array's leading axis.
    Traceable; traced under :func:`on_mesh` the rows are placed split over the ``samples``
    axis (a gather alone would leave them replicated), so a batch is sharded as the full
    data is. The rows index the real samples (the first ones of padded :class:`Weighted`
    arrays, whose draws are plain arrays: no padding is left in a batch)."""
    out = tuple(rows_of(a)[rows] for a in arrays)
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or SAMPLES not in mesh.axis_names:
        return out
    return tuple(jax.lax.with_sharding_constraint(r, PartitionSpec(SAMPLES)) for r in out)


def shardings(mesh: Mesh | None) -> tuple[Any, Any]:
    """``(samples, replicated)``: the shardings of per-sample arrays (split along the
    leading axis) and of everything else (a full copy on every device); ``(None, None)``
    without a mesh (JAX places the arrays)."""
    if mesh is None:
        return None, None
    return NamedSharding(mesh, PartitionSpec(SAMPLES)), NamedSharding(mesh, PartitionSpec())


def describe(mesh: Mesh | None) -> dict[str, Any]:
    """What ``meta.json`` records about the devices used."""
    devices = list(mesh.devices.flat) if mesh is not None else [jax.devices()[0]]
    return {"count": len(devices), "platform": devices[0].platform,
            "kinds": sorted({d.device_kind for d in devices}),
            "processes": jax.process_count()}
