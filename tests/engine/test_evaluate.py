"""coco_metrics against pycocotools' COCOeval run directly, for both backends, plus the extras and the checks."""

from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from siamdetr.engine.evaluate import STAT_NAMES, coco_metrics, evaluate_files
from siamdetr.errors import DatasetError

BACKENDS = ("faster", "pycocotools")
CATEGORY_IDS = (2, 5, 9)  # not contiguous, as in COCO
SIDES = {"small": 20, "medium": 50, "large": 150}  # areas 400, 2500, 22500 on 640x480 images
CROWDED_IMAGE, EMPTY_IMAGE_WITH_DETECTIONS, EMPTY_IMAGE = 3, 20, 21


def ground_truth(sizes: tuple[str, ...] = ("small", "medium", "large")) -> dict:
    """Five images: three annotated (one with a crowd region), one empty with detections, one empty without."""
    images = [
        {"id": i, "file_name": f"{i}.jpg", "width": 640, "height": 480}
        for i in (CROWDED_IMAGE, 7, 11, EMPTY_IMAGE_WITH_DETECTIONS, EMPTY_IMAGE)
    ]
    annotations = []
    for image_id in (CROWDED_IMAGE, 7, 11):
        for k, cat in enumerate(CATEGORY_IDS):
            for j, size in enumerate(sizes):
                side = SIDES[size]
                box = [40.0 + 160 * j + 7 * k, 30.0 + 150 * k, side, side * 0.9]
                annotations.append(ann(len(annotations) + 1, image_id, cat, box))
    crowd = ann(len(annotations) + 1, CROWDED_IMAGE, CATEGORY_IDS[0], [300.0, 200.0, 200.0, 180.0], iscrowd=1)
    annotations.append(crowd)
    categories = [{"id": c, "name": f"class{c}"} for c in CATEGORY_IDS]
    return {"images": images, "annotations": annotations, "categories": categories}


def ann(ann_id: int, image_id: int, category_id: int, box: list[float], iscrowd: int = 0) -> dict:
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": box,
        "area": box[2] * box[3],
        "iscrowd": iscrowd,
    }


def detections(gt: dict, seed: int = 0) -> list[dict]:
    """Jittered hits, misclassified and random false positives, 150 boxes on one image, some inside the crowd."""
    rng = np.random.default_rng(seed)
    out = []
    for a in gt["annotations"]:
        x, y, w, h = a["bbox"]
        jitter = rng.normal(0, 0.08, 4) * [w, h, w, h]
        box = [x + jitter[0], y + jitter[1], max(w + jitter[2], 1.0), max(h + jitter[3], 1.0)]
        out.append(det(a["image_id"], a["category_id"], box, rng.uniform(0.3, 1.0)))
        out.append(det(a["image_id"], int(rng.choice(CATEGORY_IDS)), box, rng.uniform(0.0, 0.5)))
    for image_id, n in ((7, 150), (EMPTY_IMAGE_WITH_DETECTIONS, 5), (CROWDED_IMAGE, 5)):
        for _ in range(n):
            w, h = rng.uniform(5, 200, 2)
            box = [rng.uniform(0, 640 - w), rng.uniform(0, 480 - h), w, h]
            out.append(det(image_id, int(rng.choice(CATEGORY_IDS)), box, rng.uniform(0.0, 0.9)))
    for k in range(4):
        out.append(det(CROWDED_IMAGE, CATEGORY_IDS[0], [310.0 + 20 * k, 210.0, 40.0, 40.0], 0.95))
    return out


def det(image_id: int, category_id: int, box: list[float], score: float) -> dict:
    return {"image_id": image_id, "category_id": category_id, "bbox": [float(v) for v in box], "score": float(score)}


def write(path: Path, obj: object) -> Path:
    path.write_text(json.dumps(obj))
    return path


