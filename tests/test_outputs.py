"""Output directories never destroy: ``--out`` writes a new directory or replaces a previous
controldl output of the same kind; anything else is refused (one line, exit 2, nothing
changed — the whole tree is compared before and after), unless ``--overwrite``; the working
directory and a directory that holds the input are never replaced. No temporary survives
a killed writer past the next write; every file and directory gets the umask's mode."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import controldl as cdl
from controldl import io
from controldl.cli import main

TINY = ["--n-samples", "40", "--layers", "2", "--width", "3", "--max-iter", "2"]


def tree(root):
    """``{relative path: (kind, mode, contents)}`` of everything under ``root``."""
    out = {}
    for where, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(where, name)
            st = os.lstat(path)
            content = None
            if os.path.isfile(path) and not os.path.islink(path):
                with open(path, "rb") as f:
                    content = f.read()
            kind = "dir" if name in dirs else "file"
            out[os.path.relpath(path, root)] = (kind, st.st_mode, content)
    return out


def refused(argv, root, capsys):
    """Run ``controldl ARGV``: exit 2, one line on stderr, nothing under ``root`` changed.
    The line."""
    before = tree(root)
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("controldl: error:"), err
    assert tree(root) == before
    return lines[0]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A working directory with a foreign folder, a file and a data folder in it."""
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "important.txt").write_text("do not lose me")
    (tmp_path / "afile").write_text("a file")
    d = cdl.data.ring(40, seed=0)
    (tmp_path / "data").mkdir()
    np.savez(tmp_path / "data" / "ring.npz", X=d.X_train, y=d.y_train)
    (tmp_path / "cwd" / "deeper").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "cwd" / "deeper")
    return tmp_path


REFUSED = {
    "foreign": ("mine", "is not empty and is not a controldl solution output"),
    "file": ("afile", "is an existing file"),
    "dot": (".", "is the working directory or one of its parents"),
    "parent": ("..", "is the working directory or one of its parents"),
    "input": ("data", "holds the input"),
}


@pytest.mark.parametrize("case", REFUSED)
def test_train_refuses_an_out_it_does_not_own(case, workdir, capsys):
    name, fragment = REFUSED[case]
    out = name if name in (".", "..") else str(workdir / name)
    line = refused(["train", "--data", str(workdir / "data" / "ring.npz"), *TINY,
                    "--out", out], workdir, capsys)
    assert fragment in line
    if case in ("foreign", "file"):
        assert "--overwrite" in line


@pytest.mark.parametrize("case", ["dot", "parent", "input"])
def test_overwrite_never_replaces_the_working_directory_or_the_input(case, workdir, capsys):
    name, fragment = REFUSED[case]
    out = name if name in (".", "..") else str(workdir / name)
    line = refused(["train", "--data", str(workdir / "data" / "ring.npz"), *TINY,
                    "--out", out, "--overwrite"], workdir, capsys)
    assert fragment in line


def test_overwrite_replaces_a_foreign_directory_and_a_file(workdir, capsys):
    for name in ("mine", "afile"):
        assert main(["train", *TINY, "--out", str(workdir / name), "--overwrite"]) in (0, 1)
        assert io.output_kind(workdir / name) == "solution"
    assert not (workdir / "mine" / "important.txt").exists()
    assert not [p for p in workdir.iterdir() if p.name.startswith(".")]  # no temporaries


def test_a_previous_solution_is_replaced_and_other_kinds_are_refused(workdir, capsys):
    out = workdir / "run"
    assert main(["train", *TINY, "--out", str(out)]) in (0, 1)
    first = json.loads((out / "meta.json").read_text())
    assert first[io.OUTPUT_KEY] == "solution"
    assert main(["train", *TINY, "--seed", "3", "--out", str(out)]) in (0, 1)
    assert json.loads((out / "meta.json").read_text())["solver"]["seed"] == 3
    line = refused(["compare", *TINY, "--solvers", "adam", "--out", str(out)], workdir, capsys)
    assert "holds a controldl solution output, not a comparison" in line
    line = refused(["plot", str(out), "--out", str(out)], workdir, capsys)
    assert "holds the input" in line


