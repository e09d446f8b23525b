"""Multi-level region features: each level pooled on its own, then concatenated (as the official Deform-MS)."""

import torch
from torch import Tensor, nn

from siamdetr.models.backbone import Backbone
from siamdetr.pretrain.base import crop_features, object_features_per_level

CHANNELS = {"C3": 2, "C4": 3, "C5": 4}
STRIDES = {"C3": 4, "C4": 8, "C5": 16}
VALUES = {"C3": 1.0, "C4": 2.0, "C5": 3.0}


class ConstantLevels(nn.Module):
    """A trunk stub: every level is a constant map (C3 = 1, C4 = 2, C5 = 3) at the small ResNet's strides."""

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        b, _, h, w = x.shape
        return {k: torch.full((b, CHANNELS[k], h // STRIDES[k], w // STRIDES[k]), VALUES[k]) for k in CHANNELS}


def stub_backbone(levels: tuple[str, ...]) -> Backbone:
    backbone = Backbone("small", levels)
    backbone.body = ConstantLevels()
    backbone.num_channels = [CHANNELS[lv] for lv in levels]
    return backbone


def expected(levels: tuple[str, ...], rows: int) -> Tensor:
    return torch.cat([torch.full((rows, CHANNELS[lv]), VALUES[lv]) for lv in levels], dim=1)


BOXES = [torch.tensor([[0.0, 0.0, 32.0, 32.0], [8.0, 16.0, 56.0, 40.0]]), torch.tensor([[5.0, 5.0, 60.0, 50.0]])]


def test_object_features_per_level_concatenate_c3_c4_c5():
    maps = list(ConstantLevels()(torch.zeros(2, 3, 64, 64)).values())
    z = object_features_per_level(maps, [4.0, 8.0, 16.0], BOXES)
    assert z.shape == (3, 2 + 3 + 4)
    torch.testing.assert_close(z, expected(("C3", "C4", "C5"), 3))


def test_crop_features_of_every_level_concatenate_and_one_level_is_c5_alone():
    images = torch.zeros(2, 3, 64, 64)
    multi = crop_features(stub_backbone(("C3", "C4", "C5")), images, BOXES, size=32, all_levels=True)
    torch.testing.assert_close(multi, expected(("C3", "C4", "C5"), 3))
    last = crop_features(stub_backbone(("C3", "C4", "C5")), images, BOXES, size=32)
    torch.testing.assert_close(last, expected(("C5",), 3))
    single = crop_features(stub_backbone(("C5",)), images, BOXES, size=32, all_levels=True)
    torch.testing.assert_close(single, expected(("C5",), 3))
