"""The embedded synthetic default, written in the real ImageNet, COCO and VOC layouts.

The rest of the pipeline reads these trees through the same loaders a user's real data goes through, so
the synthetic default exercises every real code path. Each image is a pure function of (seed, split,
index): the output is identical whatever the number of worker processes.

    DIR/imagenet_like/<wnid>/<wnid>_<i>.JPEG                       object-centric, unlabeled
    DIR/coco_like/{train2017,val2017}/<id:012d>.jpg
    DIR/coco_like/annotations/instances_{train,val}2017.json       scene-centric, crowd, S/M/L objects
    DIR/VOCdevkit/VOC2007/{JPEGImages,Annotations,ImageSets/Main}  other classes, difficult/truncated
"""

from __future__ import annotations

import json
import logging
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pycocotools import mask as mask_utils
from tqdm import tqdm

from siamdetr.config import SynthConfig
from siamdetr.data.shapes import TEXTURES, background, contrasting_colour, shape_mask, texture
from siamdetr.io import atomic_dir, atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

MARKER = ".siamdetr-synthetic"
# The classes relate as the real datasets' do: VOC's are a subset of COCO's, and the ImageNet-like folders
# cover every COCO class and more, so the unlabeled pretraining images show every downstream class.
VOC_CLASSES = ("circle", "square", "triangle", "star", "cross", "ring")
COCO_CLASSES = (*VOC_CLASSES, "hexagon", "heart", "arrow", "crescent")
COCO_CATEGORY_IDS = (1, 2, 4, 5, 7, 11, 13, 17, 18, 20)  # non-contiguous, like COCO's
IMAGENET_SHAPES = (*COCO_CLASSES, "diamond", "ellipse", "pentagon", "trapezoid")
COCO_REFERENCE_AREA = 640 * 480  # COCO's small/medium/large thresholds (32², 96²) refer to ~640x480 images
MIN_VISIBLE = 0.35  # an object more occluded than this is re-placed
DIFFICULT_VISIBLE = 0.6  # VOC: objects less visible than this are marked difficult
CROWD_PROB = 0.15
JPEG_QUALITY = 90
SPLITS = {"imagenet": 0, "coco_train": 1, "coco_val": 2, "voc_trainval": 3, "voc_test": 4}


@dataclass
class SynthObject:
    label: int  # index into the split's class tuple
    bbox: tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels, tight around the visible mask
    area: float  # visible pixels
    iscrowd: bool
    truncated: bool
    difficult: bool
    segmentation: Any  # COCO polygons, or RLE for crowds


@dataclass
class SynthImage:
    split: str
    index: int
    width: int
    height: int
    objects: list[SynthObject]


def rotation(rng: np.random.Generator, max_degrees: float) -> float:
    """An object's angle: any (180) or within ±max_degrees of upright; the same random draw either way."""
    angle = rng.uniform(0, 2 * np.pi)
    return angle if max_degrees >= 180 else (angle - np.pi) * max_degrees / 180


def class_style(name: str) -> tuple[float, int]:
    """The hue (OpenCV's 0-180 scale) and texture a class's objects tend to have: real categories have
    typical colours and textures as well as shapes, which is most of what self-supervised features and
    a small CNN pick up first."""
    i = IMAGENET_SHAPES.index(name)
    return i * 180 / len(IMAGENET_SHAPES), i % TEXTURES


def object_fill(
    rng: np.random.Generator, height: int, width: int, against: np.ndarray, name: str, class_appearance: float
) -> np.ndarray:
    """An object's fill: with probability `class_appearance` in its class's hue and texture, else random."""
    hue, kind = None, None
    if class_appearance > 0 and rng.random() < class_appearance:
        hue, kind = class_style(name)
    return texture(rng, height, width, contrasting_colour(rng, against, hue=hue), kind)


def area_scale(width: int, height: int) -> float:
    """Factor that maps COCO's absolute area thresholds onto an image of this size."""
    return width * height / COCO_REFERENCE_AREA


def image_size(rng: np.random.Generator, long_side: int) -> tuple[int, int]:
    short = int(round(long_side * rng.uniform(0.66, 1.0) / 2) * 2)
    return (long_side, short) if rng.random() < 0.7 else (short, long_side)


def _sample_side(
    rng: np.random.Generator, width: int, height: int, size_mix: Sequence[float], min_side: float = 0.0
) -> float:
    """sqrt(area) of an object, drawn from COCO's small / medium / large ranges scaled to the image, and
    raised to `min_side` pixels (COCO's small objects, scaled to a 64-pixel image, are 4 pixels wide)."""
    k = np.sqrt(area_scale(width, height))
    lo_small = max(5.0, 10 * k)
    edges = (lo_small, 32 * k, 96 * k, max(96 * k * 1.05, 0.55 * min(width, height)))
    bucket = rng.choice(3, p=np.asarray(size_mix) / np.sum(size_mix))
    lo, hi = edges[bucket], edges[bucket + 1]
    return max(float(rng.uniform(min(lo, hi), max(lo, hi))), min_side)


