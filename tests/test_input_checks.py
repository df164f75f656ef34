"""The small input checks: each bad input is one clear line (exit 2 from the command,
a ValueError from the library) that says what is wrong."""

from __future__ import annotations

import numpy as np
import pytest

import controldl as cdl
from controldl.cli import main

RNG = np.random.default_rng(0)
X = RNG.normal(size=(20, 2))
Y = np.arange(20) % 2


def _line(argv, tmp_path, capsys):
    out = tmp_path / "out"
    try:
        code = main([*argv, "--out", str(out)])
    except SystemExit as exc:  # argparse's errors
        code = exc.code
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 2 and len(err) == 1 and err[0].startswith("controldl: error:"), err
    assert not out.exists()
    return err[0]


def test_complex_inputs_are_refused_not_truncated(tmp_path, capsys):
    Xc = X + 1j * RNG.normal(size=X.shape)
    with pytest.raises(ValueError, match=r"inputs X are complex \(complex128\)"):
        cdl.Problem(Xc, Y)
    np.savez(tmp_path / "c.npz", X=Xc, y=Y)
    line = _line(["train", "--data", str(tmp_path / "c.npz")], tmp_path, capsys)
    assert "are complex" in line and "real and imaginary parts" in line
    with pytest.raises(ValueError, match="targets are complex"):
        cdl.data.regression(X, Y + 1j, {})


@pytest.mark.parametrize("labels, shown", [((-1, 0), "{-1, 0}: relabel them to 0..1"),
                                           ((-1, 1), "{-1, 1}: relabel them to 0..1")])
def test_negative_labels_are_described_as_they_are(labels, shown):
    y = np.where(Y == 0, *labels)
    with pytest.raises(ValueError) as err:
        cdl.Problem(X, y)
    assert f"training labels must be integers 0..K-1, got {shown}" in str(err.value)
    assert "single class" not in str(err.value)
    with pytest.raises(ValueError, match=r"a single class \(3\)"):
        cdl.Problem(X, np.full(20, 3))


def test_regression_on_text_targets_says_so(tmp_path, capsys):
    rows = [f"{a:.3f},{b:.3f},{'ab'[i % 2]}" for i, (a, b) in enumerate(X)]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    line = _line(["train", "--data", str(tmp_path / "t.csv"), "--task", "regression"],
                 tmp_path, capsys)
    assert "regression targets must be numbers" in line and "such as 'a', 'b'" in line


@pytest.mark.parametrize("flag", ["--lipschitz-bound", "--box-bound"])
@pytest.mark.parametrize("value", ["-1", "0"])
def test_a_bound_must_be_positive(flag, value, tmp_path, capsys):
    line = _line(["train", flag, value], tmp_path, capsys)
    assert f"argument {flag}: expected a number > 0, got {value}" in line


@pytest.mark.parametrize("key, value, message", [
    ("horizon", "5", "horizon must be a number, got '5'"),
    ("l2", "0.1", "l2 must be a number, got '0.1'"),
    ("lipschitz_bound", "0.9", "lipschitz_bound must be a number, got '0.9'"),
    ("layers", "5", "layers must be an integer >= 1, got '5'"),
    ("train_readout", "false", "train_readout must be True or False, got 'false'"),
    ("horizon", True, "horizon must be a number, got True"),
])
def test_text_is_not_a_number(key, value, message):
    with pytest.raises(ValueError) as err:
        cdl.Problem(X, Y, **{key: value})
    assert str(err.value) == message
