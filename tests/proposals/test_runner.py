import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np
import pytest
from PIL import Image

from siamdetr.errors import BadImageError, DatasetError
from siamdetr.proposals import runner
from siamdetr.proposals.runner import image_seed, run_proposals, windowed_map
from siamdetr.proposals.store import ProposalStore, ProposalWriter


def tree_bytes(path):
    return {f.relative_to(path).as_posix(): f.read_bytes() for f in sorted(path.rglob("*")) if f.is_file()}


@pytest.fixture(scope="module")
def val_images(synth_root):
    return synth_root / "coco_like" / "val2017"


@pytest.mark.parametrize("method", ["edgeboxes", "selective_search", "random"])
def test_output_is_the_same_bytes_for_one_or_two_workers(tmp_path, val_images, method):
    one = run_proposals(method, val_images, tmp_path / "one", workers=1, shard_size=3, top_k=64)
    two = run_proposals(method, val_images, tmp_path / "two", workers=2, shard_size=3, top_k=64)
    assert tree_bytes(tmp_path / "one") == tree_bytes(tmp_path / "two")
    assert one["n_images"] == two["n_images"] == 8 and one["n_shards"] == 3
    store = ProposalStore.open(tmp_path / "one")
    assert len(store) == 8 and 0 < one["boxes_per_image"] <= 64
    assert all(store[key][0].shape[0] <= 64 for key in store)
    assert one.keys() >= {"n_skipped", "n_retried", "n_fallback", "seconds", "images_per_s", "method", "top_k"}


class Killed(Exception):
    """Stands for the run being killed."""


def test_killed_run_resumes_to_the_same_bytes(tmp_path, val_images, monkeypatch):
    fresh = tmp_path / "fresh"
    run_proposals("edgeboxes", val_images, fresh, workers=1, shard_size=3)

    write = ProposalWriter.write

    def write_then_die(self, index, *args):
        if index == 1:
            raise Killed
        return write(self, index, *args)

    out = tmp_path / "resumed"
    monkeypatch.setattr(ProposalWriter, "write", write_then_die)
    with pytest.raises(Killed):
        run_proposals("edgeboxes", val_images, out, workers=2, shard_size=3)
    monkeypatch.undo()
    with pytest.raises(DatasetError, match="did not finish"):
        ProposalStore.open(out)
    (out / ".shard-00001.boxes.npy.abc123.tmp").write_bytes(b"half a shard")  # a kill during a write
    summary = run_proposals("edgeboxes", val_images, out, workers=1, shard_size=3)
    assert summary["n_shards_reused"] == 1 and summary["n_computed"] == 5
    assert tree_bytes(out) == tree_bytes(fresh)

    again = run_proposals("edgeboxes", val_images, out, workers=2, shard_size=3)
    assert again["n_computed"] == 0 and tree_bytes(out) == tree_bytes(fresh)


def test_changed_parameters_or_layout_recompute_and_leave_no_stale_files(tmp_path, val_images):
    out = tmp_path / "p"
    run_proposals("random", val_images, out, workers=1, shard_size=3, top_k=16)
    changed = run_proposals("random", val_images, out, workers=1, shard_size=3, top_k=8)
    assert changed["n_shards_reused"] == 0
    run_proposals("random", val_images, tmp_path / "fresh", workers=1, shard_size=8, top_k=8)
    relaid = run_proposals("random", val_images, out, workers=1, shard_size=8, top_k=8)
    assert relaid["n_shards"] == 1 and tree_bytes(out) == tree_bytes(tmp_path / "fresh")


@pytest.fixture
def odd_images(tmp_path, val_images):
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    for src in sorted(val_images.iterdir())[:2]:
        shutil.copy(src, folder / "sub" / src.name)
    Image.fromarray(np.full((48, 64, 3), 90, np.uint8)).save(folder / "flat.png")
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    good = next(val_images.iterdir()).read_bytes()
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 3])
    return folder


def test_bad_images_are_skipped_and_counted(tmp_path, odd_images):
    summary = run_proposals("random", odd_images, tmp_path / "p", workers=1, top_k=4)
    assert summary["n_images"] == 5 and summary["n_skipped"] == 2
    store = ProposalStore.open(tmp_path / "p")
    assert sorted(store.keys()) == ["flat.png", *sorted(f"sub/{f.name}" for f in (odd_images / "sub").iterdir())]
    assert "corrupt.jpg" not in store and store.summary["n_skipped"] == 2
    with pytest.raises(BadImageError, match="corrupt.jpg: cannot decode image"):
        run_proposals("random", odd_images, tmp_path / "q", workers=1, on_bad_image="error")


def test_edgeless_image_is_retried_then_given_the_centre_box_and_counted(tmp_path, odd_images):
    summary = run_proposals("edgeboxes", odd_images, tmp_path / "p", workers=1, min_box_area=100.0)
    assert summary["n_retried"] == 1 and summary["n_fallback"] == 1
    boxes, scores = ProposalStore.open(tmp_path / "p")["flat.png"]
    assert boxes.tolist() == [[16, 12, 48, 36]] and scores.tolist() == [0.0]


def test_bad_arguments_fail_before_any_output(tmp_path, val_images):
    with pytest.raises(ValueError, match="method = 'nope'"):
        run_proposals("nope", val_images, tmp_path / "p")
    with pytest.raises(FileNotFoundError, match="SED model not found"):
        run_proposals("edgeboxes", val_images, tmp_path / "p", sed_model=tmp_path / "model.yml.gz")
    assert not (tmp_path / "p").exists()


def test_image_seed_is_stable_and_key_dependent():
    assert image_seed(0, "a/b.jpg") == image_seed(0, "a/b.jpg") == 17091824632177233325
    assert len({image_seed(0, "a/b.jpg"), image_seed(1, "a/b.jpg"), image_seed(0, "a/c.jpg")}) == 3
    assert runner.METHODS.keys() == {"edgeboxes", "selective_search", "random"}


def exit_on_b(key):
    if key == "b":
        os._exit(3)
    return key.upper()


def test_a_dying_worker_stops_the_run_instead_of_hanging():
    with ProcessPoolExecutor(2) as pool:
        assert list(windowed_map(pool, str.upper, list("abcdef"), window=3)) == list("ABCDEF")
    with ProcessPoolExecutor(2) as pool, pytest.raises(BrokenProcessPool):
        list(windowed_map(pool, exit_on_b, list("abcdef"), window=3))


def test_selective_search_runs_at_detregs_128x128_unless_told_and_the_store_records_it(tmp_path, val_images):
    run_proposals("selective_search", val_images, tmp_path / "sq", workers=1, top_k=30)
    assert ProposalStore.open(tmp_path / "sq").params == {"top_k": 30, "square": 128, "seed": 0}
    run_proposals("selective_search", val_images, tmp_path / "cap", workers=1, top_k=30, ss_square=None, ss_max_side=48)
    assert ProposalStore.open(tmp_path / "cap").params == {"top_k": 30, "square": None, "max_side": 48, "seed": 0}


def test_a_second_process_on_the_same_store_is_refused(tmp_path, val_images):
    from siamdetr.errors import RunLocked
    from siamdetr.io import locked

    with locked(tmp_path / "p"), pytest.raises(RunLocked, match="another process is writing here"):
        run_proposals("random", val_images, tmp_path / "p", workers=1, top_k=4)
    assert run_proposals("random", val_images, tmp_path / "p", workers=1, top_k=4)["n_images"] == 8
