"""One key per run: what a finished seed must match to be skipped and a checkpoint to be resumed."""

import torch

from siamdetr.config import load_config
from siamdetr.run_hash import run_hash


def test_the_key_follows_what_a_run_depends_on(tmp_path):
    def key(kind, *sets):
        return run_hash(load_config(params=None, profile="smoke", overrides=list(sets), check_paths=False), kind)

    siamese, updetr = "pretrain.method=siamese", "pretrain.method=updetr"
    assert key("pretrain", siamese) != key("pretrain", siamese, "pretrain.tau=0.7")
    assert key("pretrain", updetr) == key("pretrain", updetr, "pretrain.tau=0.7")  # UP-DETR has no views
    assert key("pretrain", updetr) == key("pretrain", updetr, "pretrain.lambda_r=1.0")  # Siamese DETR's L_r
    assert key("pretrain", updetr) != key("pretrain", updetr, "pretrain.updetr.lambda_r=3.0")
    assert key("pretrain", siamese) == key(
        "pretrain", siamese, "pretrain.updetr.mask_ratio=0", "pretrain.detreg.crop=false"
    )
    assert key("pretrain", "pretrain.method=detreg") != key(
        "pretrain", "pretrain.method=detreg", "pretrain.detreg.crop=false"
    )
    assert key("finetune") == key("finetune", "pretrain.tau=0.7")  # from scratch: pretraining is irrelevant
    assert key("finetune") == key("finetune", "finetune.out_dir=elsewhere", "finetune.num_workers=5")
    assert key("finetune") != key("finetune", "finetune.lr=2e-4")
    weights = tmp_path / "pretrained.pth"
    torch.save({"model": {"w": torch.zeros(2)}}, weights)
    before = key("finetune", f"finetune.init={weights}")
    torch.save({"model": {"w": torch.ones(2)}}, weights)  # the pretraining was retrained
    assert key("finetune", f"finetune.init={weights}") != before
    assert key("backbone") == key("backbone", "pretrain.lr=1e-3", "finetune.lr=2e-4", "model.num_queries=7")
    assert key("backbone") != key("backbone", "backbone.lr=1e-4") != key("backbone", "model.small_width=16")
    assert key("pretrain") == key("pretrain", "finetune.lr=2e-4", "backbone.out_dir=x")  # later stages' values
