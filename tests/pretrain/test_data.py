"""Pretraining samples: an image too elongated for the model is skipped and counted, not a crash in the views."""

import numpy as np
import pytest
from PIL import Image

from siamdetr.config import load_config
from siamdetr.errors import BadImageError
from siamdetr.pretrain.data import collate_views
from siamdetr.proposals.runner import run_proposals
from siamdetr.proposals.store import ProposalStore
from siamdetr.stages.pretrain import pretrain_dataset


def test_an_image_too_elongated_for_the_model_is_skipped_or_an_error(tmp_path):
    (tmp_path / "n01").mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "n01" / "a.png")
    Image.fromarray(rng.integers(0, 255, (10, 1000, 3), dtype=np.uint8)).save(tmp_path / "n01" / "strip.png")
    run_proposals("random", tmp_path, tmp_path / "store", workers=1, top_k=8)
    store = ProposalStore.open(tmp_path / "store")
    cfg = load_config(params=None, profile="smoke")  # max_size 80 / stride 16: at most 5:1
    images = pretrain_dataset(cfg, tmp_path, store)
    assert [p.name for p in images.paths] == ["a.png", "strip.png"]
    batch = collate_views([images[0], images[1]])
    assert batch["skipped"] == 1 and len(batch["views"][0].sizes) == 1
    strict = pretrain_dataset(
        load_config(params=None, profile="smoke", overrides=["data.on_bad_image=error"]), tmp_path, store
    )
    with pytest.raises(BadImageError, match=r"strip.png: aspect ratio 100:1 is above the model's 5:1"):
        strict[1]
