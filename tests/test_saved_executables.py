"""Saved executables and several devices: two consecutive runs with the compilation cache
on (the second loads what the first saved) give the same cost, without error, on four
devices of one process and on two processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import controldl as cdl
from controldl import compilation


@pytest.fixture(scope="module")
def ring600(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "ring.npz"
    d = cdl.data.ring(600, seed=0)
    np.savez(path, X=d.X_train, y=d.y_train)
    return path


def _two_runs(tmp_path, data, devices_per_process, *flags):
    """Run ``controldl train FLAGS`` twice with one fresh cache: both metas."""
    env = {**os.environ, "CONTROLDL_CACHE_DIR": str(tmp_path / "cache"),
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices_per_process}"}
    metas = []
    for run in ("cold", "warm"):
        out = tmp_path / run
        proc = subprocess.run([sys.executable, "-m", "controldl", "train", "--data", str(data),
                               "--test-fraction", "0", "--max-iter", "5", "--tol", "0",
                               *flags, "--out", str(out)],
                              env=env, capture_output=True, text=True, timeout=400)
        assert proc.returncode == 0, proc.stderr[-3000:]
        metas.append(json.loads((out / "meta.json").read_text()))
    assert any((tmp_path / "cache" / compilation.EXECUTABLES).iterdir())  # saved, loaded
    return metas


def test_four_devices_from_a_warm_cache(tmp_path, ring600):
    cold, warm = _two_runs(tmp_path, ring600, 4, "--devices", "4")
    assert cold["devices"]["count"] == warm["devices"]["count"] == 4
    assert warm["cost"]["total"] == pytest.approx(cold["cost"]["total"], rel=1e-12, abs=0)
    assert warm["compile_time_s"] < cold["compile_time_s"]


def test_two_processes_from_a_warm_cache(tmp_path, ring600):
    cold, warm = _two_runs(tmp_path, ring600, 2, "--processes", "2")
    assert cold["devices"]["processes"] == warm["devices"]["processes"] == 2
    assert warm["cost"]["total"] == pytest.approx(cold["cost"]["total"], rel=1e-12, abs=0)
