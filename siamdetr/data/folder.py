"""An unlabeled image folder, searched recursively: ImageNet's train layout (<wnid>/<name>.JPEG) or any
tree of images. The pretraining set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from siamdetr.data.images import BadImagePolicy, read_image
from siamdetr.errors import DatasetError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})


def list_images(root: str | Path) -> list[Path]:
    """Image paths under `root`, relative to it, sorted (the order is part of reproducibility)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: image directory does not exist")
    paths = sorted(p.relative_to(root) for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise DatasetError(f"{root}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return paths


class ImageFolder(Dataset):
    """Items are {"image": tv_tensors.Image, "path": relative path}, or None for an undecodable file."""

    def __init__(self, root: str | Path, transforms: Any = None, on_bad_image: BadImagePolicy = "skip") -> None:
        self.root = Path(root)
        self.paths = list_images(self.root)
        self.transforms = transforms
        self.on_bad_image = on_bad_image

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        rel = self.paths[index]
        image = read_image(self.root / rel, self.on_bad_image)
        if image is None:
            return None
        if self.transforms is not None:
            image = self.transforms(image)
        return {"image": image, "path": str(rel)}
