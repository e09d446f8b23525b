import json

import pytest
from pycocotools.coco import COCO

from siamdetr.config import ConfigError, load_config
from siamdetr.stages.data import run as prepare_data


def test_synthetic_prepare_writes_manifest_with_every_dataset(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(params=None, profile="smoke")
    manifest = prepare_data(cfg)
    assert json.loads((tmp_path / "data/prepared/manifest.json").read_text()) == manifest
    assert manifest["imagenet"]["n_images"] == cfg.data.synth.imagenet_images
    for dataset, split, n in (
        ("coco", "train", cfg.data.synth.coco_train),
        ("coco", "val", cfg.data.synth.coco_val),
        ("voc", "train", cfg.data.synth.voc_trainval),
        ("voc", "test", cfg.data.synth.voc_test),
    ):
        entry = manifest[dataset][split]
        assert entry["n_images"] == n
        assert len(COCO(entry["annotations"]).getImgIds()) == n
    assert not list((tmp_path / "data").glob(".*partial"))


def test_real_data_mode_reads_the_users_roots(tmp_path, monkeypatch, synth_root):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(
        params=None,
        profile="smoke",
        overrides=[
            "data.synthetic=false",
            f"data.voc_root={synth_root / 'VOCdevkit'}",
            "data.voc_train_years=[2007]",
            f"data.coco_root={synth_root / 'coco_like'}",
        ],
    )
    manifest = prepare_data(cfg)
    assert "imagenet" not in manifest
    assert manifest["voc"]["train"]["images"] == str(synth_root / "VOCdevkit")
    assert manifest["coco"]["val"]["annotations"] == str(synth_root / "coco_like/annotations/instances_val2017.json")
    assert not (tmp_path / "data/prepared/synthetic").exists()


@pytest.mark.parametrize(("protocol", "crowd"), [("official", False), ("voc_standard", True)])
def test_voc_protocol_decides_whether_difficult_objects_count(tmp_path, monkeypatch, synth_root, protocol, crowd):
    monkeypatch.chdir(tmp_path)
    overrides = ["data.synthetic=false", f"data.voc_root={synth_root / 'VOCdevkit'}", "data.voc_train_years=[2007]"]
    cfg = load_config(params=None, profile="smoke", overrides=[*overrides, f"data.voc_protocol={protocol}"])
    manifest = prepare_data(cfg)
    assert manifest["voc"]["protocol"] == protocol
    anns = COCO(manifest["voc"]["train"]["annotations"]).dataset["annotations"]
    assert any(a["difficult"] for a in anns)
    assert all(bool(a["iscrowd"]) == (crowd and bool(a["difficult"])) for a in anns)
    assert manifest["voc"]["train"]["n_crowd"] == (sum(a["difficult"] for a in anns) if crowd else 0)


def test_real_data_mode_without_roots_is_a_config_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(params=None, profile="smoke", overrides=["data.synthetic=false"])
    with pytest.raises(ConfigError, match="there is no data to prepare"):
        prepare_data(cfg)
