"""The single-view baselines' samples follow their published code: UP-DETR's fresh random patches and query
mask, DETReg's top-30 targets through its flip / resize / crop; every draw from the sample's generator."""

import pytest
import torch

from siamdetr.config import load_config
from siamdetr.pretrain.data import collate_views
from siamdetr.pretrain.single_view import detreg_sample as detreg_views
from siamdetr.pretrain.single_view import random_patches
from siamdetr.pretrain.single_view import updetr_sample as updetr_views
from siamdetr.stages.pretrain import pretrain_dataset


def cfg_of(*sets):
    return load_config(params=None, profile="smoke", overrides=list(sets), check_paths=False)


def one(views):
    """A sample's one view as {field: its tensor} (the view is a batch of one)."""
    (v,) = views
    out = {"view": v.images[0], "plain": v.plain[0], "boxes": v.boxes[0], "size": v.sizes[0], "patches": v.patches}
    return out | ({} if v.query_keep is None else {"query_keep": v.query_keep[0]})


def updetr_sample(image, proposals, cfg, generator):
    return one(updetr_views(image, proposals, cfg.pretrain, cfg.model.num_queries, generator))


def detreg_sample(image, proposals, cfg, generator):
    return one(detreg_views(image, proposals, cfg.pretrain, generator))


def image(h=64, w=80, seed=0):
    return torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_random_patch_sides_run_from_8_px_to_the_side_minus_8_placed_inside_the_image():
    boxes = random_patches(80, 100, 4000, 8, torch.Generator().manual_seed(0))
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert (w.min(), w.max(), h.min(), h.max()) == (8, 92, 8, 72)  # both ends of UP-DETR's ranges are drawn
    assert boxes[:, :2].min() >= 0 and boxes[:, 2].max() <= 100 and boxes[:, 3].max() <= 80
    assert torch.equal(boxes, boxes.round())  # whole pixels, as PIL's crop
    assert boxes[:, 0].max() > 80 and boxes[:, 1].max() > 60  # placed anywhere they fit
    tiny = random_patches(12, 12, 50, 8, torch.Generator().manual_seed(0))  # narrower than 2 x 8: fits anyway
    assert (tiny[:, 2:] <= 12).all() and (tiny[:, 2:] - tiny[:, :2] >= 8).all()


def test_updetr_sample_keeps_the_patch_sizes_in_image_pixels_and_leaves_the_image_uncoloured():
    cfg = cfg_of("pretrain.method=updetr", "pretrain.proposals=random")
    s = updetr_sample(image(), torch.zeros(0, 4), cfg, torch.Generator().manual_seed(3))
    h, w = s["size"]
    boxes = s["boxes"] * torch.tensor([80 / w, 64 / h] * 2)  # back in the 64x80 image's pixels
    sides = torch.cat([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]])
    assert len(boxes) == cfg.pretrain.updetr.num_patches == 10
    assert sides.min() >= 8 - 1e-3 and (boxes[:, 2] - boxes[:, 0]).max() <= 72 + 1e-3
    assert torch.equal(s["view"], s["plain"])  # the colour augmentation is on the patches only
    assert s["patches"].shape == (10, 3, cfg.pretrain.crop_size, cfg.pretrain.crop_size)
    assert s["query_keep"].shape == (cfg.model.num_queries,)


def test_updetr_masks_a_tenth_of_the_patch_queries():
    cfg = cfg_of("pretrain.method=updetr", "model.num_queries=100")
    keep = torch.stack(
        [
            updetr_sample(image(), torch.zeros(0, 4), cfg, torch.Generator().manual_seed(i))["query_keep"]
            for i in range(60)
        ]
    )
    assert keep.float().mean().item() == pytest.approx(0.9, abs=0.02)
    none = cfg_of("pretrain.method=updetr", "pretrain.updetr.mask_ratio=0")
    assert updetr_sample(image(), torch.zeros(0, 4), none, torch.Generator().manual_seed(0))["query_keep"].all()


