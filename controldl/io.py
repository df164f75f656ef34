"""Writing files safely: atomic writes (a temporary name beside the target, then a rename)
and JSON with NumPy/JAX values.

A reader never sees a half-written file or directory: :func:`write_json` writes a file
under a temporary name in the same directory and renames it into place
(``os.replace``); :func:`atomic_directory` does the same for a whole directory. On any
error, the temporary is removed and the target is left as it was.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


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


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (temporary file beside it, then rename);
    the parent directory is created."""
    return _write_atomic(path, text, "w")


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """:func:`write_text` for bytes."""
    return _write_atomic(path, data, "wb")


def _write_atomic(path: str | os.PathLike, data: str | bytes, mode: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> Path:
    """Write :func:`jsonable` of ``obj`` to ``path`` as JSON, atomically (strict JSON:
    non-finite numbers are ``null``)."""
    return write_text(path, json.dumps(jsonable(obj), indent=indent, allow_nan=False))


def atomic_directory(directory: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp)`` on a fresh temporary directory beside ``directory``, then rename
    it to ``directory`` (replacing an existing one). On any error nothing is left behind."""
    target = Path(directory).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        write(tmp)
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            old.rmdir()
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
