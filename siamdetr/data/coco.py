"""COCO-format detection data: validated loading, box cleaning and a torch Dataset.

The same code opens a real COCO 2017 tree, the synthetic COCO-like tree and VOC after conversion to COCO
json (see voc.py). Boxes that are degenerate or leave the image are clipped or dropped here, once, and
counted, so every later stage can trust them.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pycocotools.coco import COCO
from torch.utils.data import Dataset, get_worker_info
from torchvision.tv_tensors import BoundingBoxes

from siamdetr.data.images import BadImagePolicy, elongation, read_image
from siamdetr.errors import BadImageError, DatasetError

log = logging.getLogger(__name__)


@dataclass
class BoxCleaning:
    """What cleaning did to the boxes of one annotation file."""

    clipped: int = 0  # partly outside the image: clipped to it
    dropped: int = 0  # w or h <= 0, or wholly outside the image: removed

    def __str__(self) -> str:
        return f"{self.clipped} boxes clipped to the image, {self.dropped} dropped (empty or outside the image)"


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: annotation file does not exist")
    try:
        with path.open("rb") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from e
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: cannot read ({e})") from e


def _number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def validate_coco(data: Any, path: str | Path) -> None:
    """Check the structure of a COCO instances dict; errors name the file and the field."""
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a JSON object with images, annotations and categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DatasetError(f"{path}: field '{key}' is missing or not a list")
    image_ids, cat_ids = set(), set()
    for i, im in enumerate(data["images"]):
        for key, ok in (
            ("id", isinstance(im.get("id"), int)),
            ("file_name", isinstance(im.get("file_name"), str)),
            ("width", _number(im.get("width")) and im.get("width", 0) > 0),
            ("height", _number(im.get("height")) and im.get("height", 0) > 0),
        ):
            if not ok:
                raise DatasetError(f"{path}: images[{i}].{key} is missing or invalid: {im.get(key)!r}")
        if im["id"] in image_ids:
            raise DatasetError(f"{path}: images[{i}].id = {im['id']} is not unique")
        image_ids.add(im["id"])
    for i, cat in enumerate(data["categories"]):
        if not isinstance(cat.get("id"), int) or not isinstance(cat.get("name"), str):
            raise DatasetError(f"{path}: categories[{i}] needs an integer 'id' and a string 'name'")
        cat_ids.add(cat["id"])
    ann_ids: set[int] = set()
    for i, ann in enumerate(data["annotations"]):
        # pycocotools indexes annotations by id: a repeated id silently drops ground truth from the evaluation
        if not isinstance(ann.get("id"), int) or isinstance(ann.get("id"), bool):
            raise DatasetError(f"{path}: annotations[{i}].id is missing or not an integer: {ann.get('id')!r}")
        if ann["id"] in ann_ids:
            raise DatasetError(f"{path}: annotations[{i}].id = {ann['id']} is not unique")
        ann_ids.add(ann["id"])
        if ann.get("image_id") not in image_ids:
            raise DatasetError(f"{path}: annotations[{i}].image_id = {ann.get('image_id')!r} is not an image id")
        if ann.get("category_id") not in cat_ids:
            raise DatasetError(
                f"{path}: annotations[{i}].category_id = {ann.get('category_id')!r} is not a category id"
            )
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(map(_number, bbox))):
            raise DatasetError(f"{path}: annotations[{i}].bbox = {bbox!r}: expected [x, y, w, h]")


def clean_boxes(data: dict[str, Any]) -> BoxCleaning:
    """Clip boxes to their image and drop empty ones, in place; returns the counts."""
    sizes = {im["id"]: (im["width"], im["height"]) for im in data["images"]}
    stats, kept = BoxCleaning(), []
    for ann in data["annotations"]:
        w_img, h_img = sizes[ann["image_id"]]
        x, y, w, h = ann["bbox"]
        x0, y0, x1, y1 = max(x, 0.0), max(y, 0.0), min(x + w, w_img), min(y + h, h_img)
        if w <= 0 or h <= 0 or x1 <= x0 or y1 <= y0:
            stats.dropped += 1
            continue
        if (x0, y0, x1, y1) != (x, y, x + w, y + h):
            stats.clipped += 1
            ann["bbox"] = [x0, y0, x1 - x0, y1 - y0]
        ann.setdefault("area", (x1 - x0) * (y1 - y0))
        ann.setdefault("iscrowd", 0)
        kept.append(ann)
    data["annotations"] = kept
    return stats


def coco_from_dict(data: dict[str, Any]) -> COCO:
    """A pycocotools COCO index over an in-memory dict (quietly: pycocotools prints)."""
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def load_coco(path: str | Path) -> tuple[COCO, BoxCleaning]:
    """Read, validate and clean a COCO instances file."""
    data = read_json(path)
    validate_coco(data, path)
    stats = clean_boxes(data)
    if stats.clipped or stats.dropped:
        log.warning("%s: %s", path, stats)
    return coco_from_dict(data), stats


class CocoDetection(Dataset):
    """Images + targets from a COCO instances file; labels are contiguous indices in category-id order.

    Items are {"image": tv_tensors.Image, "target": {...}} with boxes as tv_tensors.BoundingBoxes (XYXY,
    pixels), or None under the 'skip' policy for an image that is undecodable, not the size its annotation
    says, or more elongated than `max_aspect` (see collate_skipping_bad). Crowd
    boxes are left out of the targets unless `include_crowd`, as DETR trains; evaluation reads the json.
    """

    def __init__(
        self,
        images_dir: str | Path,
        annotations: str | Path,
        transforms: Any = None,
        on_bad_image: BadImagePolicy = "skip",
        include_crowd: bool = False,
        max_aspect: float = float("inf"),
        cache_bytes: int = 0,
    ) -> None:
        self.images_dir = Path(images_dir)
        self.annotations = Path(annotations)
        if not self.images_dir.is_dir():
            raise DatasetError(f"{self.images_dir}: image directory does not exist")
        self.coco, self.cleaning = load_coco(self.annotations)
        self.ids = sorted(self.coco.imgs)
        if not self.ids:
            raise DatasetError(f"{self.annotations}: the dataset has no images")
        self.category_ids = sorted(self.coco.cats)
        self.label_of = {cid: i for i, cid in enumerate(self.category_ids)}
        self.class_names = [self.coco.cats[c]["name"] for c in self.category_ids]
        self.transforms = transforms
        self.on_bad_image = on_bad_image
        self.include_crowd = include_crowd
        self.max_aspect = max_aspect  # longer / shorter side; beyond it an image is bad (skipped and counted)
        self.cache_bytes = cache_bytes  # > 0 only for deterministic transforms: see __getitem__
        self._cache: dict[int, dict[str, Any] | None] = {}
        self._cached_bytes = 0

    def __len__(self) -> int:
        return len(self.ids)

    def target(self, image_id: int) -> dict[str, Any]:
        info = self.coco.imgs[image_id]
        anns = [a for a in self.coco.imgToAnns.get(image_id, []) if self.include_crowd or not a["iscrowd"]]
        xywh = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        xyxy = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1)
        size = (int(info["height"]), int(info["width"]))
        return {
            "boxes": BoundingBoxes(xyxy, format="XYXY", canvas_size=size),
            "labels": torch.tensor([self.label_of[a["category_id"]] for a in anns], dtype=torch.int64),
            "iscrowd": torch.tensor([a["iscrowd"] for a in anns], dtype=torch.int64),
            "area": torch.tensor([a["area"] for a in anns], dtype=torch.float32),
            "image_id": image_id,
            "orig_size": size,
        }

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        """A sample, from memory when its transforms are deterministic and it fits `cache_bytes`: decoding
        and transforming a 64-px image costs as much as a frozen trunk's forward pass (tiny profile)."""
        if index in self._cache:
            sample = self._cache[index]
            return None if sample is None else {"image": sample["image"], "target": dict(sample["target"])}
        sample = self._load(index)
        size = 0 if sample is None else sample["image"].nbytes
        if self._cached_bytes + size <= self.cache_bytes and get_worker_info() is None:  # workers die each epoch
            self._cache[index] = sample
            self._cached_bytes += size
            return None if sample is None else {"image": sample["image"], "target": dict(sample["target"])}
        return sample

    def _load(self, index: int) -> dict[str, Any] | None:
        image_id = self.ids[index]
        path = self.images_dir / self.coco.imgs[image_id]["file_name"]
        image = read_image(path, self.on_bad_image)
        if image is None:
            return None
        target = self.target(image_id)
        h, w = image.shape[-2:]
        want_h, want_w = target["orig_size"]
        if (h, w) != (want_h, want_w):  # its boxes would land in the wrong place
            problem = f"image is {w}x{h} but {self.annotations.name} says {want_w}x{want_h}"
        else:
            problem = elongation(h, w, self.max_aspect)
        if problem is not None:
            if self.on_bad_image == "error":
                raise BadImageError(f"{path}: {problem}")
            log.warning("skipping %s: %s", path, problem)
            return None
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return {"image": image, "target": target}
