import numpy as np
import pytest

from siamdetr.proposals.edgeboxes import centre_box, detect, opencv_boxes_to_xyxy, propose
from siamdetr.proposals.edges import EDGE_MAPS


def rectangle_image(height, width, rect):
    image = np.full((height, width, 3), 20, np.uint8)
    x0, y0, x1, y1 = rect
    image[y0:y1, x0:x1] = (220, 180, 40)
    return image


def test_opencv_boxes_are_one_based_with_inclusive_width():
    # OpenCV (x+1, y+1, w, h): the box spans columns x .. x+w inclusive, i.e. [x, x+w+1) 0-based.
    assert opencv_boxes_to_xyxy([[1, 1, 10, 20], [5, 3, 2, 2]]).tolist() == [[0, 0, 11, 21], [4, 2, 7, 5]]
    assert opencv_boxes_to_xyxy(()).shape == (0, 4)


def test_a_box_at_the_image_corner_comes_back_with_x_and_y_equal_to_1():
    # The empirical check of the 1-based claim: an object touching the origin gives raw x = y = 1, i.e. 0.
    boxes, scores = detect(rectangle_image(128, 160, (0, 0, 60, 50)), 50, 100.0, "gradient", None)
    assert boxes[0, :2].tolist() == [0, 0]
    assert np.all(np.diff(scores) <= 0)


@pytest.mark.parametrize("edge_map", EDGE_MAPS)
def test_best_box_encloses_a_lone_rectangle(edge_map):
    rect = (40, 30, 100, 90)
    boxes, _ = detect(rectangle_image(128, 160, rect), 50, 1000.0, edge_map, None)
    best = boxes[0]
    assert best[0] <= rect[0] and best[1] <= rect[1] and best[2] >= rect[2] and best[3] >= rect[3]
    assert np.all(np.abs(best - rect) <= 8)


def test_flat_image_gets_the_retry_then_the_centre_box():
    p = propose(np.full((48, 64, 3), 128, np.uint8), 0)
    assert p.retried and p.fallback
    assert p.boxes.tolist() == centre_box(64, 48).tolist() == [[16, 12, 48, 36]]
    assert p.scores.shape == (1,)


def test_image_too_small_for_min_box_area_is_rescued_by_the_upscaled_retry():
    image = rectangle_image(30, 30, (7, 7, 23, 23))  # no box of 1000 px² fits in 30x30; at 60x60 one does
    p = propose(image, 0, min_box_area=1000.0)
    assert p.retried and not p.fallback and len(p.boxes) > 0
    assert p.boxes.min() >= 0 and p.boxes[:, 2].max() <= 30 and p.boxes[:, 3].max() <= 30


def test_top_k_limits_the_boxes():
    image = rectangle_image(128, 160, (40, 30, 100, 90))
    assert len(propose(image, 0, top_k=3, min_box_area=100.0).boxes) == 3


def test_a_large_image_is_searched_downscaled_and_its_boxes_mapped_back():
    from siamdetr.proposals.edgeboxes import propose

    rng = np.random.default_rng(0)
    small = np.zeros((300, 400, 3), np.uint8)
    for _ in range(12):  # bright rectangles: edges EdgeBoxes finds
        x, y = rng.integers(0, 300), rng.integers(0, 200)
        small[y : y + rng.integers(30, 90), x : x + rng.integers(30, 90)] = rng.integers(80, 255, 3)
    large = np.repeat(np.repeat(small, 10, axis=0), 10, axis=1)  # 4000 x 3000
    capped = propose(large, 0, top_k=50, max_side=400)
    direct = propose(small, 0, top_k=50, min_box_area=10.0)  # minBoxArea 1000 px² of the original, in the copy
    assert len(capped.boxes) == len(direct.boxes) > 0
    np.testing.assert_allclose(capped.boxes, direct.boxes * 10, rtol=1e-5)  # same boxes, original pixels
    assert capped.boxes[:, 2].max() <= 4000 and capped.boxes[:, 3].max() <= 3000 and capped.boxes[:, 2].max() > 400
