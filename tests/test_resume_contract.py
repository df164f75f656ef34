"""The resume contract: ``train --resume DIR`` refuses a problem or solver flag that
differs from the checkpoint's (naming each difference) and accepts the same values; a
checkpoint that does not match its own record is "corrupt checkpoint: …"; a missing
problem record is an error, never defaults."""

from __future__ import annotations

import json

import numpy as np
import pytest

import controldl as cdl
from controldl.cli import main
from controldl.solvers import checkpoint

RUN = ["--n-samples", "40", "--layers", "4", "--test-fraction", "0", "--lr", "0.05"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A solution directory with its checkpoint (3 Adam iterations of a 40-point ring)."""
    run = tmp_path_factory.mktemp("resume") / "run"
    assert main(["train", *RUN, "--max-iter", "3", "--checkpoint-every-s", "1e-6",
                 "--out", str(run)]) in (0, 1)
    assert checkpoint.load(run).iteration == 3
    return run


def _one_line(argv, capsys):
    code = main(argv)
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 2 and len(err) == 1 and err[0].startswith("controldl: error:"), err
    return err[0]


@pytest.mark.parametrize("flags, shown", [
    (["--layers", "30"], "--layers 30 (checkpoint: 4)"),
    (["--dataset", "spiral"], "--dataset spiral (checkpoint: ring)"),
    (["--n-samples", "60"], "--n-samples 60 (checkpoint: 40)"),
    (["--frozen-readout"], "--frozen-readout (checkpoint: train_readout true)"),
    (["--solver", "emsa"], "--solver emsa (checkpoint: gd)"),
    (["--lr", "0.1"], "--lr 0.1 (checkpoint: 0.05)"),
    (["--seed", "3"], "--seed 3 (checkpoint: 0)"),
])
def test_a_flag_that_differs_from_the_checkpoint_is_refused(flags, shown, saved, capsys):
    before = (saved / "meta.json").read_bytes()
    line = _one_line(["train", "--resume", str(saved), *flags, "--max-iter", "5"], capsys)
    assert "--resume continues the checkpoint's problem and solver" in line
    assert shown in line
    assert (saved / "meta.json").read_bytes() == before  # nothing written


def test_every_difference_is_named_and_the_same_values_are_accepted(saved, tmp_path, capsys):
    line = _one_line(["train", "--resume", str(saved), "--layers", "30", "--l2", "0.5"],
                     capsys)
    assert "--layers 30 (checkpoint: 4), --l2 0.5 (checkpoint: 0.001)" in line
    out = tmp_path / "more"
    assert main(["train", "--resume", str(saved), *RUN, "--dataset", "ring", "--solver", "gd",
                 "--l2", "1e-3", "--max-iter", "5", "--out", str(out)]) in (0, 1)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["iterations"] == 5 and meta["stats"]["resumed_from_iteration"] == 3


def _copy(saved, tmp_path):
    import shutil

    target = tmp_path / "copy"
    shutil.copytree(saved, target)
    return target / "checkpoint"


def _edit_state(ck_dir, change):
    meta = json.loads((ck_dir / "state.json").read_text())
    change(meta)
    (ck_dir / "state.json").write_text(json.dumps(meta))


def _edit_leaves(ck_dir, change):
    with np.load(ck_dir / "state.npz") as f:
        arrays = {k: f[k] for k in f.files}
    change(arrays)
    np.savez(ck_dir / "state.npz", **arrays)


def _extra_leaf(ck_dir):
    _edit_state(ck_dir, lambda m: m["leaves"].append({"shape": [], "dtype": "float64"}))


def _missing_leaf(ck_dir):
    _edit_leaves(ck_dir, lambda a: a.pop("leaf_00001"))


def _wrong_shape(ck_dir):
    """A leaf of another shape, with a state.json that agrees: the files agree with each
    other, not with the solver state they stand for."""
    def grow(arrays):
        arrays["leaf_00001"] = np.zeros((7, 7))
    _edit_leaves(ck_dir, grow)
    _edit_state(ck_dir, lambda m: m["leaves"].__setitem__(1, {"shape": [7, 7],
                                                             "dtype": "float64"}))


def _no_layers(ck_dir):
    _edit_state(ck_dir, lambda m: m["problem"].pop("layers"))


def _no_problem(ck_dir):
    _edit_state(ck_dir, lambda m: m.pop("problem"))


@pytest.mark.parametrize("damage, fragment", [
    (_extra_leaf, "state.json lists"),
    (_missing_leaf, "state.json lists"),
    (_wrong_shape, "has shape (7, 7)"),
    (_no_layers, "the problem record has no layers"),
    (_no_problem, "state.json has no 'problem'"),
])
def test_a_corrupt_checkpoint_is_one_line(damage, fragment, saved, tmp_path, capsys):
    ck_dir = _copy(saved, tmp_path)
    damage(ck_dir)
    line = _one_line(["train", "--resume", str(ck_dir.parent), "--max-iter", "5"], capsys)
    assert line.startswith("controldl: error: corrupt checkpoint: ")
    assert fragment in line


def test_a_solution_without_its_problem_record_is_an_error(saved, tmp_path):
    meta_path = _copy(saved, tmp_path).parent / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["problem"].pop("layers")
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="the problem record has no layers"):
        cdl.load(meta_path.parent)
    meta.pop("problem")
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="no problem record"):
        cdl.load(meta_path.parent)
