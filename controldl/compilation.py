"""JAX's persistent compilation cache, on request.

The command line, the experiments and the benchmarks turn it on for their processes
(:func:`enable_compilation_cache` with :func:`cache_dir_from_env`); the library never does
so on import. ``CONTROLDL_CACHE_DIR`` moves the cache, ``CONTROLDL_CACHE_DIR=off``
disables it.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import os
import pickle
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from controldl.io import write_bytes

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
    if jax.config.values.get("jax_compilation_cache_dir") != str(path):
        from jax.experimental.compilation_cache import compilation_cache

        jax.config.update("jax_compilation_cache_dir", str(path))
        compilation_cache.reset_cache()  # JAX reads the directory once: point it here now
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


class CompileCache:
    """Compiled executables keyed by what determines them (formulation, solver options,
    shapes, dtypes, placement), so that a second solve of the same kind does not compile
    again. Least recently used entries are dropped beyond ``maxsize``."""

    def __init__(self, maxsize: int = 128) -> None:
        self.maxsize = maxsize
        self.builds = 0  # how many values get() has built; never reset (compilations)
        self._entries: collections.OrderedDict[Any, Any] = collections.OrderedDict()

    def __len__(self) -> int:
        """The number of entries held now."""
        return len(self._entries)

    def get(self, key: Any, build: Callable[[], Any]) -> Any:
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key]
        value = build()
        self.builds += 1
        self._entries[key] = value
        if len(self._entries) > self.maxsize:
            self._entries.popitem(last=False)
        return value

    def clear(self) -> None:
        self._entries.clear()


COMPILED = CompileCache()
"""The process-wide cache of compiled solver steps (like ``jax.jit``'s own cache)."""


def signature(tree: Any) -> tuple:
    """Shapes, dtypes and placements of the leaves of ``tree``, and its structure."""
    import jax

    leaves, structure = jax.tree.flatten(tree)
    return tuple((tuple(a.shape), str(a.dtype), str(getattr(a, "sharding", None)))
                 for a in leaves) + (str(structure),)


EXECUTABLES = "controldl-executables"
"""The folder, inside JAX's persistent cache directory, of the compiled steps controldl
saves itself (:func:`compile_or_load`)."""


JAX_CACHE_HIT = "/jax/compilation_cache/cache_hits"
"""The event JAX records when its persistent cache returns a compiled program."""


def compile_or_load(fn: Any, args: tuple | Callable[[], tuple], key: Any,
                    compiler_options: dict[str, Any] | None = None) -> Any:
    """``jax.jit(fn).lower(*args).compile(compiler_options)``, or that executable as saved
    by an earlier process under ``key``. ``args`` (arrays or ``jax.ShapeDtypeStruct``) may
    be a function that returns them, called only when the program is compiled.

    With JAX's persistent cache on (:func:`enable_compilation_cache`), a new process still
    traces and lowers every program before JAX's cache can find it. controldl's compiled
    steps are also saved, serialized, in the cache directory's :data:`EXECUTABLES` folder
    under a digest of ``key`` (what the caller's in-memory cache uses: the structure,
    shapes, dtypes and placements of ``args``) and of :func:`code_fingerprint` (controldl's
    source, the library versions, the devices and JAX's settings), with the devices they
    were compiled for (:func:`executable_devices`), so that a later process loads them
    onto those devices without tracing. Without the persistent cache this is a plain compile. A
    file that cannot be read is compiled again and replaced. Only an executable that XLA
    compiled here is saved: one that JAX's cache returned (deserialized) serializes without
    its compiled functions, and loading that would fail when it runs.
    """
    import jax

    def build() -> Any:
        lowered = jax.jit(fn).lower(*(args() if callable(args) else args))
        return interruptible(lambda: lowered.compile(compiler_options))

    directory = jax.config.values.get("jax_compilation_cache_dir")
    if not directory or not jax.config.values.get("jax_enable_compilation_cache", True):
        return build()
    digest = hashlib.sha256(repr((key, compiler_options, code_fingerprint())).encode())
    path = Path(directory) / EXECUTABLES / f"{digest.hexdigest()}.bin"
    loaded = _load_executable(path)
    if loaded is not None:
        return loaded
    hits: list[str] = []

    def listen(event: str, **_: Any) -> None:
        if event == JAX_CACHE_HIT:
            hits.append(event)

    jax.monitoring.register_event_listener(listen)
    try:
        compiled = build()
    finally:
        unregister_listener(listen)
    if not hits:  # an executable JAX's cache returned does not serialize whole again
        _save_executable(path, compiled)
    return compiled


def unregister_listener(listen: Callable[..., Any], kind: str = "event") -> None:
    """Remove a ``jax.monitoring`` listener of ``kind`` (``event`` or ``event_duration``):
    ``jax.monitoring.unregister_{kind}_listener``, or the private function that JAX
    before 0.7.2 (the newest that installs beside numpy < 2, e.g. with the ``mnist``
    extra) has in its place."""
    import jax

    remove = getattr(jax.monitoring, f"unregister_{kind}_listener", None)
    if remove is None:
        from jax._src import monitoring

        remove = getattr(monitoring, f"_unregister_{kind}_listener_by_callback")
    remove(listen)


_UNFINISHED: set[threading.Thread] = set()
"""The workers of :func:`interruptible` whose compilation has not returned."""


def compiling_in_background() -> bool:
    """Whether a compilation that :func:`interruptible` left behind is still running."""
    return bool(_UNFINISHED)


def interruptible(work: Callable[[], Any], poll_s: float = 0.05) -> Any:
    """``work()`` in a worker thread while the main thread waits in short slices, so that
    a signal handler (Ctrl-C, SIGTERM) runs during a long compilation and may stop the
    program: Python runs handlers only in the main thread, between bytecodes, which a
    compilation in the main thread would defer until it ends. When the wait is
    interrupted the worker is left to finish (:func:`compiling_in_background`; the
    interpreter waits for it at exit, and the command line ends its process at once).
    The wait is on an event, not on ``Thread.join``, which an interruption can leave
    believing the thread has ended. Outside the main thread ``work()`` runs directly."""
    if threading.current_thread() is not threading.main_thread():
        return work()
    result: dict[str, Any] = {}
    done = threading.Event()

    def target() -> None:
        try:
            result["value"] = work()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            result["error"] = exc
        finally:
            _UNFINISHED.discard(worker)
            done.set()

    worker = threading.Thread(target=target, name="controldl-compile")
    _UNFINISHED.add(worker)
    worker.start()
    while not done.wait(poll_s):
        pass
    if "error" in result:
        raise result["error"]
    return result["value"]


def _load_executable(path: Path) -> Any:
    """The executable saved at ``path`` on the devices it was compiled for, or ``None``
    (absent, unreadable, or those devices are not all present)."""
    import jax
    from jax.experimental import serialize_executable

    try:
        payload, in_tree, out_tree, device_ids = pickle.loads(path.read_bytes())
        by_id = {d.id: d for d in jax.devices()}
        devices = [by_id[i] for i in device_ids]
        return serialize_executable.deserialize_and_load(payload, in_tree, out_tree,
                                                         execution_devices=devices)
    except Exception:  # noqa: BLE001 - absent, stale or corrupt: compile again
        return None


def executable_devices(compiled: Any) -> list[int]:
    """The ids of the devices ``compiled`` runs on, in its device assignment's order.

    ``deserialize_and_load`` places an executable on *every* device of the backend unless
    told which: a program compiled for one device (or two of four) and loaded in a
    process that sees four expects four shards of every argument and fails ("Expected
    args to execute_sharded_on_local_devices to have 4 shards, got: [1]"). So the
    assignment is saved with the executable and given back when it is loaded."""
    return [int(d.id) for d in compiled._executable._unloaded_executable.device_list]


def calls_external_kernels(compiled: Any) -> bool:
    """Whether the compiled program calls kernels outside XLA (custom calls: LAPACK's
    SVD, eigendecompositions and Cholesky, FFTs). jaxlib binds those kernels while it
    lowers a program, so an executable that holds them cannot run in a process that
    loads it without lowering (it crashes); such programs are never saved."""
    try:
        text = compiled.as_text()
    except Exception:  # noqa: BLE001 - unknown contents: treat as unsafe
        return True
    return "custom_call_target" in text or "custom-call" in text


def _save_executable(path: Path, compiled: Any) -> None:
    """Serialize ``compiled`` to ``path`` atomically (a temporary name, then a rename);
    an executable that calls external kernels (:func:`calls_external_kernels`), cannot be
    serialized or a cache that cannot be written is skipped."""
    from jax.experimental import serialize_executable

    if calls_external_kernels(compiled):
        return
    try:
        payload = (*serialize_executable.serialize(compiled), executable_devices(compiled))
        write_bytes(path, pickle.dumps(payload))
    except Exception:  # noqa: BLE001 - the cache is an optimization only
        return


def code_fingerprint() -> str:
    """A digest of what a compiled program depends on besides its inputs: every source
    file of controldl, the versions of jax, jaxlib, optax and numpy, the devices, this
    process's index among the processes of a distributed run (each process serializes
    its own part of a program that spans several: loading another's fails in the
    collectives), JAX's settings (as they are now) and ``XLA_FLAGS``."""
    import jax
    import jaxlib
    import numpy
    import optax

    devices = [(d.platform, d.device_kind, d.id, d.process_index) for d in jax.devices()]
    process = (jax.process_index(), jax.process_count())
    settings = sorted((k, repr(v)) for k, v in jax.config.values.items())
    return hashlib.sha256(repr((
        _source_digest(), jax.__version__, jaxlib.__version__, optax.__version__,
        numpy.__version__, devices, process, settings,
        os.environ.get("XLA_FLAGS"))).encode()).hexdigest()


@functools.lru_cache(maxsize=1)
def _source_digest() -> str:
    """A digest of every source file of the controldl package (read once per process)."""
    h = hashlib.sha256()
    root = Path(__file__).resolve().parent
    for source in sorted(root.rglob("*.py")):
        h.update(str(source.relative_to(root)).encode())
        h.update(source.read_bytes())
    return h.hexdigest()