def test_updetr_patches_are_fresh_every_epoch_and_the_same_for_the_same_seed_epoch_and_index(synth_root):
    cfg = cfg_of("pretrain.method=updetr", "pretrain.proposals=random")
    root = synth_root / "imagenet_like"

    def sample(epoch, index, seed=0):
        ds = pretrain_dataset(cfg if seed == 0 else cfg_of("pretrain.method=updetr", f"seed={seed}"), root, {})
        ds.set_epoch(epoch)
        return one(ds[index])

    a, again, next_epoch, other_image = sample(0, 2), sample(0, 2), sample(1, 2), sample(0, 3)
    for key in ("boxes", "patches", "query_keep", "view"):
        assert torch.equal(a[key], again[key]), key
    assert not torch.equal(a["boxes"], next_epoch["boxes"]) and not torch.equal(a["boxes"], other_image["boxes"])
    assert not torch.equal(a["boxes"], sample(0, 2, seed=1)["boxes"])


def test_updetr_from_a_store_takes_its_patches_from_the_proposals():
    cfg = cfg_of("pretrain.method=updetr", "pretrain.proposals=edgeboxes", "pretrain.sample_proposals=false")
    proposals = torch.tensor([[float(i), float(i), i + 20.0, i + 30.0] for i in range(40)])
    s = updetr_sample(image(), proposals, cfg, torch.Generator().manual_seed(0))
    h, w = s["size"]
    back = s["boxes"] * torch.tensor([80 / w, 64 / h] * 2)
    torch.testing.assert_close(back, proposals[:10], atol=1e-3, rtol=0)


def area(b):
    return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])


def test_detreg_takes_all_of_the_top_30_proposals_as_targets():
    cfg = cfg_of("pretrain.method=detreg", "pretrain.detreg.crop=false")
    proposals = torch.tensor([[i, i, i + 10.0 + i % 7, i + 12.0] for i in range(45)], dtype=torch.float32)
    for seed in range(6):  # flipped or not
        s = detreg_sample(image(), proposals, cfg, torch.Generator().manual_seed(seed))
        h, w = s["size"]
        assert len(s["boxes"]) == 30 and s["patches"].shape[0] == 30
        torch.testing.assert_close(area(s["boxes"]) * (80 / w) * (64 / h), area(proposals[:30]), rtol=1e-4, atol=1e-3)
        assert torch.equal(s["view"], s["plain"])


def test_detreg_crop_drops_the_targets_it_empties_and_keeps_the_rest_inside_the_view():
    cfg = cfg_of("pretrain.method=detreg", "pretrain.short_min=64", "pretrain.short_max=64")
    corners = torch.tensor(
        [[0.0, 0.0, 6.0, 6.0], [74.0, 0.0, 80.0, 6.0], [0.0, 58.0, 6.0, 64.0], [74.0, 58.0, 80.0, 64.0]]
    )
    proposals = torch.cat([corners, torch.tensor([[0.0, 0.0, 80.0, 64.0]])])
    counts = set()
    for seed in range(40):
        s = detreg_sample(image(), proposals, cfg, torch.Generator().manual_seed(seed))
        h, w = s["size"]
        b = s["boxes"]
        assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
        assert b.min() >= 0 and (b[:, 2] <= w + 1e-3).all() and (b[:, 3] <= h + 1e-3).all()
        counts.add(len(b))
    assert 5 in counts and min(counts) < 5  # uncropped samples keep all five; crops lose corners
    same = [detreg_sample(image(), proposals, cfg, torch.Generator().manual_seed(7))["boxes"] for _ in range(2)]
    assert torch.equal(*same)


def test_detreg_targets_may_differ_in_number_across_a_batch():
    cfg = cfg_of("pretrain.method=detreg", "pretrain.detreg.crop=false")
    g = torch.Generator().manual_seed(0)
    few = torch.tensor([[0.0, 0.0, 20.0, 20.0], [10.0, 10.0, 60.0, 50.0]])
    many = torch.tensor([[float(i), 0.0, i + 30.0, 40.0] for i in range(40)])
    batch = collate_views([detreg_views(image(), p, cfg.pretrain, g) for p in (few, many)])
    view = batch["views"][0]
    assert [len(b) for b in view.boxes] == [2, 30] and view.patches.shape[0] == 32 and view.query_keep is None
