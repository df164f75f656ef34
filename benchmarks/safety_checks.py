"""The "never lose a user's files or work" checks, end to end through the real command
(``python -m controldl``), each in a fresh temporary directory and compilation cache:

- ``out``: ``train --out DIR`` on a foreign non-empty directory, on ``.``, on a file and on
  the directory that holds the ``--data`` file: exit code, the line printed, whether the
  tree is unchanged; then ``--overwrite`` on the foreign directory (replaced) and on the
  data's directory (still refused);
- ``sizes``: ``train --width 100000`` and ``--layers 100000000``: exit code, the line,
  the wall time of the whole command (Python's start and the imports included), whether
  anything was written;
- ``resume``: ``train --resume DIR --layers 30`` on a 20-layer checkpoint;
- ``compare``: SIGINT once the first row (Adam) has finished: exit code, the rows in
  ``results.json``, then ``--resume``;
- ``devices``: two consecutive ``train --devices 4`` runs with the cache on
  (``XLA_FLAGS=--xla_force_host_platform_device_count=4``, a 600-point ring file,
  ``--test-fraction 0``) and two ``--processes 2`` runs: both costs, their relative
  difference, the compile times.

Prints one JSON object. ``python benchmarks/safety_checks.py [--only KEY ...]``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _env(cache: Path, **extra: str) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "CONTROLDL_CACHE_DIR": str(cache), **extra}


def _run(argv: list[str], cwd: Path, env: dict[str, str], timeout: float = 600) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "controldl", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    err = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    return {"argv": argv, "exit": proc.returncode, "stderr_lines": len(err),
            "line": err[-1] if err else "", "wall_s": round(time.perf_counter() - t0, 2)}


def _tree(root: Path) -> dict:
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(root))] = (st.st_mode, p.read_bytes() if p.is_file() else None)
    return out


def _ring(path: Path, n: int = 600) -> Path:
    import controldl as cdl

    d = cdl.data.ring(n, seed=0)
    np.savez(path, X=d.X_train, y=d.y_train)
    return path


def check_out(tmp: Path) -> dict:
    env = _env(tmp / "cache")
    work = tmp / "work"
    (work / "mine").mkdir(parents=True)
    (work / "mine" / "important.txt").write_text("keep me")
    (work / "afile").write_text("a file")
    (work / "data").mkdir()
    data = _ring(work / "data" / "ring.npz", 40)
    tiny = ["--data", str(data), "--layers", "2", "--max-iter", "2"]
    out = {}
    for case, target in (("foreign", "mine"), ("dot", "."), ("file", "afile"),
                         ("input", "data")):
        before = _tree(work)
        r = _run(["train", *tiny, "--out", target], work, env)
        out[case] = {**r, "unchanged": _tree(work) == before}
    r = _run(["train", *tiny, "--out", "mine", "--overwrite"], work, env)
    out["overwrite_foreign"] = {**r, "replaced_by_a_solution":
                                (work / "mine" / "meta.json").is_file()
                                and not (work / "mine" / "important.txt").exists()}
    before = _tree(work)
    r = _run(["train", *tiny, "--out", "data", "--overwrite"], work, env)
    out["overwrite_input"] = {**r, "unchanged": _tree(work) == before}
    return out


def check_sizes(tmp: Path) -> dict:
    env = _env(tmp / "cache")
    out = {}
    for name, flags in (("width", ["--width", "100000"]), ("layers", ["--layers", "100000000"])):
        work = tmp / name
        work.mkdir()
        r = _run(["train", *flags, "--out", "o"], work, env)
        out[name] = {**r, "written": sorted(p.name for p in work.iterdir())}
    return out


def check_resume(tmp: Path) -> dict:
    env = _env(tmp / "cache")
    first = _run(["train", "--n-samples", "60", "--max-iter", "5", "--checkpoint-every-s",
                  "0.000001", "--out", "run"], tmp, env)
    refused = _run(["train", "--resume", "run", "--layers", "30"], tmp, env)
    same = _run(["train", "--resume", "run", "--layers", "20", "--max-iter", "8"], tmp, env)
    return {"first": first, "layers_30": refused, "same_layers": same}


def check_compare(tmp: Path) -> dict:
    env = _env(tmp / "cache")
    argv = ["compare", "--n-samples", "60", "--solvers", "adam:max_iter=30,sgd:max_iter=20000",
            "--max-time", "60", "--no-figures", "--out", "cmp"]
    proc = subprocess.Popen([sys.executable, "-m", "controldl", *argv], cwd=tmp, env=env,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for line in proc.stderr:
        if line.startswith("adam:max_iter=30: "):
            break
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    results = json.loads((tmp / "cmp" / "results.json").read_text())
    out = {"exit": proc.returncode, "line": err.strip().splitlines()[-1],
           "rows": [r["solver"] for r in results["rows"]],
           "interrupted": results["interrupted"], "pending": results["pending"]}
    resumed = _run([*argv, "--resume"], tmp, env)
    results = json.loads((tmp / "cmp" / "results.json").read_text())
    out["resume"] = {**resumed, "rows": [r["solver"] for r in results["rows"]],
                     "interrupted": results["interrupted"]}
    return out


def _costs(tmp: Path, name: str, devices_per_process: int, flags: list[str]) -> dict:
    env = _env(tmp / f"cache-{name}",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices_per_process}")
    data = _ring(tmp / "ring600.npz")
    runs = []
    for i in range(2):
        r = _run(["train", "--data", str(data), "--test-fraction", "0", "--max-iter", "50",
                  *flags, "--out", f"{name}{i}"], tmp, env)
        meta_path = tmp / f"{name}{i}" / "meta.json"
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        runs.append({**r, "cost": meta.get("cost", {}).get("total"),
                     "compile_time_s": meta.get("compile_time_s"),
                     "devices": meta.get("devices")})
    a, b = runs[0]["cost"], runs[1]["cost"]
    rel = None if a is None or b is None else abs(a - b) / abs(a)
    return {"runs": runs, "relative_difference": rel}


def check_devices(tmp: Path) -> dict:
    return {"devices_4": _costs(tmp, "dev", 4, ["--devices", "4"]),
            "processes_2": _costs(tmp, "proc", 4, ["--processes", "2"])}


CHECKS = {"out": check_out, "sizes": check_sizes, "resume": check_resume,
          "compare": check_compare, "devices": check_devices}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=list(CHECKS), default=list(CHECKS))
    args = parser.parse_args()
    report = {}
    for name in args.only:
        with tempfile.TemporaryDirectory(prefix=f"controldl-safety-{name}-") as tmp:
            report[name] = CHECKS[name](Path(tmp))
    print(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
