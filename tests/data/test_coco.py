import json

import pytest
import torch

from siamdetr.data.coco import CocoDetection, load_coco
from siamdetr.data.images import collate_skipping_bad
from siamdetr.errors import BadImageError, DatasetError


@pytest.fixture()
def coco_paths(synth_root):
    root = synth_root / "coco_like"
    return root / "train2017", root / "annotations" / "instances_train2017.json"


def test_round_trip_boxes_and_labels(coco_paths):
    images, ann_file = coco_paths
    data = json.loads(ann_file.read_text())
    ds = CocoDetection(images, ann_file, include_crowd=True)
    cat_ids = sorted(c["id"] for c in data["categories"])
    assert len(ds) == len(data["images"])
    for index in (0, 5, len(ds) - 1):
        item = ds[index]
        image_id = item["target"]["image_id"]
        info = next(im for im in data["images"] if im["id"] == image_id)
        assert tuple(item["image"].shape) == (3, info["height"], info["width"])
        anns = [a for a in data["annotations"] if a["image_id"] == image_id]
        expected = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)]).reshape(-1, 4)
        assert torch.equal(item["target"]["boxes"].as_subclass(torch.Tensor), expected.float())
        assert item["target"]["labels"].tolist() == [cat_ids.index(a["category_id"]) for a in anns]
        assert item["target"]["boxes"].canvas_size == (info["height"], info["width"])


def test_crowd_boxes_are_left_out_of_training_targets_by_default(coco_paths):
    images, ann_file = coco_paths
    with_crowd = CocoDetection(images, ann_file, include_crowd=True)
    without = CocoDetection(images, ann_file)
    total_with = sum(len(with_crowd.target(i)["labels"]) for i in with_crowd.ids)
    total_without = sum(len(without.target(i)["labels"]) for i in without.ids)
    n_crowd = sum(a["iscrowd"] for a in with_crowd.coco.anns.values())
    assert n_crowd > 0 and total_with - total_without == n_crowd


def make_dataset(tmp_path, images=None, annotations=None, categories=None):
    data = {
        "images": images if images is not None else [{"id": 1, "file_name": "a.jpg", "width": 20, "height": 10}],
        "annotations": annotations if annotations is not None else [],
        "categories": categories if categories is not None else [{"id": 3, "name": "thing"}],
    }
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    return path


def test_boxes_outside_are_clipped_and_degenerate_ones_dropped_and_counted(tmp_path):
    anns = [
        {"id": 1, "image_id": 1, "category_id": 3, "bbox": [2, 2, 4, 4]},  # fine
        {"id": 2, "image_id": 1, "category_id": 3, "bbox": [15, -2, 10, 5]},  # partly outside → clipped
        {"id": 3, "image_id": 1, "category_id": 3, "bbox": [5, 5, 0, 3]},  # w = 0 → dropped
        {"id": 4, "image_id": 1, "category_id": 3, "bbox": [5, 5, 3, -1]},  # h < 0 → dropped
        {"id": 5, "image_id": 1, "category_id": 3, "bbox": [30, 1, 3, 3]},  # wholly outside → dropped
    ]
    coco, stats = load_coco(make_dataset(tmp_path, annotations=anns))
    assert (stats.clipped, stats.dropped) == (1, 3)
    assert sorted(coco.anns) == [1, 2]
    assert coco.anns[2]["bbox"] == [15, 0, 5, 3]


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda d: d.pop("images"), "field 'images' is missing"),
        (lambda d: d["images"][0].pop("width"), r"images\[0\].width is missing or invalid"),
        (lambda d: d["images"].append(dict(d["images"][0])), r"images\[1\].id = 1 is not unique"),
        (
            lambda d: d["annotations"].append({"id": 1, "image_id": 9, "category_id": 3, "bbox": [0, 0, 1, 1]}),
            r"annotations\[0\].image_id = 9",
        ),
        (
            lambda d: d["annotations"].append({"id": 1, "image_id": 1, "category_id": 4, "bbox": [0, 0, 1, 1]}),
            r"annotations\[0\].category_id = 4",
        ),
        (
            lambda d: d["annotations"].append({"id": 1, "image_id": 1, "category_id": 3, "bbox": [0, 0, 1]}),
            r"annotations\[0\].bbox",
        ),
        (lambda d: d["categories"].append({"id": "x", "name": "y"}), r"categories\[1\]"),
        (
            lambda d: d["annotations"].extend([{"id": 7, "image_id": 1, "category_id": 3, "bbox": [0, 0, 1, 1]}] * 2),
            r"annotations\[1\].id = 7 is not unique",
        ),
        (
            lambda d: d["annotations"].append({"image_id": 1, "category_id": 3, "bbox": [0, 0, 1, 1]}),
            r"annotations\[0\].id is missing",
        ),
    ],
)
def test_malformed_annotations_name_file_and_field(tmp_path, mutate, fragment):
    path = make_dataset(tmp_path)
    data = json.loads(path.read_text())
    mutate(data)
    path.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=f"{path}: {fragment}"):
        load_coco(path)


