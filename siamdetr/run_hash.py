"""What a run depends on, as one short hash: the settings it reads and the weights it loads.

The grid skips a finished seed whose key matches, and a checkpoint resumes only under the same key, so a
change to one stage's settings never restarts another stage's run (a `finetune.*` value leaves an
interrupted pretraining to resume), while `pretrain.tau` retrains only Siamese DETR runs and the fine-tunes
that start from them, and a retrained pretraining restarts the fine-tunes that load it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Literal

from siamdetr.config import Config

Kind = Literal["backbone", "pretrain", "finetune"]
METHOD_ONLY = {  # pretrain keys that only one method reads
    "siamese": ("tau", "n_proposals", "lambda_r", "lambda_g", "region_detection", "semantic", "jitter"),
    "updetr": ("updetr",),
    "detreg": ("detreg",),
}
BOOKKEEPING = ("out_dir", "num_workers", "log_every", "init")  # where a run writes, how fast; init: its digest


def run_hash(cfg: Config, kind: Kind) -> str:
    """The hash of what a `kind` run of `cfg` computes from: seed, data, the model (for the backbone stage
    only the trunk's), its own section less bookkeeping (for pretraining, less other methods' keys; plus the
    proposals settings), and the digests of the weights it loads (frozen backbone, pretrained init)."""
    d = cfg.to_dict()
    section = {k: v for k, v in d[kind].items() if k not in BOOKKEEPING}
    if kind == "pretrain":
        others = {k for method, keys in METHOD_ONLY.items() if method != cfg.pretrain.method for k in keys}
        section = {k: v for k, v in section.items() if k not in others}
    if kind == "finetune" and not (cfg.finetune.init and cfg.finetune.init_only):
        section.pop("init_only")  # unused, or the default: runs made before the key existed keep their key
    model = [cfg.model.backbone, cfg.model.small_width] if kind == "backbone" else d["model"]
    relevant = {"seed": cfg.seed, "data": dataclasses.asdict(cfg.data), "model": model, kind: section}
    if kind == "pretrain":
        relevant["proposals"] = d["proposals"]
    if kind != "backbone":
        weights = [cfg.model.backbone_checkpoint, cfg.finetune.init if kind == "finetune" else None]
        relevant["weights"] = [file_digest(w) for w in weights if w]
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def file_digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
