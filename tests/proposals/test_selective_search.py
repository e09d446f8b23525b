import numpy as np

from siamdetr.proposals.selective_search import propose


def scene(seed, height, width):
    rng = np.random.default_rng(seed)
    image = np.full((height, width, 3), 40, np.uint8)
    for _ in range(5):
        x, y = rng.integers(0, width - 20), rng.integers(0, height - 20)
        image[y : y + rng.integers(10, 40), x : x + rng.integers(10, 40)] = rng.integers(60, 255, 3)
    return image


def test_same_seed_same_boxes_in_the_same_order():
    image = scene(0, 96, 128)
    a, b, c = propose(image, 7), propose(image, 7), propose(image, 8)
    assert np.array_equal(a.boxes, b.boxes) and np.array_equal(a.scores, b.scores)
    assert sorted(map(tuple, a.boxes.tolist())) == sorted(map(tuple, c.boxes.tolist()))  # the seed only orders


def test_by_default_the_search_runs_at_128x128_as_detreg_and_boxes_map_back_per_axis():
    image = np.kron(scene(1, 60, 80), np.ones((5, 5, 1), np.uint8))  # 300x400, squashed to 128x128
    p = propose(image, 0, top_k=30)
    assert len(p.boxes) == 30
    working = p.boxes * np.array([128 / 400, 128 / 300] * 2, dtype=np.float32)  # back in the 128x128 copy
    np.testing.assert_allclose(working, np.round(working), atol=1e-3)  # whole pixels there
    assert working.max() <= 128 and np.any(working[:, 2] > 80) and np.any(working[:, 3] > 60)  # not 80x60
    assert p.boxes[:, 2].max() == 400 and p.boxes[:, 3].max() == 300
    wide = propose(scene(2, 32, 64), 0, top_k=30)  # a small image is upscaled to the square, too
    working = wide.boxes * np.array([2, 4, 2, 4], dtype=np.float32)
    np.testing.assert_allclose(working, np.round(working), atol=1e-3)
    assert np.any(working[:, 2] > 64)


def test_boxes_mapped_back_from_the_downscaled_copy():
    image = np.kron(scene(1, 60, 80), np.ones((5, 5, 1), np.uint8))  # 300x400, searched at 60x80
    p = propose(image, 0, square=None, max_side=80, top_k=50)
    assert len(p.boxes) <= 50 and p.boxes.dtype == np.float32
    assert p.boxes.min() >= 0 and p.boxes[:, 2].max() == 400 and p.boxes[:, 3].max() == 300
    assert np.all(p.boxes % 5 == 0)  # exactly 5x the working copy's pixels
    assert p.scores[0] == 1 and np.all(np.diff(p.scores) < 0)
