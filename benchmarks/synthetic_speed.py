"""Images/s of the synthetic generator at 1 and N workers, written to benchmarks/results/synthetic_speed.json.

python benchmarks/synthetic_speed.py [--profile tiny] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from siamdetr.config import load_config
from siamdetr.data.synthetic import write_synthetic
from siamdetr.io import atomic_write_text


def images_per_second(cfg, workers: int, repeats: int) -> float:
    total = cfg.imagenet_images + cfg.coco_train + cfg.coco_val + cfg.voc_trainval + cfg.voc_test
    best = float("inf")
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            write_synthetic(Path(tmp) / "s", cfg, seed=0, workers=workers)
            best = min(best, time.perf_counter() - start)
    return total / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cfg = load_config(params=None, profile=args.profile).data.synth
    n = os.cpu_count() or 1
    one = images_per_second(cfg, 1, args.repeats)
    many = images_per_second(cfg, n, args.repeats)
    result = {
        "profile": args.profile,
        "image_size": cfg.image_size,
        "cpus": n,
        "machine": platform.processor(),
        "images_per_s_1_worker": round(one, 1),
        f"images_per_s_{n}_workers": round(many, 1),
        "speedup": round(many / one, 2),
    }
    out = Path(__file__).parent / "results" / "synthetic_speed.json"
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
