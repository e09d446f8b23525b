"""Every pretraining method runs on every DETR variant and hands fine-tuning a complete Transformer."""

import math

import pytest
import torch
from torch import Tensor, nn

from siamdetr.config import load_config
from siamdetr.finetune import load_init
from siamdetr.models.backbone import LEVELS, Backbone
from siamdetr.models.detr import pad_images
from siamdetr.models.variants import VARIANTS, build_detector
from siamdetr.pretrain.base import View
from siamdetr.pretrain.detreg import DETReg
from siamdetr.pretrain.losses import total
from siamdetr.pretrain.regions import crop_features
from siamdetr.pretrain.siamese import SiameseDETR
from siamdetr.pretrain.updetr import UPDETR

METHODS = {
    "siamese": lambda d: SiameseDETR(d, crop_size=32),
    "updetr": lambda d: UPDETR(d, crop_size=32),
    "detreg": lambda d: DETReg(d, crop_size=32),
}


def view(seed: int) -> View:
    g = torch.Generator().manual_seed(seed)
    images, mask = pad_images([torch.randn(3, 64, 64, generator=g), torch.randn(3, 48, 64, generator=g)])
    boxes = [torch.tensor([[4.0, 4.0, 30.0, 30.0], [10.0, 20.0, 60.0, 40.0], [0.0, 0.0, 64.0, 48.0]])] * 2
    return View(images, mask, images.clone(), boxes, [b + 1 for b in boxes], [(64, 64), (48, 64)])


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("method", list(METHODS))
def test_a_step_trains_the_transformer_only_and_fine_tuning_loads_every_transformer_key(method, variant, tmp_path):
    cfg = load_config(params=None, profile="smoke", overrides=[f"model.variant={variant}", "model.dec_layers=2"]).model
    model = METHODS[method](build_detector(cfg, num_classes=1)).train()
    losses = model(view(0), view(1)) if method == "siamese" else model(view(0))
    loss = total(losses, model.weights)
    assert torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is None for p in model.detr.backbone.parameters())  # frozen
    assert all(p.grad is not None for n, p in model.detr.transformer.named_parameters() if p.requires_grad), [
        n for n, p in model.detr.transformer.named_parameters() if p.grad is None
    ]
    path = tmp_path / "pretrain.pth"
    torch.save({"model": model.pretrained_state(), "meta": {"method": method}}, path)
    downstream = build_detector(cfg, num_classes=6)
    load_init(downstream, path)
    state = model.pretrained_state()
    for name, value in downstream.state_dict().items():
        if name.startswith(("transformer.", "query_embed.", "input_proj.")):
            assert torch.equal(value, state[name]), name


def test_batched_crop_features_equal_a_per_crop_loop():
    from torchvision.ops import roi_align

    backbone = Backbone("small", ("C5",)).eval()
    g = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, 64, 64, generator=g)
    boxes = [torch.tensor([[0.0, 0.0, 32.0, 32.0], [8.0, 16.0, 56.0, 40.0]]), torch.tensor([[5.0, 5.0, 60.0, 50.0]])]
    batched = crop_features(backbone, images, boxes, size=32)
    looped = []
    for i, image_boxes in enumerate(boxes):
        for box in image_boxes:  # one crop at a time: cut, resize, backbone, pool
            crop = roi_align(images[i : i + 1], [box[None]], 32, spatial_scale=1.0, sampling_ratio=2, aligned=True)
            fmap = backbone.body(crop)["C5"]
            looped.append(fmap.mean(dim=(2, 3))[0])
    assert batched.shape == (3, 256)
    torch.testing.assert_close(batched, torch.stack(looped), atol=1e-5, rtol=1e-5)


def test_siamese_ablation_switches_change_the_loss_terms():
    cfg = load_config(params=None, profile="smoke").model
    for semantic, expected in (
        ("none", set()),
        ("G", {"loss_global"}),
        ("R-O", {"loss_region"}),
        ("R-C", {"loss_region"}),
        ("R-C+G", {"loss_region", "loss_global"}),
    ):
        model = SiameseDETR(build_detector(cfg, 1), crop_size=32, semantic=semantic)
        losses = model(view(0), view(1))
        assert {k for k in losses if k in ("loss_region", "loss_global")} == expected, semantic


class ConstantLevels(nn.Module):
    """A trunk stub: level Ck is the constant map k − 2 (C3 = 1, C4 = 2, C5 = 3) at the given channels and strides."""

    def __init__(self, channels: dict[str, int], strides: dict[str, int]) -> None:
        super().__init__()
        self.channels, self.strides = channels, strides

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        b, _, h, w = x.shape
        return {
            lv: torch.full((b, c, math.ceil(h / self.strides[lv]), math.ceil(w / self.strides[lv])), value(lv))
            for lv, c in self.channels.items()
        }


def value(level: str) -> float:
    return LEVELS.index(level) + 1.0


@pytest.mark.parametrize("variant", ["deform_ms", "conditional"])
def test_siamese_region_features_and_global_pooling_use_every_backbone_level(variant):
    """Deform-MS: z and p are C3 ++ C4 ++ C5 (here 1s ++ 2s ++ 3s), L_g gets each backbone level's memory pooled
    on its own (3d, the extra strided level left out); a single-level variant gets C5 and d."""
    cfg = load_config(params=None, profile="smoke", overrides=[f"model.variant={variant}"]).model
    detr = build_detector(cfg, num_classes=1)
    backbone = detr.backbone
    channels = dict(zip(backbone.levels, backbone.num_channels, strict=True))
    backbone.body = ConstantLevels(channels, dict(zip(backbone.levels, backbone.strides, strict=True)))
    model = SiameseDETR(detr, crop_size=32).train()
    levels, d = len(channels), cfg.d_model
    assert model.region_proj.in_features == model.sem_head.layers[-1].out_features == sum(channels.values())
    assert model.global_head.projector[0].in_features == levels * d

    seen: dict[str, list] = {"z": [], "g": [], "memory": []}
    model.region_proj.register_forward_hook(lambda m, i, o: seen["z"].append(i[0]))
    model.global_head.projector.register_forward_hook(lambda m, i, o: seen["g"].append(i[0]))
    encode = model.encode

    def recording_encode(lv, mask):
        seen["memory"].append(encode(lv, mask))
        return seen["memory"][-1]

    model.encode = recording_encode
    v1 = view(0)
    model(v1, view(1))

    values = torch.cat([torch.full((c,), value(lv)) for lv, c in channels.items()])
    torch.testing.assert_close(seen["z"][0], values.expand(2, 3, -1))  # z of view 1's boxes
    torch.testing.assert_close(model.region_targets(v1, []), values.expand(2, 3, -1))  # p of its crops
    memory = seen["memory"][0]
    sizes = (memory.spatial_shapes[:, 0] * memory.spatial_shapes[:, 1]).tolist()
    per_level = zip(memory.tokens.split(sizes, 1), memory.mask.split(sizes, 1), strict=True)
    by_hand = [torch.stack([t[~m].mean(0) for t, m in zip(*level, strict=True)]) for level in list(per_level)[:levels]]
    torch.testing.assert_close(seen["g"][0], torch.cat(by_hand, dim=1))
