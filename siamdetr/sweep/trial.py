"""One candidate setting → Siamese DETR pretraining → fine-tune, as the grid's runs but with the sweep's
values on top and its own directories.

The candidate's values enter as `--set` overrides, so they win over the named runs' own values (the
Conditional-ImageNet pretraining's λ_r = 5 included); everything else is what the profile makes of the
two runs named in the sweep file. A directory's checkpoints are resumed when the same values come back (a
retried trial, a re-check interrupted midway).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from siamdetr.config import Config
from siamdetr.grid import DONE, Layers, Run, seed_overrides, split_placement
from siamdetr.io import atomic_write_json
from siamdetr.run_hash import run_hash

SECTIONS = {"pretrain": ("model", "backbone", "pretrain", "proposals"), "finetune": ("model", "finetune")}


def as_overrides(values: Mapping[str, float]) -> list[str]:
    return [f"{k}={json.dumps(v)}" for k, v in values.items()]


def candidate_configs(
    layers: Layers,
    base: Config,
    runs: Mapping[str, Run],
    pair: tuple[Run, Run],
    values: Mapping[str, float],
    root: Path,
    seed: int,
    pretrain_seed: int,
    check: bool = False,
) -> tuple[Config, Config]:
    """(pretraining config, fine-tune config) of one seed of a candidate, writing below `root`."""
    pre_run, ft_run = pair
    pre_dir, ft_dir = root / "pretrain" / f"s{pretrain_seed}", root / "finetune" / f"s{seed}"
    configs = []
    for run, s, placement in (
        (pre_run, pretrain_seed, {"pretrain.out_dir": str(pre_dir)}),
        (ft_run, seed, {"finetune.out_dir": str(ft_dir), "finetune.init": str(pre_dir / "pretrained.pth")}),
    ):
        settings, _ = split_placement(seed_overrides(base, runs, run, s))
        extra = [*as_overrides(values), f"seed={s}", *as_overrides(placement)]
        configs.append(layers.load(extra, run, settings, SECTIONS[run.kind] if check else ()))
    return configs[0], configs[1]


Report = Callable[[int, dict[str, Any]], None]


def train_candidate(pre_cfg: Config, ft_cfg: Config, tags: Mapping[str, Any], on_epoch: Report | None = None) -> dict:
    """Pretrain (skipped when a finished copy with the same settings exists), then fine-tune; returns the
    fine-tune's final metrics (AP in percent)."""
    from siamdetr.stages import finetune, pretrain

    finished = _done(pre_cfg, "pretrain")
    if finished is None:
        result = pretrain.run(pre_cfg, tags=tags)
        atomic_write_json(
            Path(pre_cfg.pretrain.out_dir) / DONE, {"key": run_hash(pre_cfg, "pretrain"), "result": result}
        )
    result = _done(ft_cfg, "finetune")
    if result is None:
        result = finetune.run(ft_cfg, on_epoch=on_epoch, tags=tags)
        atomic_write_json(Path(ft_cfg.finetune.out_dir) / DONE, {"key": run_hash(ft_cfg, "finetune"), "result": result})
    return result


def _done(cfg: Config, kind: str) -> dict | None:
    out = Path(cfg.pretrain.out_dir if kind == "pretrain" else cfg.finetune.out_dir) / DONE
    if not out.is_file():
        return None
    done = json.loads(out.read_text())
    return done["result"] if done.get("key") == run_hash(cfg, kind) else None
