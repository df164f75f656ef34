"""Datasets, files, splits and their validation."""

import numpy as np
import pytest

import controldl as cdl
from controldl import data as D


@pytest.mark.parametrize("name", sorted(set(D.DATASETS) - {"digits", "mnist"}))  # own files
def test_generators_are_deterministic_and_valid(name):
    a = D.make_dataset(name, n_samples=101, seed=3, noise=0.01)
    b = D.make_dataset(name, n_samples=101, seed=3, noise=0.01)
    c = D.make_dataset(name, n_samples=101, seed=4, noise=0.01)
    assert a.X_train.shape[0] == 101
    np.testing.assert_array_equal(a.X_train, b.X_train)
    assert not np.array_equal(a.X_train, c.X_train)
    if a.task == "classification":
        assert set(np.unique(a.y_train)) == {0, 1}
    assert a.source["name"] == name and a.source["seed"] == 3


def test_ring_geometry():
    d = D.ring(2000, seed=0)
    r = np.linalg.norm(d.X_train, axis=1)
    assert np.all(r[d.y_train == 0] <= 0.5 + 1e-12)
    assert np.all((r[d.y_train == 1] >= 0.75 - 1e-12) & (r[d.y_train == 1] <= 1 + 1e-12))


def test_spheres_any_dimension_and_label_flips():
    d = D.spheres(300, seed=1, dim=5)
    assert d.X_train.shape == (300, 5)
    flipped = D.ring(1000, seed=1, flip=0.1)
    r = np.linalg.norm(flipped.X_train, axis=1)
    wrong = np.mean((r > 0.6) != (flipped.y_train == 1))
    assert 0.05 < wrong < 0.15


def test_files_npz_and_csv(tmp_path):
    X = np.random.default_rng(0).normal(size=(20, 3))
    y = np.arange(20) % 3
    np.savez(tmp_path / "d.npz", X=X, y=y)
    d = D.load_file(tmp_path / "d.npz")
    assert d.n_classes == 3 and d.task == "classification"
    np.savetxt(tmp_path / "d.csv", np.column_stack([X, y]), delimiter=",",
               header="a,b,c,label", comments="")
    d2 = D.load_file(tmp_path / "d.csv")
    np.testing.assert_allclose(d2.X_train, X)
    np.savetxt(tmp_path / "r.csv", np.column_stack([X, X[:, 0] * 0.37]), delimiter=",")
    assert D.load_file(tmp_path / "r.csv").task == "regression"


@pytest.mark.parametrize("X, y, match", [
    (np.array([[0.0, np.nan], [1, 1]]), np.array([0, 1]), "NaN"),
    (np.zeros((3, 2)), np.array([0, 1]), "rows"),
    (np.zeros((3, 2)), np.array([0, 1, -1]), r"integers 0..K-1, got \{-1, 0, 1\}"),
    (np.zeros((3, 2)), np.array([0, 1, 0.5]), "integers"),
])
def test_bad_arrays_are_rejected(X, y, match):
    with pytest.raises(ValueError, match=match):
        D.Dataset(X, y, task="classification", n_classes=2)


def test_bad_files_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        D.load_file(tmp_path / "missing.npz")
    np.savez(tmp_path / "nox.npz", Z=np.zeros(3))
    with pytest.raises(ValueError, match="missing array 'X'"):
        D.load_file(tmp_path / "nox.npz")
    (tmp_path / "d.txt").write_text("1,2,3")
    with pytest.raises(ValueError, match="unsupported"):
        D.load_file(tmp_path / "d.txt")
    np.savez(tmp_path / "nan.npz", X=np.array([[np.nan, 1.0], [0, 0]]), y=np.array([0, 1]))
    with pytest.raises(ValueError, match="NaN"):
        D.load_file(tmp_path / "nan.npz")


