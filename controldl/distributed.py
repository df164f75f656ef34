"""Several processes with ``jax.distributed``: the coordinator variables and a local launch.

A run of P processes is the same command started P times, each with

- ``CONTROLDL_COORDINATOR``: ``host:port`` of process 0 (it serves the coordinator), or
  ``auto`` on a cluster that JAX detects itself (SLURM, Cloud TPU, …);
- ``CONTROLDL_NUM_PROCESSES``: P;
- ``CONTROLDL_PROCESS_ID``: this process's index, 0 … P−1.

:func:`initialize_from_env` turns them into ``jax.distributed.initialize`` (before any
JAX computation); the JAX solvers then shard the samples over the devices of every
process (:mod:`controldl.parallel`). :func:`launch` starts P such processes on this
machine (``controldl train --processes P``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import NamedTuple

COORDINATOR = "CONTROLDL_COORDINATOR"
NUM_PROCESSES = "CONTROLDL_NUM_PROCESSES"
PROCESS_ID = "CONTROLDL_PROCESS_ID"


class Coordinates(NamedTuple):
    """Where this process belongs: the coordinator ``address`` (``None``: JAX detects the
    cluster), the number of processes and this process's index (``None`` with auto)."""

    address: str | None
    num_processes: int | None
    process_id: int | None


def coordinates(env: Mapping[str, str]) -> Coordinates | None:
    """The :class:`Coordinates` the environment gives, ``None`` without
    ``CONTROLDL_COORDINATOR``; ValueError on a malformed value."""
    address = env.get(COORDINATOR)
    if not address:
        return None
    if address == "auto":
        return Coordinates(None, None, None)
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"{COORDINATOR} must be host:port or auto, got {address!r}")
    numbers = []
    for name in (NUM_PROCESSES, PROCESS_ID):
        text = env.get(name, "")
        if not text.isdigit():
            raise ValueError(f"{name} must be a non-negative integer with {COORDINATOR}, "
                             f"got {text!r}")
        numbers.append(int(text))
    count, index = numbers
    if count < 1 or index >= count:
        raise ValueError(f"{PROCESS_ID}={index} must be below {NUM_PROCESSES}={count}")
    return Coordinates(address, count, index)


def initialize_from_env(env: Mapping[str, str] | None = None) -> bool:
    """``jax.distributed.initialize`` from the coordinator variables; whether it ran
    (``False`` without them, or when this process is already initialized)."""
    found = coordinates(os.environ if env is None else env)
    if found is None:
        return False
    import jax

    if jax.distributed.is_initialized():
        return False
    jax.distributed.initialize(found.address, found.num_processes, found.process_id)
    return True


def free_port() -> int:
    """A TCP port on localhost that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(argv: Sequence[str], processes: int, poll_s: float = 0.1) -> int:
    """Run ``python -m controldl *argv`` as ``processes`` processes on this machine,
    coordinated on a free localhost port; process 0 keeps this terminal's output, the
    others are silent. Returns process 0's exit code, or the first failing one's; when a
    process fails the others are stopped (they would wait for it)."""
    if processes < 1:
        raise ValueError(f"processes must be >= 1, got {processes}")
    address = f"127.0.0.1:{free_port()}"
    children = []
    for i in range(processes):
        env = {**os.environ, COORDINATOR: address, NUM_PROCESSES: str(processes),
               PROCESS_ID: str(i)}
        quiet = {} if i == 0 else {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        children.append(subprocess.Popen([sys.executable, "-m", "controldl", *argv],
                                         env=env, **quiet))
    try:
        while True:
            codes = [c.poll() for c in children]
            failed = [(i, rc) for i, rc in enumerate(codes) if rc not in (None, 0)]
            if failed or all(rc == 0 for rc in codes):
                break
            time.sleep(poll_s)
    finally:
        for c in children:
            if c.poll() is None:
                c.terminate()
        for c in children:
            try:
                c.wait(timeout=10)
            except subprocess.TimeoutExpired:
                c.kill()
    if not failed:
        return 0
    index, code = failed[0]
    if index != 0:
        print(f"controldl: process {index} of {processes} failed (exit code {code})",
              file=sys.stderr)
    return code
