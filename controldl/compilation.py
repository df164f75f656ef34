"""JAX's persistent compilation cache, on request.

The command line, the experiments and the benchmarks turn it on for their processes
(:func:`enable_compilation_cache` with :func:`cache_dir_from_env`); the library never does
so on import. ``CONTROLDL_CACHE_DIR`` moves the cache, ``CONTROLDL_CACHE_DIR=off``
disables it.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "CONTROLDL_CACHE_DIR"
"""The environment variable that moves (a path) or disables (``off``) the cache."""

_OFF = ("off", "none", "0", "false", "")

RUN_ONCE_OPTIONS: dict[str, int] = {"xla_backend_optimization_level": 0}
"""XLA compiler options for programs that run once per solve (the initialization, the
optimizer's initial state, the final evaluation): the backend's (LLVM's) optimization
passes are skipped, which compiles such a program several times faster. The results agree
with the optimized program's to round-off (fused multiply-adds differ), not bit for bit."""


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/controldl/jax`` (``~/.cache/controldl/jax`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "controldl" / "jax"


def cache_dir_from_env(override: str | None = None) -> Path | None:
    """The cache directory chosen by ``override`` (a path or ``off``), else by
    ``CONTROLDL_CACHE_DIR``, else :func:`default_cache_dir`; ``None`` when disabled."""
    value = override if override is not None else os.environ.get(CACHE_ENV)
    if value is None:
        return default_cache_dir()
    if str(value).strip().lower() in _OFF:
        return None
    return Path(value).expanduser()


def enable_compilation_cache(directory: str | os.PathLike | None = None) -> Path | None:
    """Turn on JAX's persistent compilation cache in ``directory`` (default: from the
    environment, see :func:`cache_dir_from_env`) for every program, however quickly it
    compiled. Returns the directory, or ``None`` when the cache is disabled.

    Raises:
        ValueError: the directory cannot be created.
    """
    import jax

    path = cache_dir_from_env(None if directory is None else str(directory))
    if path is None:
        return None
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"cannot create the compilation cache directory {path}: "
                         f"{exc.strerror}") from None
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path
