import subprocess
import sys

from pycocotools.coco import COCO

from siamdetr.cli import main


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
                str(tmp_path / "none.yaml"),
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
    assert main(["config", "show", "--params", str(tmp_path / "none.yaml"), "--set", "pretrain.tau=0.6"]) == 0
    out = capsys.readouterr().out
    assert "tau: 0.6  # --set" in out and "tiny.yaml" in out
