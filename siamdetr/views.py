"""Two views of one image with matched boxes, for Siamese DETR pretraining (paper §3.2, Fig. 3).

The image is resized and maybe flipped into the *frame*. In the frame, an outer rectangle O is drawn and two
sub-rectangles A, B are anchored at its centre so that IoU(A, B) >= τ; both are cut out and resized to O's size.
Box i of view 1 and box i of view 2 are the same region of the frame: box 0 is the views' intersection, the
others offline proposals clipped to it. Each view is then colour-augmented on its own.

Choices where the design notes are silent:
- Views are cut with RoIAlign at float coordinates, so IoU >= τ and the box correspondence hold exactly (no
  rounding to pixels). A view is never larger than O, so resizing it to O's size only upsamples and plain
  bilinear sampling is enough.
- O's aspect ratio is clamped to what lets its area fit in the frame: the area is kept, the ratio may leave
  [3/4, 4/3] on very elongated images.
- The random shrink moves a view's outer corner along O's diagonal, as the official code does, so every view
  keeps O's aspect ratio and the resize to O's size does not distort it.
- Sampled proposals come from the best `top_k_sample` (32, about DETReg's top-30 pool) kept ones, kept in rank
  order. Missing boxes are jittered copies of the chosen proposals, or of box 0 when there are none (the
  official code drops such images).
- The views and the model's crops share one colour augmentation, vectorised with per-image parameters drawn
  from the generator (torchvision's random transforms draw from the global RNG). It reproduces the
  `transforms.v2.functional` ops (the tests check it), with the jitter in a fixed order: brightness,
  contrast, saturation, hue (torchvision's ColorJitter draws a random order).

All randomness comes from one `torch.Generator`: a sample is a pure function of its seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import box_area, box_iou, clip_boxes_to_image, roi_align
from torchvision.transforms.v2 import functional as TF

from siamdetr.data.transforms import IMAGENET_MEAN, IMAGENET_STD

DUPLICATE_JITTER = 0.1  # the official code's at most ±10 % for the boxes that fill up to n
LUMA = (0.2989, 0.587, 0.114)  # torchvision's grayscale weights


@dataclass
class ViewConfig:
    """How two views and their boxes are drawn; defaults are the paper's ImageNet settings."""

    tau: float = 0.5
    n_boxes: int = 10
    short_min: int = 320
    short_max: int = 480
    max_size: int = 600
    outer_area: tuple[float, float] = (0.5, 1.0)
    outer_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    min_box_frac: float = 0.05
    jitter: float = 0.1
    sample_proposals: bool = True
    top_k_sample: int = 32
    flip_p: float = 0.5
    swap_p: float = 0.5
    colour: bool = True

    def __post_init__(self) -> None:
        if not 0 < self.tau <= 1:
            raise ValueError(f"tau = {self.tau}: must be in (0, 1]")
        if not 0 <= self.jitter < 0.5:
            raise ValueError(f"jitter = {self.jitter}: must be in [0, 0.5), a larger one can turn a box inside out")


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


@dataclass
class ViewPair:
    """Two views of one image and n boxes per view; row i of boxes1 and boxes2 is the same image region.

    Images are [3, h, w] normalised floats, both of O's size; boxes are [n, 4] xyxy in view pixels. `info`
    holds the frame's geometry: rectangles are xyxy in the frame (the resized, maybe flipped image).
    """

    view1: Tensor
    view2: Tensor
    plain1: Tensor
    plain2: Tensor
    boxes1: Tensor
    boxes2: Tensor
    query_boxes1: Tensor
    query_boxes2: Tensor
    info: dict[str, Any]


# --------------------------------------------------------------------------------------------- randomness
def uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def coin(generator: torch.Generator, p: float) -> bool:
    return float(torch.rand((), generator=generator)) < p


def random_int(generator: torch.Generator, low: int, high: int) -> int:
    """An integer in [low, high], both ends included."""
    return int(torch.randint(low, high + 1, (), generator=generator))


# ------------------------------------------------------------------------------------------------ geometry
def clip_to_rect(boxes: Tensor, rect: Tensor) -> Tensor:
    """Boxes clamped into one rectangle; a box outside it collapses to zero area."""
    return boxes.clamp(min=rect[[0, 1, 0, 1]], max=rect[[2, 3, 2, 3]])


def intersection(rects: Tensor) -> Tensor:
    """The common part of overlapping rectangles [k, 4] → [4]."""
    return torch.cat([rects[:, :2].amax(0), rects[:, 2:].amin(0)])


