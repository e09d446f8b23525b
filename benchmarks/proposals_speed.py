"""Images/s of each proposal method at 1 and N workers, with its recall, on the synthetic data of a profile.

Speed is measured over every image of the synthetic tree (ImageNet-, COCO- and VOC-like, listed recursively as
the runner lists any folder), so the pool's start-up (about a second) weighs little; recall (gt boxes found
at IoU 0.5 / 0.7 by the top 100 proposals) on coco_like/val2017, for every EdgeBoxes edge map and minBoxArea
tried and for the other two methods. Writes benchmarks/results/proposals_speed.json.

python benchmarks/proposals_speed.py [--profile tiny]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

from siamdetr.config import load_config
from siamdetr.data.synthetic import area_scale, write_synthetic
from siamdetr.io import atomic_write_text
from siamdetr.proposals.edges import EDGE_MAPS
from siamdetr.proposals.recall import proposal_recall
from siamdetr.proposals.runner import run_proposals
from siamdetr.proposals.store import ProposalStore

# OpenCV's default minBoxArea and a tenth of it; a third value is the default at COCO's scale: 1000 px² of a
# 640x480 image, times the synthetic set's area_scale.
OPENCV_AND_TENTH = (1000.0, 100.0)


def configurations(area_scale: float) -> list[dict[str, Any]]:
    edgeboxes = [
        {"method": "edgeboxes", "edge_map": edge_map, "min_box_area": round(area, 1)}
        for edge_map in EDGE_MAPS
        for area in (*OPENCV_AND_TENTH, OPENCV_AND_TENTH[0] * area_scale)
    ]
    return [*edgeboxes, {"method": "selective_search"}, {"method": "random"}]


def speed_key(workers: int) -> str:
    return "images_per_s_1_worker" if workers == 1 else f"images_per_s_{workers}_workers"


def measure(root: Path, tmp: Path, config: dict[str, Any], workers: int) -> dict[str, Any]:
    images = root / "coco_like"
    name = "_".join(str(v) for v in config.values())
    speed = run_proposals(**config, images_dir=root, out=tmp / f"{name}_{workers}", workers=workers)
    out = {**config, speed_key(workers): round(speed["images_per_s"], 1)}
    if workers == 1:
        run_proposals(**config, images_dir=images / "val2017", out=tmp / f"{name}_val", workers=1)
        recall = proposal_recall(ProposalStore.open(tmp / f"{name}_val"), images / "annotations/instances_val2017.json")
        out |= {k: round(recall[k], 3) for k in ("recall@0.5_top100", "recall@0.7_top100", "boxes_per_image")}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="tiny")
    args = parser.parse_args()
    cfg = load_config(params=None, profile=args.profile).data.synth
    n = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "synth"
        write_counts = write_synthetic(root, cfg, seed=0)
        load = os.getloadavg()[0]  # other processes on the machine: speed-ups need idle cores
        run_proposals("random", root / "coco_like/val2017", Path(tmp) / "warm-up", workers=n)  # starts the fork server
        runs = []
        for config in configurations(area_scale(cfg.image_size, cfg.image_size)):
            result = measure(root, Path(tmp), config, 1)
            if config["method"] != "edgeboxes" or config["min_box_area"] == OPENCV_AND_TENTH[0]:
                result |= measure(root, Path(tmp), config, n)
                result["speedup"] = round(result[speed_key(n)] / result[speed_key(1)], 2)
            runs.append(result)
            print(json.dumps(result), flush=True)
    result = {
        "profile": args.profile,
        "image_size": cfg.image_size,
        "speed_images": sum(write_counts.values()),
        "recall_images": f"coco_like/val2017 ({cfg.coco_val})",
        "cpus": n,
        "load_average_at_start": round(load, 2),
        "machine": platform.processor(),
        "runs": runs,
    }
    out = Path(__file__).parent / "results" / "proposals_speed.json"
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
