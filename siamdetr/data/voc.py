"""PASCAL VOC devkit → COCO json, so VOC is evaluated with COCO metrics (as UP-DETR, DETReg and Siamese
DETR report it).

Two conversions (`protocol`), because the paper's numbers and the VOC devkit's own protocol disagree:

- `official` (default): what the official Siamese DETR json files hold (voc_test2007.cocostyle.json: 4,952
  images, 14,976 objects), so our AP is comparable with the paper's. Every object, difficult ones included,
  is ordinary ground truth (`iscrowd: 0`, the `difficult` flag kept), and the XML corners are used as they
  are: bbox = [xmin, ymin, xmax - xmin, ymax - ymin].
- `voc_standard`: the VOC devkit's reading. VOC's 1-based inclusive corners become the 0-based box
  [xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1], and difficult objects become `iscrowd: 1`, which
  COCOeval ignores (neither true nor false positives) and training leaves out, as the VOC protocol ignores
  them.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from siamdetr.data.coco import BoxCleaning, clean_boxes
from siamdetr.errors import DatasetError

log = logging.getLogger(__name__)

VocProtocol = Literal["official", "voc_standard"]
VOC_PROTOCOLS: tuple[VocProtocol, ...] = ("official", "voc_standard")

VOC_CLASSES = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)


def _text(node: ET.Element, tag: str, path: Path) -> str:
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise DatasetError(f"{path}: missing <{tag}>")
    return child.text.strip()


def _int(node: ET.Element, tag: str, path: Path) -> int:
    text = _text(node, tag, path)
    try:
        return int(float(text))  # some devkit files write 273.0
    except ValueError:
        raise DatasetError(f"{path}: <{tag}> = {text!r} is not a number") from None


def read_voc_xml(path: Path) -> dict[str, Any]:
    """One VOC annotation file as {width, height, objects: [{name, box (1-based), difficult, truncated}]}."""
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        raise DatasetError(f"{path}: annotation file does not exist") from None
    except ET.ParseError as e:
        raise DatasetError(f"{path}: malformed XML ({e})") from e
    size = root.find("size")
    if size is None:
        raise DatasetError(f"{path}: missing <size>")
    objects = []
    for obj in root.iter("object"):
        box = obj.find("bndbox")
        if box is None:
            raise DatasetError(f"{path}: an <object> has no <bndbox>")
        flag = obj.find("difficult")
        trunc = obj.find("truncated")
        objects.append(
            {
                "name": _text(obj, "name", path),
                "box": tuple(_int(box, t, path) for t in ("xmin", "ymin", "xmax", "ymax")),
                "difficult": flag is not None and (flag.text or "0").strip() == "1",
                "truncated": trunc is not None and (trunc.text or "0").strip() == "1",
            }
        )
    return {"width": _int(size, "width", path), "height": _int(size, "height", path), "objects": objects}


def voc_box_to_coco(box: Sequence[float], protocol: VocProtocol = "official") -> list[float]:
    """(xmin, ymin, xmax, ymax) → [x, y, w, h]: the corners as they are (official), or VOC's 1-based
    inclusive corners made 0-based (voc_standard)."""
    xmin, ymin, xmax, ymax = box
    if protocol == "voc_standard":
        return [float(xmin - 1), float(ymin - 1), float(xmax - xmin + 1), float(ymax - ymin + 1)]
    return [float(xmin), float(ymin), float(xmax - xmin), float(ymax - ymin)]


def devkit_classes(devkit: Path, years: Sequence[int], split: str) -> list[str]:
    """Class names from the devkit's per-class lists (ImageSets/Main/<class>_<split>.txt), else VOC's 20."""
    found: set[str] = set()
    for year in years:
        main = devkit / f"VOC{year}" / "ImageSets" / "Main"
        found |= {p.name[: -len(f"_{split}.txt")] for p in main.glob(f"*_{split}.txt")}
    return sorted(found) if found else list(VOC_CLASSES)


def image_list(devkit: Path, year: int, split: str) -> list[str]:
    year_dir = devkit / f"VOC{year}"
    if not year_dir.is_dir():
        raise DatasetError(f"{year_dir}: VOC year directory does not exist")
    listing = year_dir / "ImageSets" / "Main" / f"{split}.txt"
    if not listing.is_file():
        raise DatasetError(f"{listing}: image list for split '{split}' does not exist")
    return [line.split()[0] for line in listing.read_text().splitlines() if line.strip()]


def voc_to_coco(
    devkit: str | Path,
    years: Sequence[int],
    split: str,
    classes: Sequence[str] | None = None,
    protocol: VocProtocol = "official",
) -> tuple[dict[str, Any], BoxCleaning]:
    """Convert one split of one or more VOC years to a COCO instances dict under `protocol` (module doc).

    `file_name`s are relative to the devkit (VOC2007/JPEGImages/000005.jpg), so one json can span 07+12.
    """
    if protocol not in VOC_PROTOCOLS:
        raise ValueError(f"protocol = {protocol!r}: expected one of {', '.join(VOC_PROTOCOLS)}")
    devkit = Path(devkit)
    if not devkit.is_dir():
        raise DatasetError(f"{devkit}: VOCdevkit directory does not exist")
    classes = list(classes) if classes else devkit_classes(devkit, years, split)
    cat_of = {name: i + 1 for i, name in enumerate(classes)}
    data: dict[str, Any] = {
        "info": {
            "description": f"PASCAL VOC {'+'.join(map(str, years))} {split}, converted by siamdetr",
            "voc_protocol": protocol,
        },
        "licenses": [],
        "images": [],
        "annotations": [],
        "categories": [{"id": i, "name": n, "supercategory": "voc"} for n, i in cat_of.items()],
    }
    for year in years:
        for stem in image_list(devkit, year, split):
            xml_path = devkit / f"VOC{year}" / "Annotations" / f"{stem}.xml"
            ann = read_voc_xml(xml_path)
            image_id = len(data["images"]) + 1
            data["images"].append(
                {
                    "id": image_id,
                    "file_name": f"VOC{year}/JPEGImages/{stem}.jpg",
                    "width": ann["width"],
                    "height": ann["height"],
                }
            )
            for obj in ann["objects"]:
                if obj["name"] not in cat_of:
                    raise DatasetError(f"{xml_path}: class '{obj['name']}' is not one of {classes}")
                bbox = voc_box_to_coco(obj["box"], protocol)
                ignored = protocol == "voc_standard" and obj["difficult"]
                data["annotations"].append(
                    {
                        "id": len(data["annotations"]) + 1,
                        "image_id": image_id,
                        "category_id": cat_of[obj["name"]],
                        "bbox": bbox,
                        "iscrowd": int(ignored),
                        "difficult": int(obj["difficult"]),
                        "truncated": int(obj["truncated"]),
                    }
                )  # area: the (clipped) box area, set by clean_boxes
    if not data["images"]:
        raise DatasetError(f"{devkit}: split '{split}' of VOC {list(years)} lists no images")
    stats = clean_boxes(data)
    if stats.clipped or stats.dropped:
        log.warning("%s (%s): %s", devkit, split, stats)
    return data, stats
