"""Compile times of controldl's solvers against minimal hand-written equivalents.

Prints JSON. All figures are measured in one process, on the default problem (the
built-in ring, width 3, L = 20, T = 5, l2 = 1e-3, readout_l2 = 1e-3, a quarter held out):

- ``first``: the first solve's ``compile_time_s`` with an empty persistent cache;
- ``cached``: the same solve after clearing every in-memory cache, so the programs come
  from JAX's persistent compilation cache (a second process sees the same);
- ``minimal``: ``jit(...).lower(...).compile()`` of a hand-written step for the same model
  (one ``lax.scan`` over the layers, ``optax.adam`` or ``optax.lbfgs``,
  ``value_and_grad``).

The process is warmed up first (one unrelated compile) so that no row pays JAX's one-time
start-up. CasADi compiles nothing: its row is the NLP build time.

    python benchmarks/compile.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import optax

import controldl as cdl
from controldl import compilation
from controldl import problem as P
from controldl.solvers.base import clear_compile_caches

jax.config.update("jax_enable_x64", True)

SOLVERS = ("adam", "lbfgs", "emsa", "casadi")


def default_problem() -> cdl.Problem:
    data = cdl.data.train_test_split(cdl.data.ring(600, seed=0), 0.25, seed=0)
    return cdl.Problem(data, width=3, layers=20, horizon=5.0, l2=1e-3, readout_l2=1e-3)


def make(name: str) -> cdl.Solver:
    if name in ("adam", "lbfgs"):
        return cdl.GradientDescent(name, lr=0.01 if name == "adam" else None)
    return cdl.make_solver(name)


def controldl_compile(problem: cdl.Problem, name: str) -> float:
    """``compile_time_s`` of a one-iteration solve (for CasADi: the NLP build, when the
    solver reports it, else its setup time)."""
    sol = cdl.solve(problem, make(name), max_iter=1)
    return float(sol.stats.get("build_time_s", sol.compile_time_s))


def minimal_cost(h: float, X0: jax.Array, Y: jax.Array, l2: float, kappa: float):
    """J for the default problem written out by hand (resnet, tanh, logistic)."""

    def cost(p):
        def layer(x, th):
            A, b = th
            return x + h * jnp.tanh(x @ A.T + b), None

        xL, _ = jax.lax.scan(layer, X0, (p.A, p.b))
        z = xL @ p.W.T + p.c
        loss = jnp.mean(jax.nn.softplus(-(2.0 * Y - 1.0) * z))
        reg = 0.5 * l2 * h * (jnp.sum(p.A ** 2) + jnp.sum(p.b ** 2))
        return loss + reg + 0.5 * kappa * (jnp.sum(p.W ** 2) + jnp.sum(p.c ** 2))

    return cost


def minimal_compile(problem: cdl.Problem, kind: str) -> float:
    """Seconds to lower and compile a hand-written Adam or L-BFGS step."""
    form = problem.formulation
    X0, Y = problem.initial_states(), problem.targets()
    params = P.init_params(form, seed=0)
    cost = minimal_cost(form.h, X0, Y, form.l2, form.readout_l2)
    if kind == "adam":
        opt = optax.adam(0.01)

        def step(p, s):
            J, g = jax.value_and_grad(cost)(p)
            u, s = opt.update(g, s, p)
            return optax.apply_updates(p, u), s, J
    else:
        opt = optax.lbfgs()
        value_and_grad = optax.value_and_grad_from_state(cost)

        def step(p, s):
            J, g = value_and_grad(p, state=s)
            u, s = opt.update(g, s, p, value=J, grad=g, value_fn=cost)
            return optax.apply_updates(p, u), s, J

    t0 = time.perf_counter()
    jax.jit(step).lower(params, opt.init(params)).compile()
    return time.perf_counter() - t0


def measure_once(problem: cdl.Problem) -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory() as cache:
        compilation.enable_compilation_cache(cache)
        clear_compile_caches()
        out = {name: {"first": controldl_compile(problem, name)} for name in SOLVERS}
        clear_compile_caches()
        for name in SOLVERS:
            out[name]["cached"] = controldl_compile(problem, name)
        jax.config.update("jax_compilation_cache_dir", None)
    clear_compile_caches()
    for kind in ("adam", "lbfgs"):
        out[kind]["minimal"] = minimal_compile(problem, kind)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    problem = default_problem()
    jax.jit(lambda x: x + 1).lower(jnp.ones(3)).compile()  # process warm-up
    runs = [measure_once(problem) for _ in range(args.repeats)]
    median = {name: {k: statistics.median(r[name][k] for r in runs) for k in runs[0][name]}
              for name in SOLVERS}
    ratios = {
        "adam_vs_minimal": median["adam"]["first"] / median["adam"]["minimal"],
        "lbfgs_vs_minimal": median["lbfgs"]["first"] / median["lbfgs"]["minimal"],
        "emsa_vs_adam": median["emsa"]["first"] / median["adam"]["first"],
    }
    json.dump({"problem": repr(problem), "machine": platform.machine(),
               "python": platform.python_version(), "jax": jax.__version__,
               "median_s": median, "ratios": ratios, "runs": runs}, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
