"""Images → proposal store: one method over a folder of images, in parallel, resumable, deterministic.

The sorted image list is cut into shards of `shard_size` consecutive images. A pool of processes computes the
images in list order; each shard is written atomically as soon as its last image is done and is never
recomputed, so a killed run restarted with the same arguments continues where it stopped. An image's
proposals depend only on its pixels, its key and the run's parameters, so the store holds the same bytes
whatever the number of workers and however often the run was interrupted.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import hashlib
import itertools
import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import torch
from tqdm import tqdm

from siamdetr.data.folder import list_images
from siamdetr.data.images import BadImagePolicy, read_image
from siamdetr.io import locked
from siamdetr.proposals import edgeboxes, random_boxes, selective_search
from siamdetr.proposals.boxes import Proposals
from siamdetr.proposals.edges import EdgeMap
from siamdetr.proposals.store import ProposalWriter, dataset_identity

log = logging.getLogger(__name__)

Method = Literal["edgeboxes", "selective_search", "random"]
METHODS: dict[str, Callable[..., Proposals]] = {
    "edgeboxes": edgeboxes.propose,
    "selective_search": selective_search.propose,
    "random": random_boxes.propose,
}
IMAGES_AHEAD_PER_WORKER = 4  # images queued per worker: enough to keep it busy, few enough to stop quickly


def image_seed(seed: int, key: str) -> int:
    """A seed that depends on the run's seed and the image's key only, not on order, process or Python's hash."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{key}".encode()).digest()[:8], "little")


def method_options(
    method: str,
    *,
    top_k: int,
    sed_model: str | os.PathLike | None,
    ss_square: int | None,
    ss_max_side: int,
    edge_map: EdgeMap,
    min_box_area: float,
    eb_max_side: int = edgeboxes.MAX_SIDE,
) -> dict[str, Any]:
    """The keyword options `method` takes (they are recorded in the store: changing one recomputes it)."""
    if method == "edgeboxes":
        sed = None if sed_model is None else str(sed_model)
        options = {"top_k": top_k, "min_box_area": min_box_area, "edge_map": edge_map, "sed_model": sed}
        return {**options, "max_side": eb_max_side}
    if method == "selective_search":
        working = {"square": ss_square} if ss_square is not None else {"square": None, "max_side": ss_max_side}
        return {"top_k": top_k, **working}
    if method == "random":
        return {"top_k": top_k}
    raise ValueError(f"method = {method!r}: expected one of {', '.join(METHODS)}")


def propose_file(
    key: str, *, root: Path, propose: Callable[..., Proposals], seed: int, on_bad_image: BadImagePolicy
) -> Proposals | None:
    """One image's proposals, or None for an unreadable image (under on_bad_image='skip')."""
    image = read_image(root / key, on_bad_image)
    if image is None:
        return None
    return propose(np.ascontiguousarray(image.numpy().transpose(1, 2, 0)), image_seed(seed, key))


def single_threaded() -> None:
    """Worker set-up: one process per core already; library threads would only compete."""
    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def windowed_map(
    pool: Executor, work: Callable[[str], Proposals | None], keys: list[str], window: int
) -> Iterator[Any]:
    """pool.map in order, submitting at most `window` images ahead of the one being read.

    Memory stays flat over a million images (Executor.map would submit them all at once), and a worker that dies
    raises BrokenProcessPool here instead of the hang multiprocessing.Pool gives.
    """
    ahead: collections.deque[Future] = collections.deque()
    for key in keys:
        ahead.append(pool.submit(work, key))
        if len(ahead) >= window:
            yield ahead.popleft().result()
    while ahead:
        yield ahead.popleft().result()


