import logging

import pytest
import torch

from siamdetr.models.backbone import Backbone, load_trunk_weights, resnet_trunk


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


def test_small_backbone_keeps_an_8x8_c5_on_128_pixels():
    bb = Backbone("small", ("C5",))
    ((f, m),) = bb(torch.zeros(2, 3, 128, 128), torch.zeros(2, 128, 128, dtype=torch.bool))
    assert f.shape == (2, 256, 8, 8) and m.shape == (2, 8, 8)
