import pytest
import torch
from torch import nn
from torch.nn import functional as F

from siamdetr.models.memory import Memory
from siamdetr.pretrain.losses import SimSiamHead, embedding_l1_loss, global_loss, pooled_memory, region_loss


def test_region_loss_on_a_hand_built_case():
    predicted = torch.zeros(1, 3, 2)
    predicted[0, 2] = torch.tensor([3.0, 0.0])  # query 2 → matched to target 0, same direction: 0 loss
    predicted[0, 0] = torch.tensor([0.0, 5.0])  # query 0 → matched to target 1, orthogonal: |e2 - e1|² = 2
    targets = torch.tensor([[[1.0, 0.0], [7.0, 0.0]]])
    indices = [(torch.tensor([0, 2]), torch.tensor([1, 0]))]
    assert region_loss(predicted, targets, indices, num_boxes=2.0).item() == pytest.approx(1.0)


def test_region_loss_gives_no_gradient_to_the_target():
    predicted = torch.randn(2, 4, 8, requires_grad=True)
    targets = torch.randn(2, 3, 8, requires_grad=True)
    indices = [(torch.tensor([0, 1, 3]), torch.tensor([2, 0, 1]))] * 2
    region_loss(predicted, targets, indices, 6.0).backward()
    assert predicted.grad is not None and targets.grad is None


def test_global_loss_is_zero_for_aligned_and_four_for_opposite_and_stops_gradient():
    p = torch.tensor([[1.0, 0.0]])
    assert global_loss(p, p, p, p).item() == pytest.approx(0.0)
    assert global_loss(p, -p, p, -p).item() == pytest.approx(4.0)
    p1, z1, p2, z2 = (torch.randn(4, 6, requires_grad=True) for _ in range(4))
    global_loss(p1, z1, p2, z2).backward()
    assert p1.grad is not None and p2.grad is not None
    assert z1.grad is None and z2.grad is None  # the stop-gradient branch gets nothing


def test_global_loss_through_the_simsiam_head_only_trains_through_the_predictor_side():
    head = SimSiamHead(16, 16)
    x1, x2 = torch.randn(4, 16, requires_grad=True), torch.randn(4, 16, requires_grad=True)
    p1, z1 = head(x1)
    p2, z2 = head(x2)
    expected = 0.5 * (2 - 2 * F.cosine_similarity(p1, z2.detach()).mean()) + 0.5 * (
        2 - 2 * F.cosine_similarity(p2, z1.detach()).mean()
    )
    assert global_loss(p1, z1, p2, z2).item() == pytest.approx(expected.item())


def test_embedding_l1_loss_is_the_mean_over_the_matched_regions_as_detreg():
    predicted = torch.zeros(2, 2, 4)
    targets = [torch.tensor([[1.0] * 4, [3.0] * 4, [100.0] * 4]), torch.tensor([[2.0] * 4])]  # 3 and 1 regions
    indices = [(torch.tensor([0, 1]), torch.tensor([1, 0])), (torch.tensor([1]), torch.tensor([0]))]
    assert embedding_l1_loss(predicted, targets, indices).item() == pytest.approx(2.0)  # the unmatched 100 is out


def test_simsiam_head_has_the_official_layers():
    """Projector in → d → d → d and predictor d → d → d, every Linear with a bias, every BatchNorm affine."""
    head = SimSiamHead(48, 16)
    proj, pred = list(head.projector), list(head.predictor)
    kinds = [type(m).__name__ for m in proj], [type(m).__name__ for m in pred]
    assert kinds == (
        ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d"],
        ["Linear", "BatchNorm1d", "ReLU", "Linear"],
    )
    linears = [m for m in proj + pred if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(48, 16), (16, 16), (16, 16), (16, 16), (16, 16)]
    assert all(m.bias is not None for m in linears)
    assert all(m.affine and m.num_features == 16 for m in proj + pred if isinstance(m, nn.BatchNorm1d))
    p, z = head(torch.randn(4, 48))
    assert p.shape == z.shape == (4, 16)


def test_pooled_memory_averages_each_level_over_its_unpadded_tokens_and_concatenates():
    """Levels 2x2, 1x2 and an extra 1x1 (like Deform-MS's strided level); token values are per level constants,
    the padded token of level 0 is 100 and must not count; the extra level is left out with levels=2."""
    c = 3
    level0 = torch.tensor([1.0, 1.0, 1.0, 100.0])
    level1 = torch.tensor([2.0, 4.0])
    extra = torch.tensor([7.0])
    tokens = torch.cat([level0, level1, extra]).view(1, 7, 1).expand(1, 7, c).contiguous()
    mask = torch.tensor([[False, False, False, True, False, False, False]])
    memory = Memory(
        tokens,
        mask,
        torch.zeros_like(tokens),
        torch.tensor([[2, 2], [1, 2], [1, 1]]),
        torch.tensor([0, 4, 6]),
        torch.ones(1, 3, 2),
    )
    assert torch.equal(pooled_memory(memory, 2), torch.tensor([[1.0] * c + [3.0] * c]))
    assert torch.equal(pooled_memory(memory, 1), torch.tensor([[1.0] * c]))
