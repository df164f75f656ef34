"""Compile times of controldl's solvers against minimal hand-written equivalents.

Prints JSON. All figures are measured in one process, on the default problem (the
built-in ring, width 3, L = 20, T = 5, l2 = 1e-3, readout_l2 = 1e-3, a quarter held out).
Each solver of each repeat gets a fresh, empty persistent cache directory (JAX's cache is
reset to it), so that no row reuses another's programs:

- ``first``: a one-iteration solve's ``compile_time_s``, everything compiled from scratch:
  for gradient descent the optimizer's initial state and the step (``init_params``
  draws on the host and compiles nothing unless the problem has constraints);
  ``programs`` counts the XLA compilations, ``trace_s``, ``lower_s`` and ``backend_s``
  split the time by phase;
- ``cached``: the same solve after clearing every in-memory cache, so that the programs
  are traced and lowered again but come compiled from the persistent cache (what a second
  process sees);
- ``minimal``: ``jit(step).lower(...).compile()`` of a hand-written step for the same
  model (one ``lax.scan`` over the layers, ``value_and_grad``, ``optax.adam`` or
  ``optax.lbfgs``), measured just before controldl's ``first`` in the same cold state
  (in-memory caches cleared, the same empty cache directory). It
  compiles the step only: no initialization, no statistics (controldl's step also returns
  the accuracy and the stationarity), so ``first / minimal`` is the stricter ratio;
- ``minimal_init``: the same for a hand-written initialization (``jax.random`` draws of
  the same shapes, what a script compiles before its first step);
  ``*_vs_minimal_with_init`` divides ``first`` by their sum.

``emsa_parts`` (:func:`emsa_parts`) splits E-MSA's iteration into programs of its own
and compiles each alone, to show where its first compile goes.

The process is warmed up first (one unrelated compile) so that no row pays JAX's one-time
start-up. CasADi compiles nothing: its row is the NLP build time. The ratios are the
medians of the per-repeat ratios (the two sides are measured seconds apart, so a shared
machine's load mostly cancels).

    python benchmarks/compile.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental.compilation_cache.compilation_cache import reset_cache

import controldl as cdl
from controldl import compilation
from controldl import problem as P
from controldl.solvers.base import clear_compile_caches

jax.config.update("jax_enable_x64", True)

SOLVERS = ("adam", "lbfgs", "emsa", "casadi")
MINIMAL = ("adam", "lbfgs")


def default_problem() -> cdl.Problem:
    data = cdl.data.train_test_split(cdl.data.ring(600, seed=0), 0.25, seed=0)
    return cdl.Problem(data, width=3, layers=20, horizon=5.0, l2=1e-3, readout_l2=1e-3)


def make(name: str) -> cdl.Solver:
    if name in ("adam", "lbfgs"):
        return cdl.GradientDescent(name, lr=0.01 if name == "adam" else None)
    return cdl.make_solver(name)


class Phases:
    """Counts XLA compilations and sums the tracing, lowering and backend-compile time
    that JAX reports (``jax.monitoring``) while it is active."""

    EVENTS = {"/jax/core/compile/jaxpr_trace_duration": "trace_s",
              "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower_s",
              "/jax/core/compile/backend_compile_duration": "backend_s"}

    def __enter__(self) -> Phases:
        self.totals = dict.fromkeys(self.EVENTS.values(), 0.0)
        self.programs = 0
        jax.monitoring.register_event_duration_secs_listener(self._listen)
        return self

    def _listen(self, event: str, duration: float, **_: object) -> None:
        if event in self.EVENTS:
            self.totals[self.EVENTS[event]] += duration
            self.programs += event.endswith("backend_compile_duration")

    def __exit__(self, *exc: object) -> None:
        jax.monitoring.unregister_event_duration_listener(self._listen)

    def summary(self) -> dict[str, float]:
        return {"programs": self.programs, **self.totals}


def controldl_compile(problem: cdl.Problem, name: str) -> dict[str, float]:
    """``compile_time_s`` of a one-iteration solve (for CasADi: the NLP build, when the
    solver reports it, else its setup time) and the phases JAX reports during it."""
    with Phases() as phases:
        sol = cdl.solve(problem, make(name), max_iter=1)
    seconds = float(sol.stats.get("build_time_s", sol.compile_time_s))
    return {"seconds": seconds, **phases.summary()}


def minimal_cost(h: float, l2: float, kappa: float):
    """J(p, X0, Y) for the default problem written out by hand (resnet, tanh, logistic)."""

    def cost(p, X0, Y):
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
    rng = np.random.default_rng(0)  # not init_params: its program must stay uncompiled
    L, d, m = form.layers, form.width, form.n_outputs
    params = P.Params(rng.normal(size=(L, d, d)) / d ** 0.5, np.zeros((L, d)),
                      rng.normal(size=(m, d)) / d ** 0.5, np.zeros(m))
    cost = minimal_cost(form.h, form.l2, form.readout_l2)
    if kind == "adam":
        opt = optax.adam(0.01)

        def step(p, s, X0, Y):
            J, g = jax.value_and_grad(cost)(p, X0, Y)
            u, s = opt.update(g, s, p)
            return optax.apply_updates(p, u), s, J
    else:
        opt = optax.lbfgs()
        value_and_grad = optax.value_and_grad_from_state(cost)

        def step(p, s, X0, Y):
            J, g = value_and_grad(p, X0, Y, state=s)
            u, s = opt.update(g, s, p, value=J, grad=g, value_fn=lambda q: cost(q, X0, Y))
            return optax.apply_updates(p, u), s, J

    state = opt.init(params)  # eager, outside the timing
    t0 = time.perf_counter()
    jax.jit(step).lower(params, state, X0, Y).compile()
    return time.perf_counter() - t0


def use_cache(directory: str | None) -> None:
    """Point JAX's persistent cache at ``directory`` (``None``: off), effective now."""
    if directory is None:
        jax.config.update("jax_compilation_cache_dir", None)
    else:
        compilation.enable_compilation_cache(directory)
    reset_cache()


