"""The `data` stage: make every dataset the later stages need available in COCO/folder form.

With `data.synthetic: true` it generates the embedded default; otherwise it checks the user's roots. Either
way VOC is converted to COCO json, and a manifest records where each split's images and annotations are,
so later stages never guess paths.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from siamdetr.config import Config, ConfigError
from siamdetr.data.coco import load_coco
from siamdetr.data.folder import list_images
from siamdetr.data.manifest import MANIFEST
from siamdetr.data.synthetic import area_scale, write_synthetic
from siamdetr.data.voc import voc_to_coco
from siamdetr.io import atomic_dir, atomic_write_json

log = logging.getLogger(__name__)

MARKER = ".siamdetr-prepared"


def _coco_split(images: Path, annotations: Path, readable_now: Path) -> dict[str, Any]:
    """Final paths and counts of one COCO-format split; the json is read at `readable_now`."""
    coco, cleaning = load_coco(readable_now)
    return {
        "images": str(images),
        "annotations": str(annotations),
        "n_images": len(coco.imgs),
        "n_annotations": len(coco.anns),
        "n_crowd": sum(a["iscrowd"] for a in coco.anns.values()),
        "cleaning": asdict(cleaning),
    }


def run(cfg: Config) -> dict[str, Any]:
    """Run the data stage and return the manifest (also written to <prepared_dir>/manifest.json)."""
    out = Path(cfg.data.prepared_dir)
    with atomic_dir(out, marker=MARKER) as tmp:
        if cfg.data.synthetic:
            write_synthetic(tmp / "synthetic", cfg.data.synth, seed=cfg.seed)

        def live(final: Path) -> Path:  # where a final path is while the stage is still writing
            return tmp / final.relative_to(out) if final.is_relative_to(out) else final

        manifest: dict[str, Any] = {"synthetic": cfg.data.synthetic, "seed": cfg.seed, "profile": cfg.profile}
        roots = {name: _root_or_none(cfg, name) for name in ("imagenet", "coco", "voc")}
        if not any(roots.values()):
            raise ConfigError(
                f"{cfg.source_of('data.synthetic')}: data.synthetic is false and none of data.imagenet_root, "
                "data.coco_root, data.voc_root is set: there is no data to prepare"
            )
        if roots["imagenet"]:
            manifest["imagenet"] = {
                "root": str(roots["imagenet"]),
                "n_images": len(list_images(live(roots["imagenet"]))),
            }
        if roots["coco"]:
            root = roots["coco"]
            manifest["coco"] = {"root": str(root)}
            for split in ("train", "val"):
                ann = root / "annotations" / f"instances_{split}2017.json"
                manifest["coco"][split] = _coco_split(root / f"{split}2017", ann, live(ann))
        if roots["voc"]:
            root = roots["voc"]
            manifest["voc"] = {"root": str(root), "protocol": cfg.data.voc_protocol}
            for split, years, name in (
                (cfg.data.voc_train_split, cfg.data.voc_train_years, "train"),
                (cfg.data.voc_test_split, cfg.data.voc_test_years, "test"),
            ):
                data, _ = voc_to_coco(live(root), years, split, cfg.data.voc_classes, cfg.data.voc_protocol)
                if cfg.data.synthetic:  # COCO's S/M/L limits, scaled to the small synthetic images
                    data["info"]["area_scale"] = area_scale(cfg.data.synth.image_size, cfg.data.synth.image_size)
                ann = out / f"voc_{split}.json"
                atomic_write_json(live(ann), data)
                manifest["voc"][name] = _coco_split(root, ann, live(ann))
        atomic_write_json(tmp / MANIFEST, manifest, indent=2)
    log.info(
        "data stage wrote %s (datasets: %s)",
        out / MANIFEST,
        ", ".join(k for k in ("imagenet", "coco", "voc") if k in manifest),
    )
    return manifest


def _root_or_none(cfg: Config, name: str) -> Path | None:
    if cfg.data.synthetic or getattr(cfg.data, f"{name}_root") is not None:
        return cfg.data_root(name)  # type: ignore[arg-type]
    return None
