"""SetCriterion: invariances of the set loss, its value on easy cases, gradients and normalisation."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from siamdetr.models.criterion import SetCriterion, aux_weights, num_boxes_across_processes, weighted_total
from siamdetr.models.matcher import HungarianMatcher
from tests.models.test_matcher import NUM_CLASSES, giou_cxcywh, random_boxes

DETR_WEIGHTS = {"loss_ce": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0}
NUM_AUX = 2
STYLES = pytest.mark.parametrize("focal", [False, True], ids=["softmax", "focal"])


def make_criterion(focal: bool) -> SetCriterion:
    weights = aux_weights(DETR_WEIGHTS, NUM_AUX)
    return SetCriterion(NUM_CLASSES, HungarianMatcher(focal=focal), weights, focal=focal)


def random_layer(batch: int, num_queries: int, focal: bool, generator: torch.Generator) -> dict[str, torch.Tensor]:
    num_logits = NUM_CLASSES if focal else NUM_CLASSES + 1
    return {
        "pred_logits": torch.randn(batch, num_queries, num_logits, generator=generator).requires_grad_(),
        "pred_boxes": torch.stack([random_boxes(num_queries, generator) for _ in range(batch)]).requires_grad_(),
    }


def random_outputs(batch: int, num_queries: int, focal: bool, seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    outputs = random_layer(batch, num_queries, focal, generator)
    outputs["aux_outputs"] = [random_layer(batch, num_queries, focal, generator) for _ in range(NUM_AUX)]
    return outputs


def random_targets(sizes: list[int], seed: int) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [
        {"labels": torch.randint(NUM_CLASSES, (n,), generator=generator), "boxes": random_boxes(n, generator)}
        for n in sizes
    ]


def assert_same_losses(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)


@STYLES
def test_losses_ignore_target_order(focal):
    criterion = make_criterion(focal)
    outputs = random_outputs(3, 6, focal, seed=0)
    targets = random_targets([3, 0, 4], seed=1)
    generator = torch.Generator().manual_seed(2)
    shuffled = []
    for target in targets:
        order = torch.randperm(len(target["labels"]), generator=generator)
        shuffled.append({"labels": target["labels"][order], "boxes": target["boxes"][order]})
    assert_same_losses(criterion(outputs, targets), criterion(outputs, shuffled))


@STYLES
def test_each_layer_is_matched_on_its_own(focal):
    """An aux layer holding the final predictions in another query order scores exactly like the final layer."""
    outputs = random_outputs(2, 5, focal, seed=3)
    order = torch.tensor([4, 2, 0, 3, 1])
    outputs["aux_outputs"] = [{k: outputs[k][:, order] for k in ("pred_logits", "pred_boxes")}]
    losses = make_criterion(focal)(outputs, random_targets([2, 4], seed=4))
    for key in ("loss_ce", "loss_bbox", "loss_giou"):
        torch.testing.assert_close(losses[f"{key}_0"], losses[key], rtol=0, atol=1e-6)


@STYLES
def test_perfect_prediction_costs_almost_nothing(focal):
    num_queries, sizes = 5, [2, 0, 3]
    targets = random_targets(sizes, seed=5)
    logits = torch.full((len(sizes), num_queries, NUM_CLASSES if focal else NUM_CLASSES + 1), -10.0)
    boxes = torch.stack([random_boxes(num_queries, torch.Generator().manual_seed(6)) for _ in sizes])
    for image, target in enumerate(targets):
        n = len(target["labels"])
        if not focal:
            logits[image, n:, -1] = 10.0
        logits[image, torch.arange(n), target["labels"]] = 10.0
        boxes[image, :n] = target["boxes"]
    losses = make_criterion(focal)({"pred_logits": logits, "pred_boxes": boxes}, targets)
    assert losses["loss_bbox"] < 1e-6
    assert losses["loss_giou"] < 1e-6
    assert losses["loss_ce"] < 1e-3
    assert losses["class_error"] == 0


@STYLES
def test_batch_without_targets_only_trains_no_object(focal):
    outputs = random_outputs(2, 4, focal, seed=7)
    del outputs["aux_outputs"]
    losses = make_criterion(focal)(outputs, random_targets([0, 0], seed=8))
    assert losses["loss_bbox"] == 0 and losses["loss_giou"] == 0 and losses["class_error"] == 0
    logits = outputs["pred_logits"].detach().double()
    if focal:  # every class off; num_boxes is clamped to 1
        p = logits.sigmoid()
        expected = (0.75 * p**2 * -torch.log1p(-p)).sum()
    else:  # every query has the same (no-object) weight, so the weighted mean is the plain mean
        expected = -logits.log_softmax(-1)[..., -1].mean()
    torch.testing.assert_close(losses["loss_ce"].double(), expected, rtol=1e-5, atol=1e-6)


def test_hand_computed_softmax_losses():
    """One target, two queries, an obvious match: every term written out."""
    logits = torch.tensor([[[2.0, 0.5, -1.0, 0.0], [0.0, 0.0, 0.0, 3.0]]])
    boxes = torch.tensor([[[0.5, 0.5, 0.3, 0.2], [0.1, 0.9, 0.05, 0.05]]])
    target_box = [0.52, 0.47, 0.25, 0.22]
    targets = [{"labels": torch.tensor([0]), "boxes": torch.tensor([target_box])}]
    losses = make_criterion(focal=False)({"pred_logits": logits, "pred_boxes": boxes}, targets)

    log_probs = logits[0].log_softmax(-1)
    expected_ce = -(1.0 * log_probs[0, 0] + 0.1 * log_probs[1, -1]) / (1.0 + 0.1)
    torch.testing.assert_close(losses["loss_ce"], expected_ce)
    expected_l1 = sum(abs(p - t) for p, t in zip(boxes[0, 0].tolist(), target_box, strict=True))
    assert losses["loss_bbox"].item() == pytest.approx(expected_l1, abs=1e-6)
    assert losses["loss_giou"].item() == pytest.approx(1 - giou_cxcywh(boxes[0, 0].tolist(), target_box), abs=1e-6)
    assert losses["class_error"] == 0


@STYLES
def test_gradients_reach_logits_and_boxes_of_every_layer(focal):
    criterion = make_criterion(focal)
    outputs = random_outputs(2, 6, focal, seed=9)
    losses = criterion(outputs, random_targets([3, 1], seed=10))

    base = {"loss_ce", "loss_bbox", "loss_giou"}
    assert losses.keys() == base | {"class_error"} | {f"{k}_{i}" for k in base for i in range(NUM_AUX)}
    assert all(torch.isfinite(loss) for loss in losses.values())
    assert not losses["class_error"].requires_grad

    weighted_total(losses, criterion.weight_dict).backward()
    for layer in [outputs, *outputs["aux_outputs"]]:
        for key in ("pred_logits", "pred_boxes"):
            grad = layer[key].grad
            assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


@STYLES
def test_duplicating_the_batch_leaves_losses_unchanged(focal):
    criterion = make_criterion(focal)
    outputs = random_outputs(2, 5, focal, seed=11)
    targets = random_targets([2, 3], seed=12)
    doubled = {k: torch.cat([outputs[k], outputs[k]]) for k in ("pred_logits", "pred_boxes")}
    doubled["aux_outputs"] = [{k: torch.cat([aux[k], aux[k]]) for k in aux} for aux in outputs["aux_outputs"]]
    assert_same_losses(criterion(outputs, targets), criterion(doubled, targets + targets))


def test_num_boxes_counts_targets_and_is_at_least_one():
    assert num_boxes_across_processes(random_targets([2, 0, 3], seed=13), "cpu") == 5.0
    assert num_boxes_across_processes(random_targets([0, 0], seed=14), "cpu") == 1.0


def test_num_boxes_goes_through_a_real_process_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1)
    try:
        assert num_boxes_across_processes(random_targets([2, 1], seed=15), "cpu") == 3.0
    finally:
        dist.destroy_process_group()


def test_num_boxes_is_averaged_over_processes(monkeypatch):
    """This rank holds 3 boxes and a simulated second rank 1: both must divide by 2, so every box weighs the same."""
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "all_reduce", lambda tensor: tensor.add_(1))
    assert num_boxes_across_processes(random_targets([2, 1], seed=16), "cpu") == 2.0


def test_weighted_total_uses_only_weighted_keys():
    losses = {"loss_ce": torch.tensor(3.0), "loss_bbox": torch.tensor(4.0), "class_error": torch.tensor(50.0)}
    assert weighted_total(losses, {"loss_ce": 1.0, "loss_bbox": 2.0}).item() == 11.0


def test_aux_weights_copies_the_base_weights_per_layer():
    base = {"loss_ce": 2.0, "loss_bbox": 5.0}
    assert aux_weights(base, 0) == base
    assert aux_weights(base, 2) == {
        "loss_ce": 2.0,
        "loss_bbox": 5.0,
        "loss_ce_0": 2.0,
        "loss_bbox_0": 5.0,
        "loss_ce_1": 2.0,
        "loss_bbox_1": 5.0,
    }
    assert base == {"loss_ce": 2.0, "loss_bbox": 5.0}