def resize_short_side(
    image: Tensor, proposals: Tensor, cfg: ViewConfig, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """The image with a random short side in [short_min, short_max] (long side at most max_size)."""
    h, w = image.shape[-2:]
    short = random_int(generator, cfg.short_min, cfg.short_max)
    scale = min(short / min(h, w), cfg.max_size / max(h, w))
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    resized = TF.resize(image, [nh, nw], antialias=True)
    return resized, proposals * torch.tensor([nw / w, nh / h, nw / w, nh / h])


def horizontal_flip(image: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
    width = image.shape[-1]
    return image.flip(-1), torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], 1)


def outer_rectangle(
    height: int,
    width: int,
    area_range: tuple[float, float],
    ratio_range: tuple[float, float],
    generator: torch.Generator,
) -> Tensor:
    """O (Fig. 3a): a random share of the frame's area, log-uniform aspect ratio, integer pixels, placed anywhere.

    The ratio is clamped to the range where that area fits, so the area is always honoured.
    """
    area = uniform(generator, *area_range) * height * width
    log_ratio = uniform(generator, math.log(ratio_range[0]), math.log(ratio_range[1]))
    ratio = math.exp(min(max(log_ratio, math.log(area / height**2)), math.log(width**2 / area)))
    w = min(width, max(1, round(math.sqrt(area * ratio))))
    h = min(height, max(1, round(math.sqrt(area / ratio))))
    x0, y0 = random_int(generator, 0, width - w), random_int(generator, 0, height - h)
    return torch.tensor([x0, y0, x0 + w, y0 + h], dtype=torch.float32)


def views_with_iou(outer: Tensor, tau: float) -> Tensor:
    """A and B [2, 4] (Fig. 3b): sub-rectangles of O on both sides of its centre c with IoU exactly τ.

    A runs from O's top-left corner to c + t·(w, h)/2 and B from c − t·(w, h)/2 to O's bottom-right, so the
    intersection is O shrunk by t about c and IoU = t² / ((1 + t)²/2 − t²); solving IoU = τ for t gives
    t = √(τ/2) / (√(1 + τ) − √(τ/2)).
    """
    root = math.sqrt(tau / 2)
    t = root / (math.sqrt(1 + tau) - root)
    centre = (outer[:2] + outer[2:]) / 2
    half = t * (outer[2:] - outer[:2]) / 2
    return torch.stack([torch.cat([outer[:2], centre + half]), torch.cat([centre - half, outer[2:]])])


def shrink_outer_corners(views: Tensor, generator: torch.Generator) -> Tensor:
    """A's top-left and B's bottom-right corners moved a random fraction of the way to the intersection.

    Only the union shrinks, so the IoU can only rise; the corners move along O's diagonal, so each view
    keeps O's aspect ratio.
    """
    a, b = views.clone()
    common = intersection(views)
    a[:2] += float(torch.rand((), generator=generator)) * (common[:2] - a[:2])
    b[2:] += float(torch.rand((), generator=generator)) * (common[2:] - b[2:])
    return torch.stack([a, b])


def to_view_coords(boxes: Tensor, view: Tensor, size: tuple[int, int]) -> Tensor:
    """Boxes in the frame → pixels of the view cut at `view` and resized to `size` (h, w)."""
    h, w = size
    scale = torch.tensor([w, h]) / (view[2:] - view[:2])
    return clip_boxes_to_image((boxes - view[:2].repeat(2)) * scale.repeat(2), size)


def jitter_boxes(boxes: Tensor, fraction: float, bounds: Tensor, generator: torch.Generator) -> Tensor:
    """Each corner coordinate moved independently by fraction × (2·sigmoid(z) − 1), z ~ N(0, 1), of its box's
    width/height, kept inside bounds: the official code's noise (sigmoid(z)·2f − f), peaked at no move and
    never past ±fraction, not a uniform draw."""
    wh = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
    noise = 2 * torch.randn(boxes.shape, generator=generator).sigmoid() - 1
    return clip_to_rect(boxes + fraction * noise * wh, bounds)


# ------------------------------------------------------------------------------------------------- boxes
def proposals_inside(proposals: Tensor, region: Tensor, min_frac: float) -> Tensor:
    """Proposals clipped to the region that still cover min_frac of its area, in their original order."""
    clipped = clip_to_rect(proposals, region)
    area = box_area(clipped)
    return clipped[(area > 0) & (area >= min_frac * box_area(region[None]))]


def choose_proposals(kept: Tensor, k: int, sample: bool, top_k: int, generator: torch.Generator) -> Tensor:
    """k proposals: a uniform sample of the best max(top_k, k), in rank order, or simply the first k."""
    if not sample:
        return kept[:k]
    pool = kept[: max(top_k, k)]
    return pool[torch.randperm(len(pool), generator=generator)[:k].sort().values]


