"""Writing files safely: atomic writes (a temporary name beside the target, then a rename),
output directories that never destroy what they do not own, and JSON with NumPy/JAX values.

A reader never sees a half-written file or directory: :func:`write_json` writes a file
under a temporary name in the same directory and renames it into place
(``os.replace``); :func:`atomic_directory` does the same for a whole directory. On any
error, the temporary is removed and the target is left as it was.

**Output directories** (:func:`check_output`): controldl writes a new directory, or
replaces one that is recognizably a previous controldl output of the same *kind*: its
record file (:data:`OUTPUT_RECORDS`, e.g. a solution's ``meta.json``) carries the key
:data:`OUTPUT_KEY` with that kind, written by :func:`marked`. Anything else — a non-empty
directory that is not ours, a file, another kind of output — is refused
(:class:`OutputRefused`, a ``ValueError``) unless ``overwrite`` is given. Never replaced,
even with ``overwrite``: the working directory or one of its parents, the home directory,
the file system's root, and a directory that holds one of the command's inputs (``keep``).

**Modes**: every file and directory is created as ``open()`` and ``mkdir()`` create them,
under the process's umask (files ``0o666 & ~umask``, directories ``0o777 & ~umask``).

**Temporaries** are named ``.NAME.tmp-<hex>-<pid>-<host>`` (a replaced directory,
briefly, ``.NAME.old-…``). A process killed while writing leaves one behind; the next
write of ``NAME`` removes it (:func:`remove_stale`) once its process is gone (same
host), or once it is older than :data:`STALE_AFTER_S`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

OUTPUT_KEY = "output_kind"
"""The key, in an output's record file, that says which kind of controldl output the
directory is."""

OUTPUT_RECORDS: dict[str, str] = {
    "solution": "meta.json",
    "comparison": "results.json",
    "turnpike": "turnpike.json",
    "figures": "figures.json",
    "checkpoint": "state.json",
}
"""Every kind of output directory controldl writes, and the JSON file in it that records
the kind (:data:`OUTPUT_KEY`)."""

STALE_AFTER_S: float = 86400.0
"""A temporary whose process cannot be checked (another host, an older naming) is stale
after this many seconds."""

_TEMPORARY = re.compile(r"^(?P<hex>[0-9a-f]{8})-(?P<pid>\d+)-(?P<host>.*)$")


class OutputRefused(ValueError):
    """An output path controldl will not write to (see the module docstring)."""


def jsonable(x: Any) -> Any:
    """Convert NumPy/JAX scalars and arrays to JSON; non-finite floats become ``None``
    (other objects, paths included, become their ``str``)."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [jsonable(v) for v in x]
    if isinstance(x, bool | np.bool_):
        return bool(x)
    if isinstance(x, int | np.integer):
        return int(x)
    if isinstance(x, float | np.floating):
        return float(x) if math.isfinite(x) else None
    if hasattr(x, "shape") and hasattr(x, "tolist"):
        return jsonable(np.asarray(x).tolist())
    if x is None or isinstance(x, str):
        return x
    return str(x)


# --------------------------------------------------------------------------- temporaries


def _temporary_name(name: str, what: str = "tmp") -> str:
    """``.NAME.tmp-<hex>-<pid>-<host>``: a fresh name that says whose it is."""
    return f".{name}.{what}-{secrets.token_hex(4)}-{os.getpid()}-{socket.gethostname()}"


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process
        return True
    return True


def _stale(entry: os.DirEntry, suffix: str, now: float) -> bool:
    """Whether the temporary ``entry`` (its name after ``.NAME.tmp-``: ``suffix``) was
    left by a process that is gone, or is older than :data:`STALE_AFTER_S`."""
    found = _TEMPORARY.match(suffix)
    if found and found["host"] == socket.gethostname() and not _alive(int(found["pid"])):
        return True
    try:
        return now - entry.stat(follow_symlinks=False).st_mtime > STALE_AFTER_S
    except OSError:
        return False


