"""EdgeBoxes (Zitnick & Dollár 2014) through OpenCV, as the official Siamese DETR code ran it: maxBoxes 512
(the caller's top_k), every other parameter at OpenCV's default, on the full-resolution image up to a cap
on its longer side (MAX_SIDE, above every COCO and VOC image and nearly every ImageNet one: an 8000x6000
photo took 10 GB and over a minute). A larger image is searched on a downscaled copy, minBoxArea scaled
with it, and its boxes mapped back to the original pixels.

An image may yield no box (too small for minBoxArea, or no edges). Then, as the official code did, a
sharpened copy at twice the size is tried (boxes mapped back), and failing that the image gets one centre
box: its middle half in width and height. Not the whole image: pretraining already uses the view rectangle
as box 0, and a centre box at least differs from it. Both events are flagged so the runner can count them.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from siamdetr.proposals.boxes import Proposals, clip_to_image, downscaled
from siamdetr.proposals.edges import EdgeMap, gradient_edges, sed_edges

# Chosen by recall on the synthetic COCO-like val set (benchmarks/proposals_speed.py): at OpenCV's defaults
# 0.251 vs 0.246 (gt found at IoU 0.5 by the top 100), a tie within noise that train2017 leans the other way
# on; the simpler map wins it.
DEFAULT_EDGE_MAP: EdgeMap = "gradient"
OPENCV_MIN_BOX_AREA = 1000.0  # cv2.ximgproc.createEdgeBoxes' default, in pixels²
RETRY_SCALE = 2
MAX_SIDE = 2000  # longer side, pixels


def opencv_boxes_to_xyxy(rects: np.ndarray | tuple) -> np.ndarray:
    """EdgeBoxes' Rects as 0-based float32 xyxy with exclusive ends.

    OpenCV adds 1 to x and y (a leftover of the MATLAB original), so a box at the image's left edge comes back
    with x = 1. Its scoring counts columns x - 1 .. x - 1 + w inclusive, i.e. w + 1 of them: a box holds the
    edges it encloses with the same one-pixel margin on both sides only if it ends at x + w (checked on
    rendered rectangles, see the tests).
    """
    r = np.asarray(rects, dtype=np.float32).reshape(-1, 4)
    return np.concatenate([r[:, :2] - 1, r[:, :2] + r[:, 2:]], axis=1)


def detect(
    image: np.ndarray, top_k: int, min_box_area: float, edge_map: EdgeMap, sed_model: str | Path | None
) -> tuple[np.ndarray, np.ndarray]:
    """EdgeBoxes on one RGB uint8 image: xyxy boxes (clipped) and scores, best first; possibly none."""
    edges, orientation = sed_edges(image, sed_model) if sed_model is not None else gradient_edges(image, edge_map)
    detector = cv2.ximgproc.createEdgeBoxes(maxBoxes=top_k, minBoxArea=min_box_area)
    rects, scores = detector.getBoundingBoxes(edges, orientation)
    scores = np.asarray(scores if scores is not None else (), dtype=np.float32).reshape(-1)
    h, w = image.shape[:2]
    return clip_to_image(opencv_boxes_to_xyxy(rects), scores, w, h)


def sharpened_upscale(image: np.ndarray) -> np.ndarray:
    """Unsharp-masked and RETRY_SCALE times larger: more and stronger edges, boxes above minBoxArea."""
    sharp = cv2.addWeighted(image, 1.5, cv2.GaussianBlur(image, (0, 0), 1.0), -0.5, 0)
    return cv2.resize(sharp, None, fx=RETRY_SCALE, fy=RETRY_SCALE, interpolation=cv2.INTER_CUBIC)


def centre_box(width: int, height: int) -> np.ndarray:
    return np.array([[width / 4, height / 4, 3 * width / 4, 3 * height / 4]], dtype=np.float32)


def propose(
    image: np.ndarray,
    seed: int,
    *,
    top_k: int = 512,
    min_box_area: float = OPENCV_MIN_BOX_AREA,
    edge_map: EdgeMap = DEFAULT_EDGE_MAP,
    sed_model: str | Path | None = None,
    max_side: int = MAX_SIDE,
) -> Proposals:
    """EdgeBoxes proposals of an RGB uint8 [H, W, 3] image; `seed` is unused (EdgeBoxes is deterministic)."""
    h, w = image.shape[:2]
    small = downscaled(image, max_side)
    scale = w / small.shape[1]  # 1 unless the image was larger than max_side
    area = min_box_area / scale**2  # the same boxes, measured in the copy's pixels
    boxes, scores = detect(small, top_k, area, edge_map, sed_model)
    if len(boxes):
        return Proposals(*clip_to_image(boxes * scale, scores, w, h))
    boxes, scores = detect(sharpened_upscale(small), top_k, area, edge_map, sed_model)
    if len(boxes):
        return Proposals(*clip_to_image(boxes * scale / RETRY_SCALE, scores, w, h), retried=True)
    return Proposals(centre_box(w, h), np.zeros(1, dtype=np.float32), retried=True, fallback=True)
