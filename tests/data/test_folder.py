import pytest

from siamdetr.data.folder import ImageFolder, list_images
from siamdetr.errors import BadImageError, DatasetError


def test_recursive_sorted_relative_listing(synth_root, synth_cfg):
    paths = list_images(synth_root / "imagenet_like")
    assert len(paths) == synth_cfg.imagenet_images
    assert paths == sorted(paths) and all(not p.is_absolute() and len(p.parts) == 2 for p in paths)


def test_items_are_images_with_their_path(synth_root):
    ds = ImageFolder(synth_root / "imagenet_like")
    item = ds[0]
    assert item["image"].dtype.is_floating_point is False and item["image"].shape[0] == 3
    assert item["path"] == str(ds.paths[0])


def test_missing_and_empty_directories(tmp_path):
    with pytest.raises(DatasetError, match="image directory does not exist"):
        list_images(tmp_path / "absent")
    (tmp_path / "empty" / "n01").mkdir(parents=True)
    (tmp_path / "empty" / "n01" / "notes.txt").write_text("x")
    with pytest.raises(DatasetError, match="no images found"):
        list_images(tmp_path / "empty")


def test_unreadable_image_is_skipped_or_an_error(tmp_path, synth_root):
    (tmp_path / "n01").mkdir()
    src = next((synth_root / "imagenet_like").rglob("*.JPEG"))
    (tmp_path / "n01" / "a.JPEG").write_bytes(src.read_bytes())
    (tmp_path / "n01" / "b.JPEG").write_bytes(b"\xff\xd8 not really a jpeg")
    ds = ImageFolder(tmp_path)
    assert ds[0] is not None and ds[1] is None
    with pytest.raises(BadImageError, match="b.JPEG: cannot decode image"):
        ImageFolder(tmp_path, on_bad_image="error")[1]
