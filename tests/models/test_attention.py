import pytest
import torch
from torch import nn
from torch.nn import functional as F

from siamdetr.models.attention import Dropout, MultiheadAttention, attend, keep_mask, split_heads


def test_the_keep_mask_drops_a_fraction_p_of_the_elements():
    torch.manual_seed(0)
    kept = keep_mask(torch.Size([400, 1000]), 0.1, torch.device("cpu")).float().mean().item()
    assert kept == pytest.approx(0.9, abs=0.003)


def test_the_keep_mask_follows_the_seeded_generator():
    torch.manual_seed(3)
    a = keep_mask(torch.Size([7, 9]), 0.5, torch.device("cpu"))
    torch.manual_seed(3)
    b = keep_mask(torch.Size([7, 9]), 0.5, torch.device("cpu"))
    assert torch.equal(a, b) and 0 < a.sum() < a.numel()


def test_dropout_keeps_the_expectation_and_is_identity_in_eval():
    torch.manual_seed(0)
    x = torch.ones(200, 500)
    layer = Dropout(0.25)
    out = layer(x)
    assert torch.allclose(out.unique(), torch.tensor([0.0, 4 / 3]))
    assert out.mean().item() == pytest.approx(1.0, abs=0.01)
    assert torch.equal(layer.eval()(x), x)


def test_attention_without_dropout_is_torchs():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 5, 8) for _ in range(3))
    padding = torch.zeros(2, 5, dtype=torch.bool)
    padding[1, 3:] = True
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=~padding[:, None, None, :])
    assert torch.allclose(attend(q, k, v, padding, 0.0), expected.transpose(1, 2).flatten(2))


def test_attention_with_dropout_never_attends_to_padding():
    torch.manual_seed(0)
    q, k = torch.randn(2, 4, 5, 8), torch.randn(2, 4, 6, 8)
    v = torch.zeros(2, 4, 6, 8)
    v[:, :, 4:] = 1e6  # padded keys' values would show in the output
    padding = torch.zeros(2, 6, dtype=torch.bool)
    padding[:, 4:] = True
    out = attend(q, k, v, padding, 0.5)
    assert out.abs().max() == 0


def test_multihead_attention_matches_torchs_module_without_dropout():
    torch.manual_seed(0)
    ours = MultiheadAttention(16, 4, 0.0)
    theirs = nn.MultiheadAttention(16, 4, batch_first=True)
    theirs.load_state_dict(ours.state_dict())  # same parameter names
    q, k = torch.randn(2, 3, 16), torch.randn(2, 5, 16)
    padding = torch.tensor([[False] * 5, [False, False, False, True, True]])
    expected = theirs(q, k, k, key_padding_mask=padding, need_weights=False)[0]
    assert torch.allclose(ours(q, k, k, key_padding_mask=padding), expected, atol=1e-6)


def test_multihead_attention_with_dropout_trains_through_the_cheaper_path():
    torch.manual_seed(0)
    ours = MultiheadAttention(16, 4, 0.1).train()
    q = torch.randn(2, 3, 16, requires_grad=True)
    ours(q, q, q).sum().backward()
    assert q.grad is not None and ours.in_proj_weight.grad is not None


def test_split_heads_keeps_each_heads_channels_together():
    x = torch.arange(24.0).view(1, 2, 12)
    heads = split_heads(x, 3)
    assert heads.shape == (1, 3, 2, 4) and torch.equal(heads[0, 1, 0], torch.tensor([4.0, 5, 6, 7]))
