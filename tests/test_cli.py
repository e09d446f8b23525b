import subprocess
import sys

from pycocotools.coco import COCO

from siamdetr.cli import main


def no_params(tmp_path) -> str:
    """An empty params file: the profile's values only (a missing --params file is an error)."""
    path = tmp_path / "none.yaml"
    path.write_text("")
    return str(path)


def test_help_lists_the_stages():
    out = subprocess.run(
        [sys.executable, "-m", "siamdetr.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "data" in out and "config" in out


def test_data_synth_writes_the_three_trees(tmp_path, capsys):
    out = tmp_path / "synth"
    assert (
        main(
            [
                "data",
                "synth",
                "--out",
                str(out),
                "--profile",
                "smoke",
                "--seed",
                "1",
                "--params",
                no_params(tmp_path),
            ]
        )
        == 0
    )
    assert (out / "imagenet_like").is_dir() and (out / "VOCdevkit/VOC2007/Annotations").is_dir()
    assert COCO(str(out / "coco_like/annotations/instances_val2017.json")).getImgIds()
    assert "wrote" in capsys.readouterr().out


def test_bad_config_is_one_line_and_exit_code_2(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text("pretrain: {tau: 2}\n")
    assert main(["config", "show", "--params", str(params)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"siamdetr: error: {params}: pretrain.tau = 2.0: must be in the open interval (0, 1)"


def test_config_show_names_sources(tmp_path, capsys):
    assert main(["config", "show", "--params", no_params(tmp_path), "--set", "pretrain.tau=0.6"]) == 0
    out = capsys.readouterr().out
    assert "tau: 0.6  # --set" in out and "tiny.yaml" in out


def test_evaluate_command_matches_pycocotools(synth_root, tmp_path, capsys):
    import contextlib
    import io
    import json

    from pycocotools.cocoeval import COCOeval

    gt_path = synth_root / "coco_like/annotations/instances_val2017.json"
    gt = json.loads(gt_path.read_text())
    gt["info"].pop("area_scale")  # plain COCO areas, as pycocotools uses them
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    dets = [
        {
            "image_id": a["image_id"],
            "category_id": a["category_id"],
            "score": 0.9 - 0.01 * (i % 7),
            "bbox": [a["bbox"][0] + i % 3, a["bbox"][1], a["bbox"][2], a["bbox"][3] + i % 2],
        }
        for i, a in enumerate(gt["annotations"])
    ]
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    out = tmp_path / "metrics.json"
    assert (
        main(
            [
                "evaluate",
                "--gt",
                str(tmp_path / "gt.json"),
                "--detections",
                str(tmp_path / "dets.json"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    metrics = json.loads(out.read_text())
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(tmp_path / "gt.json"))
        e = COCOeval(coco, coco.loadRes(str(tmp_path / "dets.json")), "bbox")
        e.evaluate()
        e.accumulate()
        e.summarize()
    for i, key in enumerate(("AP", "AP50", "AP75", "APs", "APm", "APl")):
        expected = None if e.stats[i] == -1 else e.stats[i] * 100
        assert (metrics[key] is None) == (expected is None)
        if expected is not None:
            assert abs(metrics[key] - expected) < 1e-6
    assert len(metrics["AP_per_iou"]) == 10
    assert "AP50" in capsys.readouterr().out


def test_evaluate_command_names_a_bad_detections_file(synth_root, tmp_path, capsys):
    bad = tmp_path / "dets.json"
    bad.write_text('[{"image_id": 1}]')
    gt = synth_root / "coco_like/annotations/instances_val2017.json"
    assert main(["evaluate", "--gt", str(gt), "--detections", str(bad), "--out", str(tmp_path / "m.json")]) == 2
    assert str(bad) in capsys.readouterr().err


def test_evaluate_refuses_ground_truth_with_a_repeated_annotation_id(synth_root, tmp_path, capsys):
    import json

    gt = json.loads((synth_root / "coco_like/annotations/instances_val2017.json").read_text())
    gt["annotations"][1]["id"] = gt["annotations"][0]["id"]  # pycocotools would keep one of the two
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dets.json").write_text("[]")
    args = ["evaluate", "--gt", str(tmp_path / "gt.json"), "--detections", str(tmp_path / "dets.json")]
    assert main([*args, "--out", str(tmp_path / "m.json")]) == 2
    err = capsys.readouterr().err
    assert "annotations[1].id" in err and "not unique" in err and "Traceback" not in err
    assert not (tmp_path / "m.json").exists()


def test_proposals_command_on_any_folder(synth_root, tmp_path, capsys):
    from siamdetr.proposals.store import ProposalStore

    out = tmp_path / "store"
    assert (
        main(
            [
                "proposals",
                "--method",
                "random",
                "--images",
                str(synth_root / "coco_like/val2017"),
                "--out",
                str(out),
                "--workers",
                "1",
                "--params",
                no_params(tmp_path),
                "--profile",
                "smoke",
            ]
        )
        == 0
    )
    store = ProposalStore.open(out)
    assert len(store) == 8 and store[next(iter(store))][0].shape[1] == 4
    assert "8 images (0 skipped" in capsys.readouterr().out
    assert main(["proposals", "--images", str(synth_root), "--params", no_params(tmp_path)]) == 2


def test_help_says_how_to_choose_a_method_a_variant_and_a_profile(capsys):
    from pathlib import Path

    import pytest

    def help_of(*argv):
        with pytest.raises(SystemExit):
            main([*argv, "--help"])
        return " ".join(capsys.readouterr().out.split())

    pretrain = help_of("pretrain")
    for word in ("siamese", "updetr", "detreg", "region_detection=multi | single", "R-C+G", "edgeboxes"):
        assert word in pretrain
    finetune = help_of("finetune")
    for variant in ("vanilla", "conditional", "deform_ss", "deform_ms"):
        assert f"{variant} (" in finetune
    profiles = sorted(p.stem for p in (Path(__file__).parents[1] / "siamdetr" / "profiles").glob("*.yaml"))
    assert all(f"{name} (" in finetune for name in profiles), profiles
