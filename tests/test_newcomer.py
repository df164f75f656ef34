"""A newcomer's first hour, walked through on a fresh copy of the repository.

What a fresh clone holds (the files git tracks or would track: no ``runs/``, no site, no
caches) is copied to a temporary directory, and there, as a new user would:

1. the README's quick start runs as written (its ``controldl`` commands: the bare
   ``controldl compare``), and writes what the README says;
2. one script makes every call of the first hour that used to fail (issue 27, item 7)
   and the first commands of the vocabulary of solver names (items 1–3), with the
   user's own arrays: a pair passed to ``train_test_split``, ``Problem(X, y,
   test_fraction=…)``, boolean labels, ``Dataset(X, y, X_test, y_test)``,
   ``solve(problem, "adam", lr=…)``, ``controls_figure(solution)``,
   ``history_figure([s1, s2])``, every figure of 3-feature data, ``load(…/arrays.npz)``,
   ``compare(…).table()`` / ``.save()``, ``compare --solvers a --solvers b``,
   ``train --solver adam``, and the one-line refusals of ``--solver emas`` and
   ``--optimizer lbfgs --lr 0.1``;
3. nothing was written into the copy outside the output directories named.

The finer points of each call have their own tests (test_plotting, test_data,
test_solution, test_compare, test_cli, test_options); this is the walk-through.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _execute_hook():
    import importlib.util

    spec = importlib.util.spec_from_file_location("controldl_docs_execute_newcomer",
                                                  ROOT / "docs" / "_hooks" / "execute.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def clone_files() -> list[str]:
    """The repository's files as a fresh clone would have them (tracked, or new and not
    ignored), relative to the root."""
    proc = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                          cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip("not a git checkout: no fresh clone to imitate")
    return [f for f in proc.stdout.splitlines() if (ROOT / f).exists()
            or (ROOT / f).is_symlink()]


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    where = tmp_path_factory.mktemp("clone") / "controldl"
    for name in clone_files():
        src, dst = ROOT / name, where / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            dst.symlink_to(os.readlink(src))
        else:
            shutil.copy2(src, dst)
    return where


def _env(clone: Path) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(clone), "MPLBACKEND": "Agg",
           "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("XLA_FLAGS", None)
    return env


def _files(where: Path) -> set[str]:
    return {str(p.relative_to(where)) for p in where.rglob("*")}


def quick_start(readme: str) -> list[list[str]]:
    """The ``controldl`` commands of the README's "Quick start" section, as argv lists."""
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    hook = _execute_hook()
    return [argv for lang, code, _, _ in hook.blocks(section) if lang == "bash"
            for argv in hook.controldl_commands(code)]


