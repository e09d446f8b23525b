"""Random boxes (the UP-DETR-style baseline of the paper's Table 4): a pure function of (seed, image).

Sizes are log-uniform, so small and large boxes are equally common per octave, as objects are; the side
(√area) runs from 1/16 of the image's √area to all of it, aspect ratios (w/h) from 1/3 to 3 (EdgeBoxes'
default limit); positions are uniform among those that keep the box inside the image.
"""

from __future__ import annotations

import numpy as np

from siamdetr.proposals.boxes import Proposals, rank_scores

SIDE_RANGE = (1 / 16, 1.0)  # box √area relative to the image's √area
ASPECT_RANGE = (1 / 3, 3.0)


def propose(image: np.ndarray, seed: int, *, top_k: int = 512) -> Proposals:
    """top_k random boxes in an [H, W, ...] image; only its size is used. Scores decrease with the draw order."""
    h, w = image.shape[:2]
    rng = np.random.default_rng(seed)
    side = np.sqrt(w * h) * np.exp(rng.uniform(*np.log(SIDE_RANGE), top_k))
    aspect = np.exp(rng.uniform(*np.log(ASPECT_RANGE), top_k))
    bw = np.minimum(side * np.sqrt(aspect), w)
    bh = np.minimum(side / np.sqrt(aspect), h)
    x0 = rng.uniform(0, 1, top_k) * (w - bw)
    y0 = rng.uniform(0, 1, top_k) * (h - bh)
    boxes = np.stack([x0, y0, x0 + bw, y0 + bh], axis=1).astype(np.float32)
    return Proposals(boxes, rank_scores(top_k))
