"""The experiments' quick mode as a test: ``python -m experiments.run_all --quick`` writes, for
every experiment, a ``results.json`` holding real (finite) numbers, a ``summary.md`` and
at least one PNG; bad arguments end with exit code 2."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NAMES = ("layers", "topology", "solvers", "scaling", "turnpike", "flat_start", "noise",
         "li_sin")


def _numbers(x):
    """Every number in a JSON document (booleans excluded)."""
    if isinstance(x, dict):
        for v in x.values():
            yield from _numbers(v)
    elif isinstance(x, list):
        for v in x:
            yield from _numbers(v)
    elif isinstance(x, int | float) and not isinstance(x, bool):
        yield x


# The ``quick_run`` fixture (tests/conftest.py) runs ``experiments.run_all --quick`` in
# the background from the start of the tests on.


@pytest.mark.slow
def test_run_all_quick_succeeds(quick_run):
    out, returncode, log = quick_run
    assert returncode == 0, log[-4000:]
    assert (out / "index.md").is_file()
    status = json.loads((out / "run_all.json").read_text())
    assert set(status["experiments"]) == set(NAMES)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_experiment_outputs(quick_run, name):
    out, *_ = quick_run
    d = out / name
    results = json.loads((d / "results.json").read_text())
    assert results["experiment"] == name and results["quick"] is True
    numbers = list(_numbers({k: v for k, v in results.items()
                             if k not in ("seeds", "versions", "elapsed_s", "cpu_time_s")}))
    assert len(numbers) >= 10, f"{name}: too few numbers in results.json"
    assert all(math.isfinite(v) for v in numbers)
    pngs = sorted(d.glob("*.png"))
    assert pngs, f"{name}: no figure"
    assert all(p.stat().st_size > 1000 for p in pngs)
    assert set(results["figures"]) == {p.name for p in pngs}
    summary = (d / "summary.md").read_text()
    assert summary.startswith("# ") and "Claim tested" in summary
    for png in pngs:  # every figure is linked from the summary
        assert f"({png.name})" in summary, png.name


@pytest.mark.slow
def test_quick_results_hold_the_measurements(quick_run):
    out, *_ = quick_run
    topo = json.loads((out / "topology" / "results.json").read_text())
    for key in ("w2-free-big-steps", "w2-free", "w2-lip0.9", "w3-lip0.9"):
        rec = topo["per_seed"][key][0]
        for m in ("train_accuracy", "fresh_accuracy", "cost", "max_lipschitz", "fold_fraction"):
            assert isinstance(rec[m], float) and math.isfinite(rec[m]), (key, m)
    # The bound holds where it is imposed (projection), up to round-off.
    assert topo["per_seed"]["w2-lip0.9"][0]["max_lipschitz"] <= 0.9 + 1e-9
    solvers = json.loads((out / "solvers" / "results.json").read_text())
    assert {"ring", "spiral", "noisy-ring"} <= set(solvers["rows"])
    labels = {r["solver"] for r in solvers["rows"]["ring"]}
    assert {"sgd", "adam", "lbfgs", "msa", "emsa", "casadi-single", "casadi-multiple",
            "casadi-from-adam"} == labels
    scaling = json.loads((out / "scaling" / "results.json").read_text())
    assert any(f["N"]["slope"] is not None for f in scaling["fits"].values())


@pytest.mark.parametrize("argv", [["--quick"], ["--out"], ["--out", "x", "--seeds", "a"],
                                  ["--out", "x", "--seeds", "-1"], ["--bogus"]])
def test_bad_arguments_exit_2(tmp_path, argv):
    argv = [a if a != "x" else str(tmp_path / "x") for a in argv]
    proc = subprocess.run([sys.executable, "-m", "experiments.topology", *argv],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stderr.strip() and "Traceback" not in proc.stderr
    assert not (tmp_path / "x").exists()


def test_run_all_rejects_unknown_experiment(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "experiments.run_all", "--out",
                           str(tmp_path / "o"), "--only", "nope"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2 and "nope" in proc.stderr
    assert not (tmp_path / "o").exists()
