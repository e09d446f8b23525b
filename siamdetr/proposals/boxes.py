"""The box type every proposal method returns, and the conversions between OpenCV's rectangles and it."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Proposals:
    """One image's proposals, best first.

    boxes: [k, 4] float32 x0, y0, x1, y1 in the image's own pixels (0-based, ends exclusive); scores: [k] float32,
    non-increasing. `retried` and `fallback` record EdgeBoxes' rescue paths, so the runner can count them.
    """

    boxes: np.ndarray
    scores: np.ndarray
    retried: bool = False
    fallback: bool = False


def xywh_to_xyxy(rects: np.ndarray | tuple) -> np.ndarray:
    """OpenCV Rects (x, y, w, h), 0-based, as float32 xyxy; OpenCV returns () for no rectangle."""
    r = np.asarray(rects, dtype=np.float32).reshape(-1, 4)
    return np.concatenate([r[:, :2], r[:, :2] + r[:, 2:]], axis=1)


def clip_to_image(boxes: np.ndarray, scores: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Clip boxes to the image and drop those left empty (with their scores)."""
    limits = np.array([width, height, width, height], dtype=np.float32)
    clipped = np.clip(boxes, 0, limits).astype(np.float32)
    keep = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    return clipped[keep], scores[keep].astype(np.float32)


def rank_scores(n: int) -> np.ndarray:
    """1 / (1 + rank): scores for methods that only order their boxes."""
    return (1.0 / (1.0 + np.arange(n))).astype(np.float32)


def downscaled(image: np.ndarray, max_side: int) -> np.ndarray:
    """A copy whose longer side is at most max_side (INTER_AREA), or the image itself when it already is."""
    h, w = image.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1:
        return image
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)
