"""A store that does not cover the images it is used with is an error naming the store and the folder."""

import logging
import shutil

import numpy as np
import pytest

from siamdetr.data.folder import list_images
from siamdetr.errors import DatasetError
from siamdetr.proposals.coverage import check_coverage, coverage
from siamdetr.proposals.runner import run_proposals
from siamdetr.proposals.store import ProposalStore, dataset_identity


@pytest.fixture
def folders(tmp_path, synth_root):
    """Two folders of 8 images each, different files, and a store made for the first."""
    val, train = tmp_path / "val", tmp_path / "train"
    shutil.copytree(synth_root / "coco_like" / "val2017", val)
    train.mkdir()
    for src in sorted((synth_root / "coco_like" / "train2017").iterdir())[:8]:
        shutil.copy(src, train / src.name)
    run_proposals("random", val, tmp_path / "store", workers=1, top_k=4)
    return val, train, ProposalStore.open(tmp_path / "store")


def keys(root):
    return [p.as_posix() for p in list_images(root)]


def spoil_first_box(store, key, column):
    """Write a NaN into the first stored box of `key`; returns the store reopened."""
    shard, start, _ = store.where[key]
    boxes_file = store.path / f"{store.shard_names[shard]}.boxes.npy"
    boxes = np.load(boxes_file)
    boxes[start, column] = np.nan
    np.save(boxes_file, boxes)
    return ProposalStore.open(store.path)


def test_the_store_records_the_folder_it_was_made_for(folders):
    val, _, store = folders
    assert store.dataset == dataset_identity(val, keys(val))
    assert store.dataset["root"] == str(val.resolve()) and store.dataset["n_images"] == 8


def test_a_store_for_another_folder_is_an_error_naming_both(folders):
    val, train, store = folders
    with pytest.raises(DatasetError) as e:
        check_coverage(store, train, keys(train), tolerance=0.01)
    msg = str(e.value)
    assert str(store.path) in msg and str(train) in msg and "8 of 8 images" in msg
    assert f"made for {val.resolve()}" in msg and "siamdetr proposals --images" in msg


def test_its_own_folder_passes_and_a_changed_one_is_named(folders, caplog):
    val, _, store = folders
    assert check_coverage(store, val, keys(val), tolerance=0.0).without == 0
    (val / "extra.jpg").write_bytes((val / keys(val)[0]).read_bytes())
    with caplog.at_level(logging.WARNING):
        found = check_coverage(store, val, keys(val), tolerance=0.2)  # 1 of 9 missing, under 20 %
    assert found.missing == ["extra.jpg"] and "fingerprint" in caplog.text
    with pytest.raises(DatasetError, match="1 of 9 images"):
        check_coverage(store, val, keys(val), tolerance=0.1)


def test_nan_boxes_count_as_without_proposals(folders):
    val, _, store = folders
    bad = keys(val)[2]
    store = spoil_first_box(store, bad, 1)
    assert coverage(store, keys(val)).nonfinite == [bad]
    with pytest.raises(DatasetError, match="1 with non-finite boxes"):
        check_coverage(store, val, keys(val), tolerance=0.0)


def test_pretraining_samples_never_see_a_nan_box(folders):
    from siamdetr.config import load_config
    from siamdetr.stages.pretrain import pretrain_dataset

    val, _, store = folders
    key = keys(val)[0]
    n = store.where[key][2]
    images = pretrain_dataset(load_config(params=None, profile="smoke"), val, spoil_first_box(store, key, 0))
    got = images.proposals(key)
    assert len(got) == n - 1 and bool(got.isfinite().all())