@pytest.mark.parametrize("command", ["compare", "turnpike", "plot"])
def test_every_command_refuses_a_foreign_directory(command, workdir, capsys):
    if command == "plot":
        assert main(["train", *TINY, "--out", str(workdir / "sol")]) in (0, 1)
        argv = ["plot", str(workdir / "sol")]
    elif command == "turnpike":
        argv = ["turnpike", "--horizons", "1,2", "--n-samples", "40", "--max-iter", "2"]
    else:
        argv = ["compare", *TINY, "--solvers", "adam"]
    for name, fragment in (("mine", "is not empty and is not a controldl"),
                           ("afile", "is an existing file")):
        line = refused([*argv, "--out", str(workdir / name)], workdir, capsys)
        assert fragment in line and "--overwrite" in line


def test_solution_save_refuses_with_a_value_error(workdir):
    sol = cdl.solve(cdl.Problem(cdl.data.load_file(workdir / "data" / "ring.npz"), width=3,
                                layers=2), cdl.GradientDescent("adam"), max_iter=2)
    before = tree(workdir)
    with pytest.raises(ValueError, match="not a controldl solution output.*overwrite=True"):
        sol.save(workdir / "mine")
    with pytest.raises(ValueError, match="is an existing file"):
        sol.save(workdir / "afile")
    with pytest.raises(ValueError, match="holds the input"):
        sol.save(workdir / "data", overwrite=True)
    assert tree(workdir) == before
    sol.save(workdir / "mine", overwrite=True)
    assert cdl.load(workdir / "mine").iterations == 2


def test_out_that_cannot_be_created_is_one_line(workdir, capsys):
    line = refused(["train", *TINY, "--out", str(workdir / "afile" / "sub")], workdir, capsys)
    assert "is not a directory" in line
    if os.path.isdir("/proc/self"):  # a directory nobody can create entries in
        line = refused(["train", *TINY, "--out", "/proc/x"], workdir, capsys)
        assert "cannot create output directory '/proc/x'" in line


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temporaries_of_a_killed_writer_are_removed_on_the_next_write(tmp_path):
    host = socket.gethostname()
    dead = tmp_path / f".out.tmp-0badc0de-{_dead_pid()}-{host}"
    alive = tmp_path / f".out.tmp-00c0ffee-{os.getpid()}-{host}"  # a write in progress
    legacy = tmp_path / ".out.tmp-k2j3h4"  # an older naming: removed once old
    recent = tmp_path / ".out.tmp-n5m6b7"
    old_aside = tmp_path / f".out.old-0badc0de-{_dead_pid()}-{host}"
    other = tmp_path / f".other.tmp-0badc0de-{_dead_pid()}-{host}"  # another target's
    for d in (dead, alive, legacy, recent, old_aside, other):
        d.mkdir()
        (d / "half.npz").write_bytes(b"x")
    day = time.time() - 2 * io.STALE_AFTER_S
    os.utime(legacy, (day, day))
    sol = cdl.solve(cdl.Problem(cdl.data.ring(40, seed=0), width=3, layers=2),
                    cdl.GradientDescent("adam"), max_iter=1)
    sol.save(tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["out", alive.name, recent.name, other.name])


def test_files_and_directories_get_the_umask_mode(tmp_path):
    sol = cdl.solve(cdl.Problem(cdl.data.ring(40, seed=0), width=3, layers=2),
                    cdl.GradientDescent("adam"), max_iter=1, checkpoint_dir=tmp_path / "ck")
    previous = os.umask(0o027)
    try:
        sol.save(tmp_path / "out")
    finally:
        os.umask(previous)
    modes = {os.path.relpath(p, tmp_path): os.stat(p).st_mode & 0o777
             for p in [tmp_path / "out", *(tmp_path / "out").rglob("*")]}
    assert set(modes) == {"out", "out/arrays.npz", "out/meta.json", "out/checkpoint",
                          "out/checkpoint/state.json", "out/checkpoint/state.npz"}
    for name, mode in modes.items():
        assert mode == (0o750 if (tmp_path / name).is_dir() else 0o640), (name, oct(mode))
