"""Image decoding with one policy for bad files, shared by every dataset."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np
import PIL.Image
from torchvision.transforms.v2.functional import pil_to_tensor
from torchvision.tv_tensors import Image

from siamdetr.errors import BadImageError

log = logging.getLogger(__name__)

BadImagePolicy = Literal["skip", "error"]


def read_image(path: str | Path, on_bad: BadImagePolicy = "skip") -> Image | None:
    """Decode an image as RGB uint8 CHW; a bad file is None with a warning ('skip') or an error."""
    # PIL, not torchvision.io: torchvision's decoders are deprecated since 0.29. convert() forces the full
    # decode, so a truncated file fails here rather than yielding a half-grey image.
    try:
        with PIL.Image.open(path) as im:
            return Image(pil_to_tensor(to_rgb(im)))
    except (OSError, ValueError, PIL.Image.DecompressionBombError) as e:
        msg = f"{path}: cannot decode image ({str(e).splitlines()[0][:200]})"
        if on_bad == "error":
            raise BadImageError(msg) from e
        log.warning("skipping %s", msg)
        return None


def to_rgb(im: PIL.Image.Image) -> PIL.Image.Image:
    """8-bit RGB, faithful to the file's range: PIL's convert("RGB") clips 16-bit grey at 255 (a near-white
    picture), so 16-bit grey is scaled to 8 bits; 32-bit integer and float pixels have no range to scale
    from and are refused (the caller skips and counts, or errs)."""
    if im.mode.startswith("I;16"):
        pixels = np.asarray(im, dtype=np.float64) / 257.0  # 65535 -> 255
        return PIL.Image.fromarray(pixels.round().astype(np.uint8)).convert("RGB")
    if im.mode in ("I", "F"):
        raise ValueError(
            f"pixel format {im.mode!r} (32-bit {'integer' if im.mode == 'I' else 'float'}) is not "
            "supported; save the image with 8 or 16 bits per channel"
        )
    return im.convert("RGB")


def elongation(height: int, width: int, max_aspect: float) -> str | None:
    """Why an image is too elongated for the model (its long side capped, the short side would be under one
    feature cell), or None."""
    if max(height, width) <= max_aspect * min(height, width):
        return None
    return f"aspect ratio {max(height, width) / min(height, width):.0f}:1 is above the model's {max_aspect:.0f}:1"


def collate_skipping_bad(batch: list[Any]) -> dict[str, Any]:
    """Collate dataset items into lists, dropping the None of bad images and counting them.

    Images keep their own sizes (DETR pads per batch later), so items are listed, not stacked.
    """
    good = [item for item in batch if item is not None]
    out: dict[str, Any] = {"skipped": len(batch) - len(good)}
    if good:
        for key in good[0]:
            out[key] = [item[key] for item in good]
    return out