@contextlib.contextmanager
def in_order(
    work: Callable[[str], Proposals | None], keys: list[str], workers: int
) -> Iterator[Iterator[Proposals | None]]:
    """work(key) for every key, in order: in this process for one worker, else in a pool of processes."""
    if workers == 1 or len(keys) <= 1:
        yield map(work, keys)
        return
    # Not fork: a forked child inherits OpenCV's thread pool without its threads and deadlocks in it (seen in
    # cv2.setNumThreads). A fork server imports this module once, before any of it has run, and forks workers.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    with ProcessPoolExecutor(workers, mp_context=context, initializer=single_threaded) as pool:
        yield windowed_map(pool, work, keys, window=IMAGES_AHEAD_PER_WORKER * workers)


def run_proposals(
    method: Method,
    images_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    workers: int = 0,
    top_k: int = 512,
    seed: int = 0,
    shard_size: int = 1000,
    sed_model: str | os.PathLike | None = None,
    ss_square: int | None = selective_search.DETREG_SQUARE,
    ss_max_side: int = selective_search.DEFAULT_MAX_SIDE,
    on_bad_image: BadImagePolicy = "skip",
    edge_map: EdgeMap = edgeboxes.DEFAULT_EDGE_MAP,
    min_box_area: float = edgeboxes.OPENCV_MIN_BOX_AREA,
    eb_max_side: int = edgeboxes.MAX_SIDE,
) -> dict[str, Any]:
    """Compute `method`'s top_k proposals for every image under images_dir into the store `out`; resumes.

    workers: processes, 0 = all cores. sed_model: OpenCV's SED model.yml.gz for EdgeBoxes' edges (else the
    gradient `edge_map`). min_box_area: EdgeBoxes' minBoxArea in pixels². eb_max_side: EdgeBoxes' cap on the
    longer side (a larger image is searched downscaled). ss_square / ss_max_side: Selective Search's working
    size (a square, or a cap on the long side when ss_square is None). Returns counts
    (images, skipped, retried, fallback), boxes per image and speed.
    """
    if top_k < 1 or shard_size < 1:
        raise ValueError(f"top_k = {top_k}, shard_size = {shard_size}: both must be at least 1")
    options = method_options(
        method,
        top_k=top_k,
        sed_model=sed_model,
        ss_square=ss_square,
        ss_max_side=ss_max_side,
        edge_map=edge_map,
        min_box_area=min_box_area,
        eb_max_side=eb_max_side,
    )
    if sed_model is not None and not Path(sed_model).is_file():
        raise FileNotFoundError(f"{sed_model}: SED model not found (OpenCV's model.yml.gz; it is never downloaded)")
    root = Path(images_dir)
    keys = [p.as_posix() for p in list_images(root)]
    params = options if method == "edgeboxes" else {**options, "seed": seed}  # EdgeBoxes draws nothing at random
    with locked(Path(out)):  # a second process on the same store refuses rather than computing it twice
        writer = ProposalWriter(out, method, params, shard_size)
        slices = [keys[i : i + shard_size] for i in range(0, len(keys), shard_size)]
        records = [writer.finished(i, images) for i, images in enumerate(slices)]
        todo = [i for i, record in enumerate(records) if record is None]
        pending = [key for i in todo for key in slices[i]]
        work = functools.partial(
            propose_file,
            root=root,
            propose=functools.partial(METHODS[method], **options),
            seed=seed,
            on_bad_image=on_bad_image,
        )
        start = time.perf_counter()
        bar = tqdm(total=len(pending), desc=f"{method} proposals", unit="img", disable=None)
        with in_order(work, pending, workers or os.cpu_count() or 1) as results, bar:
            for i in todo:
                shard = []
                for proposals in itertools.islice(results, len(slices[i])):
                    shard.append(proposals)
                    bar.update()
                records[i] = writer.write(i, slices[i], shard)
        store_counts = writer.finish(records, dataset_identity(root, keys))
    seconds = time.perf_counter() - start
    summary = {
        "method": method,
        "top_k": top_k,
        **store_counts,
        "n_computed": len(pending),
        "n_shards": len(slices),
        "n_shards_reused": len(slices) - len(todo),
        "seconds": seconds,
        "images_per_s": len(pending) / seconds if pending else 0.0,
    }
    log.info("%s proposals for %s → %s: %s", method, root, out, summary)
    return summary
