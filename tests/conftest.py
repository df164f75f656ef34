"""Shared fixtures. Tests run in float64 (set here; importing controldl changes nothing).

The experiments' quick run (``python -m experiments.run_all --quick``, a few minutes of one
core) is started in a child process when the tests start running, if one of the selected
tests needs it (never during collection), so it runs on the second core while the other
tests run; ``tests/test_experiments.py`` waits for it.
"""

import dataclasses
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pytest

import controldl

jax.config.update("jax_enable_x64", True)


@pytest.fixture
def ring_small():
    return controldl.data.ring(60, seed=0)


@pytest.fixture
def ring_file(tmp_path):
    d = controldl.data.ring(600, seed=0)
    path = tmp_path / "ring.npz"
    np.savez(path, X=d.X_train, y=d.y_train)
    return path


ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass
class QuickRun:
    """The experiments' quick run in its child process: its output directory, the process
    and its log (an open file)."""

    out: Path
    proc: subprocess.Popen
    log: Any


QUICK_RUN = pytest.StashKey[QuickRun]()


def _needs_quick_run(item: pytest.Item) -> bool:
    return "quick_run" in getattr(item, "fixturenames", ())


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests that wait for the quick run go last, so it has the longest head start."""
    items.sort(key=_needs_quick_run)  # stable: the order is kept otherwise


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> None:
    """Start the quick run as the tests start (not during collection), if one needs it."""
    if session.config.option.collectonly or not any(map(_needs_quick_run, session.items)):
        return
    out = Path(tempfile.mkdtemp(prefix="controldl-experiments-")) / "quick"
    # JAX's persistent compilation cache kept in pytest's cache directory: a later run of
    # the tests compiles less (results do not depend on it).
    cache = session.config.cache.mkdir("controldl-jax")
    log = open(out.parent / "run_all.log", "w+")  # noqa: SIM115 (closed at the end)
    proc = subprocess.Popen(
        [sys.executable, "-m", "experiments.run_all", "--quick", "--out", str(out),
         "--jax-cache", str(cache)],
        stdout=log, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    session.config.stash[QUICK_RUN] = QuickRun(out, proc, log)


def pytest_sessionfinish(session: pytest.Session) -> None:
    run = session.config.stash.get(QUICK_RUN, None)
    if run is None:
        return
    if run.proc.poll() is None:
        run.proc.kill()
        run.proc.wait()
    run.log.close()
    shutil.rmtree(run.out.parent, ignore_errors=True)


@pytest.fixture(scope="session")
def quick_run(request):
    """``(out, returncode, log)`` of the experiments' quick run, waited for."""
    run = request.config.stash[QUICK_RUN]
    returncode = run.proc.wait(timeout=1800)
    run.log.seek(0)
    return run.out, returncode, run.log.read()
