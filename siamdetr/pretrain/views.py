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
- Each view is colour-augmented with its own parameters (`data/colour.py`, vectorised over the batch).
- Resize and flip of an image with its boxes are torchvision.transforms.v2's, on `tv_tensors.BoundingBoxes`.
- A view is a `View` from here to the losses: a batch of one in the dataset, padded into batches by
  `View.batch`.

All randomness comes from one `torch.Generator`: a sample is a pure function of its seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.ops import box_area, box_iou, clip_boxes_to_image, roi_align
from torchvision.transforms.v2 import functional as TF

from siamdetr.data.colour import batched_colour_augment, normalise
from siamdetr.models.detr import pad_images

DUPLICATE_JITTER = 0.1  # the official code's at most ±10 % for the boxes that fill up to n


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


@dataclass
class View:
    """A batch of views with their boxes (xyxy, view pixels) and each view's unpadded size: the one form a
    view has from the dataset (a batch of one, `View.single`) through the collate function (`View.batch`) to
    the pretraining methods and their losses.

    The single-view baselines cut and colour-augment their patches in the dataset, where each sample's
    generator lives; they come with the view.
    """

    images: Tensor  # [B, 3, H, W] normalised (Siamese DETR: colour-augmented)
    mask: Tensor  # [B, H, W] True = padding
    plain: Tensor  # [B, 3, H, W] geometric augmentation only (crops for L_r come from here)
    boxes: list[Tensor]  # [n_i, 4] per image: the targets
    query_boxes: list[Tensor]  # [n_i, 4] per image: jittered boxes the query features are pooled from
    sizes: list[tuple[int, int]]  # (h, w) per image
    patches: Tensor | None = None  # [sum n_i, 3, S, S] the boxes' crops, colour-augmented, normalised
    query_keep: Tensor | None = None  # [B, Q] False: UP-DETR masks this query's patch feature
    info: list[dict[str, Any]] = field(default_factory=list)  # per image: how its view was drawn (Siamese DETR)

    @classmethod
    def single(
        cls,
        image: Tensor,
        plain: Tensor,
        boxes: Tensor,
        query_boxes: Tensor,
        patches: Tensor | None = None,
        query_keep: Tensor | None = None,
        info: dict[str, Any] | None = None,
    ) -> View:
        """One sample's view [3, h, w] as a batch of one (no padding)."""
        h, w = image.shape[-2:]
        keep = None if query_keep is None else query_keep[None]
        extra = [] if info is None else [info]
        mask = torch.zeros(1, h, w, dtype=torch.bool)
        return cls(image[None], mask, plain[None], [boxes], [query_boxes], [(h, w)], patches, keep, extra)

    @classmethod
    def batch(cls, views: list[View]) -> View:
        """Views (of one position in their samples) padded into one batch."""
        unpadded = [(v, i, h, w) for v in views for i, (h, w) in enumerate(v.sizes)]
        images, mask = pad_images([v.images[i, :, :h, :w] for v, i, h, w in unpadded])
        plain, _ = pad_images([v.plain[i, :, :h, :w] for v, i, h, w in unpadded])
        patches = [v.patches for v in views if v.patches is not None]
        keep = [v.query_keep for v in views if v.query_keep is not None]
        return cls(
            images,
            mask,
            plain,
            [b for v in views for b in v.boxes],
            [b for v in views for b in v.query_boxes],
            [s for v in views for s in v.sizes],
            torch.cat(patches) if patches else None,
            torch.cat(keep) if keep else None,
            [i for v in views for i in v.info],
        )

    def to(self, device: torch.device) -> View:
        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device)

        return View(
            self.images.to(device),
            self.mask.to(device),
            self.plain.to(device),
            [b.to(device) for b in self.boxes],
            [b.to(device) for b in self.query_boxes],
            self.sizes,
            move(self.patches),
            move(self.query_keep),
            self.info,
        )


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
    return resized_to(image, proposals, nh, nw)


def as_boxes(boxes: Tensor, image: Tensor) -> tv_tensors.BoundingBoxes:
    return tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=tuple(image.shape[-2:]))


def resized_to(image: Tensor, boxes: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
    """The image resized to (height, width) (antialiased) and its boxes scaled with it."""
    size = [height, width]
    resized = TF.resize(image, size, antialias=True)
    return resized, TF.resize(as_boxes(boxes, image), size).as_subclass(Tensor)


def horizontal_flip(image: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
    return TF.horizontal_flip(image), TF.horizontal_flip(as_boxes(boxes, image)).as_subclass(Tensor)


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


# -------------------------------------------------------------------------------------------------- views
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


def sample_view_pair(
    image: Tensor, proposals: Tensor, cfg: ViewConfig, generator: torch.Generator
) -> tuple[View, View]:
    """Two views of `image` (uint8 [3, H, W]) with n matched boxes, from its proposals ([K, 4] xyxy, best first):
    row i of the two views' boxes is the same image region; `info` holds the frame's geometry (rectangles
    xyxy in the frame, the resized, maybe flipped image)."""
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
    return (
        View.single(coloured[0], plain[0], boxes1, query1, info=info),
        View.single(coloured[1], plain[1], boxes2, query2, info=info),
    )
