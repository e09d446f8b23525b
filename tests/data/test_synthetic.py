import hashlib
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from pycocotools.coco import COCO

from siamdetr.data.synthetic import (
    COCO_CATEGORY_IDS,
    VOC_CLASSES,
    area_scale,
    render,
    write_synthetic,
)


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_three_trees_in_real_layouts(synth_root, synth_cfg):
    imagenet = sorted((synth_root / "imagenet_like").rglob("*.JPEG"))
    assert len(imagenet) == synth_cfg.imagenet_images
    assert len({p.parent.name for p in imagenet}) == synth_cfg.imagenet_classes
    assert all(p.parent.name.startswith("n") and len(p.parent.name) == 9 for p in imagenet)
    coco = synth_root / "coco_like"
    assert len(list((coco / "train2017").glob("*.jpg"))) == synth_cfg.coco_train
    assert len(list((coco / "val2017").glob("*.jpg"))) == synth_cfg.coco_val
    voc = synth_root / "VOCdevkit" / "VOC2007"
    stems = (voc / "ImageSets/Main/trainval.txt").read_text().split()
    assert len(stems) == synth_cfg.voc_trainval
    assert all(
        (voc / "JPEGImages" / f"{s}.jpg").is_file() and (voc / "Annotations" / f"{s}.xml").is_file() for s in stems
    )
    assert {p.name for p in (voc / "ImageSets/Main").glob("*_test.txt")} == {f"{c}_test.txt" for c in VOC_CLASSES}


def test_pycocotools_opens_the_coco_json(synth_root, synth_cfg):
    coco = COCO(str(synth_root / "coco_like/annotations/instances_train2017.json"))
    assert len(coco.getImgIds()) == synth_cfg.coco_train
    assert sorted(coco.getCatIds()) == list(COCO_CATEGORY_IDS)
    assert sorted(coco.getCatIds()) != list(range(1, len(COCO_CATEGORY_IDS) + 1))  # non-contiguous, like COCO


def test_coco_set_has_crowds_sizes_and_boxes_inside(synth_root):
    data = json.loads((synth_root / "coco_like/annotations/instances_train2017.json").read_text())
    sizes = {im["id"]: (im["width"], im["height"]) for im in data["images"]}
    anns = data["annotations"]
    assert any(a["iscrowd"] for a in anns)
    buckets = set()
    for a in anns:
        x, y, w, h = a["bbox"]
        W, H = sizes[a["image_id"]]
        assert x >= 0 and y >= 0 and w > 0 and h > 0 and x + w <= W and y + h <= H
        assert 0 < a["area"] <= w * h
        s = area_scale(W, H)
        buckets.add(0 if a["area"] < 32**2 * s else 1 if a["area"] < 96**2 * s else 2)
        if a["iscrowd"]:
            assert set(a["segmentation"]) == {"size", "counts"}  # RLE, as COCO stores crowds
    assert buckets == {0, 1, 2}  # small, medium and large objects on COCO's (scaled) area ranges
    per_image = {}
    for a in anns:
        per_image[a["image_id"]] = per_image.get(a["image_id"], 0) + 1
    assert max(per_image.values()) >= 3  # scene-centric: several objects per image


def test_voc_xml_is_one_based_with_flags(synth_root):
    difficult = truncated = boxes = 0
    for xml in (synth_root / "VOCdevkit/VOC2007/Annotations").glob("*.xml"):
        root = ET.parse(xml).getroot()
        W, H = int(root.findtext("size/width")), int(root.findtext("size/height"))
        for obj in root.iter("object"):
            assert obj.findtext("name") in VOC_CLASSES
            xmin, ymin, xmax, ymax = (int(obj.findtext(f"bndbox/{t}")) for t in ("xmin", "ymin", "xmax", "ymax"))
            assert 1 <= xmin <= xmax <= W and 1 <= ymin <= ymax <= H
            difficult += obj.findtext("difficult") == "1"
            truncated += obj.findtext("truncated") == "1"
            boxes += 1
    assert boxes > 0 and 0 < difficult < boxes and 0 < truncated < boxes


def test_objects_are_drawn_where_the_boxes_are():
    img, meta = render("coco_train", 3, seed=0, cfg=_cfg())
    assert img.shape == (meta.height, meta.width, 3)
    assert meta.objects
    for ob in meta.objects:
        x0, y0, x1, y1 = ob.bbox
        assert 0 <= x0 < x1 <= meta.width and 0 <= y0 < y1 <= meta.height


def _cfg():
    from siamdetr.config import SynthConfig

    return SynthConfig(image_size=64, max_objects=6)


def test_output_is_the_same_whatever_the_worker_count(tmp_path, synth_cfg):
    from dataclasses import replace

    cfg = replace(synth_cfg, coco_train=6, voc_trainval=6, imagenet_images=4)
    write_synthetic(tmp_path / "a", cfg, seed=3, workers=1)
    write_synthetic(tmp_path / "b", cfg, seed=3, workers=2)
    write_synthetic(tmp_path / "c", cfg, seed=4, workers=1)
    assert tree_digest(tmp_path / "a") == tree_digest(tmp_path / "b")
    assert tree_digest(tmp_path / "a") != tree_digest(tmp_path / "c")


def test_refuses_to_replace_a_directory_it_did_not_write(tmp_path, synth_cfg):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "precious.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="not written by siamdetr"):
        write_synthetic(tmp_path / "mine", synth_cfg, workers=1)
    assert (tmp_path / "mine" / "precious.txt").read_text() == "keep"


def test_clutter_scales_the_background_edges_and_one_is_the_original():
    import cv2
    import numpy as np

    from siamdetr.data.shapes import background

    def edges(img):
        return float(cv2.Laplacian(img.astype(np.float32), cv2.CV_32F).var())

    default = background(np.random.default_rng(3), 96, 128)
    assert np.array_equal(background(np.random.default_rng(3), 96, 128, clutter=1.0), default)
    plain = background(np.random.default_rng(3), 96, 128, clutter=0.0)
    assert edges(plain) < 0.01 * edges(default)  # the gradient alone: no lines, curves or outlines
