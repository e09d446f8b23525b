import re
from pathlib import Path

import pytest

from siamdetr.config import ConfigError, describe, load_config


def write(tmp_path: Path, text: str, name: str = "params.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


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


def test_params_hash_changes_with_a_value():
    a = load_config(params=None)
    b = load_config(params=None, overrides=["pretrain.tau=0.7"])
    assert a.params_hash() != b.params_hash()
    assert a.params_hash() == load_config(params=None).params_hash()


@pytest.mark.parametrize(
    ("yaml_text", "key", "fragment"),
    [
        ("pretrain: {tau: 1.5}", "pretrain.tau", "(0, 1)"),
        ("pretrain: {tau: 0}", "pretrain.tau", "(0, 1)"),
        ("pretrain: {tau: 1.0}", "pretrain.tau", "(0, 1)"),
        ("pretrain: {lambda_r: -1}", "pretrain.lambda_r", ">= 0"),
        ("pretrain: {lambda_g: -0.5}", "pretrain.lambda_g", ">= 0"),
        ("pretrain: {lambda_loc: -2}", "pretrain.lambda_loc", ">= 0"),
        ("pretrain: {n_proposals: 0}", "pretrain.n_proposals", ">= 1"),
        ("pretrain: {updetr: {mask_ratio: 1.5}}", "pretrain.updetr.mask_ratio", "[0, 1]"),
        ("pretrain: {detreg: {embed_level: C2}}", "pretrain.detreg.embed_level", "one of 'C3', 'C4', 'C5'"),
        ("pretrain: {batch_size: 0}", "pretrain.batch_size", ">= 1"),
        ("finetune: {batch_size: -3}", "finetune.batch_size", ">= 1"),
        ("finetune: {batch_size: abc}", "finetune.batch_size", "expected an integer"),
        ("finetune: {batch_size: 2.5}", "finetune.batch_size", "expected an integer"),
        ("finetune: {batch_size: true}", "finetune.batch_size", "expected an integer"),
        ("finetune: {lr: fast}", "finetune.lr", "expected a number"),
        ("data: {synthetic: 'yes'}", "data.synthetic", "expected true or false"),
        ("data: {on_bad_image: ignore}", "data.on_bad_image", "one of 'skip', 'error'"),
        ("data: {voc_train_years: 2007}", "data.voc_train_years", "expected a list"),
        ("data: {voc_train_years: [2007, x]}", "data.voc_train_years[1]", "expected an integer"),
        ("seed: -1", "seed", "must be in [0, 2**31)"),
        ("seed: 99999999999999999999", "seed", "must be in [0, 2**31)"),
        ("finetune: {lr: .inf}", "finetune.lr", "expected a finite number"),
        ("finetune: {lr: .nan}", "finetune.lr", "expected a finite number"),
        ("finetune: {lr: 1e30}", "finetune.lr", "must be in (0, 1]"),
        ("pretrain: {lr: 0}", "pretrain.lr", "must be in (0, 1]"),
    ],
)
def test_a_bad_value_is_one_error_naming_file_and_key(tmp_path, yaml_text, key, fragment):
    params = write(tmp_path, yaml_text)
    with pytest.raises(ConfigError) as err:
        load_config(params)
    msg = str(err.value)
    assert msg.startswith(f"{params}: {key} = ")
    assert fragment in msg


def test_the_baselines_default_to_their_published_recipes_and_detreg_needs_its_targets_in_the_store():
    cfg = load_config(params=None, profile="paper")
    u, d = cfg.pretrain.updetr, cfg.pretrain.detreg
    assert (u.num_patches, u.min_patch, u.mask_ratio, u.lambda_r) == (10, 8, 0.1, 1.0)
    assert (d.num_targets, d.embed_level, d.lambda_embed, d.crop) == (30, "C3", 1.0, True)
    assert cfg.proposals.ss_square == 128
    with pytest.raises(ConfigError, match=r"proposals.top_k = 20 is below pretrain.detreg.num_targets = 30"):
        load_config(params=None, profile="paper", overrides=["pretrain.method=detreg", "proposals.top_k=20"])
    load_config(params=None, profile="paper", overrides=["pretrain.method=siamese", "proposals.top_k=20"])


def test_unknown_key_is_named_with_a_suggestion(tmp_path):
    params = write(tmp_path, "pretrain: {taux: 0.5}")
    with pytest.raises(ConfigError, match=r"params.yaml: unknown key 'pretrain.taux'; did you mean 'pretrain.tau'"):
        load_config(params)


def test_unknown_section_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'pretrian'"):
        load_config(write(tmp_path, "pretrian: {tau: 0.5}"))


def test_section_must_be_a_mapping(tmp_path):
    with pytest.raises(ConfigError, match="pretrain: expected a mapping"):
        load_config(write(tmp_path, "pretrain: 3"))


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


def test_malformed_yaml_names_the_file(tmp_path):
    params = write(tmp_path, "pretrain: {tau: [0.5\n")
    with pytest.raises(ConfigError, match=f"{params}: not valid YAML"):
        load_config(params)


def test_top_level_must_be_a_mapping(tmp_path):
    with pytest.raises(ConfigError, match="expected a mapping of sections"):
        load_config(write(tmp_path, "- a\n- b\n"))


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
    path = Path(__file__).parents[1] / "params.yaml"
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


@pytest.mark.parametrize(
    ("sets", "fragment"),
    [
        (["finetune.test_size=8"], "finetune.test_size = 8 is below the small backbone's stride of 16"),
        (["finetune.train_scales=[4]"], "finetune.train_scales = 4 is below"),
        (["pretrain.short_min=12", "pretrain.short_max=12"], "pretrain.short_min = 12 is below"),
        (["model.dilation=true", "finetune.crop_min=4"], "stride of 8 pixels"),
        (["finetune.test_size=80"], "finetune.max_size = 80 must exceed finetune.test_size (80)"),
        (["pretrain.short_min=500", "pretrain.short_max=400"], "short_min <= short_max <= max_size"),
    ],
)
def test_image_sizes_the_model_cannot_see_are_refused(sets, fragment):
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        load_config(params=None, profile="smoke", overrides=sets)
