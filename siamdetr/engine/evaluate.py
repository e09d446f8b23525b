"""COCO-style bbox evaluation: the one place every stage (fine-tuning, `siamdetr evaluate`, reports) gets AP from.

Wraps COCOeval (faster-coco-eval by default, pycocotools as the reference; both give the same numbers) and adds
what the paper's tables need beyond `stats`: AP at each IoU threshold, overall and per object size, and COCO's
size thresholds scaled to the synthetic data's small images.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import math
from pathlib import Path
from typing import Any, Literal

import faster_coco_eval
import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from siamdetr.data.coco import coco_from_dict, read_json, validate_coco
from siamdetr.errors import DatasetError
from siamdetr.io import atomic_write_json

Backend = Literal["faster", "pycocotools"]
BACKENDS = ("faster", "pycocotools")

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
PER_IOU_KEYS = {
    "all": "AP_per_iou",
    "small": "AP_per_iou_small",
    "medium": "AP_per_iou_medium",
    "large": "AP_per_iou_large",
}
IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)  # COCOeval's own definition
MAX_AREA = 1e5**2  # COCOeval's upper bound of the "all" and "large" ranges
DETECTION_KEYS = ("image_id", "category_id", "bbox", "score")


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _known_id(x: Any, ids: dict) -> bool:
    return isinstance(x, int | np.integer) and not isinstance(x, bool) and x in ids


def load_ground_truth(gt: str | Path | COCO) -> tuple[COCO, str]:
    """The gt index and a name for messages.

    Boxes are not clipped or dropped (unlike load_coco for training), so a file scores exactly as the official
    evaluator scores it; only the fields COCOeval needs and some writers omit are filled in.
    """
    if isinstance(gt, COCO):
        return gt, "ground truth"
    data = read_json(gt)
    validate_coco(data, gt)
    for ann in data["annotations"]:
        ann.setdefault("iscrowd", 0)
        ann.setdefault("area", ann["bbox"][2] * ann["bbox"][3])
    return coco_from_dict(data), str(gt)


def validate_detections(detections: Any, gt: COCO, name: str) -> None:
    """Check a COCO results list against its gt; errors name the source, the index and the field."""
    if not isinstance(detections, list):
        raise DatasetError(f"{name}: expected a list of detections, got {type(detections).__name__}")
    for i, det in enumerate(detections):
        where = f"{name}: detections[{i}]"
        if not isinstance(det, dict):
            raise DatasetError(f"{where} is not an object: {det!r}")
        missing = [key for key in DETECTION_KEYS if key not in det]
        if missing:
            raise DatasetError(f"{where} is missing {', '.join(map(repr, missing))}")
        bbox = det["bbox"]
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(map(_finite, bbox))):
            raise DatasetError(f"{where}.bbox = {bbox!r}: expected [x, y, w, h], 4 finite numbers")
        if bbox[2] < 0 or bbox[3] < 0:
            raise DatasetError(f"{where}.bbox = {bbox!r}: width and height must be >= 0")
        if not _known_id(det["image_id"], gt.imgs):
            raise DatasetError(f"{where}.image_id = {det['image_id']!r} is not an image id of the ground truth")
        if not _known_id(det["category_id"], gt.cats):
            raise DatasetError(f"{where}.category_id = {det['category_id']!r} is not a category id of the ground truth")
        if not _finite(det["score"]):
            raise DatasetError(f"{where}.score = {det['score']!r}: expected a finite number")


def load_detections(detections: str | Path | list[dict], gt: COCO) -> list[dict]:
    """A validated private copy (COCO's loadRes annotates the list it is given)."""
    if isinstance(detections, str | Path):
        loaded, name = read_json(detections), str(detections)
    else:
        loaded, name = copy.deepcopy(detections), "detections"
    validate_detections(loaded, gt, name)
    return loaded


def resolve_area_scale(gt: COCO, gt_name: str, area_scale: float | None) -> float:
    """The explicit scale, else the gt's `info.area_scale` (written by the synthetic data), else COCO's 1.0."""
    if area_scale is not None:
        if not (_finite(area_scale) and area_scale > 0):
            raise ValueError(f"area_scale = {area_scale!r}: expected a positive number")
        return float(area_scale)
    info = gt.dataset.get("info")
    scale = info.get("area_scale", 1.0) if isinstance(info, dict) else 1.0
    if not (_finite(scale) and scale > 0):
        raise DatasetError(f"{gt_name}: info.area_scale = {scale!r}: expected a positive number")
    return float(scale)


def area_ranges(scale: float) -> list[list[float]]:
    """COCOeval's areaRng (all, small, medium, large) with the size bounds, set for ~640x480 images, scaled."""
    small, medium = 32**2 * scale, 96**2 * scale
    return [[0, MAX_AREA], [0, small], [small, medium], [medium, MAX_AREA]]


def run_cocoeval(gt: COCO, detections: list[dict], areas: list[list[float]], backend: Backend) -> Any:
    """Evaluate, accumulate and summarize with the chosen implementation, without its prints and log lines."""
    logging.getLogger("faster_coco_eval").setLevel(logging.WARNING)
    with contextlib.redirect_stdout(io.StringIO()):
        if backend == "faster":
            faster_gt = faster_coco_eval.COCO(gt.dataset)
            evaluator = faster_coco_eval.COCOeval_faster(faster_gt, faster_gt.loadRes(detections), iouType="bbox")
        else:
            evaluator = COCOeval(gt, gt.loadRes(detections), iouType="bbox")
        evaluator.params.areaRng = areas
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


def _percent(value: float) -> float | None:
    """COCOeval's -1 ("no ground truth of this kind") becomes None, which JSON can hold and NaN cannot."""
    return None if value == -1 else float(value) * 100


def _mean_valid(precision: np.ndarray) -> float:
    """Mean over the entries COCOeval counts (> -1), as its summarize does; -1 when there are none."""
    valid = precision[precision > -1]
    return float(valid.mean()) if valid.size else -1.0


def summarize(evaluator: Any) -> dict[str, Any]:
    """The 12 COCO stats and AP per IoU threshold (overall and per size) in percent."""
    metrics: dict[str, Any] = {name: _percent(v) for name, v in zip(STAT_NAMES, evaluator.stats[:12], strict=True)}
    precision = np.asarray(evaluator.eval["precision"])  # [IoU, recall, category, area, maxDets]
    max_dets = evaluator.params.maxDets.index(100)
    for area, key in PER_IOU_KEYS.items():
        a = evaluator.params.areaRngLbl.index(area)
        metrics[key] = [_percent(_mean_valid(precision[t, :, :, a, max_dets])) for t in range(len(IOU_THRESHOLDS))]
    return metrics


def zero_metrics() -> dict[str, Any]:
    """What an empty results list scores (pycocotools cannot load one)."""
    metrics: dict[str, Any] = dict.fromkeys(STAT_NAMES, 0.0)
    metrics.update({key: [0.0] * len(IOU_THRESHOLDS) for key in PER_IOU_KEYS.values()})
    return metrics


def per_iou_scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """The per-IoU AP lists as scalars a tracker can log: AP_iou50 ... AP_iou95, APs_iou50, ... (Figure 4)."""
    prefix = {"all": "AP", "small": "APs", "medium": "APm", "large": "APl"}
    out: dict[str, float] = {}
    for area, key in PER_IOU_KEYS.items():
        for t, v in zip(metrics.get("iou_thresholds", []), metrics.get(key) or [], strict=False):
            if v is not None:
                out[f"{prefix[area]}_iou{round(t * 100)}"] = float(v)
    return out


def coco_metrics(
    gt: str | Path | COCO,
    detections: str | Path | list[dict],
    *,
    area_scale: float | None = None,
    backend: Backend = "faster",
) -> dict[str, Any]:
    """COCO bbox metrics in percent as a JSON-ready dict.

    Keys: AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl (COCOeval's stats), AP_per_iou and
    AP_per_iou_{small,medium,large} (AP at each of `iou_thresholds`, maxDets 100), iou_thresholds, n_images,
    n_detections, backend and area_scale. A metric COCOeval leaves undefined (-1: no ground truth of that
    size) is None. An empty detection list scores 0.0 everywhere, undefined sizes included.

    `area_scale` multiplies COCO's small/medium/large area bounds (32², 96²); None reads `info.area_scale`
    from the gt, else uses 1.0, which gives exactly the official numbers.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend = {backend!r}: expected one of {', '.join(BACKENDS)}")
    gt_coco, gt_name = load_ground_truth(gt)
    results = load_detections(detections, gt_coco)
    scale = resolve_area_scale(gt_coco, gt_name, area_scale)
    metrics = summarize(run_cocoeval(gt_coco, results, area_ranges(scale), backend)) if results else zero_metrics()
    metrics.update(
        iou_thresholds=[round(float(t), 2) for t in IOU_THRESHOLDS],
        n_images=len(gt_coco.getImgIds()),
        n_detections=len(results),
        backend=backend,
        area_scale=scale,
    )
    return metrics


def write_metrics(metrics: dict[str, Any], path: str | Path) -> None:
    atomic_write_json(path, metrics, indent=2)


def evaluate_files(
    gt_path: str | Path,
    detections_path: str | Path,
    out_path: str | Path,
    area_scale: float | None = None,
    backend: Backend = "faster",
) -> dict[str, Any]:
    """`siamdetr evaluate`: score a results file against an instances file and save the metrics."""
    metrics = coco_metrics(gt_path, detections_path, area_scale=area_scale, backend=backend)
    write_metrics(metrics, out_path)
    return metrics