def reference_stats(gt_path: Path, dets_path: Path) -> np.ndarray:
    """pycocotools used the documented way: the numbers the paper's tables are compared against."""
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        evaluator = COCOeval(gt, gt.loadRes(str(dets_path)), iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats * 100


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    gt = ground_truth()
    return write(tmp_path / "gt.json", gt), write(tmp_path / "results.json", detections(gt))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("sizes", [("small", "medium", "large"), ("small",)], ids=["all_sizes", "small_only"])
def test_matches_pycocotools(tmp_path: Path, backend: str, sizes: tuple[str, ...]) -> None:
    gt = ground_truth(sizes)
    gt_path, dets_path = write(tmp_path / "gt.json", gt), write(tmp_path / "results.json", detections(gt))
    metrics = coco_metrics(gt_path, dets_path, backend=backend)
    for name, expected in zip(STAT_NAMES, reference_stats(gt_path, dets_path), strict=True):
        if expected == -100:
            assert metrics[name] is None, name
        else:
            assert metrics[name] == pytest.approx(expected, abs=1e-6), name
    assert 0 < metrics["AP"] < 100
    assert (metrics["n_images"], metrics["n_detections"], metrics["backend"]) == (5, len(detections(gt)), backend)


def test_backends_agree_on_everything(files: tuple[Path, Path]) -> None:
    faster, reference = (coco_metrics(*files, backend=b) for b in BACKENDS)
    assert faster.keys() == reference.keys()
    for key in faster.keys() - {"backend"}:
        assert faster[key] == pytest.approx(reference[key], abs=1e-6), key


@pytest.mark.parametrize("backend", BACKENDS)
def test_ap_per_iou_is_consistent_with_the_summary(files: tuple[Path, Path], backend: str) -> None:
    metrics = coco_metrics(*files, backend=backend)
    assert metrics["iou_thresholds"] == [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]
    for suffix, size in (("", "AP"), ("_small", "APs"), ("_medium", "APm"), ("_large", "APl")):
        per_iou = metrics[f"AP_per_iou{suffix}"]
        assert len(per_iou) == 10
        assert np.mean(per_iou) == pytest.approx(metrics[size], abs=1e-9)
    assert metrics["AP_per_iou"][0] == pytest.approx(metrics["AP50"], abs=1e-9)
    assert metrics["AP_per_iou"][5] == pytest.approx(metrics["AP75"], abs=1e-9)


def test_gt_may_be_a_coco_object(files: tuple[Path, Path]) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(files[0]))
    assert coco_metrics(gt, files[1])["AP"] == pytest.approx(coco_metrics(*files)["AP"], abs=1e-9)


def one_object_on_a_small_image(info: dict | None) -> dict:
    """One 10x20 object (area 200) on a 100x100 image: small by COCO's bounds, medium at scale 0.04."""
    gt = {
        "images": [{"id": 1, "file_name": "1.jpg", "width": 100, "height": 100}],
        "annotations": [ann(1, 1, 4, [10.0, 10.0, 10.0, 20.0])],
        "categories": [{"id": 4, "name": "thing"}],
    }
    if info is not None:
        gt["info"] = info
    return gt


@pytest.mark.parametrize("backend", BACKENDS)
def test_area_scale_moves_objects_between_sizes(tmp_path: Path, backend: str) -> None:
    perfect = [det(1, 4, [10.0, 10.0, 10.0, 20.0], 0.9)]
    scaled = write(tmp_path / "scaled.json", one_object_on_a_small_image({"area_scale": 0.04}))
    plain = write(tmp_path / "plain.json", one_object_on_a_small_image(None))

    auto = coco_metrics(scaled, perfect, backend=backend)
    assert auto["area_scale"] == 0.04
    assert auto["APm"] == pytest.approx(100) and auto["APs"] is None and auto["APl"] is None
    assert auto["AP_per_iou_small"] == [None] * 10

    overridden = coco_metrics(scaled, perfect, area_scale=1.0, backend=backend)
    assert overridden["APs"] == pytest.approx(100) and overridden["APm"] is None

    default = coco_metrics(plain, perfect, backend=backend)
    assert default["area_scale"] == 1.0 and default["APs"] == pytest.approx(100)


