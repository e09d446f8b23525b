"""The encode/decode seam and the detector wrapper, for every variant."""

import math

import pytest
import torch

from siamdetr.config import load_config
from siamdetr.models.detr import pad_images, postprocess
from siamdetr.models.variants import VARIANTS, build_detector, build_transformer

SMALL = [
    "model.d_model=32",
    "model.nheads=2",
    "model.enc_layers=2",
    "model.dec_layers=2",
    "model.dim_feedforward=64",
    "model.num_queries=6",
    "model.n_points=2",
    "model.dropout=0.0",
]


def model_cfg(variant):
    return load_config(params=None, profile="smoke", overrides=[f"model.variant={variant}", *SMALL]).model


def level_inputs(n_levels, batch=2, d=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    sizes = [(8, 6), (4, 3), (2, 2), (1, 1)][:n_levels]
    srcs = [torch.randn(batch, d, h, w, generator=g) for h, w in sizes]
    masks = [torch.zeros(batch, h, w, dtype=torch.bool) for h, w in sizes]
    for m in masks:
        m[1, :, m.shape[-1] // 2 + 1 :] = True  # image 1 is padded on the right
    pos = [torch.randn(batch, d, h, w, generator=g) for h, w in sizes]
    return srcs, masks, pos


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_decoding_a_batch_equals_decoding_each_image(variant):
    cfg = model_cfg(variant)
    tr = build_transformer(cfg).eval()
    v = VARIANTS[variant]
    memory = tr.encode(*level_inputs(len(v.levels) + v.extra_levels))
    g = torch.Generator().manual_seed(1)
    content, query_pos = torch.randn(2, 6, 32, generator=g), torch.randn(2, 6, 32, generator=g)  # per-image
    hs, refs = tr.decode(memory, content, query_pos)
    assert hs.shape == (2, 2, 6, 32)
    for i in range(2):
        one = type(memory)(
            *(
                getattr(memory, f)[i : i + 1]
                if f not in ("spatial_shapes", "level_start_index")
                else getattr(memory, f)
                for f in memory.__dataclass_fields__
            )
        )
        hs_i, _ = tr.decode(one, content[i : i + 1], query_pos[i : i + 1])
        torch.testing.assert_close(hs_i[:, 0], hs[:, i], atol=1e-5, rtol=1e-5)
    assert (refs is None) == (variant == "vanilla")


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_padding_tokens_do_not_change_the_output(variant):
    cfg = model_cfg(variant)
    tr = build_transformer(cfg).eval()
    v = VARIANTS[variant]
    srcs, masks, pos = level_inputs(len(v.levels) + v.extra_levels)
    q = torch.randn(2, 6, 32), torch.randn(2, 6, 32)
    hs_a, _ = tr.decode(tr.encode(srcs, masks, pos), *q)
    noisy = [torch.where(m[:, None], torch.randn_like(s) * 100, s) for s, m in zip(srcs, masks, strict=True)]
    hs_b, _ = tr.decode(tr.encode(noisy, masks, pos), *q)
    torch.testing.assert_close(hs_a, hs_b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_detector_outputs_and_postprocess(variant):
    model = build_detector(model_cfg(variant), num_classes=3).eval()
    images, mask = pad_images([torch.rand(3, 64, 48), torch.rand(3, 40, 64)])
    assert mask[0, :, 48:].all() and not mask[0, :, :48].any()
    out = model(images, mask)
    k = 3 if VARIANTS[variant].focal else 4
    assert out["pred_logits"].shape == (2, 6, k) and out["pred_boxes"].shape == (2, 6, 4)
    assert len(out["aux_outputs"]) == 1
    assert ((out["pred_boxes"] >= 0) & (out["pred_boxes"] <= 1)).all()
    dets = postprocess(out, torch.tensor([[64, 48], [40, 64]]), model.focal, top_k=5)
    n = 5 if model.focal else 6
    assert dets[0]["boxes"].shape == (n, 4) and dets[0]["labels"].max() < 3
    assert (dets[1]["boxes"][:, 2] <= 64 + 1e-4).all() and (dets[1]["boxes"][:, 3] <= 40 + 1e-4).all()


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_the_box_head_starts_as_each_variants_own_code_starts_it(variant):
    """detr.py (DETR) leaves the box MLP at PyTorch's init; conditional_detr.py zeroes its last layer, so a box
    starts at its reference point, 0.5 wide; deformable_detr.py (no box refinement) zeroes it too but sets the
    w, h bias to -2, so boxes start sigmoid(-2) = 0.119 wide."""
    torch.manual_seed(0)
    model = build_detector(model_cfg(variant), 3)
    last = model.bbox_embed.layers[-1]
    g = torch.Generator().manual_seed(0)
    hs, refs = torch.randn(1, 2, 6, 32, generator=g), torch.rand(1, 2, 6, 2, generator=g) * 0.8 + 0.1
    boxes = model.predict_boxes(hs, None if variant == "vanilla" else refs)
    if variant == "vanilla":
        bound = 1 / math.sqrt(32)  # nn.Linear's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        assert last.weight.abs().max() <= bound and last.weight.std() > bound / 3
        assert boxes.std(dim=2).min() > 1e-3  # queries start at different boxes (zero init: all equal)
        return
    wh = 1 / (1 + math.exp(2.0)) if variant.startswith("deform") else 0.5
    assert (last.weight == 0).all()
    torch.testing.assert_close(boxes[..., :2], refs)
    torch.testing.assert_close(boxes[..., 2:], torch.full_like(boxes[..., 2:], wh))
