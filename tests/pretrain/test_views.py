"""Two-view construction: IoU >= τ, matched boxes that are the same image region, jitter bounds, determinism."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor
from torchvision import tv_tensors
from torchvision.ops import box_iou, roi_align
from torchvision.transforms.v2 import functional as TF

from siamdetr.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from siamdetr.pretrain.views import (
    View,
    ViewConfig,
    intersection,
    jitter_boxes,
    outer_rectangle,
    sample_view_pair,
    select_boxes,
    shrink_outer_corners,
    views_with_iou,
)

SMALL = {"short_min": 48, "short_max": 96, "max_size": 128}
EXAMPLES = settings(max_examples=40, deadline=None)

seeds = st.integers(0, 2**31 - 1)
taus = st.floats(0.05, 0.95)
sides = st.integers(40, 120)


def smooth_image(seed: int, height: int, width: int) -> tv_tensors.Image:
    """A low-frequency uint8 image, so resampling it twice changes little."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 5, 5, generator=g)
    return tv_tensors.Image((F.interpolate(coarse, (height, width), mode="bicubic").clamp(0, 1)[0] * 255).byte())


def random_proposals(seed: int, height: int, width: int, k: int) -> Tensor:
    g = torch.Generator().manual_seed(seed + 1)
    size = torch.tensor([width, height, width, height], dtype=torch.float32)
    xy = torch.rand(k, 2, generator=g) * 0.8
    wh = (torch.rand(k, 2, generator=g) * (1 - xy)).clamp_min(0.05)
    return torch.cat([xy, (xy + wh).clamp_max(1)], 1) * size


@dataclass
class ViewPair:
    """The two one-image `View`s of a sample, unpacked for the assertions."""

    view1: Tensor
    view2: Tensor
    plain1: Tensor
    plain2: Tensor
    boxes1: Tensor
    boxes2: Tensor
    query_boxes1: Tensor
    query_boxes2: Tensor
    info: dict


def unpack(views: tuple[View, View]) -> ViewPair:
    v1, v2 = views
    assert v1.info == v2.info and len(v1.sizes) == len(v2.sizes) == 1 and not v1.mask.any()
    return ViewPair(
        v1.images[0],
        v2.images[0],
        v1.plain[0],
        v2.plain[0],
        v1.boxes[0],
        v2.boxes[0],
        v1.query_boxes[0],
        v2.query_boxes[0],
        v1.info[0],
    )


def make_pair(seed: int, height: int, width: int, k: int, **overrides) -> ViewPair:
    cfg = ViewConfig(**{**SMALL, **overrides})
    image = smooth_image(seed, height, width)
    proposals = random_proposals(seed, height, width, k)
    return unpack(sample_view_pair(image, proposals, cfg, torch.Generator().manual_seed(seed)))


def view_size(pair: ViewPair) -> tuple[int, int]:
    return tuple(pair.view1.shape[-2:])


def view_to_frame(boxes: Tensor, rect: list[float], pair: ViewPair) -> Tensor:
    """Undo a view's crop at `rect` and its resize to the view size."""
    h, w = view_size(pair)
    x0, y0, x1, y1 = rect
    return boxes * torch.tensor([(x1 - x0) / w, (y1 - y0) / h] * 2) + torch.tensor([x0, y0, x0, y0])


def frame_to_original(boxes: Tensor, pair: ViewPair) -> Tensor:
    """Undo the flip, then the resize."""
    fh, fw = pair.info["frame_size"]
    if pair.info["flipped"]:
        boxes = torch.stack([fw - boxes[:, 2], boxes[:, 1], fw - boxes[:, 0], boxes[:, 3]], 1)
    ih, iw = pair.info["image_size"]
    return boxes * torch.tensor([iw / fw, ih / fh] * 2)


def to_original(boxes: Tensor, rect: list[float], pair: ViewPair) -> Tensor:
    return frame_to_original(view_to_frame(boxes, rect, pair), pair)


def assert_inside(boxes: Tensor, height: int, width: int) -> None:
    assert (
        (boxes[:, :2] >= -1e-4).all() and (boxes[:, 2] <= width + 1e-4).all() and (boxes[:, 3] <= height + 1e-4).all()
    )
    assert (boxes[:, 2:] > boxes[:, :2]).all()


