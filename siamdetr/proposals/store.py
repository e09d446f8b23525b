"""The on-disk proposal format: one directory per dataset and method, in shards, memory-mapped, no pickles.

    FILE/shard-00000.boxes.npy   float32 [rows, 4] x0, y0, x1, y1 in the original image's pixels: the shard's
                                 images in list order, each image's boxes best first
    FILE/shard-00000.scores.npy  float32 [rows]
    FILE/shard-00000.json        the shard's record (run parameters, its images, box counts, skipped images);
                                 written after its arrays, so it marks the shard finished: a rerun keeps it
    FILE/index.json              every shard's keys and counts, the run's parameters and counts, and the
                                 image folder it was made for (root + fingerprint); written last, so a store
                                 without it is unfinished (a rerun resumes it)

Every file is written atomically (temp file + rename), arrays with np.save and read with allow_pickle=False.
Opening a store builds key → (shard, offset, count) from the index, so a lookup is O(1); a shard's arrays are
memory-mapped on first use, so DataLoader workers share their pages through the OS cache.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from siamdetr.errors import DatasetError
from siamdetr.io import atomic_write_bytes, atomic_write_json
from siamdetr.proposals.boxes import Proposals

FORMAT = "siamdetr-proposals"
VERSION = 1
INDEX = "index.json"
# Files this module writes: a rerun deletes those the current layout does not use, and nothing else.
OWN_FILE = re.compile(r"(shard-\d{5}\.(boxes\.npy|scores\.npy|json)|\.(shard-\d{5}\.[a-z.]+|index\.json)\..+\.tmp)")


def store_dir(out_dir: str | Path, dataset: str, method: str) -> Path:
    """Where the store of (dataset, method) lives: <proposals.out_dir>/<dataset>_<method>."""
    return Path(out_dir) / f"{dataset}_{method}"


def shard_name(index: int) -> str:
    return f"shard-{index:05d}"


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def check_npy(path: Path, shape: tuple[int, ...]) -> None:
    """Check an array file's header and length against the shape the index promises, without reading the data."""
    try:
        with path.open("rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = (
                np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            )
            found, fortran_order, dtype = read_header(f)
            data_start = f.tell()
    except FileNotFoundError as e:
        raise DatasetError(f"{path}: shard file missing") from e
    except (OSError, ValueError) as e:
        raise DatasetError(f"{path}: corrupt shard, not a readable .npy ({e})") from e
    if dtype != np.float32 or tuple(found) != shape or fortran_order:
        raise DatasetError(f"{path}: corrupt shard: holds {dtype} {tuple(found)}, the index says float32 {shape}")
    expected = data_start + int(np.prod(shape)) * 4
    if (size := path.stat().st_size) != expected:
        raise DatasetError(f"{path}: corrupt shard: {size} bytes where {expected} were written (truncated?)")


@dataclass
class ShardRecord:
    """What one finished shard holds."""

    images: list[str]  # its slice of the sorted image list
    keys: list[str]  # those with proposals, in order
    counts: list[int]  # boxes per key
    skipped: list[str]  # unreadable images
    retried: int  # images that needed EdgeBoxes' upscaled retry
    fallback: int  # images that got the centre box


def dataset_identity(root: Path, keys: Sequence[str]) -> dict[str, Any]:
    """Which images a store is for: the folder and a fingerprint of its listing (each relative path and file
    size, in order), cheap enough for ImageNet and changed by any added, removed, renamed or resized file."""
    digest = hashlib.sha256()
    for key in keys:
        digest.update(f"{key}\t{(root / key).stat().st_size}\n".encode())
    return {"root": str(root.resolve()), "n_images": len(keys), "fingerprint": digest.hexdigest()[:16]}


