import logging

import pytest
import torch

from siamdetr.models.backbone import Backbone, load_trunk_weights, resnet_trunk
from siamdetr.models.detr import pad_images


def test_swav_layout_checkpoint_loads_without_its_heads(tmp_path, caplog):
    source = resnet_trunk("resnet50", frozen_bn=False)
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    state["module.projection_head.0.weight"] = torch.zeros(2048, 2048)
    state["module.prototypes.weight"] = torch.zeros(3000, 128)
    path = tmp_path / "swav_800ep_pretrain.pth.tar"
    torch.save(state, path)
    target = resnet_trunk("resnet50")
    with caplog.at_level(logging.WARNING):
        load_trunk_weights(target, path)
    assert torch.equal(target.layer4[2].conv3.weight, source.layer4[2].conv3.weight)
    assert torch.equal(target.bn1.running_var, source.bn1.running_var)  # BatchNorm stats → FrozenBatchNorm2d
    assert "unexpected" not in caplog.text  # heads are dropped, not reported as unexpected
    assert "missing" in caplog.text  # fc is not in a SwAV checkpoint: logged


def test_a_checkpoint_that_is_not_a_resnet_is_refused(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match="no key matches"):
        load_trunk_weights(resnet_trunk("small"), path)
    with pytest.raises(FileNotFoundError):
        load_trunk_weights(resnet_trunk("small"), tmp_path / "absent.pth")


def test_resnet50_levels_channels_strides_and_frozen_stem():
    bb = Backbone("resnet50", ("C3", "C4", "C5"))
    assert bb.num_channels == [512, 1024, 2048] and bb.strides == [8, 16, 32]
    images, mask = torch.zeros(1, 3, 96, 64), torch.zeros(1, 96, 64, dtype=torch.bool)
    mask[:, :, 32:] = True
    feats = bb(images, mask)
    assert [f.shape[-2:] for f, _ in feats] == [(12, 8), (6, 4), (3, 2)]
    assert feats[0][1][0, 0].tolist() == [False] * 4 + [True] * 4  # the mask follows the padding
    frozen = {n for n, p in bb.named_parameters() if not p.requires_grad}
    assert any(n.startswith("body.conv1") for n in frozen) and not any("layer4" in n for n in frozen)


def test_small_backbone_trains_layer2_to_4_as_detr_does():
    bb = Backbone("small", ("C5",), small_width=8)
    trained = {n.split(".")[1] for n, p in bb.named_parameters() if p.requires_grad}
    assert trained == {"layer2", "layer3", "layer4"}
    assert not any(p.requires_grad for p in Backbone("small", ("C5",), trainable=False, small_width=8).parameters())


def test_small_backbone_keeps_an_8x8_c5_on_128_pixels():
    bb = Backbone("small", ("C5",))
    ((f, m),) = bb(torch.zeros(2, 3, 128, 128), torch.zeros(2, 128, 128, dtype=torch.bool))
    assert f.shape == (2, 256, 8, 8) and m.shape == (2, 8, 8)


def _frozen_small_backbone() -> Backbone:
    torch.manual_seed(0)
    return Backbone("small", ("C4", "C5"), trainable=False, small_width=8, dilation=True).eval()


def test_cached_features_are_each_image_alone_whatever_batch_brought_it():
    backbone = _frozen_small_backbone()
    images, mask = torch.randn(6, 3, 32, 32), torch.zeros(6, 32, 32, dtype=torch.bool)
    alone = [backbone(images[i : i + 1], mask[i : i + 1]) for i in range(6)]
    backbone.cache_features(1 << 20)
    first = backbone(images[[4, 1]], mask[:2])  # fills two entries
    second = backbone(images[[1, 0, 5, 2, 3, 4]], mask)  # two hits, four new
    assert len(backbone.cache.store) == 6
    for level in range(2):
        assert torch.equal(first[level][0], torch.cat([alone[4][level][0], alone[1][level][0]]))
        expected = torch.cat([alone[i][level][0] for i in (1, 0, 5, 2, 3, 4)])
        assert torch.equal(second[level][0], expected)
        assert not second[level][1].any()


def test_feature_cache_stops_storing_at_its_cap_and_still_answers():
    backbone = _frozen_small_backbone()
    images, mask = torch.randn(4, 3, 32, 32), torch.zeros(4, 32, 32, dtype=torch.bool)
    uncapped = _frozen_small_backbone()
    uncapped.cache_features(1 << 20)
    expected = uncapped(images, mask)
    per_image = uncapped.cache.bytes // 4
    backbone.cache_features(2 * per_image + 1)
    got = backbone(images, mask)
    assert len(backbone.cache.store) == 2 and backbone.cache.bytes == 2 * per_image
    assert all(torch.equal(g[0], e[0]) for g, e in zip(got, expected, strict=True))


def test_an_image_padded_to_another_size_is_another_entry_with_the_padded_features():
    backbone = _frozen_small_backbone()
    image = torch.randn(3, 24, 32)
    small, small_mask = pad_images([image])
    large, large_mask = pad_images([image, torch.randn(3, 32, 32)])
    expected = backbone(large, large_mask)
    backbone.cache_features(1 << 20)
    backbone(small, small_mask)
    got = backbone(large, large_mask)
    assert len(backbone.cache.store) == 3
    # computed alone, not in a batch of two: equal up to the last bits a batched convolution may change
    torch.testing.assert_close(got[1][0][0], expected[1][0][0], rtol=0, atol=1e-6)
    assert torch.equal(got[1][1], expected[1][1])


def test_a_trainable_trunk_cannot_cache_its_features():
    backbone = Backbone("small", ("C5",), trainable=True, small_width=8)
    with pytest.raises(ValueError, match="frozen"):
        backbone.cache_features(1 << 20)