def minimal_init_compile(problem: cdl.Problem) -> float:
    """Seconds to lower and compile a hand-written initialization of the same shapes
    (``jax.random.split`` and two ``jax.random.normal`` draws, float64, default options)."""
    L, d, m = problem.layers, problem.width, problem.n_outputs

    def init(seed):
        kA, kW = jax.random.split(jax.random.PRNGKey(seed))
        return (jax.random.normal(kA, (L, d, d), jnp.float64),
                jax.random.normal(kW, (m, d), jnp.float64))

    t0 = time.perf_counter()
    jax.jit(init).lower(0).compile()
    return time.perf_counter() - t0


def emsa_parts(problem: cdl.Problem) -> dict[str, float]:
    """Seconds to trace, lower and compile each part of E-MSA's iteration as a program of
    its own (cold, in-memory caches cleared before each): ``passes`` (the forward pass,
    the costates, J, the accuracy and the stationarity), ``layers`` (every layer's inner
    L-BFGS, vmapped) and ``readout`` (the readout's inner L-BFGS); ``layer_objective`` and
    ``readout_objective``: one value and gradient of each extended objective alone."""
    from controldl.solvers.pmp import hamiltonian as H
    from controldl.solvers.pmp import inner as I
    from controldl.solvers.pmp import iteration as IT

    form = problem.formulation
    params = P.init_params(form, seed=0)
    X0, Y, y = problem.initial_states(), problem.targets(), jnp.asarray(problem.data.y_train)
    knobs = H.Knobs(jnp.asarray(1.0), jnp.asarray(0.0))
    states = jax.ShapeDtypeStruct((form.layers + 1, *X0.shape), X0.dtype)
    config = IT.Config(True, I.LBFGS(), I.LBFGS(), 10, None)
    t = 3  # one layer's objective
    readout_data = lambda xs, ps: H.ReadoutData(xs, Y, ps[-1], (params.W, params.c))  # noqa: E731

    def passes(params, X0):
        xs = P.trajectory(form, params, X0)
        ps = P.costates(form, params, xs, Y)
        return (xs, ps, P.cost_terms_from_states(form, params, xs, Y)["total"],
                P.accuracy_or_zero(form, P.outputs(form, params.W, params.c, xs[-1]), y),
                H.stationarity_from_costates(form, params, xs, ps, Y))

    def layer_objective(xs, ps):
        d = jax.tree.map(lambda a: a[t], H.layer_data(form, params, xs, ps))
        objective = H.layer_objective(form, True, knobs, d, (params.W, params.c), Y)
        return jax.value_and_grad(objective)(d.theta_k)

    def readout_objective(xs, ps):
        return jax.value_and_grad(lambda f: H.readout_smooth_objective(
            form, True, knobs, readout_data(xs, ps), f))((params.W, params.c))

    parts = {"passes": (passes, (params, X0)),
             "layers": (lambda xs, ps: IT._layer_updates(form, config, knobs, params, xs, ps,
                                                         Y), (states, states)),
             "readout": (lambda xs, ps: IT.readout_update(form, config, knobs,
                                                          readout_data(xs, ps)),
                         (states, states)),
             "layer_objective": (layer_objective, (states, states)),
             "readout_objective": (readout_objective, (states, states))}
    out = {}
    for name, (fn, args) in parts.items():
        clear_compile_caches()
        t0 = time.perf_counter()
        jax.jit(fn).lower(*args).compile()
        out[name] = time.perf_counter() - t0
    return out


