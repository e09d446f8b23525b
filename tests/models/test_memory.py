import torch

from siamdetr.models.memory import Memory


def test_pooled_averages_each_level_over_its_unpadded_tokens_and_concatenates():
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
    assert torch.equal(memory.pooled(2), torch.tensor([[1.0] * c + [3.0] * c]))
    assert torch.equal(memory.pooled(1), torch.tensor([[1.0] * c]))
