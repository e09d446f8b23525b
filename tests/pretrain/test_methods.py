"""Every pretraining method runs on every DETR variant and hands fine-tuning a complete Transformer."""

import math

import pytest
import torch
from torch import Tensor, nn

from siamdetr.config import load_config
from siamdetr.models.backbone import LEVELS, Backbone
from siamdetr.models.criterion import weighted_total as total
from siamdetr.models.detr import pad_images
from siamdetr.models.variants import VARIANTS, build_detector
from siamdetr.pretrain.base import crop_features
from siamdetr.pretrain.detreg import DETReg
from siamdetr.pretrain.siamese import SiameseDETR
from siamdetr.pretrain.updetr import UPDETR
from siamdetr.pretrain.views import View
from siamdetr.stages.finetune import load_init

METHODS = {
    "siamese": lambda d: SiameseDETR(d, crop_size=32),
    "updetr": UPDETR,
    "detreg": DETReg,
}


def view(seed: int, num_queries: int = 10) -> View:
    g = torch.Generator().manual_seed(seed)
    images, mask = pad_images([torch.randn(3, 64, 64, generator=g), torch.randn(3, 48, 64, generator=g)])
    boxes = [torch.tensor([[4.0, 4.0, 30.0, 30.0], [10.0, 20.0, 60.0, 40.0], [0.0, 0.0, 64.0, 48.0]])] * 2
    patches = torch.randn(6, 3, 32, 32, generator=g)
    keep = torch.rand(2, num_queries, generator=g) > 0.1
    return View(images, mask, images.clone(), boxes, [b + 1 for b in boxes], [(64, 64), (48, 64)], patches, keep)


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


def test_updetr_reconstructs_patch_features_with_weight_1_on_every_layer_whatever_siamese_lambda_r():
    from siamdetr.stages.pretrain import build_method

    cfg = load_config(params=None, profile="smoke", overrides=["pretrain.method=updetr", "model.dec_layers=3"])
    assert cfg.pretrain.lambda_r == 3.0  # Siamese DETR's L_r weight, not UP-DETR's
    weights = build_method(cfg).weights
    assert {k: v for k, v in weights.items() if k.startswith("loss_region")} == {
        "loss_region_0": 1.0,
        "loss_region_1": 1.0,
        "loss_region": 1.0,
    }
    cfg = load_config(params=None, profile="smoke", overrides=["pretrain.method=updetr", "pretrain.updetr.lambda_r=2"])
    assert build_method(cfg).weights["loss_region"] == 2.0


def test_updetr_masked_queries_do_not_see_their_patch():
    cfg = load_config(params=None, profile="smoke", overrides=["model.dropout=0"]).model
    model = UPDETR(build_detector(cfg, num_classes=1)).eval()
    a, b = view(0), view(0)
    b.patches = torch.randn_like(a.patches)  # other patches, same image and boxes
    localisation = ("loss_ce", "loss_bbox", "loss_giou")
    with torch.no_grad():
        seen = model(a), model(b)
        assert any(seen[0][k] != seen[1][k] for k in localisation)  # kept queries carry their patch
        a.query_keep[:], b.query_keep[:] = False, False
        masked = model(a), model(b)
    assert all(masked[0][k] == masked[1][k] for k in localisation)


def test_detreg_regresses_the_c3_embedding_on_the_last_decoder_layer_only_with_weight_1():
    from siamdetr.stages.pretrain import build_method

    cfg = load_config(params=None, profile="smoke", overrides=["pretrain.method=detreg", "model.dec_layers=3"])
    model = build_method(cfg).train()
    assert {k: v for k, v in model.weights.items() if "embed" in k or "region" in k} == {"loss_embed": 1.0}
    backbone = model.detr.backbone
    assert backbone.levels == ("C5",) and model.sem_head.layers[-1].out_features == backbone.level_channels["C3"]
    decoded, head_inputs = [], []
    decode = model.detr.transformer.decode
    model.detr.transformer.decode = lambda *a: decoded.append(decode(*a)) or decoded[-1]
    model.sem_head.register_forward_hook(lambda module, inputs, output: head_inputs.append(inputs[0]))
    losses = model(view(0))
    assert {k for k in losses if "embed" in k or "region" in k} == {"loss_embed"}
    hs = decoded[0][0]
    assert hs.shape[0] == 3 and len(head_inputs) == 1 and torch.equal(head_inputs[0], hs[-1])  # the last layer only
    c5 = load_config(
        params=None, profile="smoke", overrides=["pretrain.method=detreg", "pretrain.detreg.embed_level=C5"]
    )
    assert build_method(c5).sem_head.layers[-1].out_features == backbone.level_channels["C5"]
    assert backbone.level_channels["C5"] != backbone.level_channels["C3"]


def test_detreg_embedding_target_is_the_pooled_layer2_map_of_each_patch():
    from siamdetr.pretrain.base import patch_features

    backbone = Backbone("small", ("C5",)).eval()
    patches = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    t = backbone.body
    with torch.no_grad():
        layer2 = t.layer2(t.layer1(t.relu(t.bn1(t.conv1(patches)))))
    torch.testing.assert_close(patch_features(backbone, patches, "C3"), layer2.mean(dim=(2, 3)))
    assert patch_features(backbone, patches).shape == (3, backbone.level_channels["C5"])
