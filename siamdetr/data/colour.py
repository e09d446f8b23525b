"""Colour augmentation of whole batches of images, each with its own random parameters, vectorised (no loop
over images): SimSiam's jitter, grayscale and blur (the paper's [8]) for Siamese DETR's views and crops, the
single-view baselines' patches and SwAV's crops.

It reproduces the `torchvision.transforms.v2.functional` ops (the tests check it), with the jitter in a fixed
order: brightness, contrast, saturation, hue (torchvision's ColorJitter draws a random order). The parameters
are drawn from a `torch.Generator` (torchvision's random transforms draw from the global RNG), so a sample
is a pure function of its seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

from siamdetr.data.transforms import IMAGENET_MEAN, IMAGENET_STD

LUMA = (0.2989, 0.587, 0.114)  # torchvision's grayscale weights


@dataclass(frozen=True)
class ColourConfig:
    """SimSiam's colour augmentation (the paper's [8]); a probability of 0 turns a step off."""

    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)


SIMSIAM_COLOUR = ColourConfig()


@dataclass
class ColourParams:
    """Per-image colour parameters, each [N]; factor 1, hue 0, no grayscale and sigma 0 change nothing."""

    brightness: Tensor
    contrast: Tensor
    saturation: Tensor
    hue: Tensor
    grayscale: Tensor
    sigma: Tensor

    def to(self, device: torch.device | str) -> ColourParams:
        return ColourParams(*(getattr(self, f.name).to(device) for f in fields(self)))


def sample_colour_params(
    n: int, cfg: ColourConfig, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
) -> ColourParams:
    """Independent parameters for n images, drawn on the generator's device and moved to `device`."""
    source = generator.device if generator is not None else device

    def rand() -> Tensor:
        return torch.rand(n, generator=generator, device=source)

    def factor(strength: float) -> Tensor:
        return (1 + strength * (2 * rand() - 1)).clamp_min(0)

    jitter = rand() < cfg.jitter_p
    low, high = cfg.blur_sigma
    params = ColourParams(
        brightness=torch.where(jitter, factor(cfg.brightness), 1.0),
        contrast=torch.where(jitter, factor(cfg.contrast), 1.0),
        saturation=torch.where(jitter, factor(cfg.saturation), 1.0),
        hue=torch.where(jitter, cfg.hue * (2 * rand() - 1), 0.0),
        grayscale=rand() < cfg.grayscale_p,
        sigma=torch.where(rand() < cfg.blur_p, low + (high - low) * rand(), 0.0),
    )
    return params.to(device)


def blur_kernel_size(side: int, max_sigma: float) -> int:
    """SimCLR's ~10 % of the side (23 for 224), odd, but no wider than ±3σ: further taps weigh < 0.3 % and cost time."""
    return max(3, min(2 * (side // 20), 2 * math.ceil(3 * max_sigma)) + 1)


def grayscale(x: Tensor) -> Tensor:
    """Luma [N, 1, H, W] of RGB images [N, 3, H, W]."""
    return (x * x.new_tensor(LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True)


def blend(x: Tensor, other: Tensor | float, factor: Tensor) -> Tensor:
    """Per-image factor·x + (1 − factor)·other, clamped to [0, 1]: torchvision's brightness/contrast/saturation."""
    f = factor.view(-1, 1, 1, 1)
    return (f * x + (1 - f) * other).clamp(0, 1)


def shift_hue(x: Tensor, hue: Tensor) -> Tensor:
    """Hue of each image rotated by `hue` turns, through HSV; value and chroma are kept."""
    value, brightest = x.max(1)
    chroma = value - x.min(1).values
    r, g, b = (c / torch.where(chroma > 0, chroma, 1.0) for c in x.unbind(1))
    sector = torch.stack([(g - b), (b - r) + 2, (r - g) + 4], 1).gather(1, brightest[:, None])
    hue6 = sector + 6 * hue.view(-1, 1, 1, 1)
    k = (x.new_tensor([5.0, 3.0, 1.0]).view(1, 3, 1, 1) + hue6).remainder(6)
    return value[:, None] - chroma[:, None] * torch.minimum(k, 4 - k).clamp(0, 1)


def gaussian_kernels(sigma: Tensor, size: int) -> Tensor:
    """One normalised 1-D Gaussian per image [N, size]; σ = 0 gives a delta (no blur)."""
    x = torch.arange(size, dtype=sigma.dtype, device=sigma.device) - size // 2
    g = torch.exp(-0.5 * (x / sigma.clamp_min(1e-6)[:, None]) ** 2)
    return g / g.sum(1, keepdim=True)


def gaussian_blur(x: Tensor, sigma: Tensor, size: int) -> Tensor:
    """Each image blurred with its own σ: one separable depthwise convolution, reflect padding."""
    n, c, h, w = x.shape
    kernels = gaussian_kernels(sigma.to(x.dtype), size).repeat_interleave(c, 0)
    pad = size // 2
    y = F.pad(x, [pad] * 4, mode="reflect").reshape(1, n * c, h + 2 * pad, w + 2 * pad)
    y = F.conv2d(y, kernels[:, None, None, :], groups=n * c)
    y = F.conv2d(y, kernels[:, None, :, None], groups=n * c)
    return y.view(n, c, h, w)


def colour_augment(x: Tensor, params: ColourParams, blur_size: int) -> Tensor:
    """Images [N, 3, H, W] in [0, 1], each through torchvision's colour ops with its own parameters.

    Brightness, contrast, saturation, hue, grayscale, blur: the same maths as the
    `torchvision.transforms.v2.functional` ops (the tests check it), vectorised over the batch. The blur
    kernel has `blur_size` taps (odd).
    """
    x = blend(x, 0.0, params.brightness)
    x = blend(x, grayscale(x).mean((1, 2, 3), keepdim=True), params.contrast)
    x = blend(x, grayscale(x), params.saturation)
    x = shift_hue(x, params.hue)
    x = torch.where(params.grayscale.view(-1, 1, 1, 1), grayscale(x).expand_as(x), x)
    return gaussian_blur(x, params.sigma, blur_size)


def batched_colour_augment(
    crops: Tensor, generator: torch.Generator | None = None, cfg: ColourConfig = SIMSIAM_COLOUR
) -> Tensor:
    """Crops [N, 3, S, S] in [0, 1], each with its own random colour augmentation (no loop over crops).

    Pure tensor ops on the crops' device; the parameters are drawn on the generator's device.
    """
    params = sample_colour_params(len(crops), cfg, generator, crops.device)
    return colour_augment(crops, params, blur_kernel_size(min(crops.shape[-2:]), cfg.blur_sigma[1]))


def normalise(x: Tensor) -> Tensor:
    """[0, 1] RGB → ImageNet-normalised, as every trunk here expects."""
    return TF.normalize(x, list(IMAGENET_MEAN), list(IMAGENET_STD))