def _remove(path: str | os.PathLike) -> None:
    """Remove a file or a directory tree (nothing if absent)."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def remove_stale(parent: str | os.PathLike, name: str) -> list[str]:
    """Remove the temporaries of ``parent/name`` (``.NAME.tmp-*``, ``.NAME.old-*``) that a
    killed process left (see the module docstring); the names removed."""
    removed, now = [], time.time()
    prefixes = (f".{name}.tmp-", f".{name}.old-")
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return removed
    for entry in entries:
        prefix = next((p for p in prefixes if entry.name.startswith(p)), None)
        if prefix is not None and _stale(entry, entry.name[len(prefix):], now):
            _remove(entry.path)
            removed.append(entry.name)
    return removed


# --------------------------------------------------------------------------- files


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (temporary file beside it, then rename);
    the parent directory is created."""
    return _write_atomic(path, text.encode())


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """:func:`write_text` for bytes."""
    return _write_atomic(path, data)


def _write_atomic(path: str | os.PathLike, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path.parent, path.name)
    tmp = path.parent / _temporary_name(path.name)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # mode: the umask's
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> Path:
    """Write :func:`jsonable` of ``obj`` to ``path`` as JSON, atomically (strict JSON:
    non-finite numbers are ``null``)."""
    return write_text(path, json.dumps(jsonable(obj), indent=indent, allow_nan=False))


# --------------------------------------------------------------------------- outputs


def marked(kind: str, record: Mapping[str, Any]) -> dict[str, Any]:
    """``record`` with the output kind first (:data:`OUTPUT_KEY`): what the record file of
    an output of ``kind`` (:data:`OUTPUT_RECORDS`) holds."""
    if kind not in OUTPUT_RECORDS:
        raise ValueError(f"unknown output kind {kind!r}; expected one of "
                         f"{', '.join(OUTPUT_RECORDS)}")
    return {OUTPUT_KEY: kind, **{k: v for k, v in record.items() if k != OUTPUT_KEY}}


