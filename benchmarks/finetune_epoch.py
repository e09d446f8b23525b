"""Seconds per fine-tuning epoch through the real stage (loading, transforms, steps, evaluation), one thread,
with the in-memory sample cache and without it (each image read and transformed every epoch), alternated
in one run so the ratio is measured on one machine under one load. Needs a prepared dataset
(`dvc repro data`, or `siamdetr data prepare`).

python benchmarks/finetune_epoch.py [--profile tiny] [--prepared data/prepared] [--epochs 2] [--repeats 2]
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


def seconds_per_epoch(profile: str, prepared: Path, epochs: int, cache: bool, tmp: Path) -> tuple[float, dict]:
    out = tmp / f"run-{cache}-{time.monotonic_ns()}"
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
        ],
    )
    cache_bytes = finetune.SAMPLE_CACHE_BYTES if cache else 0
    with mock.patch.object(finetune, "SAMPLE_CACHE_BYTES", cache_bytes):
        start = time.perf_counter()
        metrics = finetune.run(cfg)
    return (time.perf_counter() - start) / epochs, metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    load = os.getloadavg()[0]
    times: dict[bool, list[float]] = {True: [], False: []}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        for _ in range(args.repeats):
            for cache in (False, True):
                seconds, results[cache] = seconds_per_epoch(args.profile, args.prepared, args.epochs, cache, Path(tmp))
                times[cache].append(seconds)
    without, with_cache = statistics.median(times[False]), statistics.median(times[True])
    result = {
        "profile": args.profile,
        "epochs_per_run": args.epochs,
        "threads": 1,
        "cpus": os.cpu_count(),
        "load_average_at_start": load,
        "machine": platform.processor() or platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "s_per_epoch_read_each_epoch": round(without, 2),
        "s_per_epoch_cached": round(with_cache, 2),
        "ratio_cached_over_read": round(with_cache / without, 3),
        "same_metrics": results[True] == results[False],
    }
    out = Path(__file__).parent / "results" / "finetune_epoch.json"
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
