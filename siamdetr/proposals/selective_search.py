"""Selective Search (Uijlings et al. 2013) through OpenCV, fast mode, as DETReg used it.

By default it runs, as DETReg's code does, on the image resized to `square` x `square` pixels whatever its
aspect ratio (128: its cost grows faster than the pixel count); with `square=None`, on a copy whose long side
is at most `max_side`. Boxes are mapped back to the original pixels. It gives an order but no scores, so
scores are 1 / (1 + rank).
OpenCV orders its regions by `level × rand()`, C's unseeded generator, so the same image gives a different
order from call to call; seeding C's generator per image (from the run's seed and the image's key) makes the
output a function of the image alone, whatever the process or the number of workers.
"""

from __future__ import annotations

import ctypes

import cv2
import numpy as np

from siamdetr.proposals.boxes import Proposals, clip_to_image, downscaled, rank_scores, xywh_to_xyxy

DEFAULT_MAX_SIDE = 500
DETREG_SQUARE = 128  # DETReg's working size
_libc = ctypes.CDLL(None)  # the process's C library, whose rand() OpenCV's ranking draws from
_libc.srand.argtypes = [ctypes.c_uint]


def propose(
    image: np.ndarray,
    seed: int,
    *,
    top_k: int = 512,
    square: int | None = DETREG_SQUARE,
    max_side: int = DEFAULT_MAX_SIDE,
) -> Proposals:
    """Selective Search proposals of an RGB uint8 [H, W, 3] image; `seed` seeds the random part of the ranking."""
    h, w = image.shape[:2]
    small = downscaled(image, max_side) if square is None else cv2.resize(image, (square, square))
    search = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    search.setBaseImage(cv2.cvtColor(small, cv2.COLOR_RGB2BGR))
    search.switchToSelectiveSearchFast()
    _libc.srand(seed % 2**32)
    rects = search.process()[:top_k]
    scale = np.array([w / small.shape[1], h / small.shape[0]] * 2, dtype=np.float32)
    boxes, scores = clip_to_image(xywh_to_xyxy(rects) * scale, rank_scores(len(rects)), w, h)
    return Proposals(boxes, scores)