def _crowd_mask(
    rng: np.random.Generator, shape: str, width: int, height: int, size_mix: Sequence[float], min_side: float
) -> np.ndarray:
    """Several small copies of one shape packed in one region: annotated once, with iscrowd=1."""
    side = _sample_side(rng, width, height, size_mix, min_side) * 1.5 + 8
    cx, cy = rng.uniform(side / 2, width - side / 2), rng.uniform(side / 2, height - side / 2)
    mask = np.zeros((height, width), np.uint8)
    for _ in range(rng.integers(4, 8)):
        r = rng.uniform(0.12, 0.22) * side
        x, y = cx + rng.uniform(-side / 2, side / 2), cy + rng.uniform(-side / 2, side / 2)
        mask |= shape_mask(shape, height, width, x, y, r, r, rng.uniform(0, 2 * np.pi))
    return mask


def compose_scene(
    rng: np.random.Generator,
    width: int,
    height: int,
    classes: tuple[str, ...],
    max_objects: int,
    crowd_prob: float,
    size_mix: Sequence[float],
    clutter: float = 1.0,
    min_side: float = 0.0,
    class_appearance: float = 0.0,
    max_rotation: float = 180.0,
    background_saturation: float = 1.0,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """A scene-centric image: cluttered background, 1..max_objects shapes with occlusion."""
    img = background(rng, height, width, clutter, background_saturation)
    ids = np.zeros((height, width), np.int32)  # which object owns each pixel (0 = background)
    placed: list[dict[str, Any]] = []
    for k in range(int(rng.integers(1, max_objects + 1))):
        crowd = k == 0 and rng.random() < crowd_prob
        for _attempt in range(12):
            label = int(rng.integers(len(classes)))
            if crowd:
                mask = _crowd_mask(rng, classes[label], width, height, size_mix, min_side)
            else:
                side = _sample_side(rng, width, height, size_mix, min_side)
                aspect = rng.uniform(0.7, 1.4)
                rx, ry = side / 2 * aspect, side / 2 / aspect
                cx = rng.uniform(-0.3 * rx, width + 0.3 * rx)  # may leave the frame: truncation
                cy = rng.uniform(-0.3 * ry, height + 0.3 * ry)
                angle = rotation(rng, max_rotation)
                mask = shape_mask(classes[label], height, width, cx, cy, rx, ry, angle)
            full = int(mask.sum())
            if full < 12:
                continue
            trial = ids.copy()
            trial[mask > 0] = k + 1
            if all((trial == p["id"]).sum() >= MIN_VISIBLE * p["full"] for p in placed):
                ids = trial
                break
        else:
            continue
        fill = object_fill(rng, height, width, img[mask > 0].mean(0), classes[label], class_appearance)
        img[mask > 0] = fill[mask > 0]
        placed.append({"id": k + 1, "label": label, "full": full, "crowd": crowd})
    img = np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)
    objects = []
    for p in placed:
        visible = (ids == p["id"]).astype(np.uint8)
        if visible.sum() == 0:
            continue
        objects.append({**p, "visible": visible})
    return img, objects


def _polygons(mask: np.ndarray) -> list[list[float]]:
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys = [c.reshape(-1).astype(float).tolist() for c in contours if len(c) >= 3]
    if not polys:  # a sliver: fall back to its box outline
        ys, xs = np.nonzero(mask)
        x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
        polys = [[x0, y0, x1, y0, x1, y1, x0, y1]]
    return polys


def _to_object(p: dict[str, Any], width: int, height: int) -> SynthObject:
    visible = p["visible"]
    ys, xs = np.nonzero(visible)
    x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
    if p["crowd"]:
        rle = mask_utils.encode(np.asfortranarray(visible))
        seg: Any = {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}
    else:
        seg = [[float(v) for v in poly] for poly in _polygons(visible)]
    area = float(visible.sum())
    return SynthObject(
        label=p["label"],
        bbox=(x0, y0, x1, y1),
        area=area,
        iscrowd=p["crowd"],
        truncated=x0 == 0 or y0 == 0 or x1 == width or y1 == height,
        difficult=area < DIFFICULT_VISIBLE * p["full"] or max(x1 - x0, y1 - y0) < 6,
        segmentation=seg,
    )


