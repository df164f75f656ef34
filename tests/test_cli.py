"""The command line: end to end on a data file, and every bad input → one line, exit 2,
nothing written."""

import json
import re
import subprocess
import sys
import types

import numpy as np
import pytest
from reference import np_cost_terms

from controldl.cli import main


def numpy_cost(meta, arrays):
    """The cost of docs/design.md recomputed from the saved arrays by the NumPy oracle
    (``tests/reference.py``), the formulation read from ``meta.json``."""
    form = types.SimpleNamespace(**meta["problem"])
    assert form.loss == "logistic"
    A, b, W, c = arrays["A"], arrays["b"], arrays["W"], arrays["c"]
    X = arrays["X_train"]
    X0 = np.hstack([X, np.zeros((len(X), A.shape[1] - X.shape[1]))])
    return np_cost_terms(form, A, b, W, c, X0, arrays["y_train"][:, None].astype(float))


def test_train_on_a_ring_file_and_recompute_the_cost(ring_file, tmp_path, capsys):
    out = tmp_path / "sol"
    rc = main(["train", "--data", str(ring_file), "--width", "3", "--layers", "20",
               "--horizon", "5", "--l2", "1e-3", "--solver", "gd", "--max-iter", "1500",
               "--lr", "0.03", "--smooth", "1e-2", "--running", "0.1", "--l1", "1e-4",
               "--out", str(out)])
    assert rc == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["train_accuracy"] == 1.0
    with np.load(out / "arrays.npz") as f:
        arrays = {k: f[k] for k in f.files}
    hand = numpy_cost(meta, arrays)
    for k, v in hand.items():
        assert meta["cost"][k] == pytest.approx(v, rel=1e-10, abs=1e-14), k
    assert "saved to" in capsys.readouterr().out


def test_plot_writes_the_figures(tmp_path):
    out = tmp_path / "s"
    assert main(["train", "--n-samples", "60", "--width", "3", "--layers", "4",
                 "--max-iter", "5", "--out", str(out)]) == 0
    assert main(["plot", str(out)]) == 0
    names = sorted(p.name for p in (out / "figures").iterdir())
    assert names == ["controls.png", "decision_regions.png", "deformed_grid.png",
                     "figures.json", "history.png", "layers.png"]
    assert main(["plot", str(out)]) == 0  # earlier figures are replaced


def test_compare_writes_table_report_and_figures(tmp_path):
    out = tmp_path / "cmp"
    rc = main(["compare", "--n-samples", "80", "--layers", "4", "--solvers",
               "sgd,adam:lr=0.1:from=sgd:label=polish", "--max-iter", "20",
               "--out", str(out)])
    assert rc == 0
    results = json.loads((out / "results.json").read_text())
    assert [r["solver"] for r in results["rows"]] == ["sgd", "polish"]
    assert results["timing"] == "cold" and results["tol"] == 1e-4
    assert results["rows"][1]["predecessor_time_s"] == results["rows"][0]["wall_time_s"]
    for name in ("table.md", "report.md", "figures/cost_history.png",
                 "solutions/sgd/meta.json", "solutions/polish/arrays.npz"):
        assert (out / name).is_file(), name
    polish = json.loads((out / "solutions" / "polish" / "meta.json").read_text())
    sgd = json.loads((out / "solutions" / "sgd" / "meta.json").read_text())
    assert polish["history"][0]["cost"] == pytest.approx(sgd["cost"]["total"], rel=1e-12)


BAD = [
    (["train", "--layers", "0"], "--layers"),
    (["train", "--l2", "-1"], "--l2"),
    (["train", "--width", "1"], "smaller than the input dimension"),
    (["train", "--dataset", "nosuch"], "unknown dataset"),
    (["train", "--data", "/nonexistent/file.npz"], "does not exist"),
    (["train", "--solver", "gd", "--optimizer", "nosuchopt"], "unknown optax optimizer"),
    (["train", "--activation", "gelu"], "--activation"),
    (["train", "--horizon", "nan"], "--horizon"),
    (["train", "--seed", "-1"], "--seed: expected an integer >= 0"),
    (["train", "--warm-start", "/nonexistent/dir"], "does not exist"),
    (["train", "--dataset", "sine", "--loss", "logistic"], "is for classification"),
    (["train", "--terminal", "0"], "no loss in the cost"),
    (["plot", "/nonexistent/dir"], "does not exist"),
    (["compare", "--solvers", "adam:lr=abc"], "bad value"),
    (["compare", "--solvers", "casadi:from=adam,adam"], "warm-starts from"),
    (["train", "--solver", "emas"], "unknown solver 'emas'; did you mean 'emsa'? The solvers: "
                                    "gd, msa, emsa, pmp-newton, discrete-msa, casadi"),
    (["train", "--solver", "ipopt"], "did you mean 'casadi'?"),
    (["train", "--optimizer", "adma"], "unknown optax optimizer 'adma'; did you mean 'adam'?"),
    (["train", "--optimizer", "lbfgs", "--lr", "0.1"],
     "--lr is not an option of lbfgs (its line search chooses the step); its options: "
     "--optimizer, --record-every, --grad-tol"),
    (["train", "--solver", "lbfgs", "--lr", "0.1"], "--lr is not an option of lbfgs"),
    (["train", "--solver", "adam", "--optimizer", "sgd"], "drop --optimizer"),
    (["train", "--solver", "emsa", "--lr", "0.1"], "its options: --batch-size"),
    (["compare", "--solvers", "adam,emas"], "did you mean 'emsa'?"),
    (["compare", "--solvers", "lbfgs:lr=0.1"], "has no option 'lr'"),
]