def test_split_is_stratified_seeded_and_disjoint():
    d = D.ring(200, seed=0)
    s = D.train_test_split(d, 0.25, seed=1)
    assert len(s.X_test) == 50 and len(s.X_train) == 150
    assert abs(np.mean(s.y_test) - 0.5) < 1e-12
    rows = {tuple(r) for r in s.X_train} & {tuple(r) for r in s.X_test}
    assert not rows
    s2 = D.train_test_split(d, 0.25, seed=1)
    np.testing.assert_array_equal(s.X_test, s2.X_test)
    with pytest.raises(ValueError, match="test fraction"):
        D.train_test_split(d, 1.0)


def test_standardize_uses_training_statistics():
    d = D.train_test_split(D.spheres(200, seed=0, dim=3), 0.2, seed=0)
    s = D.standardize(d)
    np.testing.assert_allclose(s.X_train.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(s.X_train.std(axis=0), 1, atol=1e-12)
    mean = np.array(s.source["standardized"]["mean"])
    std = np.array(s.source["standardized"]["std"])
    np.testing.assert_allclose(s.X_test, (d.X_test - mean) / std)


def test_dataset_from_arrays_infers_the_task_and_the_classes():
    X = np.random.default_rng(0).normal(size=(12, 2))
    d = D.Dataset(X, np.arange(12) % 3)
    assert d.task == "classification" and d.n_classes == 3
    d = D.Dataset(X.tolist(), (np.arange(12) % 2).astype(float).tolist())
    assert d.task == "classification" and d.n_classes == 2 and d.y_train.dtype == np.int64
    r = D.Dataset(X, X[:, 0] * 0.3)
    assert r.task == "regression" and r.n_classes is None


@pytest.mark.parametrize("y, match", [
    (np.array([1, 2] * 6), r"got \{1, 2\}, so K = 3 and class\(es\) 0 have no point"),
    (np.array([0, 1] * 5 + [7, 0]), r"class\(es\) 2, 3, 4, 5, 6 have no point"),
    (np.zeros(12, int), "single class"),
    (np.array(["a", "b"] * 6), "text such as 'a', 'b'"),
])
def test_labels_must_be_exactly_0_to_K_minus_1_with_every_class(y, match):
    X = np.zeros((12, 2))
    with pytest.raises(ValueError, match=match):
        D.Dataset(X, y)


def test_an_impossible_size_is_refused_before_allocating(monkeypatch):
    monkeypatch.setattr(D, "available_memory_bytes", lambda: 10 * 2**20)
    with pytest.raises(ValueError, match="GiB"):
        D.ring(10**6)
    assert D.ring(1000).n_train == 1000


def test_a_corrupt_npz_and_a_csv_with_text_labels(tmp_path):
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match="not a valid .npz file"):
        D.load_file(tmp_path / "bad.npz")
    (tmp_path / "t.csv").write_text("x,y,label\n0,1,cat\n1,0,dog\n")
    with pytest.raises(ValueError, match="text such as 'cat', 'dog'"):
        D.load_file(tmp_path / "t.csv")


def test_the_calls_a_user_with_arrays_tries_first():
    """``train_test_split((X, y), 0.25)``, ``Problem(X, y, test_fraction=0.25)`` and
    boolean labels (False → 0, True → 1)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    y = X[:, 0] > 0
    split = D.train_test_split((X, y.astype(int)), 0.25, seed=1)
    assert split.n_train == 30 and len(split.X_test) == 10
    same = D.train_test_split(D.Dataset(X, y.astype(int)), 0.25, seed=1)
    np.testing.assert_array_equal(split.X_test, same.X_test)
    problem = cdl.Problem(X, y, test_fraction=0.25, split_seed=1)
    np.testing.assert_array_equal(problem.data.X_test, same.X_test)
    assert problem.data.y_train.dtype.kind == "i" and set(problem.data.y_train) == {0, 1}
    np.testing.assert_array_equal(problem.data.y_train, same.y_train)
    assert not cdl.Problem(X, y).data.has_test  # the default: every point trains
    with pytest.raises(ValueError, match="test fraction must be in"):
        cdl.Problem(X, y, test_fraction=1.5)
