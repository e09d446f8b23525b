"""HungarianMatcher against a per-pair cost written out longhand and a brute-force search over assignments."""

from __future__ import annotations

import itertools
import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from siamdetr.models.matcher import HungarianMatcher, focal_class_cost

NUM_CLASSES = 3


def giou_cxcywh(a: list[float], b: list[float]) -> float:
    """Generalised IoU of two (cx, cy, w, h) boxes, independently of torchvision."""
    ax0, ay0, ax1, ay1 = a[0] - a[2] / 2, a[1] - a[3] / 2, a[0] + a[2] / 2, a[1] + a[3] / 2
    bx0, by0, bx1, by1 = b[0] - b[2] / 2, b[1] - b[3] / 2, b[0] + b[2] / 2, b[1] + b[3] / 2
    inter = max(0.0, min(ax1, bx1) - max(ax0, bx0)) * max(0.0, min(ay1, by1) - max(ay0, by0))
    union = a[2] * a[3] + b[2] * b[3] - inter
    hull = (max(ax1, bx1) - min(ax0, bx0)) * (max(ay1, by1) - min(ay0, by0))
    return inter / union - (hull - union) / hull


def class_cost(logits: list[float], label: int, focal: bool) -> float:
    if focal:
        p = 1 / (1 + math.exp(-logits[label]))
        positive = 0.25 * (1 - p) ** 2 * -math.log(p)
        negative = 0.75 * p**2 * -math.log(1 - p)
        return positive - negative
    exps = [math.exp(x) for x in logits]
    return -exps[label] / sum(exps)


def pair_cost(logits, box, label, target_box, focal, weights) -> float:
    w_class, w_bbox, w_giou = weights
    l1 = sum(abs(p - t) for p, t in zip(box, target_box, strict=True))
    return w_class * class_cost(logits, label, focal) + w_bbox * l1 - w_giou * giou_cxcywh(box, target_box)


def brute_force_minimum(cost: list[list[float]]) -> float:
    """Lowest total cost over every injective map from the smaller side into the larger one."""
    num_queries, num_targets = len(cost), len(cost[0])
    if num_targets <= num_queries:
        choices = itertools.permutations(range(num_queries), num_targets)
        return min(sum(cost[q][t] for t, q in enumerate(queries)) for queries in choices)
    choices = itertools.permutations(range(num_targets), num_queries)
    return min(sum(cost[q][t] for q, t in enumerate(targets)) for targets in choices)


def random_boxes(n: int, generator: torch.Generator) -> torch.Tensor:
    centres = 0.2 + 0.6 * torch.rand(n, 2, generator=generator)
    sizes = 0.05 + 0.45 * torch.rand(n, 2, generator=generator)
    return torch.cat([centres, sizes], 1)


def random_case(num_queries: int, sizes: list[int], focal: bool, seed: int):
    generator = torch.Generator().manual_seed(seed)
    num_logits = NUM_CLASSES if focal else NUM_CLASSES + 1
    outputs = {
        "pred_logits": 2 * torch.randn(len(sizes), num_queries, num_logits, generator=generator),
        "pred_boxes": torch.stack([random_boxes(num_queries, generator) for _ in sizes]),
    }
    targets = [
        {"labels": torch.randint(NUM_CLASSES, (n,), generator=generator), "boxes": random_boxes(n, generator)}
        for n in sizes
    ]
    return outputs, targets


@settings(max_examples=100, deadline=None)
@given(
    num_queries=st.integers(1, 6),
    sizes=st.lists(st.integers(0, 4), min_size=1, max_size=3),
    focal=st.booleans(),
    weights=st.sampled_from([(1.0, 5.0, 2.0), (2.0, 5.0, 2.0), (0.5, 1.0, 3.0)]),
    seed=st.integers(0, 2**31 - 1),
)
def test_assignment_is_optimal(num_queries, sizes, focal, weights, seed):
    outputs, targets = random_case(num_queries, sizes, focal, seed)
    matcher = HungarianMatcher(*weights, focal=focal)
    indices = matcher(outputs, targets)

    assert len(indices) == len(targets)
    for image, (target, (queries, matched)) in enumerate(zip(targets, indices, strict=True)):
        n = len(target["labels"])
        assert queries.dtype == matched.dtype == torch.int64
        assert len(queries) == len(matched) == min(num_queries, n)
        assert len(set(queries.tolist())) == len(queries) and all(0 <= q < num_queries for q in queries.tolist())
        assert len(set(matched.tolist())) == len(matched) and all(0 <= t < n for t in matched.tolist())
        if n == 0:
            continue
        cost = [
            [
                pair_cost(
                    outputs["pred_logits"][image, q].tolist(),
                    outputs["pred_boxes"][image, q].tolist(),
                    int(target["labels"][t]),
                    target["boxes"][t].tolist(),
                    focal,
                    weights,
                )
                for t in range(n)
            ]
            for q in range(num_queries)
        ]
        chosen = sum(cost[q][t] for q, t in zip(queries.tolist(), matched.tolist(), strict=True))
        assert chosen <= brute_force_minimum(cost) + 1e-4


def test_images_without_targets_get_empty_indices():
    outputs, targets = random_case(5, [0, 3, 0], focal=False, seed=0)
    indices = HungarianMatcher()(outputs, targets)
    for image in (0, 2):
        queries, matched = indices[image]
        assert queries.shape == matched.shape == (0,)
        assert queries.dtype == matched.dtype == torch.int64
    assert len(indices[1][0]) == 3


def test_each_image_is_matched_as_if_alone():
    """The batch-wide cost matrix must be split so that no image sees another image's targets."""
    outputs, targets = random_case(6, [2, 4, 1], focal=True, seed=1)
    matcher = HungarianMatcher(focal=True)
    batched = matcher(outputs, targets)
    for image, target in enumerate(targets):
        alone = matcher({k: v[image : image + 1] for k, v in outputs.items()}, [target])[0]
        assert torch.equal(batched[image][0], alone[0]) and torch.equal(batched[image][1], alone[1])


def test_focal_cost_stays_finite_for_confident_logits():
    logits = torch.tensor([[200.0, -200.0, 0.0]])
    cost = focal_class_cost(logits, torch.tensor([0, 1, 2]), alpha=0.25, gamma=2.0)
    assert torch.isfinite(cost).all()
    assert cost[0, 0] < cost[0, 2] < cost[0, 1]
