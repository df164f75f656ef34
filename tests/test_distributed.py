"""Two jax.distributed processes of two virtual CPU devices each, on localhost: the same
solution as one process (gd with Adam and L-BFGS, E-MSA), each process holding only its
own samples, one process writing the solution directory."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import controldl as cdl
from controldl import distributed

TWO_DEVICES = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
               "CONTROLDL_CACHE_DIR": "off"}
SOLVERS = {"adam": lambda: cdl.GradientDescent("adam", lr=0.05),
           "lbfgs": lambda: cdl.GradientDescent("lbfgs"),
           "emsa": lambda: cdl.EMSA(inner_steps=3)}
ITERATIONS = {"adam": 8, "lbfgs": 4, "emsa": 3}
PROBLEM = "cdl.Problem(cdl.data.ring(80, seed=0), width=3, layers=4, horizon=2.0, l2=1e-3)"

WORKER = f"""
import json, jax
jax.config.update("jax_enable_x64", True)
from controldl import distributed
assert distributed.initialize_from_env()
import controldl as cdl
from controldl import parallel
from controldl.solvers.base import training_arrays
problem = {PROBLEM}
X0, Y, y, mesh = training_arrays(problem, jax.numpy.float64, None, None)
rows = parallel.local_rows(mesh, 80)
local = sorted((s.index[0].start, s.index[0].stop) for s in X0.addressable_shards)
out = {{"process": jax.process_index(), "devices": jax.device_count(),
       "rows": [rows.start, rows.stop], "local": local}}
solvers = {{"adam": cdl.GradientDescent("adam", lr=0.05), "lbfgs": cdl.GradientDescent("lbfgs"),
           "emsa": cdl.EMSA(inner_steps=3)}}
for name, iters in {ITERATIONS!r}.items():
    s = cdl.solve(problem, solvers[name], max_iter=iters)
    out[name] = {{"cost": s.cost["total"], "A": s.params.A.tolist(), "W": s.params.W.tolist(),
                 "iterations": s.iterations, "devices": s.stats["devices"]}}
print("RESULT " + json.dumps(out), flush=True)
"""


def _start_two(command: list[str], extra_env: dict | None = None, timeout: float = 240
               ) -> list[str]:
    """Start processes 0 and 1 of ``command`` (coordinator on a free localhost port), wait
    for both (killed after ``timeout`` s) and return their stdout."""
    address = f"127.0.0.1:{distributed.free_port()}"
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env={**TWO_DEVICES, **(extra_env or {}),
                                              distributed.COORDINATOR: address,
                                              distributed.NUM_PROCESSES: "2",
                                              distributed.PROCESS_ID: str(i)})
             for i in range(2)]
    outputs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=timeout)
            assert p.returncode == 0, err[-3000:]
            outputs.append(out)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return outputs


def _one_process() -> dict:
    problem = eval(PROBLEM)  # the same problem as the workers'
    return {name: cdl.solve(problem, make(), max_iter=ITERATIONS[name])
            for name, make in SOLVERS.items()}


def test_two_processes_equal_one_process_for_gd_and_emsa():
    outputs = _start_two([sys.executable, "-c", textwrap.dedent(WORKER)])
    results = [json.loads(next(line for line in out.splitlines()
                                if line.startswith("RESULT "))[7:]) for out in outputs]
    assert [r["process"] for r in results] == [0, 1]
    # Each process embedded only its own 40 samples, on its own two devices.
    assert [r["rows"] for r in results] == [[0, 40], [40, 80]]
    assert [r["local"] for r in results] == [[[0, 20], [20, 40]], [[40, 60], [60, 80]]]
    reference = _one_process()
    for name, one in reference.items():
        for r in results:
            got = r[name]
            assert got["devices"] == {"count": 4, "platform": "cpu", "kinds": ["cpu"],
                                      "processes": 2}
            assert got["iterations"] == one.iterations
            assert got["cost"] == pytest.approx(one.cost["total"], rel=1e-8, abs=0), name
            np.testing.assert_allclose(got["A"], one.params.A, rtol=1e-8, atol=1e-10)
            np.testing.assert_allclose(got["W"], one.params.W, rtol=1e-8, atol=1e-10)
    assert reference["emsa"].cost["total"] < reference["emsa"].history[0]["cost"]


def test_cli_processes_two_writes_one_solution_equal_to_one_process(tmp_path):
    """``controldl train --processes 2``: the launcher starts both processes itself;
    process 0 alone writes OUT, nothing else is left in its folder."""
    out = tmp_path / "two"
    d = cdl.data.ring(80, seed=0)
    np.savez(tmp_path / "r.npz", X=d.X_train, y=d.y_train)
    cmd = [sys.executable, "-m", "controldl", "train", "--data", str(tmp_path / "r.npz"),
           "--width", "3", "--layers", "4", "--horizon", "2", "--l2", "1e-3",
           "--test-fraction", "0", "--solver", "gd", "--optimizer", "adam", "--lr", "0.05",
           "--max-iter", "8", "--tol", "0", "--processes", "2", "--out", str(out)]
    proc = subprocess.run(cmd, env=TWO_DEVICES, capture_output=True, text=True, timeout=240)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]  # 1: max_iter, not converged
    assert proc.stdout.count("saved to") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.npz", "two"]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["devices"]["processes"] == 2 and meta["devices"]["count"] == 4
    one = cdl.solve(cdl.Problem(cdl.data.load_file(str(tmp_path / "r.npz")), width=3,
                                layers=4, horizon=2.0, l2=1e-3),
                    cdl.GradientDescent("adam", lr=0.05), max_iter=8, tol=None)
    assert meta["cost"]["total"] == pytest.approx(one.cost["total"], rel=1e-8, abs=0)


def test_malformed_coordinator_variables_are_a_clear_error():
    env = {distributed.COORDINATOR: "localhost:1234", distributed.NUM_PROCESSES: "2",
           distributed.PROCESS_ID: "2"}
    with pytest.raises(ValueError, match="must be below"):
        distributed.coordinates(env)
    with pytest.raises(ValueError, match="host:port"):
        distributed.coordinates({distributed.COORDINATOR: "nohostport"})
    assert distributed.coordinates({}) is None
    assert distributed.coordinates({distributed.COORDINATOR: "auto"}) == (None, None, None)
