"""Pretraining samples: unlabeled images + their offline proposals → two views (Siamese DETR) or one view
(UP-DETR, DETReg: `pretrain/single_view.py`), each a `View`, batched by `View.batch`.

Every sample's randomness comes from a generator seeded by (seed, epoch, index), so a sample is the same
whatever the worker count, and a resumed epoch replays exactly.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from siamdetr.config import PretrainConfig
from siamdetr.data.folder import list_images
from siamdetr.data.images import elongation, read_image
from siamdetr.engine.checkpoint import sample_seed
from siamdetr.errors import BadImageError
from siamdetr.pretrain.views import View, ViewConfig, sample_view_pair

log = logging.getLogger(__name__)

Sampler = Callable[..., tuple[View, ...]]  # (image uint8 [3, H, W], proposals [K, 4], generator=) → its views


def view_config(p: PretrainConfig) -> ViewConfig:
    return ViewConfig(
        tau=p.tau,
        n_boxes=p.n_proposals,
        short_min=p.short_min,
        short_max=p.short_max,
        max_size=p.max_size,
        jitter=p.jitter,
        sample_proposals=p.sample_proposals,
    )


def view_sampler(p: PretrainConfig, num_queries: int) -> Sampler:
    """The views one sample of `p.method` is made of: Siamese DETR's two, or the baselines' one."""
    from siamdetr.pretrain.single_view import detreg_sample, updetr_sample

    if p.method == "siamese":
        return functools.partial(sample_view_pair, cfg=view_config(p))
    if p.method == "updetr":
        return functools.partial(updetr_sample, p=p, num_queries=num_queries)
    return functools.partial(detreg_sample, p=p)


def too_elongated(image: Tensor, max_aspect: float, path: Path, on_bad: str) -> bool:
    """True (with a warning) for an image so elongated that, its long side capped, the short side would be
    under one feature cell; an error under on_bad_image='error'."""
    problem = elongation(*image.shape[-2:], max_aspect)
    if problem is None:
        return False
    if on_bad == "error":
        raise BadImageError(f"{path}: {problem}")
    log.warning("skipping %s: %s", path, problem)
    return True


class PretrainImages(Dataset):
    """Unlabeled images with their proposals (a ProposalStore keyed by the path relative to `root`), each
    made into views by `sample`; images more elongated than `max_aspect` are skipped (or, under
    on_bad_image='error', refused)."""

    def __init__(
        self,
        root: str | Path,
        store: Mapping[str, Any],
        sample: Sampler,
        seed: int,
        on_bad_image: str = "skip",
        max_aspect: float = float("inf"),
    ) -> None:
        self.root = Path(root)
        self.paths = list_images(self.root)
        self.store = store
        self.sample = sample
        self.seed = seed
        self.on_bad_image = on_bad_image
        self.max_aspect = max_aspect
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.paths)

    def proposals(self, key: str) -> Tensor:
        if key not in self.store:
            return torch.zeros((0, 4))
        boxes, _ = self.store[key]
        boxes = torch.as_tensor(boxes, dtype=torch.float32)
        return boxes[boxes.isfinite().all(dim=1)]  # a store's NaN rows never reach the views

    def __getitem__(self, index: int) -> tuple[View, ...] | None:
        key = str(self.paths[index])
        image = read_image(self.root / key, self.on_bad_image)
        if image is None or too_elongated(image, self.max_aspect, self.root / key, self.on_bad_image):
            return None
        generator = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, index))
        return self.sample(image.as_subclass(Tensor), self.proposals(key), generator=generator)


def collate_views(items: list[tuple[View, ...] | None]) -> dict[str, Any]:
    """Samples → one padded `View` per view position; bad images are dropped and counted."""
    good = [it for it in items if it is not None]
    views = [View.batch([it[k] for it in good]) for k in range(len(good[0]))] if good else []
    return {"skipped": len(items) - len(good), "views": views}
