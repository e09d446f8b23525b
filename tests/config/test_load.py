"""Layers, sources, profiles, paths and errors of loading a config (config/load.py)."""

from pathlib import Path

import pytest

from siamdetr.config import ConfigError, describe, load_config
from tests.config.conftest import write


def test_defaults_come_from_the_tiny_profile():
    cfg = load_config(params=None)
    assert cfg.profile == "tiny"
    assert cfg.data.synthetic is True
    assert cfg.data.synth.image_size == 64
    assert cfg.source_of("data.synth.image_size").endswith("tiny.yaml")


@pytest.mark.parametrize("profile", ["tiny", "tiny-all", "smoke", "paper"])
def test_every_profile_loads(profile):
    cfg = load_config(params=None, profile=profile)
    assert cfg.profile == profile


def test_params_override_the_profile_and_are_named_as_source(tmp_path):
    params = write(tmp_path, "profile: smoke\npretrain:\n  tau: 0.7\n")
    cfg = load_config(params)
    assert cfg.profile == "smoke"
    assert cfg.pretrain.tau == 0.7
    assert cfg.source_of("pretrain.tau") == str(params)
    assert cfg.data.synth.image_size == 64  # untouched keys keep the profile's value
    assert "tau: 0.7  # " + str(params) in describe(cfg)


def test_layers_apply_in_order_params_experiment_set(tmp_path):
    params = write(tmp_path, "pretrain: {tau: 0.6, lambda_g: 2}\n")
    exp = write(tmp_path, "pretrain: {tau: 0.7}\n", "exp.yaml")
    cfg = load_config(params, experiments=[exp], overrides=["pretrain.lambda_g=0.3"])
    assert (cfg.pretrain.tau, cfg.pretrain.lambda_g) == (0.7, 0.3)
    assert cfg.source_of("pretrain.tau") == str(exp)
    assert cfg.source_of("pretrain.lambda_g") == "--set"


def test_yaml_exponent_without_dot_is_read_as_a_number(tmp_path):
    cfg = load_config(write(tmp_path, "finetune: {lr: 2e-4}\n"))
    assert cfg.finetune.lr == pytest.approx(2e-4)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("pretrain: {taux: 0.5}", "unknown key 'pretrain.taux'; did you mean 'pretrain.tau'"),
        ("pretrian: {tau: 0.5}", "unknown key 'pretrian'"),
        ("pretrain: 3", "pretrain: expected a mapping"),
        ("pretrain: {tau: [0.5\n", "not valid YAML"),
        ("- a\n- b\n", "expected a mapping of sections"),
    ],
)
def test_a_malformed_params_file_is_one_error_naming_it(tmp_path, text, message):
    params = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(params)
    assert str(err.value).startswith(f"{params}: ") and message in str(err.value)


def test_missing_input_path_is_named(tmp_path):
    params = write(tmp_path, f"data: {{synthetic: false, coco_root: {tmp_path / 'nope'}}}")
    with pytest.raises(ConfigError, match=r"params.yaml: data.coco_root = .*nope.*: path does not exist"):
        load_config(params)


def test_existing_input_path_is_accepted(tmp_path):
    cfg = load_config(write(tmp_path, f"data: {{synthetic: false, coco_root: {tmp_path}}}"))
    assert cfg.data_root("coco") == tmp_path


def test_real_data_root_that_is_not_set_is_a_clear_error(tmp_path):
    cfg = load_config(write(tmp_path, "data: {synthetic: false}"))
    with pytest.raises(ConfigError, match="data.voc_root is not set"):
        cfg.data_root("voc")


def test_synthetic_roots_live_under_prepared_dir():
    cfg = load_config(params=None)
    assert cfg.data_root("voc") == Path("data/prepared/synthetic/VOCdevkit")


def test_unknown_profile(tmp_path):
    with pytest.raises(ConfigError, match="profile 'huge' does not exist"):
        load_config(write(tmp_path, "profile: huge"))


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(params=None, overrides=["pretrain.tau"])


def test_override_error_names_set():
    with pytest.raises(ConfigError, match=r"^--set: pretrain.tau = 2"):
        load_config(params=None, overrides=["pretrain.tau=2"])


def test_no_params_file_is_allowed_but_an_unreadable_experiment_is_not(tmp_path):
    load_config(params=None)
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(params=None, experiments=[tmp_path / "absent.yaml"])


def test_repo_params_yaml_is_valid_and_names_the_default_profile():
    path = Path(__file__).parents[2] / "params.yaml"
    cfg = load_config(path)
    assert cfg.profile == "tiny" and cfg.source_of("profile") == str(path)


def test_paths_are_checked_only_for_the_sections_a_stage_reads(tmp_path):
    params = write(tmp_path, f"model: {{backbone_checkpoint: {tmp_path / 'later.pth'}}}")
    load_config(params, check_paths=("data",))  # written by an earlier stage: not there yet, not read here
    with pytest.raises(ConfigError, match="model.backbone_checkpoint = .*later.pth.*: path does not exist"):
        load_config(params, check_paths=("model",))


def test_a_profile_extends_another_and_a_cycle_is_an_error(tmp_path, monkeypatch):
    import siamdetr.config.load as config_load

    (tmp_path / "base.yaml").write_text("model: {d_model: 48, nheads: 4}\nfinetune: {epochs: 3}\n")
    (tmp_path / "child.yaml").write_text("extends: base\nfinetune: {epochs: 7}\n")
    (tmp_path / "loop.yaml").write_text("extends: loop\n")
    monkeypatch.setattr(config_load, "PROFILES_DIR", tmp_path)
    cfg = load_config(params=None, profile="child", check_paths=False)
    assert (cfg.model.d_model, cfg.model.nheads, cfg.finetune.epochs) == (48, 4, 7)
    assert cfg.source_of("model.d_model").endswith("base.yaml") and cfg.source_of("finetune.epochs").endswith(
        "child.yaml"
    )
    with pytest.raises(ConfigError, match="extends itself"):
        load_config(params=None, profile="loop", check_paths=False)


def test_a_params_file_named_but_missing_is_an_error_and_only_the_default_may_be_absent(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./params.yaml here
    assert load_config(Path("params.yaml"), "smoke", check_paths=False).profile == "smoke"
    with pytest.raises(ConfigError, match=r"missing\.yaml: params file not found"):
        load_config(tmp_path / "missing.yaml", "smoke", check_paths=False)


def test_the_cli_names_a_missing_params_file_in_one_line(tmp_path, monkeypatch, capsys):
    from siamdetr.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["config", "show", "--params", "typo.yaml"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        "siamdetr: error: typo.yaml: params file not found (only the default ./params.yaml may be absent)"
    )