@pytest.mark.parametrize("backend", BACKENDS)
def test_perfect_detector_scores_100(tmp_path: Path, backend: str) -> None:
    gt = ground_truth()
    hits = [det(a["image_id"], a["category_id"], a["bbox"], 1.0) for a in gt["annotations"] if not a["iscrowd"]]
    metrics = coco_metrics(write(tmp_path / "gt.json", gt), hits, backend=backend)
    for name in set(STAT_NAMES) - {"AR1"}:
        assert metrics[name] == pytest.approx(100, abs=1e-9), name
    assert metrics["AR1"] == pytest.approx(100 / 3)  # one box per image and class finds 1 of its 3 objects
    assert metrics["AP_per_iou"] == pytest.approx([100] * 10, abs=1e-9)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_detections_score_zero(tmp_path: Path, backend: str) -> None:
    gt_path = write(tmp_path / "gt.json", ground_truth(("small",)))
    for empty in ([], write(tmp_path / "results.json", [])):
        metrics = coco_metrics(gt_path, empty, backend=backend)
        assert all(metrics[name] == 0.0 for name in STAT_NAMES)
        assert metrics["AP_per_iou_large"] == [0.0] * 10
        assert metrics["n_detections"] == 0


def test_in_memory_detections_are_not_modified(files: tuple[Path, Path]) -> None:
    results = json.loads(files[1].read_text())
    before = copy.deepcopy(results)
    coco_metrics(files[0], results)
    assert results == before


BAD_DETECTIONS = {
    "not_a_list": ({"image_id": 3}, "expected a list"),
    "not_an_object": ([[3, 2]], r"detections\[0\] is not an object"),
    "missing_score": ([{"image_id": 3, "category_id": 2, "bbox": [0, 0, 1, 1]}], r"detections\[0\] is missing 'score'"),
    "bbox_three_numbers": ([det(3, 2, [0, 0, 1], 0.5)], r"detections\[0\]\.bbox"),
    "bbox_not_numbers": ([{**det(3, 2, [0, 0, 1, 1], 0.5), "bbox": [0, 0, "1", 1]}], r"detections\[0\]\.bbox"),
    "negative_width": ([det(3, 2, [0, 0, 1, 1], 0.5), det(3, 2, [0, 0, -1, 1], 0.5)], r"detections\[1\]\.bbox.*>= 0"),
    "unknown_image": ([det(4, 2, [0, 0, 1, 1], 0.5)], r"detections\[0\]\.image_id = 4"),
    "unknown_category": ([det(3, 3, [0, 0, 1, 1], 0.5)], r"detections\[0\]\.category_id = 3"),
    "score_not_a_number": ([{**det(3, 2, [0, 0, 1, 1], 0.5), "score": "high"}], r"detections\[0\]\.score"),
}


@pytest.mark.parametrize("case", BAD_DETECTIONS)
def test_bad_detections_are_named(tmp_path: Path, case: str) -> None:
    bad, message = BAD_DETECTIONS[case]
    gt_path = write(tmp_path / "gt.json", ground_truth(("small",)))
    with pytest.raises(DatasetError, match=rf"bad_results\.json: {message}"):
        coco_metrics(gt_path, write(tmp_path / "bad_results.json", bad))
    with pytest.raises(DatasetError, match=rf"^detections: {message}"):
        coco_metrics(gt_path, bad)


def test_unreadable_files_are_named(tmp_path: Path) -> None:
    gt_path = write(tmp_path / "gt.json", ground_truth(("small",)))
    (tmp_path / "broken.json").write_text("[{")
    with pytest.raises(DatasetError, match="broken.json"):
        coco_metrics(gt_path, tmp_path / "broken.json")
    with pytest.raises(DatasetError, match="missing.json"):
        coco_metrics(tmp_path / "missing.json", [])
    with pytest.raises(DatasetError, match=r"bad_gt\.json: info\.area_scale"):
        coco_metrics(write(tmp_path / "bad_gt.json", one_object_on_a_small_image({"area_scale": -1})), [])


def test_evaluate_files_writes_what_it_returns(files: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "out" / "metrics.json"
    metrics = evaluate_files(*files, out, backend="pycocotools")
    with out.open() as f:
        assert json.load(f) == metrics