def measure_once(problem: cdl.Problem) -> dict[str, dict[str, float]]:
    """One repeat: every solver in its own fresh persistent cache directory, cold (its
    minimal equivalents first, then its ``first``), then ``cached``."""
    out: dict[str, dict[str, float]] = {}
    for name in SOLVERS:
        out[name] = {}
        with tempfile.TemporaryDirectory() as cache:
            use_cache(cache)
            clear_compile_caches()
            if name in MINIMAL:
                out[name]["minimal"] = minimal_compile(problem, name)
                clear_compile_caches()
                out[name]["minimal_init"] = minimal_init_compile(problem)
                clear_compile_caches()
            first = controldl_compile(problem, name)
            out[name]["first"] = first.pop("seconds")
            out[name].update({f"first_{k}": v for k, v in first.items()})
            clear_compile_caches()
            cached = controldl_compile(problem, name)
            out[name]["cached"] = cached.pop("seconds")
            out[name].update({f"cached_{k}": v for k, v in cached.items()})
            use_cache(None)
        clear_compile_caches()
    out["emsa_parts"] = emsa_parts(problem)
    clear_compile_caches()
    return out


def median_ratio(runs: list[dict], a: tuple[str, str], b: tuple[str, str]) -> float:
    return statistics.median(r[a[0]][a[1]] / r[b[0]][b[1]] for r in runs)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    problem = default_problem()
    jax.jit(lambda x: x + 1).lower(jnp.ones(3)).compile()  # process warm-up
    runs = [measure_once(problem) for _ in range(args.repeats)]
    median = {name: {k: statistics.median(r[name][k] for r in runs) for k in runs[0][name]}
              for name in (*SOLVERS, "emsa_parts")}
    ratios = {
        "adam_vs_minimal": median_ratio(runs, ("adam", "first"), ("adam", "minimal")),
        "lbfgs_vs_minimal": median_ratio(runs, ("lbfgs", "first"), ("lbfgs", "minimal")),
        "emsa_vs_adam": median_ratio(runs, ("emsa", "first"), ("adam", "first")),
    }
    for kind in MINIMAL:  # against a hand-written script's step and initialization
        ratios[f"{kind}_vs_minimal_with_init"] = statistics.median(
            r[kind]["first"] / (r[kind]["minimal"] + r[kind]["minimal_init"]) for r in runs)
    json.dump({"problem": repr(problem), "machine": platform.machine(),
               "python": platform.python_version(), "jax": jax.__version__,
               "load_average": os.getloadavg(), "cpus": os.cpu_count(),
               "median_s": median, "ratios": ratios, "runs": runs}, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
