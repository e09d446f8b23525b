import json

import pytest

from siamdetr.io import atomic_dir, atomic_write_json


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