def render(split: str, index: int, seed: int, cfg: SynthConfig) -> tuple[np.ndarray, SynthImage]:
    """One image of one split, as RGB uint8 plus its annotations."""
    rng = np.random.default_rng([seed, SPLITS[split], index])
    width, height = image_size(rng, cfg.image_size)
    if split == "imagenet":
        shape = IMAGENET_SHAPES[index % cfg.imagenet_classes]
        clutter = cfg.clutter if cfg.imagenet_clutter is None else cfg.imagenet_clutter
        img = background(rng, height, width, clutter, cfg.background_saturation)
        side = rng.uniform(0.35, 0.75) * min(width, height)
        aspect = rng.uniform(0.75, 1.33)
        cx, cy = width / 2 + rng.uniform(-0.12, 0.12) * width, height / 2 + rng.uniform(-0.12, 0.12) * height
        angle = rotation(rng, cfg.max_rotation)
        mask = shape_mask(shape, height, width, cx, cy, side / 2 * aspect, side / 2 / aspect, angle)
        fill = object_fill(rng, height, width, img[mask > 0].mean(0), shape, cfg.class_appearance)
        img[mask > 0] = fill[mask > 0]
        img = np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)
        return img, SynthImage(split, index, width, height, [])
    coco = split.startswith("coco")
    classes = COCO_CLASSES if coco else VOC_CLASSES
    img, placed = compose_scene(
        rng,
        width,
        height,
        classes,
        cfg.max_objects,
        CROWD_PROB if coco else 0.0,
        cfg.size_mix,
        cfg.clutter,
        cfg.min_object_side,
        cfg.class_appearance,
        cfg.max_rotation,
        cfg.background_saturation,
    )
    return img, SynthImage(split, index, width, height, [_to_object(p, width, height) for p in placed])


# ------------------------------------------------------------------------------------------- layouts
def imagenet_path(index: int, cfg: SynthConfig) -> Path:
    cls = index % cfg.imagenet_classes
    wnid = wnid_of(cls)
    return Path("imagenet_like") / wnid / f"{wnid}_{index}.JPEG"


def wnid_of(cls: int) -> str:
    return f"n9{cls:07d}"  # WordNet-style ids that no real ImageNet class uses


def coco_image_id(split: str, index: int) -> int:
    return index + 1 if split == "coco_train" else 500_000 + index + 1


def voc_stem(split: str, index: int) -> str:
    return f"{index + 1:06d}" if split == "voc_trainval" else f"{500_000 + index + 1:06d}"


def relative_image_path(split: str, index: int, cfg: SynthConfig) -> Path:
    if split == "imagenet":
        return imagenet_path(index, cfg)
    if split.startswith("coco"):
        folder = "train2017" if split == "coco_train" else "val2017"
        return Path("coco_like") / folder / f"{coco_image_id(split, index):012d}.jpg"
    return Path("VOCdevkit/VOC2007/JPEGImages") / f"{voc_stem(split, index)}.jpg"


def _render_and_write(job: tuple[str, int, int, SynthConfig, str]) -> SynthImage:
    split, index, seed, cfg, root = job
    cv2.setNumThreads(1)
    img, meta = render(split, index, seed, cfg)
    path = Path(root) / relative_image_path(split, index, cfg)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError(f"{path}: JPEG encoding failed")
    path.write_bytes(buf.tobytes())
    return meta


def _jobs(cfg: SynthConfig, seed: int, root: Path) -> Iterator[tuple[str, int, int, SynthConfig, str]]:
    counts = {
        "imagenet": cfg.imagenet_images,
        "coco_train": cfg.coco_train,
        "coco_val": cfg.coco_val,
        "voc_trainval": cfg.voc_trainval,
        "voc_test": cfg.voc_test,
    }
    for split, n in counts.items():
        for i in range(n):
            yield split, i, seed, cfg, str(root)


def coco_json(split: str, images: list[SynthImage], cfg: SynthConfig, seed: int) -> dict[str, Any]:
    """A COCO instances file for one split (ids assigned in index order, so deterministic)."""
    out: dict[str, Any] = {
        "info": {
            "description": "siamdetr synthetic COCO-like set",
            "version": "1",
            "seed": seed,
            "area_scale": area_scale(cfg.image_size, cfg.image_size),
        },
        "licenses": [],
        "images": [],
        "annotations": [],
        "categories": [
            {"id": cid, "name": name, "supercategory": "shape"}
            for cid, name in zip(COCO_CATEGORY_IDS, COCO_CLASSES, strict=True)
        ],
    }
    ann_id = 1 if split == "coco_train" else 5_000_001
    for im in images:
        image_id = coco_image_id(split, im.index)
        out["images"].append(
            {"id": image_id, "file_name": f"{image_id:012d}.jpg", "width": im.width, "height": im.height}
        )
        for ob in im.objects:
            x0, y0, x1, y1 = ob.bbox
            out["annotations"].append(
                {
                    "id": ann_id,
                    "image_id": image_id,
                    "category_id": COCO_CATEGORY_IDS[ob.label],
                    "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                    "area": ob.area,
                    "iscrowd": int(ob.iscrowd),
                    "segmentation": ob.segmentation,
                }
            )
            ann_id += 1
    return out