def _recorded_kind(directory: Path) -> str | None:
    for kind, name in OUTPUT_RECORDS.items():
        try:
            record = json.loads((directory / name).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and record.get(OUTPUT_KEY) == kind:
            return kind
    return None


def output_kind(directory: str | os.PathLike) -> str | None:
    """The kind of controldl output ``directory`` is, as its record file says (``None``:
    none says so). A directory holding only the ``checkpoint/`` of an unfinished solve is
    a ``solution``."""
    directory = Path(directory)
    kind = _recorded_kind(directory)
    if kind is None and _entries(directory) == ["checkpoint"]:
        if _recorded_kind(directory / "checkpoint") == "checkpoint":
            return "solution"
    return kind


def _entries(directory: Path) -> list[str]:
    try:
        return sorted(os.listdir(directory))
    except OSError:
        return []


def _never_replaced(target: Path, shown: str, keep: Iterable[Any]) -> None:
    """Refuse, whatever ``overwrite`` says, a target whose replacement would destroy the
    working directory, the home directory, the root or an input."""
    cwd = Path.cwd().resolve()
    if target == cwd or target in cwd.parents:
        raise OutputRefused(f"output directory {shown!r} is the working directory or one of "
                            "its parents: choose a new directory")
    if target == Path.home().resolve() or target.parent == target:
        raise OutputRefused(f"output directory {shown!r} is the home directory or the root: "
                            "choose a new directory")
    for path in keep:
        kept = Path(path).expanduser().resolve()
        if kept == target or target in kept.parents:
            raise OutputRefused(f"output directory {shown!r} holds the input {str(path)!r}, "
                                "which is never replaced: choose another directory")


def _check_parent(target: Path, shown: str) -> None:
    """The nearest existing ancestor of ``target`` must be a directory we can create
    entries in (tried: a probe directory is made and removed)."""
    parent = target.parent
    while not os.path.lexists(parent) and parent.parent != parent:
        parent = parent.parent
    if not parent.is_dir():
        raise OutputRefused(f"cannot create output directory {shown!r}: {str(parent)!r} is "
                            "not a directory")
    probe = parent / _temporary_name(target.name)
    try:
        os.mkdir(probe)
        os.rmdir(probe)
    except OSError as exc:
        raise OutputRefused(f"cannot create output directory {shown!r}: cannot write in "
                            f"{str(parent)!r} ({exc.strerror or exc})") from None


def check_output(directory: str | os.PathLike, kind: str, *, overwrite: bool = False,
                 keep: Iterable[Any] = (), flag: str = "overwrite=True") -> Path:
    """The absolute path of ``directory`` if an output of ``kind`` may be written there:
    it does not exist, is an empty directory or a previous output of ``kind``
    (:func:`output_kind`); anything else only with ``overwrite``. Never (even with
    ``overwrite``): the working directory or a parent of it, the home directory, the root,
    a directory that holds a path of ``keep`` (the inputs). ``flag`` is how the refusal
    names the way to overwrite (``--overwrite`` for the command line). Changes nothing.

    Raises:
        OutputRefused: (a ``ValueError``) with one line saying why and what to do.
    """
    if kind not in OUTPUT_RECORDS:
        raise ValueError(f"unknown output kind {kind!r}")
    shown = str(directory)
    target = Path(directory).expanduser().resolve()
    _never_replaced(target, shown, keep)
    if os.path.lexists(target) and not target.is_dir():
        if not overwrite:
            raise OutputRefused(f"output directory {shown!r} is an existing file: choose "
                                f"another path, or pass {flag} to replace the file")
    elif target.is_dir() and _entries(target) and not overwrite:
        found = output_kind(target)
        if found != kind:
            what = (f"holds a controldl {found} output, not a {kind}" if found else
                    f"is not empty and is not a controldl {kind} output (no "
                    f"{OUTPUT_RECORDS[kind]} that says so)")
            raise OutputRefused(f"output directory {shown!r} {what}: choose a new "
                                f"directory, or pass {flag} to replace it")
    _check_parent(target, shown)
    return target


def atomic_directory(directory: str | os.PathLike, write: Callable[[Path], Any], *,
                     kind: str, overwrite: bool = False, keep: Iterable[Any] = ()) -> Path:
    """Call ``write(tmp)`` on a fresh temporary directory beside ``directory``, then rename
    it to ``directory``, replacing what is there only as :func:`check_output` allows
    (checked before ``write`` and again before the rename). ``write`` must record the
    output's ``kind`` (its :data:`OUTPUT_RECORDS` file, :func:`marked`). On any error
    nothing is left behind and the target is unchanged; stale temporaries of the target
    that a killed process left are removed first (:func:`remove_stale`)."""
    keep = tuple(keep)
    target = check_output(directory, kind, overwrite=overwrite, keep=keep)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(target.parent, target.name)
    tmp = target.parent / _temporary_name(target.name)
    os.mkdir(tmp)  # mode: the umask's
    try:
        write(tmp)
        if _recorded_kind(tmp) != kind:
            raise RuntimeError(f"the writer of a {kind} output did not record its kind in "
                               f"{OUTPUT_RECORDS[kind]} (controldl.io.marked)")
        check_output(directory, kind, overwrite=overwrite, keep=keep)
        _replace(tmp, target)
    except BaseException:
        _remove(tmp)
        raise
    return target


def _replace(tmp: Path, target: Path) -> None:
    """Rename ``tmp`` to ``target``; an existing target is first renamed aside and removed
    after (put back if the second rename fails)."""
    if not os.path.lexists(target):
        os.rename(tmp, target)
        return
    old = target.parent / _temporary_name(target.name, "old")
    os.rename(target, old)
    try:
        os.rename(tmp, target)
    except BaseException:
        os.rename(old, target)
        raise
    _remove(old)
