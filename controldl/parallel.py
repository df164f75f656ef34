"""Data parallelism with ``jax.sharding``: samples split over a mesh of devices, controls
replicated.

The JAX solvers place the initial states and targets with :func:`shard_samples` and the
parameters with :func:`replicate`; ``jax.jit`` then partitions every per-sample
computation (states, costates, losses) across the devices and inserts the reductions
(the means over samples) itself. Nothing else changes, so the result equals the
single-device one up to the order of floating-point sums.

Several hosts: start every process with ``jax.distributed.initialize()`` (coordinator
address, number of processes, process id — or nothing on a managed cluster), then
``jax.devices()`` lists the devices of all hosts and ``devices=jax.device_count()``
shards over all of them. See ``docs/scale.md``.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

SAMPLES = "samples"


def data_mesh(devices: int | None) -> Mesh | None:
    """A one-axis mesh over the first ``devices`` devices (``None``: no sharding)."""
    if devices is None:
        return None
    available = jax.devices()
    if not isinstance(devices, int | np.integer) or devices < 1:
        raise ValueError(f"devices must be a positive integer, got {devices!r}")
    if devices > len(available):
        raise ValueError(
            f"{devices} devices requested but JAX sees {len(available)} "
            f"({available[0].platform}); on a CPU set "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={devices} before starting")
    return Mesh(np.array(available[:devices]), (SAMPLES,))


def shard_samples(mesh: Mesh | None, *arrays: Any) -> tuple[Any, ...]:
    """Split the leading (sample) axis of each array over the mesh."""
    if mesh is None:
        return arrays
    k = mesh.devices.size
    n = arrays[0].shape[0]
    if n % k:
        raise ValueError(f"{n} samples cannot be split evenly over {k} devices; use a number "
                         f"of samples divisible by {k}")
    sharding = NamedSharding(mesh, PartitionSpec(SAMPLES))
    return tuple(jax.device_put(a, sharding) for a in arrays)


def replicate(mesh: Mesh | None, tree: Any) -> Any:
    """Put a copy of every leaf on every device of the mesh."""
    if mesh is None:
        return tree
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


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