def voc_xml(stem: str, im: SynthImage) -> str:
    """A VOC annotation: 1-based inclusive pixel coordinates, truncated and difficult flags."""
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "VOC2007"
    ET.SubElement(root, "filename").text = f"{stem}.jpg"
    source = ET.SubElement(root, "source")
    ET.SubElement(source, "database").text = "siamdetr synthetic VOC-like set"
    size = ET.SubElement(root, "size")
    for tag, v in (("width", im.width), ("height", im.height), ("depth", 3)):
        ET.SubElement(size, tag).text = str(v)
    ET.SubElement(root, "segmented").text = "0"
    for ob in im.objects:
        node = ET.SubElement(root, "object")
        ET.SubElement(node, "name").text = VOC_CLASSES[ob.label]
        ET.SubElement(node, "pose").text = "Unspecified"
        ET.SubElement(node, "truncated").text = str(int(ob.truncated))
        ET.SubElement(node, "difficult").text = str(int(ob.difficult))
        box = ET.SubElement(node, "bndbox")
        x0, y0, x1, y1 = ob.bbox
        for tag, v in (("xmin", x0 + 1), ("ymin", y0 + 1), ("xmax", x1), ("ymax", y1)):
            ET.SubElement(box, tag).text = str(int(v))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def write_voc_sets(devkit: Path, by_split: dict[str, list[SynthImage]]) -> None:
    """ImageSets/Main: one list per split, and per class the devkit's 1 / -1 / 0 (difficult only) lists."""
    main = devkit / "VOC2007" / "ImageSets" / "Main"
    main.mkdir(parents=True, exist_ok=True)
    for split, name in (("voc_trainval", "trainval"), ("voc_test", "test")):
        images = by_split[split]
        (main / f"{name}.txt").write_text("".join(f"{voc_stem(split, im.index)}\n" for im in images))
        for label, cls in enumerate(VOC_CLASSES):
            lines = []
            for im in images:
                mine = [ob for ob in im.objects if ob.label == label]
                flag = -1 if not mine else (0 if all(ob.difficult for ob in mine) else 1)
                lines.append(f"{voc_stem(split, im.index)} {flag:2d}\n")
            (main / f"{cls}_{name}.txt").write_text("".join(lines))


def write_synthetic(out: Path, cfg: SynthConfig, seed: int = 0, workers: int | None = None) -> dict[str, int]:
    """Generate all three trees under `out` (atomically) and return the image count of each split."""
    workers = workers if workers is not None else (cfg.workers or os.cpu_count() or 1)
    by_split: dict[str, list[SynthImage]] = {s: [] for s in SPLITS}
    with atomic_dir(out, marker=MARKER) as tmp:
        jobs = list(_jobs(cfg, seed, tmp))
        for rel in {relative_image_path(s, i, cfg).parent for s, i, *_ in jobs}:
            (tmp / rel).mkdir(parents=True, exist_ok=True)
        bar = tqdm(total=len(jobs), desc="synthetic images", unit="img", disable=None)
        if workers <= 1:
            results: Iterator[SynthImage] = map(_render_and_write, jobs)
            for meta in results:
                by_split[meta.split].append(meta)
                bar.update()
        else:
            with ProcessPoolExecutor(workers) as pool:
                for meta in pool.map(_render_and_write, jobs, chunksize=8):
                    by_split[meta.split].append(meta)
                    bar.update()
        bar.close()
        ann_dir = tmp / "coco_like" / "annotations"
        ann_dir.mkdir(parents=True)
        for split, name in (("coco_train", "train2017"), ("coco_val", "val2017")):
            atomic_write_json(ann_dir / f"instances_{name}.json", coco_json(split, by_split[split], cfg, seed))
        devkit = tmp / "VOCdevkit"
        (devkit / "VOC2007" / "Annotations").mkdir(parents=True)
        for split in ("voc_trainval", "voc_test"):
            for im in by_split[split]:
                stem = voc_stem(split, im.index)
                (devkit / "VOC2007" / "Annotations" / f"{stem}.xml").write_text(voc_xml(stem, im))
        write_voc_sets(devkit, by_split)
        counts = {s: len(v) for s, v in by_split.items()}
        meta = {
            "seed": seed,
            "config": asdict(cfg),
            "counts": counts,
            "coco_classes": list(COCO_CLASSES),
            "coco_category_ids": list(COCO_CATEGORY_IDS),
            "voc_classes": list(VOC_CLASSES),
            "imagenet_wnids": [wnid_of(c) for c in range(cfg.imagenet_classes)],
        }
        atomic_write_text(tmp / "synthetic.json", json.dumps(meta, indent=2) + "\n")
    log.info("wrote synthetic datasets to %s: %s", out, counts)
    return counts
