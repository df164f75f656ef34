"""Run every experiment: ``python -m experiments.run_all --out DIR [--quick] [--jobs 2]``
(from the repository's root).

Each experiment writes into ``DIR/<name>/`` (``results.json``, ``summary.md``, PNGs);
``DIR/index.md`` links them with their wall and CPU times. With ``--jobs 1`` (default)
the experiments run one after the other in this process; with ``--jobs K`` they run as K
child processes at a time (their logs in ``DIR/<name>.log``) — on a 2-core machine
``--jobs 2`` about halves the wall time, at the price of noisier timings. ``--only``
picks a subset. A failing experiment is reported and the others still run; the exit code
is then 1.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
"""The repository's root: the children run ``python -m experiments.NAME`` from it."""

EXPERIMENTS = ("layers", "topology", "solvers", "scaling", "turnpike", "flat_start", "noise",
               "li_sin")
LONGEST_FIRST = ("solvers", "scaling", "layers", "topology", "turnpike", "noise", "li_sin",
                 "flat_start")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0])
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--quick", action="store_true", help="small sizes (also a test)")
    p.add_argument("--only", default=None, metavar="NAMES",
                   help=f"comma-separated subset of {','.join(EXPERIMENTS)}")
    p.add_argument("--seeds", default=None, metavar="S",
                   help="seeds for every experiment (default: each experiment's own)")
    p.add_argument("--jax-cache", default=None, metavar="DIR|off",
                   help="JAX's persistent compilation cache (default: the experiments' own)")
    p.add_argument("--jobs", type=int, default=1, metavar="K",
                   help="experiments run at a time (K > 1: child processes; default 1)")
    args = p.parse_args(argv)
    if args.jobs < 1:
        p.error(f"--jobs must be >= 1, got {args.jobs}")
    names = list(EXPERIMENTS)
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in EXPERIMENTS]
        if unknown or not names:
            p.error(f"unknown experiment(s) {', '.join(unknown) or '(none)'}; "
                    f"choose from {', '.join(EXPERIMENTS)}")
    if args.out.exists() and not args.out.is_dir():
        p.error(f"--out {str(args.out)!r} exists and is not a directory")
    start = time.perf_counter()

    def arguments(name: str) -> list[str]:
        argv_one = ["--out", str(args.out / name)]
        if args.quick:
            argv_one.append("--quick")
        if args.seeds:
            argv_one += ["--seeds", args.seeds]
        if args.jax_cache:
            argv_one += ["--jax-cache", args.jax_cache]
        return argv_one

    if args.jobs == 1:
        status = {name: run_here(name, arguments(name)) for name in names}
    else:
        status = run_children(names, arguments, args.jobs, args.out)
    total = time.perf_counter() - start
    args.out.mkdir(parents=True, exist_ok=True)
    lines = ["# Experiments", "", f"Mode: {'quick' if args.quick else 'full'}; total "
             f"{total:.0f} s wall, {sum(s['cpu_s'] for s in status.values()):.0f} s CPU "
             f"({os.cpu_count()} CPU cores).", "",
             "| experiment | exit code | wall [s] | CPU [s] |", "|---|---|---|---|"]
    for name, s in status.items():
        lines.append(f"| [{name}]({name}/summary.md) | {s['exit_code']} | {s['wall_s']:.0f} | "
                     f"{s['cpu_s']:.0f} |")
    (args.out / "index.md").write_text("\n".join(lines) + "\n")
    (args.out / "run_all.json").write_text(json.dumps(
        {"quick": args.quick, "total_wall_s": total, "experiments": status}, indent=1))
    failed = [n for n, s in status.items() if s["exit_code"] != 0]
    if failed:
        print(f"run_all: failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    print(f"run_all: all {len(status)} experiments done in {total:.0f} s", file=sys.stderr)
    return 0


def run_here(name: str, argv: list[str]) -> dict:
    """Run experiment ``name`` in this process."""
    t0, c0 = time.perf_counter(), time.process_time()
    print(f"=== {name} ===", file=sys.stderr, flush=True)
    module = importlib.import_module(f"experiments.{name}")
    try:
        rc = module.main(argv)
    except SystemExit as exc:  # argparse inside the experiment
        rc = exc.code if isinstance(exc.code, int) else 2
    out = {"exit_code": rc, "wall_s": time.perf_counter() - t0,
           "cpu_s": time.process_time() - c0}
    print(f"=== {name}: exit {rc} in {out['wall_s']:.0f} s wall, {out['cpu_s']:.0f} s CPU ===",
          file=sys.stderr, flush=True)
    return out


def run_children(names: list[str], arguments, jobs: int, out: Path) -> dict:
    """Run the experiments as child processes, ``jobs`` at a time; CPU time per child from
    ``wait4``'s resource usage."""
    out.mkdir(parents=True, exist_ok=True)
    pending = sorted(names, key=LONGEST_FIRST.index)  # long ones first: better packing
    running: dict[int, tuple[str, subprocess.Popen, float, object]] = {}
    status: dict[str, dict] = {}
    try:
        while pending or running:
            while pending and len(running) < jobs:
                name = pending.pop(0)
                log = open(out / f"{name}.log", "w")  # closed when the child ends
                proc = subprocess.Popen([sys.executable, "-m", f"experiments.{name}",
                                         *arguments(name)], stdout=log,
                                        stderr=subprocess.STDOUT, cwd=ROOT)
                running[proc.pid] = (name, proc, time.perf_counter(), log)
                print(f"=== {name}: started (log {out / f'{name}.log'}) ===",
                      file=sys.stderr, flush=True)
            pid, code, usage = os.wait4(-1, 0)
            if pid not in running:
                continue
            name, proc, t0, log = running.pop(pid)
            log.close()
            proc.returncode = os.waitstatus_to_exitcode(code)
            status[name] = {"exit_code": proc.returncode,
                            "wall_s": time.perf_counter() - t0,
                            "cpu_s": usage.ru_utime + usage.ru_stime}
            print(f"=== {name}: exit {proc.returncode} in {status[name]['wall_s']:.0f} s "
                  f"wall, {status[name]['cpu_s']:.0f} s CPU ===", file=sys.stderr, flush=True)
    finally:  # interrupted: stop the children this run started
        for _, proc, _, log in running.values():
            proc.terminate()
            proc.wait()
            log.close()
    return {name: status[name] for name in names}


if __name__ == "__main__":
    sys.exit(main())
