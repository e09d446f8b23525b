"""The data stage's manifest: where each prepared split's images and annotations are, so that later stages
never guess paths."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from siamdetr.config import ConfigError

MANIFEST = "manifest.json"


def manifest_entry(prepared_dir: str | Path, name: str, key: str) -> dict[str, Any]:
    """One dataset's entry of the manifest in `prepared_dir`; `key` names the setting that asked for it."""
    path = Path(prepared_dir) / MANIFEST
    if not path.is_file():
        raise ConfigError(f"{path}: not found; run the data stage first (`siamdetr data prepare` or `dvc repro data`)")
    manifest = json.loads(path.read_text())
    if name not in manifest:
        raise ConfigError(f"{path}: no '{name}' dataset was prepared ({key} = {name!r}); set data.{name}_root")
    return manifest[name]


def pretraining_images(prepared_dir: str | Path, name: str) -> tuple[Path, Path | None]:
    """(image directory, its ground-truth json or None) of the pretraining dataset `name`: ImageNet's
    folder tree, or the train split of COCO (whose boxes measure the proposals' recall)."""
    entry = manifest_entry(prepared_dir, name, "pretrain.dataset")
    if name == "imagenet":
        return Path(entry["root"]), None
    return Path(entry["train"]["images"]), Path(entry["train"]["annotations"])
