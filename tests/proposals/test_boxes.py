import numpy as np

from siamdetr.proposals.boxes import clip_to_image, rank_scores, xywh_to_xyxy


def test_xywh_to_xyxy_and_opencvs_empty_result():
    assert xywh_to_xyxy([[1, 2, 3, 4]]).tolist() == [[1, 2, 4, 6]]
    assert xywh_to_xyxy(()).shape == (0, 4) and xywh_to_xyxy(()).dtype == np.float32


def test_clip_keeps_scores_aligned_and_drops_empty_boxes():
    boxes = np.array([[-5, -5, 10, 10], [5, 5, 50, 40], [40, 0, 60, 10], [10, 10, 10, 20]], np.float32)
    clipped, scores = clip_to_image(boxes, np.array([0.9, 0.8, 0.7, 0.6], np.float32), width=32, height=24)
    assert clipped.tolist() == [[0, 0, 10, 10], [5, 5, 32, 24]]  # wholly outside and zero-width: dropped
    assert scores.tolist() == [np.float32(0.9), np.float32(0.8)]


def test_rank_scores_decrease():
    s = rank_scores(4)
    assert s.dtype == np.float32 and s.tolist() == [1.0, 0.5, np.float32(1 / 3), 0.25]
