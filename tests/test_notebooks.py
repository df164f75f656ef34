"""Every notebook runs top to bottom and shows its figures inline, so the tutorials cannot
rot.

The notebooks are jupytext percent-format scripts (``notebooks/*.py``). Each one is
executed as a notebook, in a Jupyter kernel (``jupytext --execute``, as the site's build
does with mkdocs-jupyter), in a fresh process and a temporary working directory, with
``CONTROLDL_NOTEBOOK_QUICK=1`` (small data and budgets); the executed notebook must show
at least one figure (an ``image/png`` output). Without jupytext (the ``docs`` extra) a
notebook runs as ``python notebooks/X.py`` instead, which checks only that it runs. Most
of a quick run is XLA compiling, which uses one core, so the notebooks run side by side,
as many at a time as there are cores.
"""

from __future__ import annotations

import importlib.util
import json
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


AS_NOTEBOOK = all(importlib.util.find_spec(m) is not None
                  for m in ("jupytext", "nbclient", "ipykernel"))


def run_notebook(notebook: Path, workdir: Path) -> subprocess.CompletedProcess:
    """Execute ``notebook`` in quick mode in ``workdir``: in a Jupyter kernel, writing
    ``workdir/executed.ipynb`` (or as a plain script without jupytext)."""
    env = {**os.environ, "CONTROLDL_NOTEBOOK_QUICK": "1",
           "CONTROLDL_NOTEBOOK_OUT": str(workdir / "out")}
    env.pop("XLA_FLAGS", None)
    env.pop("MPLBACKEND", None)  # the kernel's own inline backend draws the figures
    if AS_NOTEBOOK:
        argv = [sys.executable, "-m", "jupytext", "--to", "ipynb", "--execute", "--run-path",
                str(workdir), "--output", str(workdir / "executed.ipynb"), str(notebook)]
    else:
        env["MPLBACKEND"] = "Agg"
        argv = [sys.executable, str(notebook)]
    return subprocess.run(argv, cwd=workdir, env=env, capture_output=True, text=True,
                          timeout=600)


def inline_figures(executed: Path) -> int:
    """The number of ``image/png`` outputs of an executed notebook."""
    cells = json.loads(executed.read_text(encoding="utf-8"))["cells"]
    return sum("image/png" in out.get("data", {})
               for cell in cells for out in cell.get("outputs", []))


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
    if AS_NOTEBOOK:
        shown = inline_figures(workdir / "executed.ipynb")
        assert shown > 0, f"{notebook.name} shows no figure inline"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_reads_as_a_notebook(notebook):
    jupytext = pytest.importorskip("jupytext")  # installed with the docs extra
    nb = jupytext.read(notebook)
    kinds = {cell.cell_type for cell in nb.cells}
    assert kinds == {"markdown", "code"}, kinds
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