# ----------------------------------------------------------------------------------------------- geometry
@EXAMPLES
@given(taus, st.floats(0, 100), st.floats(0, 100), st.floats(4, 600), st.floats(4, 600))
def test_views_with_iou_have_iou_exactly_tau(tau: float, x0: float, y0: float, w: float, h: float) -> None:
    outer = torch.tensor([x0, y0, x0 + w, y0 + h])
    views = views_with_iou(outer, tau)
    assert float(box_iou(views[:1], views[1:])) == pytest.approx(tau, abs=1e-4)
    assert torch.allclose(views[0, :2], outer[:2]) and torch.allclose(views[1, 2:], outer[2:])
    common = intersection(views)
    assert torch.allclose((common[:2] + common[2:]) / 2, (outer[:2] + outer[2:]) / 2, atol=1e-3)


@EXAMPLES
@given(taus, seeds)
def test_shrinking_keeps_the_intersection_and_aspect_and_only_raises_iou(tau: float, seed: int) -> None:
    outer = torch.tensor([3.0, 5.0, 103.0, 80.0])
    views = views_with_iou(outer, tau)
    shrunk = shrink_outer_corners(views, torch.Generator().manual_seed(seed))
    assert torch.allclose(intersection(shrunk), intersection(views))
    assert float(box_iou(shrunk[:1], shrunk[1:])) >= tau - 1e-5
    wh = shrunk[:, 2:] - shrunk[:, :2]
    assert torch.allclose(wh[:, 0] / wh[:, 1], torch.tensor(100 / 75).expand(2), rtol=1e-4)


@EXAMPLES
@given(sides, sides, seeds)
def test_outer_rectangle_fits_and_covers_half_the_frame_or_more(height: int, width: int, seed: int) -> None:
    outer = outer_rectangle(height, width, (0.5, 1.0), (3 / 4, 4 / 3), torch.Generator().manual_seed(seed))
    x0, y0, x1, y1 = outer.tolist()
    assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
    assert (x1 - x0) * (y1 - y0) >= 0.5 * height * width - (height + width)


# -------------------------------------------------------------------------------------------------- pairs
@EXAMPLES
@given(seeds, taus, sides, sides, st.integers(0, 40))
def test_pair_has_iou_at_least_tau_and_n_boxes_inside_each_view(seed: int, tau: float, h: int, w: int, k: int) -> None:
    pair = make_pair(seed, h, w, k, tau=tau)
    vh, vw = view_size(pair)
    assert pair.view2.shape == pair.plain1.shape == pair.plain2.shape == (3, vh, vw)
    assert pair.view1.dtype == torch.float32
    views = torch.tensor(pair.info["views"])
    assert float(box_iou(views[:1], views[1:])) >= tau - 1e-5
    assert pair.info["iou"] >= tau - 1e-5
    for boxes in (pair.boxes1, pair.boxes2, pair.query_boxes1, pair.query_boxes2):
        assert boxes.shape == (10, 4) and boxes.dtype == torch.float32
        assert_inside(boxes, vh, vw)
    assert pair.info["proposals_used"] + pair.info["duplicated"] == 9


@EXAMPLES
@given(seeds, taus, sides, sides, st.integers(0, 40))
def test_matching_boxes_are_the_same_region_of_the_original_image(
    seed: int, tau: float, h: int, w: int, k: int
) -> None:
    pair = make_pair(seed, h, w, k, tau=tau)
    rect1, rect2 = pair.info["views"]
    in_image1, in_image2 = to_original(pair.boxes1, rect1, pair), to_original(pair.boxes2, rect2, pair)
    assert torch.allclose(in_image1, in_image2, atol=1e-2)
    assert_inside(in_image1, h, w)
    box0 = frame_to_original(intersection(torch.tensor(pair.info["views"]))[None], pair)
    assert torch.allclose(in_image1[:1], box0, atol=1e-2)


