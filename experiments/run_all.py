"""Run every experiment: ``python experiments/run_all.py --out DIR [--quick]``.

Each experiment writes into ``DIR/<name>/`` (``results.json``, ``summary.md``, PNGs);
``DIR/index.md`` links them with their wall and CPU times. The experiments run one after
the other in this process (they share JAX's compiled functions), or, with ``--only``, a
subset. A failing experiment is reported and the others still run; the exit code is then 1.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from pathlib import Path

EXPERIMENTS = ("layers", "topology", "solvers", "scaling", "turnpike", "flat_start", "noise")


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
    args = p.parse_args(argv)
    names = list(EXPERIMENTS)
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in EXPERIMENTS]
        if unknown or not names:
            p.error(f"unknown experiment(s) {', '.join(unknown) or '(none)'}; "
                    f"choose from {', '.join(EXPERIMENTS)}")
    if args.out.exists() and not args.out.is_dir():
        p.error(f"--out {str(args.out)!r} exists and is not a directory")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    status: dict[str, dict] = {}
    start = time.perf_counter()
    for name in names:
        argv_one = ["--out", str(args.out / name)]
        if args.quick:
            argv_one.append("--quick")
        if args.seeds:
            argv_one += ["--seeds", args.seeds]
        if args.jax_cache:
            argv_one += ["--jax-cache", args.jax_cache]
        t0, c0 = time.perf_counter(), time.process_time()
        print(f"=== {name} ===", file=sys.stderr, flush=True)
        module = importlib.import_module(name)
        try:
            rc = module.main(argv_one)
        except SystemExit as exc:  # argparse inside the experiment
            rc = exc.code if isinstance(exc.code, int) else 2
        status[name] = {"exit_code": rc, "wall_s": time.perf_counter() - t0,
                        "cpu_s": time.process_time() - c0}
        print(f"=== {name}: exit {rc} in {status[name]['wall_s']:.0f} s wall, "
              f"{status[name]['cpu_s']:.0f} s CPU ===", file=sys.stderr, flush=True)
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


if __name__ == "__main__":
    sys.exit(main())
