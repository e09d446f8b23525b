"""The sections' checks and defaults (config/schema.py), seen through loading a params file."""

import re

import pytest

from siamdetr.config import ConfigError, load_config
from tests.config.conftest import write


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
