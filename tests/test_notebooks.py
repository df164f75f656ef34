"""Every notebook runs top to bottom and shows its figures inline, so the tutorials cannot
rot.

Each notebook is a pair: ``notebooks/X.ipynb``, what a user opens in Jupyter, and the
jupytext percent-format script ``notebooks/X.py`` (what the site renders and a reader
diffs); the two hold the same cells, and the ``.ipynb`` is committed without outputs
(:func:`test_every_notebook_is_paired_and_in_sync`). Each ``.ipynb`` is executed as the
README says, ``jupyter nbconvert --to notebook --execute``, in a Jupyter kernel, in a
fresh process and a temporary working directory, with ``CONTROLDL_NOTEBOOK_QUICK=1``
(small data and budgets); the executed notebook must show at least one figure (an
``image/png`` output). Without nbconvert and ipykernel (the ``docs`` extra) the script
runs as ``python notebooks/X.py`` instead, which checks only that it runs. Most of a
quick run is XLA compiling, which uses one core, so the notebooks run side by side, as
many at a time as there are cores.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.py"))
NOTEBOOK_TIMEOUT_S = 600


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 4, NOTEBOOKS


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_a_jupytext_percent_script(notebook):
    text = notebook.read_text(encoding="utf-8")
    assert "# %% [markdown]" in text and "\n# %%\n" in text, "no percent-format cells"
    assert "CONTROLDL_NOTEBOOK_QUICK" in text, "no quick mode for the tests"


AS_NOTEBOOK = all(importlib.util.find_spec(m) is not None
                  for m in ("nbconvert", "nbclient", "ipykernel"))


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_every_notebook_is_paired_and_in_sync(notebook):
    """``X.ipynb`` beside ``X.py``, paired by jupytext (``formats: ipynb,py:percent``),
    with the same cells, and without outputs (``jupytext --sync notebooks/*.py`` after an
    edit of either)."""
    jupytext = pytest.importorskip("jupytext")  # installed with the docs extra
    paired = notebook.with_suffix(".ipynb")
    assert paired.is_file(), f"{paired.name} is missing: jupytext --sync {notebook.name}"
    script, book = jupytext.read(notebook), jupytext.read(paired)
    assert script.metadata["jupytext"]["formats"] == "ipynb,py:percent"
    assert book.metadata["jupytext"]["formats"] == "ipynb,py:percent"
    cells = lambda nb: [(c.cell_type, c.source) for c in nb.cells]  # noqa: E731
    assert cells(book) == cells(script), f"{paired.name} and {notebook.name} differ: sync them"
    raw = json.loads(paired.read_text(encoding="utf-8"))["cells"]
    assert not any(c.get("outputs") or c.get("execution_count") for c in raw), (
        f"{paired.name} is committed with outputs")


def run_notebook(notebook: Path, workdir: Path) -> subprocess.CompletedProcess:
    """Execute ``notebook`` in quick mode in ``workdir``: its ``.ipynb`` in a Jupyter kernel
    by ``jupyter nbconvert --execute`` (as the README says), writing
    ``workdir/executed.ipynb`` (or the script as a plain script without nbconvert)."""
    env = {**os.environ, "CONTROLDL_NOTEBOOK_QUICK": "1",
           "CONTROLDL_NOTEBOOK_OUT": str(workdir / "out")}
    env.pop("XLA_FLAGS", None)
    env.pop("MPLBACKEND", None)  # the kernel's own inline backend draws the figures
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    if AS_NOTEBOOK:  # a copy, so that the kernel's working directory is workdir
        copy = shutil.copy(notebook.with_suffix(".ipynb"), workdir / notebook.with_suffix(
            ".ipynb").name)
        argv = [sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
                f"--ExecutePreprocessor.timeout={NOTEBOOK_TIMEOUT_S}",
                "--output-dir", str(workdir), "--output", "executed.ipynb", str(copy)]
    else:
        env["MPLBACKEND"] = "Agg"
        argv = [sys.executable, str(notebook)]
    return subprocess.run(argv, cwd=workdir, env=env, capture_output=True, text=True,
                          timeout=NOTEBOOK_TIMEOUT_S)


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
    printed = proc.stdout
    if AS_NOTEBOOK:
        shown = inline_figures(workdir / "executed.ipynb")
        assert shown > 0, f"{notebook.name} shows no figure inline"
        printed = printed_text(workdir / "executed.ipynb")
    # a quick run says so where its output is shown (the site's CI build is quick)
    assert "QUICK RUN (CONTROLDL_NOTEBOOK_QUICK=1): reduced sizes" in printed, notebook.name


def printed_text(executed: Path) -> str:
    """Everything an executed notebook's cells printed (their ``stream`` outputs)."""
    cells = json.loads(executed.read_text(encoding="utf-8"))["cells"]
    return "".join("".join(out.get("text", "")) for cell in cells
                   for out in cell.get("outputs", []) if out.get("output_type") == "stream")


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_reads_as_a_notebook(notebook):
    jupytext = pytest.importorskip("jupytext")  # installed with the docs extra
    nb = jupytext.read(notebook)
    kinds = {cell.cell_type for cell in nb.cells}
    assert kinds == {"markdown", "code"}, kinds
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
