"""Does a row's compile time depend on what ran before it in the process?

``controldl compare`` times every row cold (the compile caches are cleared before it). This
script runs the default problem with the given specs in one order and in the reverse
order, in one process, ``--repeats`` times, and reports for every row: the compile time the
solve recorded (wall), the number of XLA backend compilations and their summed duration
(from ``jax.monitoring``), and the process CPU time of the row. With cold timing the
number of compilations of a row is the same in both orders; the times differ only by
noise (on a shared machine, compare the CPU times).

Usage::

    python benchmarks/compare_order.py --specs adam,emsa --repeats 2

Prints one JSON document on stdout.
"""

from __future__ import annotations

import argparse
import json
import time

import jax

COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


def run_row(problem, spec: str, events: list, max_time: float) -> dict:
    """One cold comparison row of ``spec``: what it compiled and how long it took."""
    from controldl.compare import compare

    events.clear()
    cpu = time.process_time()
    comparison = compare(problem, [spec], max_time=max_time)
    sol = comparison.solutions[spec]
    compiles = [d for e, d in events if e == COMPILE_EVENT]
    return {"spec": spec, "status": str(sol.status), "compile_time_s": sol.compile_time_s,
            "n_compiles": len(compiles), "backend_compile_s": sum(compiles),
            "cpu_s": time.process_time() - cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--specs", default="adam,emsa")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--max-time", type=float, default=25.0)
    args = parser.parse_args()
    jax.config.update("jax_enable_x64", True)
    import controldl as cdl
    from controldl import data as D

    problem = cdl.Problem(D.train_test_split(D.ring(600, seed=0), 0.25, seed=0))
    events: list = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, duration, **kw: events.append((event, duration)))
    specs = [s for s in args.specs.split(",") if s]
    runs = []
    for _ in range(args.repeats):
        for order in (specs, specs[::-1]):
            runs.append({"order": order,
                         "rows": [run_row(problem, s, events, args.max_time) for s in order]})
    print(json.dumps({"problem": problem.describe(), "timing": "cold", "runs": runs},
                     indent=2))


if __name__ == "__main__":
    main()