def test_invalid_json_names_the_file(tmp_path):
    path = tmp_path / "ann.json"
    path.write_text('{"images": [')
    with pytest.raises(DatasetError, match=f"{path}: not valid JSON"):
        load_coco(path)


def test_missing_annotation_file_and_image_dir(tmp_path):
    with pytest.raises(DatasetError, match="annotation file does not exist"):
        load_coco(tmp_path / "absent.json")
    with pytest.raises(DatasetError, match="image directory does not exist"):
        CocoDetection(tmp_path / "nodir", make_dataset(tmp_path))


def test_empty_dataset_is_an_error(tmp_path):
    with pytest.raises(DatasetError, match="has no images"):
        CocoDetection(tmp_path, make_dataset(tmp_path, images=[]))


def test_truncated_image_is_skipped_and_counted_or_an_error(tmp_path, coco_paths):
    images, ann_file = coco_paths
    data = json.loads(ann_file.read_text())
    for name in ("a.jpg", "b.jpg"):
        (tmp_path / name).write_bytes((images / data["images"][0]["file_name"]).read_bytes())
    good = (tmp_path / "a.jpg").read_bytes()
    (tmp_path / "b.jpg").write_bytes(good[: len(good) // 2])  # truncated
    imgs = [
        {"id": 1, "file_name": "a.jpg", "width": data["images"][0]["width"], "height": data["images"][0]["height"]},
        {"id": 2, "file_name": "b.jpg", "width": 20, "height": 10},
    ]
    path = make_dataset(tmp_path, images=imgs)
    ds = CocoDetection(tmp_path, path)
    batch = collate_skipping_bad([ds[0], ds[1]])
    assert batch["skipped"] == 1 and len(batch["image"]) == 1
    strict = CocoDetection(tmp_path, path, on_bad_image="error")
    with pytest.raises(BadImageError, match="b.jpg: cannot decode image"):
        strict[1]


def test_an_image_not_the_size_its_annotation_says_or_too_elongated_is_skipped_or_an_error(tmp_path):
    from PIL import Image

    Image.new("RGB", (40, 30)).save(tmp_path / "right.png")
    Image.new("RGB", (30, 40)).save(tmp_path / "rotated.png")  # e.g. rotated on disk after annotation
    Image.new("RGB", (400, 10)).save(tmp_path / "strip.png")
    imgs = [
        {"id": 1, "file_name": "right.png", "width": 40, "height": 30},
        {"id": 2, "file_name": "rotated.png", "width": 40, "height": 30},
        {"id": 3, "file_name": "strip.png", "width": 400, "height": 10},
    ]
    path = make_dataset(tmp_path, images=imgs)
    ds = CocoDetection(tmp_path, path, max_aspect=10)
    assert ds[0] is not None and ds[1] is None and ds[2] is None
    assert CocoDetection(tmp_path, path)[2] is not None  # no limit by default
    strict = CocoDetection(tmp_path, path, on_bad_image="error", max_aspect=10)
    with pytest.raises(BadImageError, match=r"rotated.png: image is 30x40 but ann.json says 40x30"):
        strict[1]
    with pytest.raises(BadImageError, match=r"strip.png: aspect ratio 40:1 is above the model's 10:1"):
        strict[2]


def test_the_memory_cache_returns_the_read_sample_and_stops_at_its_byte_cap(coco_paths):
    images, ann_file = coco_paths
    read = CocoDetection(images, ann_file)
    one_image = read[0]["image"].nbytes
    cached = CocoDetection(images, ann_file, cache_bytes=2 * one_image)
    for index in (0, 1, 2, 0, 1, 2):
        a, b = cached[index], read[index]
        assert torch.equal(a["image"], b["image"]) and a["target"]["image_id"] == b["target"]["image_id"]
        assert torch.equal(a["target"]["boxes"], b["target"]["boxes"])
    assert sorted(cached._cache) == [0, 1]  # the third image would pass the cap: read each time
    cached[0]["target"]["extra"] = 1  # a caller's change to a sample's target stays out of the cache
    assert "extra" not in cached[0]["target"]
