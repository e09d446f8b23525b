import json

import pytest

from siamdetr.io import atomic_dir, atomic_write_bytes, atomic_write_json


def test_atomic_write_leaves_no_temp_files(tmp_path):
    atomic_write_json(tmp_path / "sub" / "a.json", {"x": 1})
    assert json.loads((tmp_path / "sub" / "a.json").read_text()) == {"x": 1}
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["a.json"]


def test_failed_build_keeps_the_old_directory_and_no_partial(tmp_path):
    target = tmp_path / "out"
    with atomic_dir(target, marker=".mine") as tmp:
        (tmp / "v").write_text("1")
    with pytest.raises(RuntimeError), atomic_dir(target, marker=".mine") as tmp:
        (tmp / "v").write_text("2")
        raise RuntimeError("killed mid-way")
    assert (target / "v").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_replaces_its_own_directory_but_not_a_foreign_one(tmp_path):
    target = tmp_path / "out"
    for value in ("1", "2"):
        with atomic_dir(target, marker=".mine") as tmp:
            (tmp / "v").write_text(value)
    assert (target / "v").read_text() == "2"
    (tmp_path / "foreign").mkdir()
    with pytest.raises(FileExistsError), atomic_dir(tmp_path / "foreign", marker=".mine"):
        pass


def test_disk_full_names_the_file_and_keeps_the_previous_version(tmp_path, monkeypatch):
    import errno
    import os

    from siamdetr.errors import DiskFull

    target = tmp_path / "checkpoint.pth"
    atomic_write_bytes(target, b"epoch 3")

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(DiskFull, match=f"{target}: No space left on device while writing it"):
        atomic_write_bytes(target, b"epoch 4, larger than the disk")
    assert target.read_bytes() == b"epoch 3" and sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pth"]