def duplicate_boxes(sources: Tensor, count: int, region: Tensor, generator: torch.Generator) -> Tensor:
    """`count` jittered copies of the sources, cycling through them, kept inside the region."""
    copies = sources[torch.arange(count) % len(sources)]
    return jitter_boxes(copies, DUPLICATE_JITTER, region, generator)


def select_boxes(
    proposals: Tensor, region: Tensor, cfg: ViewConfig, generator: torch.Generator
) -> tuple[Tensor, int, int]:
    """n boxes in the frame: the region itself, proposals inside it, then jittered duplicates.

    Returns the boxes, the number of proposals used and the number of duplicates.
    """
    kept = proposals_inside(proposals, region, cfg.min_box_frac)
    chosen = choose_proposals(kept, cfg.n_boxes - 1, cfg.sample_proposals, cfg.top_k_sample, generator)
    sources = chosen if len(chosen) else region[None]
    duplicates = duplicate_boxes(sources, cfg.n_boxes - 1 - len(chosen), region, generator)
    return torch.cat([region[None], chosen, duplicates]), len(chosen), len(duplicates)


# ------------------------------------------------------------------------------------------------- colour
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


# -------------------------------------------------------------------------------------------------- views
def normalise(x: Tensor) -> Tensor:
    return TF.normalize(x, list(IMAGENET_MEAN), list(IMAGENET_STD))


def crop_views(frame: Tensor, views: Tensor, size: tuple[int, int]) -> Tensor:
    """Both views [2, 3, h, w], cut at float coordinates and resized to `size` by bilinear sampling."""
    rois = torch.cat([torch.zeros(len(views), 1), views], 1)
    return roi_align(frame[None], rois, size, spatial_scale=1.0, sampling_ratio=1, aligned=True)


def make_frame(
    image: Tensor, proposals: Tensor, cfg: ViewConfig, generator: torch.Generator
) -> tuple[Tensor, Tensor, bool]:
    """The resized, maybe flipped image as floats in [0, 1], with its proposals, and whether it was flipped."""
    frame, boxes = resize_short_side(image.as_subclass(Tensor), proposals.reshape(-1, 4).float(), cfg, generator)
    flipped = coin(generator, cfg.flip_p)
    if flipped:
        frame, boxes = horizontal_flip(frame, boxes)
    return TF.to_dtype(frame, torch.float32, scale=True), boxes, flipped


def two_views(height: int, width: int, cfg: ViewConfig, generator: torch.Generator) -> tuple[Tensor, Tensor, bool]:
    """O, the two view rectangles [2, 4] with IoU >= τ (in view order), and whether A and B were swapped."""
    outer = outer_rectangle(height, width, cfg.outer_area, cfg.outer_ratio, generator)
    views = shrink_outer_corners(views_with_iou(outer, cfg.tau), generator)
    swapped = coin(generator, cfg.swap_p)
    return outer, views.flip(0) if swapped else views, swapped


def sample_view_pair(image: Tensor, proposals: Tensor, cfg: ViewConfig, generator: torch.Generator) -> ViewPair:
    """Two views of `image` (uint8 [3, H, W]) with n matched boxes, from its proposals ([K, 4] xyxy, best first)."""
    frame, frame_proposals, flipped = make_frame(image, proposals, cfg, generator)
    outer, views, swapped = two_views(frame.shape[-2], frame.shape[-1], cfg, generator)
    targets, used, duplicated = select_boxes(frame_proposals, intersection(views), cfg, generator)
    size = (int(outer[3] - outer[1]), int(outer[2] - outer[0]))
    view_rect = torch.tensor([0.0, 0.0, size[1], size[0]])
    boxes1, boxes2 = (to_view_coords(targets, view, size) for view in views)
    query1, query2 = (jitter_boxes(boxes, cfg.jitter, view_rect, generator) for boxes in (boxes1, boxes2))
    crops = crop_views(frame, views, size)
    plain = normalise(crops)
    coloured = normalise(batched_colour_augment(crops, generator)) if cfg.colour else plain
    info = {
        "image_size": tuple(image.shape[-2:]),
        "frame_size": tuple(frame.shape[-2:]),
        "flipped": flipped,
        "outer": outer.tolist(),
        "views": views.tolist(),
        "iou": float(box_iou(views[:1], views[1:])),
        "swapped": swapped,
        "proposals_used": used,
        "duplicated": duplicated,
    }
    return ViewPair(
        view1=coloured[0],
        view2=coloured[1],
        plain1=plain[0],
        plain2=plain[1],
        boxes1=boxes1,
        boxes2=boxes2,
        query_boxes1=query1,
        query_boxes2=query2,
        info=info,
    )
