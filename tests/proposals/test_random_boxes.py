import numpy as np

from siamdetr.proposals.random_boxes import ASPECT_RANGE, SIDE_RANGE, propose


def test_a_pure_function_of_the_seed_and_the_image_size():
    image = np.zeros((90, 120, 3), np.uint8)
    a, b, c = propose(image, 3, top_k=64), propose(image, 3, top_k=64), propose(image, 4, top_k=64)
    assert np.array_equal(a.boxes, b.boxes) and not np.array_equal(a.boxes, c.boxes)
    assert np.array_equal(propose(np.ones((90, 120), np.uint8), 3, top_k=64).boxes, a.boxes)  # pixels unused


def test_boxes_inside_the_image_with_spread_sizes_and_decreasing_scores():
    h, w = 90, 120
    p = propose(np.zeros((h, w, 3), np.uint8), 0, top_k=2000)
    b = p.boxes
    assert b.shape == (2000, 4) and b.dtype == np.float32
    assert b[:, :2].min() >= 0 and b[:, 2].max() <= w and b[:, 3].max() <= h
    bw, bh = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    side = np.sqrt(bw * bh) / np.sqrt(w * h)
    assert side.min() < 2 * SIDE_RANGE[0] and side.max() > 0.6 and side.max() <= SIDE_RANGE[1]
    assert (bw / bh).min() >= ASPECT_RANGE[0] * 0.99 and (bw / bh).max() <= ASPECT_RANGE[1] * 1.01
    assert np.all(np.diff(p.scores) < 0)
