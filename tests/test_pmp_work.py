"""The work counts of MSA and E-MSA (controldl.solvers.pmp.hamiltonian.work_weights) are
the products the compiled programs perform: the multiply-adds of every ``dot`` in the
optimized HLO (loops of known trip count multiplied out), against the formulas, and one
iteration's reported work against a count by hand on a tiny problem."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import controldl as cdl
from controldl import problem as P
from controldl.solvers.pmp import LBFGS
from controldl.solvers.pmp import hamiltonian as H
from controldl.solvers.pmp import iteration as IT

HEAD = re.compile(r"^(?:ENTRY\s+)?%([\w.\-]+)\s.*\{\s*$")
NAME = re.compile(r"^\s*(?:ROOT\s+)?%([\w.\-]+)\s*=\s*")
SHAPE = re.compile(r"^\s*(?:ROOT\s+)?%([\w.\-]+)\s*=\s*\w+\[([\d,]*)\]")


def _dims(text):
    return [int(v) for v in text.split(",") if v]


def dot_macs(hlo: str) -> int:
    """Multiply-adds of the ``dot`` instructions of an optimized HLO module, through
    fusions, calls, conditionals (the larger branch) and while loops of known trip count
    (the loops over the layers)."""
    comps, cur, entry = {}, None, None
    for line in hlo.splitlines():
        if cur is None:
            m = HEAD.match(line)
            if m:
                cur, comps[m.group(1)] = m.group(1), []
                entry = cur if line.startswith("ENTRY") else entry
        elif line.strip() == "}":
            cur = None
        else:
            comps[cur].append(line)

    def total(name):
        shapes = {m.group(1): _dims(m.group(2)) for m in map(SHAPE.match, comps[name]) if m}
        count = 0
        for line in filter(NAME.match, comps[name]):
            if " dot(" in line:
                lhs = re.findall(r"%([\w.\-]+)", line.split(" dot(", 1)[1])[0]
                con = _dims(re.search(r"lhs_contracting_dims=\{([\d,]*)\}", line).group(1))
                count += (np.prod(_dims(SHAPE.match(line).group(2)))
                          * np.prod([shapes[lhs][c] for c in con]))
            assert " convolution(" not in line
            count += sum(total(c) for c in re.findall(r"calls=%([\w.\-]+)", line))
            if " call(" in line:
                count += total(re.search(r"to_apply=%([\w.\-]+)", line).group(1))
            if " while(" in line:
                trip = re.search(r'"known_trip_count":\{"n":"(\d+)"\}', line)
                assert trip is not None, "a loop of unknown trip count"
                count += int(trip.group(1)) * total(re.search(r"body=%([\w.\-]+)", line).group(1))
            if " conditional(" in line:
                names = re.search(r"branch_computations=\{([^}]*)\}", line).group(1)
                count += max(total(c) for c in re.findall(r"%([\w.\-]+)", names))
        return int(count)

    return total(entry)


def _macs(fn, *args):
    return dot_macs(jax.jit(fn).lower(*args).compile().as_text())


def _problem(outputs, layers, **options):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 2))
    data = (cdl.data.moons(40, seed=3) if outputs == 1
            else cdl.data.classification(X, np.arange(40) % outputs, {"name": "three"}))
    return cdl.Problem(data, width=5, layers=layers, horizon=1.0, l2=0.1, readout_l2=0.1,
                       **options)


@pytest.mark.parametrize("extended", [True, False], ids=["emsa", "msa"])
@pytest.mark.parametrize("outputs, layers, running", [(1, 3, False), (1, 4, True),
                                                      (3, 3, False), (3, 4, True)])
def test_the_work_weights_are_the_products_of_the_compiled_programs(outputs, layers, running,
                                                                     extended):
    problem = _problem(outputs, layers, **({"running": 0.2} if running else {}))
    form, N = problem.formulation, 40
    params = P.Params(*(jnp.asarray(v) for v in P.init_params(form, seed=1)))
    X0, Y, y = problem.initial_states(), problem.targets(), jnp.asarray(problem.data.y_train)
    G = _macs(jax.value_and_grad(lambda p: P.cost(form, p, X0, Y)), params)
    assert G == N * H.gradient_products(form)

    def outer(p):  # what an iteration computes before its maximizations
        xs, ps, grad, at_k = IT.at_iterate(form, p, X0, Y, y)
        data = H.layer_data(form, p, xs, ps)
        run = jax.vmap(lambda d: H.running_part(form, d, (p.W, p.c), Y))(data)
        seeds = jax.vmap(lambda d, r, g: H.layer_start(form, d, r, g))(data, run,
                                                                         (grad.A, grad.b))
        rd = H.ReadoutData(xs, Y, ps[-1], (p.W, p.c))
        used = run.grad_x if extended else 0.0  # E-MSA's costate residual uses it
        return at_k, seeds, H.readout_start(form, rd, (grad.W, grad.c)), used

    xs = P.trajectory(form, params, X0)
    ps = P.costates(form, params, xs, Y)
    data = H.layer_data(form, params, xs, ps)
    run = jax.vmap(lambda d: H.running_part(form, d, (params.W, params.c), Y))(data)
    rdata = H.ReadoutData(xs, Y, ps[-1], (params.W, params.c))
    knobs = H.Knobs(jnp.asarray(1.0), jnp.asarray(0.0))
    w = H.work_weights(form, extended)
    assert _macs(outer, params) == pytest.approx(w.outer * G)
    layers = jax.vmap(lambda d, r: jax.value_and_grad(H.layer_objective(
        form, extended, knobs, d, (params.W, params.c), Y, r))(d.theta_k))
    assert _macs(layers, data, run) == pytest.approx(w.layers * G)
    readout = jax.value_and_grad(lambda phi: H.readout_smooth_objective(
        form, extended, knobs, rdata, phi))
    assert _macs(readout, (params.W, params.c)) == pytest.approx(w.readout * G)


def test_an_iteration_reports_the_work_counted_by_hand():
    """E-MSA on 8 points, d = 3, L = 3, one output: per sample a gradient of J is
    3·3·9 + 2·3 = 87 multiply-adds, the outer part 4·3·9 + 2·3 = 114, one pass of the
    inner loop 5·3·9 (layers) + 5·3 (readout) = 150; the iteration reports
    (114 + passes·150)/87, the passes being the most evaluations of any maximization
    (each starts from the costate pass's value and gradient: no pass for it)."""
    problem = cdl.Problem(cdl.data.moons(8, seed=3), width=3, layers=3, horizon=1.0,
                          l2=0.1, readout_l2=0.1)
    form = problem.formulation
    params = P.Params(*(jnp.asarray(v) for v in P.init_params(form, seed=2)))
    X0, Y, y = problem.initial_states(), problem.targets(), jnp.asarray(problem.data.y_train)
    knobs = H.Knobs(jnp.asarray(1.0), jnp.asarray(0.0))
    config = IT.Config(True, LBFGS(), LBFGS(), 10, None)
    _, info = jax.jit(lambda p: IT.iteration(form, p, knobs, X0, Y, y,
                                             jnp.zeros(2, jnp.uint32), config))(params)
    xs, ps, grad, _ = IT.at_iterate(form, params, X0, Y, y)
    (_, lay, _), (_, rd, _) = jax.jit(lambda p, xs, ps, g: IT._lockstep_updates(
        form, config, knobs, p, xs, ps, Y, g))(params, xs, ps, grad)
    passes = max(int(jnp.max(lay.evaluations)), int(rd.evaluations))
    assert passes >= 10 and int(jnp.max(lay.steps)) == 10
    assert float(info.work) == pytest.approx((114 + passes * 150) / 87, rel=1e-12)