class ProposalWriter:
    """Writes a store shard by shard; shards finished by an earlier run with the same parameters are kept."""

    def __init__(self, path: str | os.PathLike, method: str, params: dict[str, Any], shard_size: int) -> None:
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise FileExistsError(f"{self.path}: exists and is not a proposals directory")
        self.header = {
            "format": FORMAT,
            "version": VERSION,
            "method": method,
            "params": params,
            "shard_size": shard_size,
        }
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / INDEX).unlink(missing_ok=True)  # the store is unfinished until finish() writes it again

    def files(self, index: int) -> tuple[Path, Path, Path]:
        name = shard_name(index)
        return self.path / f"{name}.boxes.npy", self.path / f"{name}.scores.npy", self.path / f"{name}.json"

    def finished(self, index: int, images: list[str]) -> ShardRecord | None:
        """Shard `index`'s record if it was finished for exactly these images and parameters, else None."""
        boxes, scores, record_file = self.files(index)
        try:
            data = json.loads(record_file.read_text())
            if {k: data.get(k) for k in self.header} != self.header or data.get("images") != images:
                return None
            record = ShardRecord(**{k: data[k] for k in ShardRecord.__dataclass_fields__})
            rows = sum(record.counts)
            check_npy(boxes, (rows, 4))
            check_npy(scores, (rows,))
        except (OSError, ValueError, KeyError, TypeError):  # DatasetError and JSONDecodeError are ValueErrors
            return None
        return record

    def write(self, index: int, images: list[str], results: Sequence[Proposals | None]) -> ShardRecord:
        """Write one shard from its images' proposals (None: skipped), arrays first, then its record."""
        done = [(key, p) for key, p in zip(images, results, strict=True) if p is not None]
        boxes = np.concatenate([p.boxes for _, p in done]) if done else np.zeros((0, 4))
        scores = np.concatenate([p.scores for _, p in done]) if done else np.zeros(0)
        record = ShardRecord(
            images=images,
            keys=[key for key, _ in done],
            counts=[len(p.boxes) for _, p in done],
            skipped=[key for key, p in zip(images, results, strict=True) if p is None],
            retried=sum(p.retried for _, p in done),
            fallback=sum(p.fallback for _, p in done),
        )
        boxes_file, scores_file, record_file = self.files(index)
        atomic_write_bytes(boxes_file, npy_bytes(boxes.astype(np.float32).reshape(-1, 4)))
        atomic_write_bytes(scores_file, npy_bytes(scores.astype(np.float32).reshape(-1)))
        atomic_write_json(record_file, {**self.header, **asdict(record)})
        return record

    def finish(self, records: list[ShardRecord], dataset: dict[str, Any] | None = None) -> dict[str, Any]:
        """Write the index over all shards (and `dataset_identity` of the images), delete files of an earlier
        layout; returns the store's counts."""
        n_stored = sum(len(r.keys) for r in records)
        n_boxes = sum(sum(r.counts) for r in records)
        summary = {
            "n_images": sum(len(r.images) for r in records),
            "n_skipped": sum(len(r.skipped) for r in records),
            "n_retried": sum(r.retried for r in records),
            "n_fallback": sum(r.fallback for r in records),
            "n_boxes": n_boxes,
            "boxes_per_image": n_boxes / max(n_stored, 1),
        }
        index = {
            **self.header,
            "summary": summary,
            "dataset": dataset,
            "skipped": [key for r in records for key in r.skipped],
            "shards": [{"keys": r.keys, "counts": r.counts} for r in records],  # shard i is shard_name(i)
        }
        wanted = {f.name for i in range(len(records)) for f in self.files(i)}
        for f in self.path.iterdir():
            if OWN_FILE.fullmatch(f.name) and f.name not in wanted:
                f.unlink()
        atomic_write_json(self.path / INDEX, index)
        return summary


def read_index(path: Path) -> dict[str, Any]:
    """The validated index of the store at `path`; errors name the file and what is wrong with it."""
    if not path.is_dir():
        raise DatasetError(f"{path}: no proposals here (compute them with `siamdetr proposals --out {path}`)")
    file = path / INDEX
    try:
        index = json.loads(file.read_text())
    except FileNotFoundError as e:
        raise DatasetError(f"{file}: missing: the proposals run did not finish; rerun it to resume") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{file}: corrupt index, not valid JSON ({e})") from e
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise DatasetError(f"{file}: not a siamdetr proposals index")
    if index.get("version") != VERSION:
        raise DatasetError(
            f"{file}: format version {index.get('version')}; this siamdetr reads version {VERSION}: recompute the store"
        )
    for field, kind in (("method", str), ("params", dict), ("summary", dict), ("shards", list)):
        if not isinstance(index.get(field), kind):
            raise DatasetError(f"{file}: field '{field}' is missing or not a {kind.__name__}")
    for i, shard in enumerate(index["shards"]):
        keys, counts = (shard.get("keys"), shard.get("counts")) if isinstance(shard, dict) else (None, None)
        if not (isinstance(keys, list) and isinstance(counts, list) and len(keys) == len(counts)):
            raise DatasetError(f"{file}: shards[{i}] needs equally long 'keys' and 'counts' lists")
        if not all(type(n) is int and n >= 0 for n in counts):
            raise DatasetError(f"{file}: shards[{i}].counts must be non-negative integers")
    return index


