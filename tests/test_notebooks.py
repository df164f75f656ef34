"""Every notebook runs top to bottom, so the tutorials cannot rot.

The notebooks are jupytext percent-format scripts (``notebooks/*.py``). Each one runs as
``python notebooks/X.py`` in a fresh process, in a temporary working directory, with
``CONTROLDL_NOTEBOOK_QUICK=1`` (small data and budgets) and its figures written under
the temporary directory. Most of a quick run is XLA compiling, which uses one core, so
the notebooks run side by side, as many at a time as there are cores.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.py"))


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 4, NOTEBOOKS


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_a_jupytext_percent_script(notebook):
    text = notebook.read_text(encoding="utf-8")
    assert "# %% [markdown]" in text and "\n# %%\n" in text, "no percent-format cells"
    assert "CONTROLDL_NOTEBOOK_QUICK" in text, "no quick mode for the tests"


def run_notebook(notebook: Path, workdir: Path) -> subprocess.CompletedProcess:
    """``python notebook`` in quick mode, in ``workdir`` (figures under workdir/figures)."""
    env = {**os.environ, "CONTROLDL_NOTEBOOK_QUICK": "1",
           "CONTROLDL_NOTEBOOK_OUT": str(workdir / "figures"), "MPLBACKEND": "Agg"}
    env.pop("XLA_FLAGS", None)
    return subprocess.run([sys.executable, str(notebook)], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def notebook_runs(request, tmp_path_factory):
    """Start every selected notebook at once (``os.cpu_count()`` at a time);
    ``{name: (workdir, future)}``."""
    pool = ThreadPoolExecutor(max_workers=max(os.cpu_count() or 1, 1))
    runs: dict[str, tuple[Path, Future]] = {}
    chosen = [item.callspec.params["notebook"] for item in request.session.items
              if getattr(item, "originalname", None) == "test_notebook_runs"
              and hasattr(item, "callspec")]
    for nb in chosen:
        workdir = tmp_path_factory.mktemp(nb.stem)
        runs[nb.name] = (workdir, pool.submit(run_notebook, nb, workdir))
    yield runs
    pool.shutdown(wait=True, cancel_futures=True)


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(notebook, notebook_runs):
    workdir, future = notebook_runs[notebook.name]
    proc = future.result()
    assert proc.returncode == 0, (
        f"{notebook.name} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n"
        f"{proc.stderr[-3000:]}")
    figures = list((workdir / "figures").rglob("*.png"))
    assert figures, f"{notebook.name} saved no figure under {workdir / 'figures'}"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_reads_as_a_notebook(notebook):
    jupytext = pytest.importorskip("jupytext")  # installed with the docs extra
    nb = jupytext.read(notebook)
    kinds = {cell.cell_type for cell in nb.cells}
    assert kinds == {"markdown", "code"}, kinds
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
