"""Data parallelism over virtual CPU devices, rematerialization, float32."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

import controldl as cdl
from controldl import problem as P

FOUR_DEVICES = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}


def _run(code: str) -> str:
    """Run ``code`` in a child with 4 virtual CPU devices, in float64."""
    code = 'import jax; jax.config.update("jax_enable_x64", True)\n' + textwrap.dedent(code)
    proc = subprocess.run([sys.executable, "-c", code], env=FOUR_DEVICES,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_sharded_gradient_descent_equals_one_device_and_is_sharded():
    out = _run("""
        import json, jax, controldl as cdl
        from controldl import parallel
        p = cdl.Problem(cdl.data.ring(200, seed=0), width=3, layers=6, horizon=2.0, l2=1e-3,
                        running=0.2)
        one = cdl.solve(p, cdl.GradientDescent("adam", lr=0.05), max_iter=40)
        solver = cdl.GradientDescent("adam", lr=0.05, devices=4)
        four = cdl.solve(p, solver, max_iter=40)
        # The executable the solve ran (from the cache: placing the arguments as the solver
        # does gives the same key): its sample inputs are split in four.
        from controldl.solvers.base import compile_count
        from controldl.solvers.gd import _compiled_step
        mesh = parallel.data_mesh(4)
        X0, Y, y = parallel.shard_samples(mesh, p.initial_states(), p.targets(),
                                          jax.numpy.asarray(p.data.y_train))
        params, key = parallel.replicate(mesh, (cdl.init_params(p.formulation, seed=0),
                                                parallel.device_array(parallel.NO_ROWS)))
        builds = compile_count()
        step = _compiled_step(p.formulation, solver, 0, (params, X0, Y, y, key))
        shardings = jax.tree.leaves(step.func.input_shardings[0])
        x0_sharding = shardings[-3]  # (form, params, opt_state, X0, Y, y): X0 (rows unused)
        shardings = shardings[len(jax.tree.leaves(p.formulation)):]  # params first
        print(json.dumps({"one": one.cost["total"], "four": four.cost["total"],
                          "shards": [s.data.shape[0] for s in X0.addressable_shards],
                          "X0": [x0_sharding.shard_shape((200, 3)),
                                 len(x0_sharding.device_set)],
                          "A": shardings[0].is_fully_replicated,
                          "cached": compile_count() == builds,
                          "devices": four.stats["devices"]["count"]}))
    """)
    r = json.loads(out.strip().splitlines()[-1])
    assert r["four"] == pytest.approx(r["one"], rel=1e-8)
    assert r["shards"] == [50, 50, 50, 50]
    assert r["cached"], "the check must look at the executable the solve ran"
    assert r["X0"] == [[50, 3], 4] and r["A"]
    assert r["devices"] == 4


def _train_one_and_four(tmp_path, solver: str, flags: tuple[str, ...] = (),
                        extra: str = "") -> tuple[dict, dict, str]:
    """``controldl train --devices 1`` and ``--devices 4`` on a ring file (4 virtual CPU
    devices), then the code ``extra`` in the same process; returns both meta.json and what
    the child printed."""
    d = cdl.data.ring(120, seed=1)
    np.savez(tmp_path / "r.npz", X=d.X_train, y=d.y_train)
    out = _run(textwrap.dedent(f"""
        import json
        from controldl.cli import main
        for k in (1, 4):
            main(["train", "--data", "{tmp_path}/r.npz", "--width", "3", "--layers", "5",
                  "--solver", "{solver}", "--max-iter", "20", "--devices", str(k),
                  "--test-fraction", "0", "--tol", "0",
                  "--out", "{tmp_path}/d%d" % k, *{list(flags)!r}])
    """) + textwrap.dedent(extra))
    assert "saved to" in out
    one = json.loads((tmp_path / "d1" / "meta.json").read_text())
    four = json.loads((tmp_path / "d4" / "meta.json").read_text())
    assert one["iterations"] == four["iterations"] > 0
    assert four["cost"]["total"] == pytest.approx(one["cost"]["total"], rel=1e-8)
    assert four["devices"]["count"] == 4
    return one, four, out


def test_cli_devices_gives_the_same_cost_gd(tmp_path):
    _train_one_and_four(tmp_path, "gd")


def test_cli_devices_gives_the_same_cost_emsa_and_the_samples_are_sharded(tmp_path):
    """E-MSA with l2, a running cost and smooth: the same cost and stationarity on 4
    devices; the compiled iteration (the one the CLI just used) takes the
    samples split in four and the controls whole."""
    one, four, out = _train_one_and_four(
        tmp_path, "emsa", ("--l2", "1e-3", "--running", "0.2", "--smooth", "0.01"), f"""
        import jax
        import controldl as cdl
        from controldl import parallel
        from controldl.solvers.base import compile_count
        from controldl.solvers.pmp.iteration import (Config, batch_rows, compiled_run,
                                                     one_iteration)
        p = cdl.Problem(cdl.data.load_file("{tmp_path}/r.npz"), width=3, layers=5,
                        l2=1e-3, running=0.2, smooth=0.01)
        solver = cdl.EMSA(devices=4)
        mesh = parallel.data_mesh(4)
        X0, Y, y = parallel.shard_samples(mesh, p.initial_states(), p.targets(),
                                          jax.numpy.asarray(p.data.y_train))
        params, knobs, rows, control = parallel.replicate(mesh, (
            cdl.init_params(p.formulation, seed=0), solver.knobs(jax.numpy.float64),
            batch_rows(None, 0, 1, None), one_iteration(jax.numpy.float64)))
        layer, readout = solver.inner_solvers(p)
        config = Config(True, layer, readout, solver.inner_steps, None)
        builds = compile_count()
        step = compiled_run(p.formulation, config, (params, knobs, X0, Y, y, rows, control))
        flat = jax.tree.leaves(step.input_shardings[0])
        n_form = len(jax.tree.leaves(p.formulation))
        X0_sharding, A_sharding = flat[n_form + 6], flat[n_form]
        print(json.dumps({{"X0": [X0_sharding.shard_shape((120, 3)),
                                 len(X0_sharding.device_set)],
                          "A": A_sharding.is_fully_replicated,
                          "cached": compile_count() == builds}}))
    """)
    assert one["cost"]["running"] > 0 and one["cost"]["smooth"] > 0
    np.testing.assert_allclose(four["stats"]["stationarity"], one["stats"]["stationarity"],
                               rtol=1e-6)
    r = json.loads(out.strip().splitlines()[-1])
    assert r["cached"], "the check must look at the executable the CLI ran"
    assert r["X0"] == [[30, 3], 4] and r["A"]


def test_too_many_devices_is_a_clear_error():
    p = cdl.Problem(cdl.data.ring(20, seed=0), width=2, layers=2)
    with pytest.raises(ValueError, match="devices requested"):
        cdl.solve(p, cdl.GradientDescent(devices=jax.device_count() + 1), max_iter=1)


def test_rematerialized_gradient_is_exact():
    p = cdl.Problem(cdl.data.ring(40, seed=0), width=3, layers=7, horizon=2.0, running=0.5)
    form, X0, Y = p.formulation, p.initial_states(), p.targets()
    params = P.init_params(form, seed=1)
    plain = jax.jit(jax.grad(lambda q: P.cost_and_outputs(form, q, X0, Y)[0]))(params)
    for k in (1, 3, 7):
        remat = jax.jit(jax.grad(lambda q, k=k: P.cost_and_outputs(form, q, X0, Y, k)[0]))(
            params)
        for a, b in zip(plain, remat, strict=True):
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-12, atol=1e-15)


def test_minibatches_on_four_devices_equal_one_device_batch_by_batch():
    """gd (Adam), MSA, E-MSA and pmp-newton with batch_size 64 of 120 samples: every
    iteration (epoch 1, so each records the full cost) equals the one-device solve; the
    batch drawn inside a step traced under on_mesh is split in four (a plain gather
    would leave it whole on every device)."""
    out = _run("""
        import json, jax, jax.numpy as jnp, controldl as cdl
        from controldl import parallel
        from controldl.solvers.pmp.newton import PMPNewton
        p = cdl.Problem(cdl.data.ring(120, seed=0), width=3, layers=3, horizon=2.0,
                        l2=1e-3, running=0.2)
        make = {"gd": lambda k: cdl.GradientDescent("adam", lr=0.05, batch_size=64, devices=k),
                "msa": lambda k: cdl.MSA(batch_size=64, devices=k, mu=1.0, inner_steps=3),
                "emsa": lambda k: cdl.EMSA(batch_size=64, devices=k, inner_steps=3),
                "pmp-newton": lambda k: PMPNewton(batch_size=64, devices=k)}
        runs = {}
        for name, solver in make.items():
            one, four = (cdl.solve(p, solver(k), max_iter=4, tol=None) for k in (None, 4))
            runs[name] = [[h["cost"] for h in s.history] for s in (one, four)]
            runs[name].append(four.stats["devices"]["count"])
        mesh = parallel.data_mesh(4)
        X0, = parallel.shard_samples(mesh, p.initial_states())
        key = parallel.replicate(mesh, parallel.BatchOrder(120, 64, seed=3).rows(0))
        draw = jax.jit(lambda k, x: parallel.draw_batch(k, x)[0])
        with parallel.on_mesh(mesh):
            sharded = draw.lower(key, X0).compile()(key, X0)
        plain = jax.jit(lambda k, x: parallel.draw_batch(k, x)[0])(key, X0)
        runs["shards"] = [s.data.shape[0] for s in sharded.addressable_shards]
        runs["plain"] = [s.data.shape[0] for s in plain.addressable_shards]
        runs["same_rows"] = bool(jnp.all(sharded == plain))
        try:
            cdl.solve(p, cdl.EMSA(batch_size=66, devices=4), max_iter=1)
        except ValueError as exc:
            runs["error"] = str(exc)
        print(json.dumps(runs))
    """)
    r = json.loads(out.strip().splitlines()[-1])
    for name in ("gd", "msa", "emsa", "pmp-newton"):
        one, four, count = r[name]
        assert len(one) == len(four) >= 4, name
        np.testing.assert_allclose(four, one, rtol=1e-9, err_msg=name)
        assert count == 4
    assert r["shards"] == [16, 16, 16, 16] and r["plain"] == [64] * 4 and r["same_rows"]
    assert "66 samples per batch cannot be split evenly over 4 devices" in r["error"]



@pytest.mark.parametrize("name", ["emsa", "msa"])
def test_bounded_memory_pontryagin_iterates_equal_the_stored_ones(name):
    """checkpoint_every = 3 at L = 7 (a padded first block), with a running cost (the
    readout's objective recomputes the states) and smoothness (neighbour coupling): the
    same iterates, costs and stationarity as the stored iteration, iteration by
    iteration."""
    p = cdl.Problem(cdl.data.ring(60, seed=0), width=3, layers=7, horizon=2.0, l2=1e-3,
                    running=0.2, smooth=0.01)
    make = cdl.EMSA if name == "emsa" else lambda **kw: cdl.MSA(mu=1.0, **kw)
    stored = cdl.solve(p, make(inner_steps=4), max_iter=3)
    bounded = cdl.solve(p, make(inner_steps=4, checkpoint_every=3), max_iter=3)
    assert bounded.iterations == stored.iterations == 3
    for a, b in zip(stored.params, bounded.params, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-12)
    for key in ("cost", "stationarity", "inner_ascent"):
        np.testing.assert_allclose([h[key] for h in bounded.history],
                                   [h[key] for h in stored.history], rtol=1e-10, atol=1e-13)
    assert stored.history[-1]["cost"] < stored.history[0]["cost"]


def test_bounded_memory_iteration_needs_a_fraction_of_the_stored_temporaries():
    """XLA's own buffer accounting of the compiled E-MSA iteration (N = 2000, L = 64):
    the checkpointed sweep (k = 8) needs under a tenth of the stored version's temporary
    memory (which holds all 2·N·(L+1)·d states and costates and more)."""
    from controldl.solvers.pmp.checkpointed import default_every
    from controldl.solvers.pmp.iteration import Config, batch_rows, compiled_run, one_iteration

    p = cdl.Problem(cdl.data.ring(2000, seed=0), width=3, layers=64, horizon=4.0, l2=1e-3)
    solver = cdl.EMSA(inner_steps=2)
    layer, readout = solver.inner_solvers(p)
    args = (cdl.init_params(p.formulation, seed=0), solver.knobs(jax.numpy.float64),
            p.initial_states(), p.targets(), jax.numpy.asarray(p.data.y_train),
            batch_rows(None, 0, 1, None), one_iteration(jax.numpy.float64))
    temp = {k: compiled_run(p.formulation, Config(True, layer, readout, 2, None, k),
                                  args).memory_analysis().temp_size_in_bytes
            for k in (None, default_every(64))}
    assert default_every(64) == 8 and default_every(65) == 9 and default_every(1) == 1
    assert temp[None] >= 2 * 2000 * 65 * 3 * 8
    assert temp[8] < temp[None] / 10, temp


def test_devices_that_do_not_divide_the_samples_pad_them_with_weight_zero(tmp_path):
    """``controldl train --devices 4`` on 600 points with the default quarter held out:
    450 training points, not a multiple of 4. The samples are padded with weight-zero
    copies; every mean over samples (the losses, the accuracy) and E-MSA's sums skip
    them, so gradient descent gives the one-device cost to 1e-8 and E-MSA (with a running
    cost and smoothness, its penalties summed over samples) to 1e-6, iteration by
    iteration, with the same accuracies; the samples really are split over 4 devices."""
    d = cdl.data.ring(600, seed=1)
    np.savez(tmp_path / "r.npz", X=d.X_train, y=d.y_train)
    out = _run(f"""
        import json
        from controldl.cli import main
        for solver, iters in (("gd", 20), ("emsa", 4)):
            for k in (1, 4):
                assert main(["train", "--data", "{tmp_path}/r.npz", "--width", "3",
                             "--layers", "4", "--running", "0.2", "--smooth", "0.01",
                             "--solver", solver, "--max-iter", str(iters), "--tol", "0",
                             "--devices", str(k), "--out", f"{tmp_path}/{{solver}}{{k}}"]) == 0
    """)
    assert "saved to" in out
    for solver, rel in (("gd", 1e-8), ("emsa", 1e-6)):
        one, four = (json.loads((tmp_path / f"{solver}{k}" / "meta.json").read_text())
                     for k in (1, 4))
        assert len(np.load(tmp_path / f"{solver}4" / "arrays.npz")["X_train"]) == 450
        assert four["devices"]["count"] == 4 and one["iterations"] == four["iterations"] > 0
        assert four["cost"]["total"] == pytest.approx(one["cost"]["total"], rel=rel)
        np.testing.assert_allclose([h["cost"] for h in four["history"]],
                                   [h["cost"] for h in one["history"]], rtol=rel)
        assert [h["train_accuracy"] for h in four["history"]] == pytest.approx(
            [h["train_accuracy"] for h in one["history"]], abs=1e-12)
        assert four["stationarity"] == pytest.approx(one["stationarity"], rel=1e-6)


def test_padding_weighs_every_mean_over_samples():
    """The weighted mean of padded rows is the mean of the real ones; the padding of
    :func:`controldl.parallel.pad_samples` is finite copies with weight 0; a mini-batch's
    rows (:class:`controldl.parallel.BatchOrder` over the real count) take real rows only,
    as plain arrays."""
    from controldl import parallel

    X0, Y, y = np.arange(10.0).reshape(5, 2), np.arange(5.0)[:, None], np.arange(5)
    X0p, Yp, yp = parallel.pad_samples(8, X0, Y, y)
    assert X0p.shape == (8, 2) and Yp.shape == (8, 1) and Yp.count == yp.count == 5
    np.testing.assert_array_equal(Yp.weight, [1, 1, 1, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(X0p[5:], X0[:3])
    v = jax.numpy.asarray(np.r_[1.0, 2, 3, 4, 5, 1e6, np.nan, 7])
    assert float(parallel.weighted_mean(v, Yp)) == 3.0
    assert float(jax.grad(lambda u: parallel.weighted_mean(u, Yp))(v)[6]) == 0.0
    rows = parallel.BatchOrder(parallel.sample_count(Yp), 5, seed=0).rows(0)  # real rows
    batch = parallel.draw_batch(rows, X0p, Yp, yp)
    assert sorted(np.asarray(batch[2]).tolist()) == [0, 1, 2, 3, 4]
