"""Each variant can fit a few synthetic images: the whole detector learns, end to end.

The schedule ends with DETR's tenfold lr drop: at a constant 1e-3 the loss still spiked late, so the AP50 of
the last step depended on the CPU's float kernels (100 here at step 300, 1.9 on CI's machine). With the drop,
conditional reached AP50 100 on seeds 0, 1, 2, 4, 5 and 83 on seed 3 (one object left unmatched), the other
variants 100 on seeds 0-2; a detector that does not learn stays below 30."""

import json

import pytest
import torch

from siamdetr.config import SynthConfig, load_config
from siamdetr.data.coco import CocoDetection
from siamdetr.data.images import collate_skipping_bad
from siamdetr.data.synthetic import write_synthetic
from siamdetr.data.transforms import eval_transforms
from siamdetr.data.voc import voc_to_coco
from siamdetr.engine.evaluate import coco_metrics
from siamdetr.engine.loop import one_drop_schedule, predict, to_device
from siamdetr.models.criterion import weighted_total
from siamdetr.models.variants import VARIANTS, build_detector
from siamdetr.stages.finetune import build_criterion

STEPS = 400
LR_DROP = 300
SIZES = [
    "model.d_model=64",
    "model.nheads=4",
    "model.enc_layers=2",
    "model.dec_layers=2",
    "model.dim_feedforward=128",
    "model.num_queries=16",
    "model.n_points=2",
    "model.dropout=0.0",
    "finetune.test_size=64",
]


@pytest.fixture(scope="module")
def four_images(tmp_path_factory):
    root = tmp_path_factory.mktemp("overfit")
    cfg = SynthConfig(
        image_size=64,
        imagenet_images=1,
        imagenet_classes=1,
        coco_train=1,
        coco_val=1,
        voc_trainval=4,
        voc_test=1,
        max_objects=3,
        min_object_side=12,  # a 5-px object is below what a stride-32 trunk can place
    )
    write_synthetic(root / "tree", cfg, seed=0, workers=1)
    data, _ = voc_to_coco(root / "tree" / "VOCdevkit", [2007], "trainval")
    (root / "voc.json").write_text(json.dumps(data))
    return root / "tree" / "VOCdevkit", root / "voc.json"


@pytest.mark.slow
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_variant_overfits_four_images(variant, four_images):
    torch.manual_seed(0)
    cfg = load_config(params=None, profile="smoke", overrides=[f"model.variant={variant}", *SIZES])
    ds = CocoDetection(*four_images, transforms=eval_transforms(cfg.finetune))
    batch = collate_skipping_bad([ds[i] for i in range(len(ds))])
    model = build_detector(cfg.model, len(ds.category_ids))
    criterion, weights = build_criterion(cfg, len(ds.category_ids))
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=1e-4)
    schedule = one_drop_schedule(optimizer, LR_DROP)  # stepped per step here, not per epoch
    images, mask, targets = to_device(batch, torch.device("cpu"))
    model.train()
    for _ in range(STEPS):
        loss = weighted_total(criterion(model(images, mask), targets), weights)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
    detections = predict(model, [batch], torch.device("cpu"), model.focal, ds.category_ids, show_progress=False)
    metrics = coco_metrics(ds.coco, detections)
    assert metrics["AP50"] >= 75.0, metrics
