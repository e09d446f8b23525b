"""Seconds per fine-tuning epoch through the real stage (loading, transforms, steps, evaluation), one thread,
in four configurations alternated in one run, so the ratios are measured on one machine under one load.
With the trunk frozen: every image read and transformed every epoch and the trunk run on every batch
(`read`); samples kept in memory (`samples`); samples kept and the frozen trunk's features kept per
(padded) image (`samples+trunk`). With the trunk fine-tuned as the paper does (layer2-4 at
finetune.lr_backbone), samples kept (`trained trunk`, what the tiny profile does). Needs a prepared dataset
(`dvc repro data`, or `siamdetr data prepare`).

python benchmarks/finetune_epoch.py [--profile tiny] [--prepared data/prepared] [--epochs 3] [--repeats 1]
    → benchmarks/results/finetune_epoch.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from unittest import mock

import torch

from siamdetr.config import load_config
from siamdetr.io import atomic_write_text
from siamdetr.stages import finetune

CONFIGURATIONS = {  # name → (sample cache, trunk-feature cache, trunk trained)
    "read": (False, False, False),
    "samples": (True, False, False),
    "samples+trunk": (True, True, False),
    "trained trunk": (True, False, True),
}


def seconds_per_epoch(profile: str, prepared: Path, epochs: int, name: str, tmp: Path) -> tuple[float, dict]:
    out = tmp / f"run-{name.replace(' ', '-')}-{time.monotonic_ns()}"
    samples, trunk, trained = CONFIGURATIONS[name]
    cfg = load_config(
        params=None,
        profile=profile,
        overrides=[
            f"data.prepared_dir={prepared}",
            f"finetune.out_dir={out}",
            f"finetune.epochs={epochs}",
            f"finetune.lr_drop={epochs}",
            f"finetune.eval_every={epochs}",
            "model.backbone_checkpoint=null",
            f"model.train_backbone={str(trained).lower()}",
        ],
    )
    with (
        mock.patch.object(finetune, "SAMPLE_CACHE_BYTES", finetune.SAMPLE_CACHE_BYTES if samples else 0),
        mock.patch.object(finetune, "TRUNK_CACHE_BYTES", finetune.TRUNK_CACHE_BYTES if trunk else 0),
    ):
        start = time.perf_counter()
        metrics = finetune.run(cfg)
    return (time.perf_counter() - start) / epochs, metrics


def machine_facts(load: float) -> dict:
    """What a one-thread timing depends on, for the results file."""
    return {
        "threads": 1,
        "cpus": os.cpu_count(),
        "load_average_at_start": load,
        "machine": platform.processor() or platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(1)
    load = os.getloadavg()[0]
    times: dict[str, list[float]] = {name: [] for name in CONFIGURATIONS}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        for _ in range(args.repeats):
            for name in CONFIGURATIONS:
                seconds, results[name] = seconds_per_epoch(args.profile, args.prepared, args.epochs, name, Path(tmp))
                times[name].append(seconds)
    median = {name: statistics.median(t) for name, t in times.items()}
    result = {
        "profile": args.profile,
        "epochs_per_run": args.epochs,
        "repeats": args.repeats,
        **machine_facts(load),
        "s_per_epoch": {name: round(s, 2) for name, s in median.items()},
        "ratio_over_read": {name: round(s / median["read"], 3) for name, s in median.items()},
        # the sample cache changes no bit; the trunk's features, computed an image at a time rather than in
        # a batch, may differ in the last bits, so AP can move a little
        "samples_same_metrics_as_read": results["samples"] == results["read"],
        "ap50_percent": {name: round(r["AP50"], 2) for name, r in results.items()},
    }
    out = Path(__file__).parent / "results" / "finetune_epoch.json"
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