@pytest.mark.slow
def test_the_readme_quick_start_on_a_fresh_clone(clone):
    commands = quick_start((clone / "README.md").read_text(encoding="utf-8"))
    assert commands == [["controldl", "compare"]], commands
    before = _files(clone)
    for argv in commands:
        proc = subprocess.run([sys.executable, "-m", *argv], cwd=clone, env=_env(clone),
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
    out = clone / "runs" / "compare"
    for name in ("table.md", "results.json", "report.md", "figures/cost_history.png"):
        assert (out / name).is_file(), name
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [r["solver"] for r in rows][:2] == ["adam", "lbfgs"]
    assert all(r["status"] in ("converged", "acceptable", "target_reached") for r in rows), rows
    assert {p for p in _files(clone) - before if not p.startswith("runs")} == set()


WALK = '''
import contextlib, io, json, warnings
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
import controldl as cdl
from controldl import plotting
from controldl.cli import main
from controldl.compare import compare

done = []
rng = np.random.default_rng(0)
X = rng.normal(size=(80, 3))
y = np.linalg.norm(X, axis=1) > 1.5                       # boolean labels

split = cdl.data.train_test_split((X, y.astype(int)), 0.25, seed=0)   # a pair
done.append("train_test_split((X, y), 0.25)")
problem = cdl.Problem(X, y, test_fraction=0.25, layers=4)  # test_fraction, booleans
assert problem.data.n_train == split.n_train == 60 and problem.data.has_test
done.append("Problem(X, y, test_fraction=0.25) with boolean labels")
mine = cdl.Problem(cdl.data.Dataset(split.X_train, split.y_train, split.X_test,
                                    split.y_test), layers=4)
done.append("Problem(Dataset(X, y, X_test, y_test))")

adam = cdl.solve(mine, "adam", lr=0.05, max_iter=30)
assert adam.solver["options"]["lr"] == 0.05 and adam.summary().startswith("adam: ")
done.append("solve(problem, 'adam', lr=0.05)")
lbfgs = cdl.solve(mine, "lbfgs", max_iter=10)
assert lbfgs.summary().startswith("lbfgs: ")

plotting.controls_figure(adam)
done.append("controls_figure(solution)")
fig = plotting.history_figure([adam, lbfgs])
assert [ln.get_label() for ln in fig.axes[0].get_lines()] == ["adam", "lbfgs"]
done.append("history_figure([s1, s2])")
assert plotting.decision_regions_figure(adam) is not None
written = plotting.save_solution_figures(adam, "out/figures")
assert len(written) == 5, written
done.append("every figure of 3-feature data")
adam.save("out/adam")
back = cdl.load("out/adam/arrays.npz")
assert np.array_equal(back.params.A, adam.params.A)
done.append("load('.../arrays.npz')")

comparison = compare(mine, ["adam:max_iter=10", "lbfgs:max_iter=5"], max_time=60)
assert comparison.table().startswith("| solver |")
assert (comparison.save("out/compare", figures=False) / "table.md").is_file()
done.append("compare(...).table() and .save()")

for wrong, fragment in (("emas", "did you mean 'emsa'"), ("lbfgs:lr=0.1", "no option 'lr'")):
    try:
        cdl.solve(mine, wrong)
    except ValueError as exc:
        assert fragment in str(exc) and "\\n" not in str(exc), exc
    else:
        raise AssertionError(wrong)
done.append("solve(problem, 'emas') and 'lbfgs:lr=0.1' refused")

np.savez("mine.npz", X=X, y=y.astype(int))
def cli(*argv):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(list(argv))
        except SystemExit as exc:
            code = exc.code
    return code, [line for line in err.getvalue().splitlines() if line.strip()]

code, _ = cli("train", "--data", "mine.npz", "--layers", "4", "--solver", "adam",
              "--max-iter", "20", "--out", "out/train-adam")
assert code == 0 and json.load(open("out/train-adam/meta.json"))["solver"]["label"] == "adam"
done.append("controldl train --solver adam")
code, err = cli("train", "--data", "mine.npz", "--solver", "emas", "--out", "out/no")
assert code == 2 and len(err) == 1 and "did you mean 'emsa'?" in err[0], err
done.append("controldl train --solver emas: one line, exit 2")
code, err = cli("train", "--data", "mine.npz", "--optimizer", "lbfgs", "--lr", "0.1",
                "--out", "out/no")
assert code == 2 and len(err) == 1 and "its options: --optimizer" in err[0], err
done.append("controldl train --optimizer lbfgs --lr 0.1: one line, exit 2")
code, _ = cli("compare", "--data", "mine.npz", "--layers", "4", "--max-iter", "5",
              "--solvers", "adam", "--solvers", "lbfgs", "--no-figures", "--out",
              "out/cli-compare")
rows = json.load(open("out/cli-compare/results.json"))["rows"]
assert code == 0 and [r["solver"] for r in rows] == ["adam", "lbfgs"], rows
done.append("controldl compare --solvers adam --solvers lbfgs")
import os
assert not os.path.exists("out/no")
print(json.dumps(done))
'''


def test_the_first_hour_calls_on_a_fresh_clone(clone, tmp_path):
    """Every call of the first hour, in one fresh interpreter, run from a working
    directory of the user's own with the clone on ``PYTHONPATH``; the clone itself is
    left as it was."""
    before = _files(clone)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(WALK)], cwd=tmp_path,
                          env=_env(clone), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    done = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(done) == 14 and done[-1].endswith("--solvers lbfgs"), done
    assert _files(clone) == before


def test_the_repository_cites_only_itself():
    """No file points a reader outside the clone: the design document is docs/design.md,
    and nothing names the design's source outside the clone (its folder or ``DESIGN.md``)."""
    where = "sha" + "red"  # spelled apart, so that this file does not name it either
    outside = ("DESIGN.md", f"{where} folder", f"/work/{where}", f"../{where}")
    found = []
    for name in clone_files():
        path = ROOT / name
        if path.is_symlink() or path.suffix in (".png", ".npz", ".ipynb") or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        found += [f"{name}: {word}" for word in outside if word in text
                  and name != "tests/test_newcomer.py"]
    assert not found, found
    assert (ROOT / "docs" / "design.md").is_file()
