"""The CNN trunk: torchvision ResNet-50 (the paper's SwAV R50) or a small ResNet for CPU profiles.

Both return C3–C5 (or only C5) feature maps with a downsampled padding mask per level. BatchNorm is frozen
for detection (`torchvision.ops.FrozenBatchNorm2d`); the small ResNet keeps ordinary BatchNorm while the
`backbone` stage trains it self-supervised, then is frozen the same way.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torchvision.models import resnet50
from torchvision.models.feature_extraction import create_feature_extractor
from torchvision.models.resnet import BasicBlock
from torchvision.ops import FrozenBatchNorm2d

from siamdetr.engine.checkpoint import load_checkpoint

log = logging.getLogger(__name__)

LEVELS = ("C3", "C4", "C5")
FROZEN_STEM = ("conv1", "bn1", "layer1")  # DETR trains layer2-4 only; the small ResNet names its stages alike
DROPPED_PREFIXES = ("projection_head.", "prototypes.", "fc.")  # SwAV heads and the classifier


class SmallResNet(nn.Module):
    """A four-stage ResNet of BasicBlocks, narrow and shallow enough for CPU runs.

    Strides are 4 / 8 / 16 for C3 / C4 / C5 (one downsampling fewer than ResNet-50), so 128-pixel images
    still give the Transformer an 8x8 C5 map.
    """

    def __init__(
        self, widths: tuple[int, int, int, int] = (32, 64, 128, 256), norm_layer: type[nn.Module] = nn.BatchNorm2d
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, stride=2, padding=1, bias=False)
        self.bn1 = norm_layer(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._stage(widths[0], widths[0], 1, norm_layer)
        self.layer2 = self._stage(widths[0], widths[1], 2, norm_layer)
        self.layer3 = self._stage(widths[1], widths[2], 2, norm_layer)
        self.layer4 = self._stage(widths[2], widths[3], 2, norm_layer)
        self.channels = {"C3": widths[1], "C4": widths[2], "C5": widths[3]}
        self.strides = {"C3": 4, "C4": 8, "C5": 16}

    @staticmethod
    def _stage(cin: int, cout: int, stride: int, norm_layer: type[nn.Module]) -> nn.Sequential:
        down = None
        if stride != 1 or cin != cout:
            down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), norm_layer(cout))
        return nn.Sequential(
            BasicBlock(cin, cout, stride, down, norm_layer=norm_layer), BasicBlock(cout, cout, norm_layer=norm_layer)
        )

    def dilate_c5(self) -> None:
        """DETR's DC5: the last stage keeps the resolution of C4 and dilates its convolutions instead, so
        C5 has stride 8 (same weights; a checkpoint of the plain trunk loads unchanged)."""
        for module in self.layer4.modules():
            if isinstance(module, nn.Conv2d):
                module.stride = (1, 1)
                if module.kernel_size == (3, 3):
                    module.dilation, module.padding = (2, 2), (2, 2)
        self.strides["C5"] = self.strides["C4"]

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        x = self.layer1(self.relu(self.bn1(self.conv1(x))))
        c3 = self.layer2(x)
        c4 = self.layer3(c3)
        return {"C3": c3, "C4": c4, "C5": self.layer4(c4)}


def resnet_trunk(
    name: Literal["resnet50", "small"], frozen_bn: bool = True, small_width: int = 32, dilation: bool = False
) -> nn.Module:
    """The bare trunk whose state dict a checkpoint is loaded into (no feature extraction wrapper).
    `small_width` is the small ResNet's first stage width (the others double it); `dilation` is DETR's DC5."""
    norm = FrozenBatchNorm2d if frozen_bn else nn.BatchNorm2d
    if name == "resnet50":
        return resnet50(weights=None, norm_layer=norm, replace_stride_with_dilation=[False, False, dilation])
    if name == "small":
        w = small_width
        trunk = SmallResNet((w, 2 * w, 4 * w, 8 * w), norm_layer=norm)
        if dilation:
            trunk.dilate_c5()
        return trunk
    raise ValueError(f"unknown backbone {name!r} (resnet50 or small)")


def load_trunk_weights(trunk: nn.Module, path: str | Path) -> None:
    """Load a SwAV checkpoint (`module.` prefix, projection head and prototypes) or a torchvision state dict.

    Missing and unexpected keys are logged; a file that matches no key at all is an error, since it is
    almost certainly not a ResNet checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: backbone checkpoint does not exist (the small ResNet's is written by `siamdetr backbone`)"
        )
    state = load_checkpoint(path)
    for key in ("state_dict", "model", "backbone"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    cleaned = {}
    for k, v in state.items():
        k = k.removeprefix("module.").removeprefix("backbone.")
        if not k.startswith(DROPPED_PREFIXES):
            cleaned[k] = v
    result = trunk.load_state_dict(cleaned, strict=False)
    own = set(trunk.state_dict())
    if not own & set(cleaned):
        raise ValueError(f"{path}: no key matches the {type(trunk).__name__} trunk; is this a ResNet checkpoint?")
    if result.missing_keys:
        log.warning(
            "%s: %d trunk keys missing from the checkpoint: %s", path, len(result.missing_keys), result.missing_keys[:8]
        )
    if result.unexpected_keys:
        log.warning("%s: %d unexpected keys ignored: %s", path, len(result.unexpected_keys), result.unexpected_keys[:8])
    log.info("loaded backbone weights from %s (%d tensors)", path, len(cleaned) - len(result.unexpected_keys))


class Backbone(nn.Module):
    """Trunk + level selection: images [B,3,H,W] and padding mask [B,H,W] → per level (features, mask)."""

    def __init__(
        self,
        name: Literal["resnet50", "small"] = "resnet50",
        levels: tuple[str, ...] = ("C5",),
        trainable: bool = True,
        checkpoint: str | Path | None = None,
        small_width: int = 32,
        dilation: bool = False,
    ) -> None:
        super().__init__()
        unknown = set(levels) - set(LEVELS)
        if unknown:
            raise ValueError(f"unknown backbone levels {sorted(unknown)}; choose from {LEVELS}")
        trunk = resnet_trunk(name, frozen_bn=True, small_width=small_width, dilation=dilation)
        if checkpoint is not None:
            load_trunk_weights(trunk, checkpoint)
        self.levels = tuple(levels)
        if name == "resnet50":
            self.body = create_feature_extractor(trunk, {"layer2": "C3", "layer3": "C4", "layer4": "C5"})
            channels, strides = {"C3": 512, "C4": 1024, "C5": 2048}, {"C3": 8, "C4": 16, "C5": 16 if dilation else 32}
        else:
            self.body = trunk
            channels, strides = trunk.channels, trunk.strides
        self.level_channels = dict(channels)  # every level's, also those not returned (DETReg pools C3)
        self.num_channels = [channels[lv] for lv in self.levels]
        self.strides = [strides[lv] for lv in self.levels]
        for name_, p in self.body.named_parameters():
            if not trainable or name_.startswith(FROZEN_STEM):
                p.requires_grad_(False)

        self.cache: FeatureCache | None = None

    def cache_features(self, max_bytes: int) -> None:
        """Run the trunk once per distinct image: for a frozen trunk fed the same images every epoch (a
        fine-tune without augmentation, and every evaluation). An image is its padded tensor, so one padded
        to another batch's size is another entry, and its features are those the batch would give."""
        if any(p.requires_grad for p in self.body.parameters()):
            raise ValueError("only a frozen trunk's features can be cached")
        self.cache = FeatureCache(max_bytes)

    def forward(self, images: Tensor, mask: Tensor) -> list[tuple[Tensor, Tensor]]:
        feats = self.body(images) if self.cache is None else self.cache.features(self.body, images, self.levels)
        out = []
        for lv in self.levels:
            f = feats[lv]
            m = F.interpolate(mask[None].float(), size=f.shape[-2:]).to(torch.bool)[0]
            out.append((f, m))
        return out


class FeatureCache:
    """Trunk outputs keyed by the image's content (a 128-bit hash of its bytes and its shape), up to
    `max_bytes`. Each image is run through the trunk on its own: a convolution's result can differ in the
    last bit with the batch it is computed in, and computing alone makes an image's features one function of
    the image, whichever batch first brought it (so a resumed run equals an uninterrupted one)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.store: dict[bytes, dict[str, Tensor]] = {}

    @staticmethod
    def key(image: Tensor) -> bytes:
        data = image.detach().cpu().contiguous().numpy().tobytes()
        return hashlib.blake2b(data, digest_size=16).digest() + str(tuple(image.shape)).encode()

    @torch.no_grad()
    def features(self, body: nn.Module, images: Tensor, levels: tuple[str, ...]) -> dict[str, Tensor]:
        per_image = []
        for image in images:
            key = self.key(image)
            feats = self.store.get(key)
            if feats is None:
                computed = body(image[None])
                feats = {lv: computed[lv][0] for lv in levels}
                size = sum(f.numel() * f.element_size() for f in feats.values())
                if self.bytes + size <= self.max_bytes:
                    self.store[key] = feats
                    self.bytes += size
            per_image.append(feats)
        return {lv: torch.stack([f[lv] for f in per_image]) for lv in levels}
