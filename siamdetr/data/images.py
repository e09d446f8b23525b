"""Image decoding with one policy for bad files, shared by every dataset."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

from torchvision.io import ImageReadMode, decode_image, read_file
from torchvision.tv_tensors import Image

from siamdetr.errors import BadImageError

log = logging.getLogger(__name__)

BadImagePolicy = Literal["skip", "error"]


def read_image(path: str | Path, on_bad: BadImagePolicy = "skip") -> Image | None:
    """Decode an image as RGB uint8 CHW; a bad file is None with a warning ('skip') or an error."""
    try:
        return Image(decode_image(read_file(str(path)), mode=ImageReadMode.RGB))
    except (RuntimeError, OSError, ValueError) as e:
        msg = f"{path}: cannot decode image ({str(e).splitlines()[0][:200]})"
        if on_bad == "error":
            raise BadImageError(msg) from e
        log.warning("skipping %s", msg)
        return None


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
