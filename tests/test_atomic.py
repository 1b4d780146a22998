"""Every file jaxviz writes goes through jaxviz.atomic: all or nothing, with the umask's permissions."""

import os
import stat

import numpy as np
import pytest

from jaxviz.atomic import atomic_open, save_npy, write_bytes


def test_interrupted_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = write_bytes(tmp_path / "a.txt", "old")
    with pytest.raises(KeyboardInterrupt), atomic_open(path) as f:
        f.write(b"half of the new")
        raise KeyboardInterrupt
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_new_files_get_the_umask_permissions_not_private_ones(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_bytes(tmp_path / "sub" / "b.bin", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_save_npy_round_trips_and_refuses_pickles(tmp_path):
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(np.load(save_npy(tmp_path / "a.npy", a), allow_pickle=False), a)
    with pytest.raises(ValueError):
        save_npy(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object))
    assert not (tmp_path / "o.npy").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["a.npy"]