@EXAMPLES
@given(seeds, sides, sides, st.integers(1, 30))
def test_proposal_boxes_are_the_first_proposals_clipped_to_the_intersection(seed: int, h: int, w: int, k: int) -> None:
    pair = make_pair(seed, h, w, k, sample_proposals=False, min_box_frac=0.0)
    in_image = to_original(pair.boxes1, pair.info["views"][0], pair)
    common = in_image[0]
    clipped = random_proposals(seed, h, w, k).clamp(min=common[[0, 1, 0, 1]], max=common[[2, 3, 2, 3]])
    kept = clipped[(clipped[:, 2:] - clipped[:, :2]).prod(1) > 0]
    used = pair.info["proposals_used"]
    assert used == min(len(kept), 9)
    assert torch.allclose(in_image[1 : 1 + used], kept[:used], atol=1e-2)


@settings(max_examples=15, deadline=None)
@given(seeds, sides, sides)
def test_matching_boxes_show_the_same_pixels_as_the_original_image(seed: int, h: int, w: int) -> None:
    pair = make_pair(seed, h, w, 20)
    original = TF.to_dtype(smooth_image(seed, h, w), torch.float32, scale=True).as_subclass(Tensor)[None]
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    for plain, boxes, rect in (
        (pair.plain1, pair.boxes1, pair.info["views"][0]),
        (pair.plain2, pair.boxes2, pair.info["views"][1]),
    ):
        crops = roi_align((plain * std + mean)[None], [boxes], 8, aligned=True)
        in_image = to_original(boxes, rect, pair)
        if pair.info["flipped"]:
            crops = crops.flip(-1)
        reference = roi_align(original, [in_image], 8, aligned=True)
        assert (crops - reference).abs().mean() < 0.006  # a 3-pixel shift: > 0.025


@EXAMPLES
@given(seeds, sides, sides, st.floats(0.0, 0.45))
def test_query_boxes_move_at_most_jitter_of_their_size(seed: int, h: int, w: int, jitter: float) -> None:
    pair = make_pair(seed, h, w, 10, jitter=jitter)
    for boxes, query in ((pair.boxes1, pair.query_boxes1), (pair.boxes2, pair.query_boxes2)):
        wh = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
        assert ((query - boxes).abs() <= jitter * wh + 1e-4).all()
        assert_inside(query, *view_size(pair))


def test_jitter_is_the_official_sigmoid_of_a_normal() -> None:
    """Zx55/SiameseDETR (models/siamese_detr.py, add_randomness_on_multiview_box): each corner moves by
    (sigmoid(z)·2r − r)·(w or h), z ~ N(0, 1). Its CDF at u·r·w is Φ(logit((1 + u) / 2)); a uniform draw,
    (1 + u) / 2, is up to 0.12 away from it."""
    n, fraction = 20_000, 0.1
    boxes = torch.tensor([[400.0, 300.0, 500.0, 350.0]]).repeat(n, 1)  # 100 x 50, far from the bounds
    moved = jitter_boxes(boxes, fraction, torch.tensor([0.0, 0.0, 1000.0, 1000.0]), torch.Generator().manual_seed(0))
    u = ((moved - boxes) / (fraction * torch.tensor([100.0, 50.0, 100.0, 50.0]))).flatten().double()
    assert u.abs().max() < 1
    grid = torch.linspace(-0.95, 0.95, 39, dtype=torch.float64)
    empirical = (u[:, None] <= grid).double().mean(0)
    logit = torch.log((1 + grid) / (1 - grid))
    reference = 0.5 * (1 + torch.erf(logit / math.sqrt(2)))
    assert (empirical - reference).abs().max() < 0.01
    assert (reference - (1 + grid) / 2).abs().max() > 0.1


def test_query_boxes_differ_from_the_targets() -> None:
    pair = make_pair(0, 80, 100, 10)
    assert not torch.allclose(pair.query_boxes1, pair.boxes1)


def test_without_proposals_box_0_is_duplicated_inside_the_intersection() -> None:
    pair = make_pair(3, 70, 90, 0)
    assert pair.boxes1.shape == (10, 4)
    assert pair.info["proposals_used"] == 0 and pair.info["duplicated"] == 9
    box0 = pair.boxes1[0]
    assert (pair.boxes1[1:, :2] >= box0[:2] - 1e-4).all() and (pair.boxes1[1:, 2:] <= box0[2:] + 1e-4).all()