@pytest.mark.parametrize("argv, fragment", BAD)
def test_bad_input_is_one_line_and_exit_2(argv, fragment, tmp_path, capsys):
    out = tmp_path / "out"
    code = None
    try:
        code = main([*argv, "--out", str(out)] if argv[0] != "plot" else argv)
    except SystemExit as exc:  # argparse errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("controldl: error:"), err
    assert fragment in lines[0]
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [] or all(p.name != "out" for p in tmp_path.iterdir())


def _write(path, X, y):
    np.savez(path, X=X, y=y)
    return path


@pytest.mark.parametrize("case", ["nan", "label", "shape"])
def test_bad_data_files_from_the_real_command(case, tmp_path):
    X = np.random.default_rng(0).normal(size=(20, 2))
    y = np.arange(20) % 2
    if case == "nan":
        X[3, 1] = np.nan
    elif case == "label":
        y = y - 1  # labels -1, 0: outside 0..K-1
    else:
        y = y[:10]
    path = _write(tmp_path / "d.npz", X, y)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "controldl", "train", "--data", str(path),
                           "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("controldl: error:"), proc.stderr
    assert not out.exists()


def test_help_explains_the_flags(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--lipschitz-bound", "--readout-l2", "--optimizer", "--lr", "--target-cost",
                 "--warm-start", "--test-fraction"):
        assert flag in text


def test_every_formulation_key_is_a_flag_that_reaches_the_problem():
    """The formulation flags are generated from the keys' declaration: each key, set to a
    value that is not its default, arrives in the problem's formulation."""
    from controldl.cli import build_parser
    from controldl.cli.common import FLAG_OF_KEY, problem_from_args
    from controldl.problem import FORMULATION_KEYS

    values = {"model": "mlp", "activation": "relu", "width": 4, "layers": 3, "horizon": 2.0,
              "loss": "sigmoid_mse", "l2": 0.5, "l1": 0.25, "smooth": 0.125,
              "running": 0.0625, "readout_l2": 0.03125, "terminal": 2.0,
              "train_readout": False, "lipschitz_bound": 0.5, "box_bound": 3.0}
    conv = {"model": "conv", "width": 3 * 16, "channels": 3, "kernel_size": 3,
            "readout": "pool", "loss": "cross_entropy", "input_pool": 2}  # the image model's
    discrete = {"controls": "ternary", "sparsity": 0.5}  # no constraint on a discrete set
    assert set(values) | set(conv) | set(discrete) == set(FORMULATION_KEYS)  # every key

    def parsed(values: dict, *data: str) -> dict:
        argv = ["train", "--n-samples", "20", *data]
        for k, v in values.items():
            flag = FLAG_OF_KEY.get(k, "--" + k.replace("_", "-"))
            argv += [flag] if isinstance(v, bool) else [flag, str(v)]
        form = problem_from_args(build_parser().parse_args(argv)).formulation
        return {k: getattr(form, k) for k in values}

    assert parsed(values) == values
    assert parsed(conv, "--dataset", "digits", "--n-samples", "100") == conv
    assert parsed(discrete) == discrete


def _data_file(tmp_path, case):
    """A bad data file for ``case``."""
    X = np.random.default_rng(0).normal(size=(20, 2))
    y = np.arange(20) % 2
    if case == "label-7":
        y = y.copy()
        y[4] = 7
        return _write(tmp_path / "d.npz", X, y)
    if case == "csv-1-2":
        path = tmp_path / "d.csv"
        np.savetxt(path, np.column_stack([X, y + 1]), delimiter=",")
        return path
    if case == "single-class":
        return _write(tmp_path / "d.npz", X, np.zeros(20, int))
    if case == "string-labels":
        path = tmp_path / "d.csv"
        path.write_text("\n".join(f"{a},{b},{'cat' if k % 2 else 'dog'}"
                                  for k, (a, b) in enumerate(X)))
        return path
    if case == "corrupt-npz":
        path = tmp_path / "d.npz"
        path.write_bytes(b"\x93NUMPY this is not a zip archive")
        return path
    if case == "directory":
        path = tmp_path / "d.npz"
        path.mkdir()
        return path
    raise AssertionError(case)


