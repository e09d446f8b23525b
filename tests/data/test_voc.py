import json

import pytest
from pycocotools.coco import COCO

from siamdetr.data.coco import CocoDetection
from siamdetr.data.synthetic import VOC_CLASSES, render, voc_stem
from siamdetr.data.voc import VOC_CLASSES as STANDARD_CLASSES
from siamdetr.data.voc import voc_box_to_coco, voc_to_coco
from siamdetr.errors import DatasetError


def obj(name, box, difficult=0, truncated=0):
    xmin, ymin, xmax, ymax = box
    return (
        f"<object><name>{name}</name><truncated>{truncated}</truncated><difficult>{difficult}</difficult>"
        f"<bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox>"
        "</object>"
    )


def make_devkit(root, images, year=2007, split="trainval", classes=None):
    """images: {stem: [object xml, ...]}; every image is 50x40."""
    base = root / f"VOC{year}"
    (base / "Annotations").mkdir(parents=True)
    (base / "ImageSets" / "Main").mkdir(parents=True)
    (base / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{s}\n" for s in images))
    for c in classes or []:
        (base / "ImageSets" / "Main" / f"{c}_{split}.txt").write_text("")
    for stem, objects in images.items():
        xml = (
            f"<annotation><filename>{stem}.jpg</filename><size><width>50</width><height>40</height>"
            f"<depth>3</depth></size>{''.join(objects)}</annotation>"
        )
        (base / "Annotations" / f"{stem}.xml").write_text(xml)
    return root


def test_official_boxes_take_the_corners_as_they_are():
    # VOC2007 test 000001's dog (xmin 48, ymin 240, xmax 195, ymax 371) in the official
    # voc_test2007.cocostyle.json (Zx55/SiameseDETR, data/datasets/voc_meta): [48, 240, 147, 131]
    assert voc_box_to_coco((48, 240, 195, 371)) == [48.0, 240.0, 147.0, 131.0]
    assert voc_box_to_coco((5, 7, 5, 7)) == [5.0, 7.0, 0.0, 0.0]


def test_voc_standard_boxes_make_one_based_corners_zero_based():
    assert voc_box_to_coco((1, 1, 10, 20), "voc_standard") == [0.0, 0.0, 10.0, 20.0]
    assert voc_box_to_coco((5, 7, 5, 7), "voc_standard") == [4.0, 6.0, 1.0, 1.0]  # a single pixel is 1x1


def difficult_devkit(root):
    return make_devkit(
        root,
        {
            "000001": [obj("dog", (1, 1, 50, 40)), obj("cat", (11, 6, 20, 15), difficult=1, truncated=1)],
            "000002": [],
        },
    )


def test_official_protocol_keeps_difficult_objects_as_ground_truth(tmp_path):
    data, stats = voc_to_coco(difficult_devkit(tmp_path), [2007], "trainval")
    assert [c["name"] for c in data["categories"]] == list(STANDARD_CLASSES)  # no per-class lists: VOC's 20
    assert [im["file_name"] for im in data["images"]] == [
        "VOC2007/JPEGImages/000001.jpg",
        "VOC2007/JPEGImages/000002.jpg",
    ]
    assert data["info"]["voc_protocol"] == "official"
    dog, cat = data["annotations"]
    assert dog["bbox"] == [1.0, 1.0, 49.0, 39.0] and dog["iscrowd"] == 0 and dog["difficult"] == 0
    assert cat["bbox"] == [11.0, 6.0, 9.0, 9.0] and cat["iscrowd"] == 0 and cat["difficult"] == 1
    assert cat["truncated"] == 1 and cat["area"] == 81.0  # area = w * h, as the official json
    names = {c["id"]: c["name"] for c in data["categories"]}
    assert (names[dog["category_id"]], names[cat["category_id"]]) == ("dog", "cat")
    assert (stats.clipped, stats.dropped) == (0, 0)


def test_voc_standard_protocol_ignores_difficult_objects(tmp_path):
    data, stats = voc_to_coco(difficult_devkit(tmp_path), [2007], "trainval", protocol="voc_standard")
    assert data["info"]["voc_protocol"] == "voc_standard"
    dog, cat = data["annotations"]
    assert dog["bbox"] == [0.0, 0.0, 50.0, 40.0] and dog["iscrowd"] == 0
    assert cat["bbox"] == [10.0, 5.0, 10.0, 10.0] and cat["iscrowd"] == 1 and cat["difficult"] == 1
    assert cat["truncated"] == 1 and cat["area"] == 100.0
    assert (stats.clipped, stats.dropped) == (0, 0)


def test_unknown_protocol_is_refused(tmp_path):
    with pytest.raises(ValueError, match="protocol = 'voc2012'"):
        voc_to_coco(difficult_devkit(tmp_path), [2007], "trainval", protocol="voc2012")


def test_difficult_objects_are_training_targets_only_under_the_official_protocol(tmp_path):
    devkit = difficult_devkit(tmp_path)
    (devkit / "VOC2007" / "JPEGImages").mkdir()
    counts = {}
    for protocol in ("official", "voc_standard"):
        path = tmp_path / f"{protocol}.json"
        path.write_text(json.dumps(voc_to_coco(devkit, [2007], "trainval", protocol=protocol)[0]))
        ds = CocoDetection(devkit, path)
        counts[protocol] = sum(len(ds.target(i)["labels"]) for i in ds.ids)
    assert counts == {"official": 2, "voc_standard": 1}


def test_class_list_from_the_devkit_or_given(tmp_path):
    devkit = make_devkit(tmp_path, {"a": [obj("zebra", (1, 1, 5, 5))]}, classes=["zebra", "yak"])
    data, _ = voc_to_coco(devkit, [2007], "trainval")
    assert [c["name"] for c in data["categories"]] == ["yak", "zebra"]
    data, _ = voc_to_coco(devkit, [2007], "trainval", classes=["zebra", "yak"])
    assert [c["name"] for c in data["categories"]] == ["zebra", "yak"]


def test_two_years_in_one_json(tmp_path):
    make_devkit(tmp_path, {"000001": [obj("dog", (1, 1, 5, 5))]}, year=2007)
    make_devkit(tmp_path, {"2008_000001": [obj("cat", (2, 2, 6, 6))]}, year=2012)
    data, _ = voc_to_coco(tmp_path, [2007, 2012], "trainval")
    assert [im["file_name"] for im in data["images"]] == [
        "VOC2007/JPEGImages/000001.jpg",
        "VOC2012/JPEGImages/2008_000001.jpg",
    ]
    assert len({im["id"] for im in data["images"]}) == 2


def test_bad_boxes_are_clipped_or_dropped_and_counted(tmp_path):
    devkit = make_devkit(
        tmp_path, {"a": [obj("dog", (40, 30, 60, 45)), obj("dog", (10, 10, 5, 20)), obj("dog", (3, 3, 8, 8))]}
    )
    data, stats = voc_to_coco(devkit, [2007], "trainval")
    assert (stats.clipped, stats.dropped) == (1, 1)
    assert [a["bbox"] for a in data["annotations"]] == [[40.0, 30.0, 10.0, 10.0], [3.0, 3.0, 5.0, 5.0]]
    data, stats = voc_to_coco(devkit, [2007], "trainval", protocol="voc_standard")
    assert (stats.clipped, stats.dropped) == (1, 1)
    assert [a["bbox"] for a in data["annotations"]] == [[39.0, 29.0, 11.0, 11.0], [2.0, 2.0, 6.0, 6.0]]


@pytest.mark.parametrize(
    ("xml", "fragment"),
    [
        ("<annotation><size><width>5</width>", "malformed XML"),
        ("<annotation></annotation>", "missing <size>"),
        ("<annotation><size><width>5</width><height>x</height></size></annotation>", "<height> = 'x'"),
        (
            "<annotation><size><width>5</width><height>5</height></size><object><name>dog</name></object></annotation>",
            "no <bndbox>",
        ),
    ],
)
def test_malformed_xml_names_the_file(tmp_path, xml, fragment):
    devkit = make_devkit(tmp_path, {"bad": []})
    path = devkit / "VOC2007" / "Annotations" / "bad.xml"
    path.write_text(xml)
    with pytest.raises(DatasetError) as err:
        voc_to_coco(devkit, [2007], "trainval")
    assert str(err.value).startswith(f"{path}: ") and fragment in str(err.value)


def test_unknown_class_missing_annotation_split_and_year(tmp_path):
    devkit = make_devkit(tmp_path, {"a": [obj("unicorn", (1, 1, 2, 2))], "b": []})
    with pytest.raises(DatasetError, match="a.xml: class 'unicorn'"):
        voc_to_coco(devkit, [2007], "trainval")
    (devkit / "VOC2007" / "Annotations" / "a.xml").unlink()
    (devkit / "VOC2007" / "ImageSets" / "Main" / "trainval.txt").write_text("b\na\n")
    with pytest.raises(DatasetError, match="a.xml: annotation file does not exist"):
        voc_to_coco(devkit, [2007], "trainval")
    with pytest.raises(DatasetError, match="test.txt: image list for split 'test' does not exist"):
        voc_to_coco(devkit, [2007], "test")
    with pytest.raises(DatasetError, match="VOC2012: VOC year directory does not exist"):
        voc_to_coco(devkit, [2012], "trainval")
    with pytest.raises(DatasetError, match="VOCdevkit directory does not exist"):
        voc_to_coco(tmp_path / "nowhere", [2007], "trainval")


def test_empty_split_is_an_error(tmp_path):
    devkit = make_devkit(tmp_path, {})
    with pytest.raises(DatasetError, match="lists no images"):
        voc_to_coco(devkit, [2007], "trainval")


@pytest.mark.parametrize("protocol", ["official", "voc_standard"])
def test_synthetic_devkit_round_trips_to_the_generated_boxes(synth_root, synth_cfg, tmp_path, protocol):
    """The generator writes VOC's 1-based inclusive corners of 0-based pixel boxes [x0, x1): voc_standard gives
    the boxes back; official keeps the corners as they are, one pixel in from x0 and y0, as on real VOC."""
    data, stats = voc_to_coco(synth_root / "VOCdevkit", [2007], "trainval", protocol=protocol)
    assert [c["name"] for c in data["categories"]] == sorted(VOC_CLASSES)
    path = tmp_path / "voc.json"
    path.write_text(json.dumps(data))
    coco = COCO(str(path))  # pycocotools opens the converted json
    assert len(coco.getImgIds()) == synth_cfg.voc_trainval
    names = {c["id"]: c["name"] for c in data["categories"]}
    shift = 1 if protocol == "official" else 0
    n_difficult = 0
    for index in range(synth_cfg.voc_trainval):
        _, meta = render("voc_trainval", index, seed=0, cfg=synth_cfg)
        image_id = next(im["id"] for im in data["images"] if voc_stem("voc_trainval", index) in im["file_name"])
        got = sorted((names[a["category_id"]], tuple(a["bbox"]), a["iscrowd"]) for a in coco.imgToAnns[image_id])
        want = sorted(
            (
                VOC_CLASSES[o.label],
                (o.bbox[0] + shift, o.bbox[1] + shift, o.bbox[2] - o.bbox[0] - shift, o.bbox[3] - o.bbox[1] - shift),
                int(o.difficult) if protocol == "voc_standard" else 0,
            )
            for o in meta.objects
        )
        assert got == [(n, tuple(float(v) for v in b), c) for n, b, c in want]
        n_difficult += sum(o.difficult for o in meta.objects)
    assert n_difficult > 0


def test_cli_voc2coco(synth_root, tmp_path, capsys):
    from siamdetr.cli import main

    out = tmp_path / "voc_test.json"
    assert (
        main(
            [
                "data",
                "voc2coco",
                "--devkit",
                str(synth_root / "VOCdevkit"),
                "--years",
                "2007",
                "--split",
                "test",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert len(COCO(str(out)).getImgIds()) == 6
    assert "difficult, kept as ground truth" in capsys.readouterr().out


def test_xml_text_may_hold_float_coordinates(tmp_path):
    devkit = make_devkit(tmp_path, {"a": [obj("dog", ("1.0", "2.0", "10.0", "12.0"))]})
    data, _ = voc_to_coco(devkit, [2007], "trainval")
    assert data["annotations"][0]["bbox"] == [1.0, 2.0, 9.0, 10.0]