def test_without_sampling_the_first_kept_proposals_are_taken_in_order() -> None:
    region = torch.tensor([10.0, 10.0, 60.0, 60.0])
    proposals = torch.tensor(
        [
            [20.0, 20.0, 40.0, 40.0],  # inside
            [70.0, 70.0, 90.0, 90.0],  # outside: dropped
            [0.0, 0.0, 100.0, 30.0],  # clipped to [10, 10, 60, 30]
            [12.0, 12.0, 14.0, 14.0],  # below 5 % of the region: dropped
            [30.0, 30.0, 80.0, 80.0],  # clipped to [30, 30, 60, 60]
            [11.0, 11.0, 59.0, 59.0],  # beyond n - 1
        ]
    )
    cfg = ViewConfig(n_boxes=4, sample_proposals=False)
    boxes, used, duplicated = select_boxes(proposals, region, cfg, torch.Generator().manual_seed(0))
    expected = torch.tensor([[10.0, 10.0, 60.0, 60.0], [20, 20, 40, 40], [10, 10, 60, 30], [30, 30, 60, 60]])
    assert torch.equal(boxes, expected) and (used, duplicated) == (3, 0)


def test_sampling_draws_from_the_top_k_in_rank_order() -> None:
    region = torch.tensor([0.0, 0.0, 100.0, 100.0])
    proposals = torch.tensor([[0.0, 0.0, 50 + i, 50 + i] for i in range(40)])
    cfg = ViewConfig(n_boxes=6, top_k_sample=8)
    drawn = set()
    for seed in range(20):
        boxes, used, _ = select_boxes(proposals, region, cfg, torch.Generator().manual_seed(seed))
        ranks = (boxes[1:, 2] - 50).long()
        assert used == 5 and (ranks < 8).all() and (ranks.diff() > 0).all()
        drawn |= set(ranks.tolist())
    assert drawn == set(range(8))


def test_few_proposals_are_filled_with_jittered_duplicates_inside_the_region() -> None:
    region = torch.tensor([10.0, 10.0, 60.0, 60.0])
    proposals = torch.tensor([[20.0, 20.0, 40.0, 40.0], [30.0, 15.0, 55.0, 50.0]])
    boxes, used, duplicated = select_boxes(proposals, region, ViewConfig(), torch.Generator().manual_seed(0))
    assert boxes.shape == (10, 4) and (used, duplicated) == (2, 7)
    sources = boxes[1:3].repeat(4, 1)[:7]
    wh = (sources[:, 2:] - sources[:, :2]).repeat(1, 2)
    assert ((boxes[3:] - sources).abs() <= 0.1 * wh + 1e-5).all()
    assert (boxes[3:, :2] >= 10).all() and (boxes[3:, 2:] <= 60).all()


def test_same_seed_gives_the_same_pair_and_another_seed_a_different_one() -> None:
    a, b, c = make_pair(5, 80, 100, 15), make_pair(5, 80, 100, 15), make_pair(6, 80, 100, 15)
    for name in ("view1", "view2", "plain1", "plain2", "boxes1", "boxes2", "query_boxes1", "query_boxes2"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert a.info == b.info
    assert a.info != c.info


def test_plain_tensor_and_tv_image_give_the_same_pair() -> None:
    image, proposals = smooth_image(1, 60, 90), random_proposals(1, 60, 90, 5)
    cfg = ViewConfig(**SMALL)
    a = unpack(sample_view_pair(image, proposals, cfg, torch.Generator().manual_seed(1)))
    b = unpack(sample_view_pair(image.as_subclass(Tensor), proposals, cfg, torch.Generator().manual_seed(1)))
    assert torch.equal(a.view1, b.view1) and torch.equal(a.boxes2, b.boxes2)


def test_without_colour_the_views_are_the_plain_views() -> None:
    pair = make_pair(2, 80, 100, 5, colour=False)
    assert torch.equal(pair.view1, pair.plain1) and torch.equal(pair.view2, pair.plain2)
    coloured = make_pair(2, 80, 100, 5)
    assert torch.equal(coloured.plain1, pair.plain1) and not torch.equal(coloured.view1, coloured.plain1)


def test_plain_views_are_normalised_images() -> None:
    pair = make_pair(4, 80, 100, 5)
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    pixels = pair.plain1 * std + mean
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5


def test_view_config_rejects_a_jitter_that_can_invert_boxes() -> None:
    with pytest.raises(ValueError, match="jitter"):
        ViewConfig(jitter=0.5)
