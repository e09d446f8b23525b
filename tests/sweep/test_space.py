"""Bad sweep input is one clear line before any work: unknown keys, empty ranges, values the config
refuses, unreachable storages."""

import time

import pytest

from siamdetr.cli import main
from siamdetr.config import ConfigError
from siamdetr.sweep.space import load_space
from tests.sweep_workspace import ROOT, write_space

SHIPPED = ROOT / "experiments" / "sweep.yaml"


def test_the_shipped_sweep_file_searches_the_paper_weights_and_tau_around_their_values():
    space = load_space(SHIPPED)
    ranges = {r.key: r for r in space.ranges}
    assert set(ranges) == {"pretrain.lambda_r", "pretrain.lambda_g", "pretrain.lambda_loc", "pretrain.tau"}
    for key, paper in (("pretrain.lambda_r", 5.0), ("pretrain.lambda_g", 10.0), ("pretrain.lambda_loc", 1.0)):
        r = ranges[key]
        assert r.log and r.low < paper < r.high and r.high / r.low == pytest.approx(10, rel=0.01)
    assert (ranges["pretrain.tau"].low, ranges["pretrain.tau"].high, ranges["pretrain.tau"].log) == (0.3, 0.8, False)
    assert space.objective in {"AP", "AP50"} and space.top_k == 3


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"pretrain.lambda_r": {"low": 5.0, "high": 5.0}}, "empty range"),
        ({"pretrain.lambda_r": {"low": 0.0, "high": 5.0, "log": True}}, "log range needs low > 0"),
        ({"pretrain.lambda_r": {"low": 1.0}}, "expected {low: X, high: Y}"),
        ({}, "space: expected a mapping"),
    ],
)
def test_a_bad_range_names_the_file_and_the_key(tmp_path, space, message):
    (tmp_path / "experiments").mkdir()
    with pytest.raises(ConfigError, match=message) as e:
        load_space(write_space(tmp_path, space=space))
    assert "sweep.yaml" in str(e.value)


def run_cli(capsys, *args):
    code = main(["sweep", *args])
    err = capsys.readouterr().err
    return code, err


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"pretrain.lambda_rr": {"low": 1.0, "high": 2.0}}, "space.pretrain.lambda_rr"),
        ({"pretrain.tau": {"low": 0.3, "high": 1.2}}, "space.pretrain.tau = 1.2"),
        ({"pretrain.epochs": {"low": 1.0, "high": 2.0}}, "space.pretrain.epochs"),
    ],
)
def test_a_key_the_config_refuses_is_one_line_before_any_work(workspace, capsys, space, message):
    write_space(workspace, space=space)
    code, err = run_cli(capsys)
    assert code == 2 and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not list(workspace.glob("runs/sweeps/**/*.pth"))  # no trial trained


def test_an_unreachable_database_is_one_line_in_seconds(workspace, capsys):
    write_space(workspace)
    start = time.monotonic()
    code, err = run_cli(capsys, "--storage", "postgresql://someone:secret@127.0.0.1:1/optuna")
    assert code == 2 and "cannot open the study storage" in err and "Traceback" not in err
    assert "secret" not in err  # the password is not printed
    assert time.monotonic() - start < 30


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--storage", "nowhere"], "expected sqlite:///FILE"),
        (["--workers", "2"], "one SQLite file cannot serve several workers"),
        (["--study", "../escape"], "--study"),
        (["--space", "missing.yaml"], "missing.yaml: sweep file not found"),
    ],
)
def test_bad_command_line_values_are_one_line(workspace, capsys, args, message):
    write_space(workspace)
    code, err = run_cli(capsys, *args)
    assert code == 2 and message in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("pruner", "expected"),
    [
        ({"type": "median", "n_startup_trials": 2}, "MedianPruner"),
        ({"type": "hyperband", "reduction_factor": 2}, "HyperbandPruner"),
        ({"type": "none"}, "NopPruner"),
    ],
)
def test_the_pruner_is_the_one_the_file_names(tmp_path, pruner, expected):
    from siamdetr.stages.sweep import make_pruner

    (tmp_path / "experiments").mkdir()
    space = load_space(write_space(tmp_path, pruner=pruner))
    assert type(make_pruner(space)).__name__ == expected


def test_an_unknown_pruner_is_refused(tmp_path):
    (tmp_path / "experiments").mkdir()
    with pytest.raises(ConfigError, match="pruner.type: 'asha' is not one of median, hyperband, none"):
        load_space(write_space(tmp_path, pruner={"type": "asha"}))
