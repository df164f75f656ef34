"""controldl.io: an atomic file write leaves the old file or the new one, never a partial
one, and no temporary behind; JSON is strict (non-finite numbers are null)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from controldl import io


def test_write_json_is_strict_and_converts_numpy(tmp_path):
    path = io.write_json(tmp_path / "sub" / "r.json", {"a": np.float32(1.5), "b": np.nan,
                                                      "c": np.arange(3), "d": (1, np.inf)})
    assert json.loads(path.read_text()) == {"a": 1.5, "b": None, "c": [0, 1, 2],
                                            "d": [1, None]}


def test_a_failed_write_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = io.write_json(tmp_path / "r.json", {"v": 1})

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        io.write_json(path, {"v": 2})
    assert json.loads(path.read_text()) == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]