class ProposalStore(Mapping[str, tuple[np.ndarray, np.ndarray]]):
    """Read-only proposals of one dataset and method: store[key] → (boxes [k, 4], scores [k]), float32, best first.

    A Mapping whose keys are image paths relative to the dataset root, with '/' separators (skipped images are
    absent). Open with ProposalStore.open(path).
    """

    def __init__(self, path: Path, index: dict[str, Any]) -> None:
        self.path = path
        self.method: str = index["method"]
        self.params: dict[str, Any] = index["params"]
        self.summary: dict[str, Any] = index["summary"]
        self.dataset: dict[str, Any] | None = index.get("dataset")  # dataset_identity, when the run recorded it
        self.skipped: list[str] = index.get("skipped", [])
        self.shards: list[dict[str, list]] = index["shards"]  # each {"keys": [...], "counts": [...]}
        self.shard_names = [shard_name(i) for i in range(len(index["shards"]))]
        self.shard_rows = [sum(shard["counts"]) for shard in index["shards"]]
        self.where: dict[str, tuple[int, int, int]] = {}
        for i, shard in enumerate(index["shards"]):
            start = 0
            for key, n in zip(shard["keys"], shard["counts"], strict=True):
                self.where[key] = (i, start, n)
                start += n
        self._arrays: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(self.shard_names)

    @classmethod
    def open(cls, path: str | os.PathLike) -> ProposalStore:
        """Open and validate a store: its index, and every shard's header and length (not yet its data)."""
        path = Path(path)
        store = cls(path, read_index(path))
        for name, rows in zip(store.shard_names, store.shard_rows, strict=True):
            check_npy(path / f"{name}.boxes.npy", (rows, 4))
            check_npy(path / f"{name}.scores.npy", (rows,))
        return store

    def __len__(self) -> int:
        return len(self.where)

    def __iter__(self) -> Iterator[str]:
        return iter(self.where)

    def __contains__(self, key: object) -> bool:  # without reading the shard, unlike Mapping's
        return isinstance(key, str | os.PathLike) and _key(key) in self.where

    def __getitem__(self, key: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
        shard, start, n = self.where[_key(key)]
        boxes, scores = self.arrays(shard)
        return np.array(boxes[start : start + n]), np.array(scores[start : start + n])

    def arrays(self, shard: int) -> tuple[np.ndarray, np.ndarray]:
        """A shard's (boxes, scores), memory-mapped on first use."""
        if self._arrays[shard] is None:
            name = self.shard_names[shard]
            boxes = np.load(self.path / f"{name}.boxes.npy", mmap_mode="r", allow_pickle=False)
            scores = np.load(self.path / f"{name}.scores.npy", mmap_mode="r", allow_pickle=False)
            self._arrays[shard] = (boxes, scores)
        return self._arrays[shard]

    def nonfinite_keys(self) -> list[str]:
        """Keys whose boxes hold a NaN or an infinity (reads every shard once)."""
        bad: list[str] = []
        for i, shard in enumerate(self.shards):
            rows = ~np.isfinite(self.arrays(i)[0]).all(axis=1)
            if rows.any():
                owner = np.repeat(np.arange(len(shard["keys"])), shard["counts"])
                bad += [shard["keys"][k] for k in np.unique(owner[rows])]
        return bad

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (e.g. into spawned DataLoader workers) without its maps: each process maps shards itself."""
        return {**self.__dict__, "_arrays": [None] * len(self.shard_names)}


def _key(key: str | os.PathLike) -> str:
    return key if isinstance(key, str) else Path(key).as_posix()
