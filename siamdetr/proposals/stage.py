"""The `proposals` stage: the offline boxes of the pretraining images for the configured method, with
recall against ground truth where the dataset has it (COCO), logged to MLflow and written as DVC metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from siamdetr.config import Config
from siamdetr.data.prepare import manifest_entry
from siamdetr.io import atomic_write_json
from siamdetr.proposals.recall import proposal_recall
from siamdetr.proposals.runner import run_proposals
from siamdetr.proposals.store import ProposalStore
from siamdetr.tracking import RunLogger


def store_path(cfg: Config, dataset: str | None = None, method: str | None = None) -> Path:
    """Where the store of (dataset, method) lives: <proposals.out_dir>/<dataset>_<method>."""
    return Path(cfg.proposals.out_dir) / f"{dataset or cfg.pretrain.dataset}_{method or cfg.pretrain.proposals}"


def pretraining_split(cfg: Config) -> tuple[Path, Path | None]:
    """(image directory, its ground-truth json or None) of cfg.pretrain.dataset, from the data manifest."""
    name = cfg.pretrain.dataset
    entry = manifest_entry(cfg, name, "pretrain.dataset")
    if name == "imagenet":
        return Path(entry["root"]), None
    return Path(entry["train"]["images"]), Path(entry["train"]["annotations"])


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


def compute_proposals(cfg: Config, method: str | None = None, workers: int | None = None) -> dict[str, Any]:
    """The store of the configured pretraining dataset and method; returns speed, counts and recall."""
    method = method or cfg.pretrain.proposals
    images, gt = pretraining_split(cfg)
    out = store_path(cfg, method=method)
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
    return summary
