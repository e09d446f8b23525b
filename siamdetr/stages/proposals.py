"""The `proposals` stage: the offline boxes of the pretraining images for the configured method, with
recall against ground truth where the dataset has it (COCO), logged to MLflow and written as DVC metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from siamdetr.config import Config
from siamdetr.data.manifest import pretraining_images
from siamdetr.io import atomic_write_json
from siamdetr.proposals.recall import proposal_recall
from siamdetr.proposals.runner import run_proposals
from siamdetr.proposals.store import ProposalStore, store_dir
from siamdetr.tracking import RunLogger


def proposals_for_folder(
    cfg: Config, method: str, images: Path, out: Path, workers: int | None = None
) -> dict[str, Any]:
    """Run (or resume) one store with the `proposals` section's settings; `workers` overrides its count."""
    c = cfg.proposals
    return run_proposals(
        method,
        images,
        out,
        workers=c.workers if workers is None else workers,
        top_k=c.top_k,
        seed=cfg.seed,
        shard_size=c.shard_size,
        sed_model=c.sed_model,
        ss_square=c.ss_square,
        ss_max_side=c.ss_max_side,
        on_bad_image=cfg.data.on_bad_image,
        edge_map=c.edge_map,
        min_box_area=c.min_box_area,
        eb_max_side=c.eb_max_side,
    )


def run(cfg: Config, method: str | None = None, workers: int | None = None) -> dict[str, Any]:
    """The store of the configured pretraining dataset and method (written to `summary["store"]`); returns
    speed, counts and recall."""
    method = method or cfg.pretrain.proposals
    images, gt = pretraining_images(cfg.data.prepared_dir, cfg.pretrain.dataset)
    out = store_dir(cfg.proposals.out_dir, cfg.pretrain.dataset, method)
    summary = proposals_for_folder(cfg, method, images, out, workers)
    if gt is not None:
        summary |= proposal_recall(ProposalStore.open(out), gt)
    atomic_write_json(out.with_name(out.name + ".metrics.json"), summary, indent=2)
    tracker = RunLogger(
        cfg,
        "proposals",
        f"proposals-{method}-{cfg.pretrain.dataset}",
        {"proposals": method, "pretrain_dataset": cfg.pretrain.dataset},
    )
    tracker.log_metrics({k.replace("@", "_at_"): v for k, v in summary.items()})
    tracker.close()
    return summary | {"store": str(out)}