FILE_CASES = {
    "label-7": "every class present",
    "csv-1-2": "class(es) 0 have no point",
    "single-class": "single class",
    "string-labels": "text such as",
    "corrupt-npz": "not a valid .npz file",
    "directory": "is not a file",
}


def _one_line_exit_2(argv, out, capsys):
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("controldl: error:"), err
    assert not out.exists()
    return lines[0]


@pytest.mark.parametrize("case", sorted(FILE_CASES))
def test_bad_data_files_are_one_line_and_exit_2(case, tmp_path, capsys):
    path = _data_file(tmp_path, case)
    out = tmp_path / "out"
    line = _one_line_exit_2(["train", "--data", str(path), "--out", str(out)], out, capsys)
    assert FILE_CASES[case] in line


def test_unreadable_file_is_one_line_and_exit_2(ring_file, tmp_path, capsys, monkeypatch):
    import os

    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(ring_file)
                        else real(p, mode))
    out = tmp_path / "out"
    line = _one_line_exit_2(["train", "--data", str(ring_file), "--out", str(out)], out, capsys)
    assert "not readable" in line


def test_an_impossible_size_is_refused_before_allocating(tmp_path, capsys):
    out = tmp_path / "out"
    line = _one_line_exit_2(["train", "--n-samples", "100000000000", "--out", str(out)], out,
                            capsys)
    assert "GiB" in line and "available" in line


def test_diverged_training_exits_1_and_saves_the_solution(tmp_path, capsys):
    out = tmp_path / "sgd"
    rc = main(["train", "--n-samples", "60", "--layers", "4", "--optimizer", "sgd", "--lr",
               "1000", "--out", str(out)])
    assert rc == 1
    meta = json.loads((out / "meta.json").read_text())
    assert meta["status"] == "diverged"
    assert meta["solver"]["options"]["return_best"] is True
    assert meta["stats"]["returned"] == "best" and meta["stats"]["best_iteration"] == 0
    printed = capsys.readouterr().out
    assert printed.startswith("problem: resnet") and "width 3, L = 4" in printed


def test_train_and_compare_without_flags_solve_the_same_problem():
    from controldl.cli import build_parser, common

    parser = build_parser()
    a = common.problem_from_args(parser.parse_args(["train"]))
    b = common.problem_from_args(parser.parse_args(["compare"]))
    assert a.formulation == b.formulation
    assert a.formulation.readout_l2 > 0 and a.formulation.width == 3
    np.testing.assert_array_equal(a.data.X_train, b.data.X_train)
    np.testing.assert_array_equal(a.data.X_test, b.data.X_test)
    assert a.describe() == b.describe()


@pytest.mark.parametrize("command", ["train", "compare"])
def test_help_shows_the_defaults_and_the_exit_codes(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for fragment in ("width n+1", "L = 20", "T = 5", "readout_l2 0.001", "0.25 held out",
                     "exit status: 0", "1 when one diverged", "2 on bad input",
                     "(default 0.0001)"):
        assert fragment in text, fragment
    assert not re.search(r"\bOPT_", text)  # metavars name the option


def test_readout_l2_zero_is_explained(tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["train", "--n-samples", "60", "--layers", "4", "--max-iter", "2",
                 "--readout-l2", "0", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "readout_l2 = 0" in err and "no minimizer" in err


def test_help_is_plain_text():
    from controldl.cli import build_parser

    for command in ("train", "compare"):
        text = build_parser()._subparsers._group_actions[0].choices[command].format_help()
        assert "``" not in text and ":func:" not in text, command


def test_train_takes_an_optimizer_for_a_solver_and_compare_joins_repeated_lists(tmp_path):
    """``train --solver adam`` (and ``lbfgs``) is gradient descent with that optimizer, named
    so in meta.json's label and the summary; ``compare --solvers a --solvers b`` runs
    both lists."""
    for name in ("adam", "lbfgs"):
        out = tmp_path / name
        assert main(["train", "--solver", name, "--n-samples", "40", "--layers", "3",
                     "--max-iter", "3", "--out", str(out)]) == 0
        meta = json.loads((out / "meta.json").read_text())
        assert meta["solver"]["name"] == "gd" and meta["solver"]["label"] == name
        assert meta["solver"]["options"]["optimizer"] == name
    out = tmp_path / "cmp"
    assert main(["compare", "--n-samples", "40", "--layers", "3", "--max-iter", "3",
                 "--solvers", "adam", "--solvers", "sgd,lbfgs", "--no-figures",
                 "--out", str(out)]) == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [r["solver"] for r in rows] == ["adam", "sgd", "lbfgs"]
