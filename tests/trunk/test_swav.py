"""SwAV: Sinkhorn's transport plan (one and two processes), the swapped loss, multi-crop, prototype freezing."""

import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from siamdetr.data.folder import ImageFolder
from siamdetr.models.backbone import resnet_trunk
from siamdetr.trunk.swav import (
    MultiCrop,
    MultiCropImages,
    SwAV,
    colour_crops,
    sinkhorn_knopp,
    stack_crops,
    swapped_prediction_loss,
    train_step,
)


def test_sinkhorn_codes_are_a_transport_plan_with_an_equal_partition():
    scores = torch.nn.functional.normalize(torch.randn(6, 3, generator=torch.Generator().manual_seed(0)), dim=1)
    for iters in (3, 100):
        codes = sinkhorn_knopp(scores, epsilon=0.5, iters=iters)
        assert codes.shape == (6, 3) and (codes >= 0).all()
        assert torch.allclose(codes.sum(dim=1), torch.ones(6), atol=1e-6)  # each image: one unit of mass
    # every prototype gets B/K = 2 images' worth (exact in the limit, close after 3 rounds)
    assert torch.allclose(codes.sum(dim=0), torch.full((3,), 2.0), atol=1e-5)
    assert torch.allclose(sinkhorn_knopp(scores, 0.5, 3).sum(dim=0), torch.full((3,), 2.0), atol=0.1)


def test_sinkhorn_spreads_a_batch_that_prefers_one_prototype():
    scores = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.8, 0.2], [0.7, 0.3]])  # all closest to prototype 0
    codes = sinkhorn_knopp(scores, epsilon=0.05, iters=100)
    assert torch.allclose(codes.sum(dim=0), torch.tensor([2.0, 2.0]), atol=1e-4)
    assert codes[:2, 0].min() > 0.5 and codes[2:, 1].min() > 0.5  # the least-0-like images go to prototype 1
    assert torch.allclose(sinkhorn_knopp(torch.zeros(4, 2), 0.05, 3), torch.full((4, 2), 0.5))


def _sinkhorn_on_half(rank: int, scores: torch.Tensor, store: str, out: dict) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    out[rank] = sinkhorn_knopp(scores.chunk(2)[rank], epsilon=0.1, iters=3)
    dist.destroy_process_group()


def test_sinkhorn_over_two_processes_equals_one_process_on_the_whole_batch(tmp_path):
    scores = torch.nn.functional.normalize(torch.randn(8, 5, generator=torch.Generator().manual_seed(1)), dim=1)
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_sinkhorn_on_half, (scores, str(tmp_path / "store"), out), nprocs=2)
        halves = torch.cat([out[0], out[1]])
    assert torch.allclose(halves, sinkhorn_knopp(scores, epsilon=0.1, iters=3), atol=1e-6)


def test_swapped_loss_on_a_hand_built_case():
    scores = [torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), torch.tensor([[0.0, 0.0]])]
    codes = [torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])]
    # code 0 is predicted by crop 1 (-log softmax([0, 1])[0] = log(1 + e)) and crop 2 (log 2); code 1 likewise
    expected = (math.log(1 + math.e) + math.log(2)) / 2
    assert swapped_prediction_loss(scores, codes, temperature=1.0).item() == pytest.approx(expected)


def test_multi_crop_gives_two_global_then_local_crops_normalised_after_colour():
    image = torch.randint(0, 256, (3, 60, 50), dtype=torch.uint8)
    crops = MultiCrop(global_size=32, local_size=16, n_local=3)(image)
    assert [tuple(c.shape) for c in crops] == [(3, 32, 32)] * 2 + [(3, 16, 16)] * 3
    assert all(c.dtype == torch.float32 and type(c) is torch.Tensor for c in crops)
    assert crops[0].min() >= 0 and crops[0].max() <= 1
    batch = stack_crops([crops, MultiCrop(32, 16, 3)(image)])
    coloured = colour_crops(batch, torch.Generator().manual_seed(0))
    assert [c.shape for c in coloured] == [c.shape for c in batch]
    assert coloured[0].min() < 0 < coloured[0].max()  # ImageNet-normalised, not [0, 1]
    assert not torch.allclose(coloured[0][0], coloured[0][1])  # every crop its own colour


def test_multi_crop_samples_depend_only_on_seed_epoch_and_index(synth_root):
    ds = MultiCropImages(ImageFolder(synth_root / "imagenet_like"), MultiCrop(32, 16, 1), seed=0)
    first = ds[3]["crops"]
    torch.manual_seed(123)  # the global RNG does not matter, and is left as it was
    state = torch.get_rng_state()
    assert all(torch.equal(a, b) for a, b in zip(first, ds[3]["crops"], strict=True))
    assert torch.equal(torch.get_rng_state(), state)
    ds.set_epoch(1)
    assert not torch.equal(first[0], ds[3]["crops"][0])


def tiny_swav() -> SwAV:
    torch.manual_seed(0)
    return SwAV(resnet_trunk("small", frozen_bn=False), feature_dim=16, prototypes=8, hidden_dim=32)


def fixed_batch() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(8, 3, 32, 32, generator=g) for _ in range(2)] + [torch.randn(8, 3, 16, 16, generator=g)]


def test_prototypes_stay_fixed_during_the_freeze_steps_and_move_after():
    model = tiny_swav()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    crops = fixed_batch()
    prototypes, conv = model.prototypes.weight.detach().clone(), model.trunk.conv1.weight.detach().clone()
    for step in range(2):
        train_step(model, crops, optimizer, step, freeze_prototypes_steps=2)
    assert torch.allclose(model.prototypes.weight, prototypes, atol=1e-6)  # re-normalising unit rows only
    assert not torch.allclose(model.trunk.conv1.weight, conv)
    train_step(model, crops, optimizer, 2, freeze_prototypes_steps=2)
    assert (model.prototypes.weight - prototypes).abs().max() > 1e-3


def test_a_few_steps_lower_the_loss_on_a_fixed_batch():
    model = tiny_swav()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    crops = fixed_batch()
    losses = [train_step(model, crops, optimizer, step, freeze_prototypes_steps=0) for step in range(6)]
    assert losses[-1] < losses[0]
