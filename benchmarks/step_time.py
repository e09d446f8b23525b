"""Seconds per fine-tuning step (forward, loss, backward, AdamW) of a profile's detector, one thread, on a
synthetic batch at the profile's largest training scale; and the same for the tiny profile as it was before
the tiny world was recalibrated (commit 213a5ef), so the two are measured in one run on one machine.

python benchmarks/step_time.py [--profile tiny] [--repeats 10]   → benchmarks/results/step_time.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from siamdetr.config import load_config
from siamdetr.io import atomic_write_text
from siamdetr.models.criterion import weighted_total
from siamdetr.models.variants import build_detector
from siamdetr.stages.finetune import build_criterion

# The tiny profile before issue 11: 96-px images trained at up to 72 px, a 32-wide small ResNet at stride 16,
# d_model 64, batch 16, the trunk fine-tuned.
BEFORE = [
    "model.small_width=32",
    "model.dilation=false",
    "model.train_backbone=true",
    "model.d_model=64",
    "model.nheads=4",
    "model.dim_feedforward=128",
    "model.enc_layers=2",
    "model.dec_layers=2",
    "model.num_queries=10",
    "finetune.batch_size=16",
    "finetune.train_scales=[56,64,72]",
    "finetune.lr_backbone=5e-5",
]


def seconds_per_step(overrides: list[str], profile: str, repeats: int) -> dict[str, float]:
    cfg = load_config(params=None, profile=profile, overrides=["model.backbone_checkpoint=null", *overrides])
    torch.manual_seed(0)
    model = build_detector(cfg.model, num_classes=6)
    criterion, weights = build_criterion(cfg, 6)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    side = max(cfg.finetune.train_scales)
    images = torch.randn(cfg.finetune.batch_size, 3, side, side)
    mask = torch.zeros(images.shape[0], side, side, dtype=torch.bool)
    boxes = torch.tensor([[0.3, 0.3, 0.3, 0.3], [0.7, 0.6, 0.4, 0.5]])
    targets = [{"labels": torch.tensor([0, 1]), "boxes": boxes} for _ in range(images.shape[0])]
    times = []
    for i in range(repeats + 2):
        start = time.perf_counter()
        loss = weighted_total(criterion(model(images, mask), targets), weights)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if i >= 2:  # the first steps allocate
            times.append(time.perf_counter() - start)
    step = statistics.median(times)
    return {
        "batch": images.shape[0],
        "side_px": side,
        "s_per_step": round(step, 4),
        "ms_per_image": round(1000 * step / images.shape[0], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(1)
    before = seconds_per_step(BEFORE, args.profile, args.repeats)
    after = seconds_per_step([], args.profile, args.repeats)
    result = {
        "profile": args.profile,
        "threads": 1,
        "cpus": os.cpu_count(),
        "load_average_at_start": os.getloadavg()[0],
        "machine": platform.processor() or platform.machine(),
        "before_213a5ef": before,
        "after": after,
        "ms_per_image_ratio_after_over_before": round(after["ms_per_image"] / before["ms_per_image"], 3),
    }
    out = Path(__file__).parent / "results" / "step_time.json"
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
