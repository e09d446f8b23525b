import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from siamdetr.errors import DatasetError
from siamdetr.proposals.boxes import Proposals
from siamdetr.proposals.store import INDEX, ProposalStore, ProposalWriter


def proposals(rng, k):
    xy = rng.uniform(0, 50, (k, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(1, 30, (k, 2))], axis=1).astype(np.float32)
    return Proposals(boxes, np.sort(rng.uniform(0, 1, k)).astype(np.float32)[::-1])


def write_store(path, images_per_shard):
    """A store of shards written directly; returns {key: Proposals} (None: skipped)."""
    rng = np.random.default_rng(0)
    writer = ProposalWriter(path, "random", {"top_k": 8, "seed": 0}, shard_size=3)
    expected, records = {}, []
    for i, keys in enumerate(images_per_shard):
        results = [None if key.endswith("bad.jpg") else proposals(rng, int(rng.integers(0, 8))) for key in keys]
        expected.update(zip(keys, results, strict=True))
        records.append(writer.write(i, keys, results))
    writer.finish(records)
    return expected


SHARDS = [["a/1.jpg", "a/2.jpg", "a/bad.jpg"], ["b/1.jpg", "b/2.jpg", "b/3.jpg"], ["c/1.jpg"]]


def test_round_trip(tmp_path):
    expected = write_store(tmp_path / "p", SHARDS)
    store = ProposalStore.open(tmp_path / "p")
    assert len(store) == 6 and list(store.keys()) == [k for k, p in expected.items() if p is not None]
    assert "a/bad.jpg" not in store and "zzz.jpg" not in store and Path("b/3.jpg") in store
    for key, p in expected.items():
        if p is not None:
            boxes, scores = store[key]
            assert boxes.dtype == np.float32 and boxes.shape == (len(p.boxes), 4) and boxes.flags.writeable
            assert np.array_equal(boxes, p.boxes) and np.array_equal(scores, p.scores)
    assert store.method == "random" and store.params == {"top_k": 8, "seed": 0}
    assert store.summary["n_images"] == 7 and store.summary["n_skipped"] == 1
    with pytest.raises(KeyError):
        store["zzz.jpg"]


def test_lookup_maps_only_the_shard_it_needs(tmp_path):
    expected = write_store(tmp_path / "p", SHARDS)
    store = ProposalStore.open(tmp_path / "p")
    for f in (tmp_path / "p").glob("shard-00001.*"):
        f.unlink()  # after open: a lookup in shard 0 or 2 never touches shard 1
    assert np.array_equal(store["c/1.jpg"][0], expected["c/1.jpg"].boxes)
    assert np.array_equal(store["a/2.jpg"][0], expected["a/2.jpg"].boxes)
    with pytest.raises(FileNotFoundError, match="shard-00001.boxes.npy"):
        store["b/1.jpg"]


def test_pickles_without_its_memory_maps(tmp_path):
    write_store(tmp_path / "p", SHARDS)
    store = ProposalStore.open(tmp_path / "p")
    before = store["b/2.jpg"]
    clone = pickle.loads(pickle.dumps(store))
    assert all(a is None for a in clone._arrays)
    assert all(np.array_equal(x, y) for x, y in zip(clone["b/2.jpg"], before, strict=True))


def test_stores_hold_no_pickles(tmp_path):
    write_store(tmp_path / "p", SHARDS)
    arrays = sorted((tmp_path / "p").glob("*.npy"))
    assert len(arrays) == 2 * len(SHARDS)
    for f in arrays:  # allow_pickle=False raises on an object array
        assert np.load(f, allow_pickle=False).dtype == np.float32
    assert isinstance(json.loads((tmp_path / "p" / INDEX).read_text())["shards"], list)


@pytest.fixture
def store_dir(tmp_path):
    write_store(tmp_path / "p", SHARDS)
    return tmp_path / "p"


def test_missing_directory_or_index(tmp_path, store_dir):
    with pytest.raises(DatasetError, match=f"{tmp_path / 'nope'}: no proposals here"):
        ProposalStore.open(tmp_path / "nope")
    (store_dir / INDEX).unlink()
    with pytest.raises(DatasetError, match=f"{store_dir / INDEX}: missing: the proposals run did not finish"):
        ProposalStore.open(store_dir)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda text: text[: len(text) // 2], "corrupt index, not valid JSON"),
        (
            lambda text: text.replace('"version": 1', '"version": 99'),
            "format version 99; this siamdetr reads version 1",
        ),
        (lambda text: text.replace('"siamdetr-proposals"', '"other"'), "not a siamdetr proposals index"),
        (lambda text: text.replace('"counts": [', '"counts": [1, '), r"shards\[0\] needs equally long"),
    ],
)
def test_corrupt_index(store_dir, edit, message):
    index = store_dir / INDEX
    index.write_text(edit(index.read_text()))
    with pytest.raises(DatasetError, match=f"{index}: {message}"):
        ProposalStore.open(store_dir)


def test_corrupt_or_missing_shard(store_dir):
    boxes = store_dir / "shard-00001.boxes.npy"
    boxes.write_bytes(boxes.read_bytes()[:-8])
    with pytest.raises(DatasetError, match=f"{boxes}: corrupt shard: .* bytes where .* were written"):
        ProposalStore.open(store_dir)
    boxes.write_bytes(b"garbage")
    with pytest.raises(DatasetError, match=f"{boxes}: corrupt shard, not a readable .npy"):
        ProposalStore.open(store_dir)
    boxes.unlink()
    with pytest.raises(DatasetError, match=f"{boxes}: shard file missing"):
        ProposalStore.open(store_dir)


def test_wrong_dtype_or_shape(store_dir):
    scores = store_dir / "shard-00002.scores.npy"
    np.save(scores, np.zeros(3, np.float64))
    with pytest.raises(DatasetError, match=f"{scores}: corrupt shard: holds float64 \\(3,\\)"):
        ProposalStore.open(store_dir)
