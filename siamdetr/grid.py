"""The experiment grid: named runs (experiments/runs.yaml) → the config of each seed of each run.

A run is a mapping of config overrides. It is applied as one more layer after params.yaml, so `--set` (and a
sweep) still wins, and every value keeps a source that names the run: `experiments/runs.yaml:
siamese_runs.in-cond100-siamese`. dvc.yaml expands one stage per run; the stage calls
`siamdetr pretrain --run NAME` or `siamdetr finetune --run NAME`, which runs every seed of grid.seeds in one
process (a finished seed is skipped, an interrupted one resumes from its checkpoint).
"""

from __future__ import annotations

import json
import logging
import math
import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from siamdetr.config import Config, ConfigError, read_yaml
from siamdetr.io import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

PRETRAIN_GROUPS = ("siamese_runs", "updetr_runs", "detreg_runs")
GROUP_METHOD = {"siamese_runs": "siamese", "updetr_runs": "updetr", "detreg_runs": "detreg"}
SECTIONS = ("proposal_sets", *PRETRAIN_GROUPS, "finetune_runs")
DONE = "done.json"
SUMMARY_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


@dataclass(frozen=True)
class Run:
    """One named run: its kind, its overrides (dotted keys) and, for a fine-tune, the pretraining it starts from."""

    name: str
    kind: str  # "pretrain" or "finetune"
    source: str  # "<file>: <group>.<name>", the source of its values in error messages and `config show`
    overrides: dict[str, Any]
    pretrain: str | None = None


def load_runs(path: str | Path) -> dict[str, Run]:
    """Every pretraining and fine-tuning run of the file, validated (names unique, references resolve)."""
    path = Path(path)
    data = read_yaml(path)
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {unknown}; expected {', '.join(SECTIONS)}")
    runs: dict[str, Run] = {}

    def add(run: Run) -> None:
        if run.name in runs:
            raise ConfigError(f"{run.source}: the name {run.name!r} is used twice")
        runs[run.name] = run

    for group in PRETRAIN_GROUPS:
        for name, overrides in _mapping(data.get(group) or {}, f"{path}: {group}").items():
            src = f"{path}: {group}.{name}"
            overrides = dict(_mapping(overrides, src))
            method = overrides.setdefault("pretrain.method", GROUP_METHOD[group])
            if method != GROUP_METHOD[group]:
                raise ConfigError(f"{src}: pretrain.method = {method!r}, but the run is in {group}")
            add(Run(name, "pretrain", src, overrides))
    for name, spec in _mapping(data.get("finetune_runs") or {}, f"{path}: finetune_runs").items():
        src = f"{path}: finetune_runs.{name}"
        spec = _mapping(spec, src)
        extra = sorted(set(spec) - {"pretrain", "set"})
        if extra:
            raise ConfigError(f"{src}: unknown key(s) {extra}; a fine-tune run has `pretrain` and `set`")
        add(Run(name, "finetune", src, dict(_mapping(spec.get("set") or {}, src + ".set")), spec.get("pretrain")))
    for run in runs.values():
        if run.kind == "finetune" and run.pretrain is not None:
            target = runs.get(run.pretrain)
            if target is None or target.kind != "pretrain":
                raise ConfigError(f"{run.source}: pretrain = {run.pretrain!r} is not a pretraining run of {path}")
    return runs


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {value!r}")
    return value


def scaled(run: Run, cfg: Config) -> dict[str, Any]:
    """The run's overrides with paper-scale query counts and schedules shrunk by the profile's grid scales."""
    g = cfg.grid
    out = dict(run.overrides)
    if "model.num_queries" in out:
        out["model.num_queries"] = max(1, round(out["model.num_queries"] * g.query_scale))
    for key in ("finetune.epochs", "finetune.lr_drop"):
        if key in out:
            out[key] = max(1, math.ceil(out[key] * g.epoch_scale - 1e-9))
    return out


def run_dir(cfg: Config, run: Run) -> Path:
    base = cfg.pretrain.out_dir if run.kind == "pretrain" else cfg.finetune.out_dir
    return Path(base) / run.name


def seed_overrides(base: Config, runs: Mapping[str, Run], run: Run, seed: int) -> dict[str, Any]:
    """Everything one seed of a run sets: its scaled overrides, its output dir and, for a fine-tune, the
    pretrained weights of the same seed."""
    out = scaled(run, base)
    out["seed"] = seed
    seed_dir = run_dir(base, run) / f"s{seed}"
    if run.kind == "pretrain":
        out["pretrain.out_dir"] = str(seed_dir)
    else:
        out["finetune.out_dir"] = str(seed_dir)
        init = None
        if run.pretrain is not None:
            init = str(run_dir(base, runs[run.pretrain]) / f"s{seed}" / "pretrained.pth")
        out["finetune.init"] = init
    return out


def execute(
    run: Run,
    seeds: list[int],
    configure: Callable[[dict[str, Any]], Config],
    base: Config,
    runs: Mapping[str, Run],
    train: Callable[[Config, dict[str, str]], dict[str, Any]],
) -> dict[str, Any]:
    """Run every seed of `run` (skipping finished ones), then write the run's summary; returns it.

    `configure(overrides)` resolves the config with the run's layer; `train(cfg, tags)` is pretrain or finetune.
    """
    per_seed: dict[int, dict[str, Any]] = {}
    for seed in seeds:
        cfg = configure(seed_overrides(base, runs, run, seed))
        out = Path(cfg.pretrain.out_dir if run.kind == "pretrain" else cfg.finetune.out_dir)
        done = _read_done(out / DONE, cfg.params_hash())
        if done is not None:
            log.info("%s seed %d: already finished (%s); skipped", run.name, seed, out / DONE)
            per_seed[seed] = done
            continue
        tags = {"run_key": run.name, "dvc_stage": f"{run.kind}@{run.name}"}
        result = train(cfg, tags)
        if not base.grid.keep_checkpoints:
            (out / "checkpoint.pth").unlink(missing_ok=True)
        per_seed[seed] = result
        atomic_write_json(out / DONE, {"params_hash": cfg.params_hash(), "result": result}, indent=2)
    summary = summarise(run, per_seed)
    if run.kind == "finetune":
        root = run_dir(base, run)
        atomic_write_json(root.with_name(root.name + ".json"), summary, indent=2)
        atomic_write_text(root.with_name(root.name + ".curve.csv"), curve_csv(root, seeds))
    return summary


def _read_done(path: Path, params_hash: str) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    done = json.loads(path.read_text())
    return done["result"] if done.get("params_hash") == params_hash else None


def summarise(run: Run, per_seed: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """Mean, sample std and n over seeds of each scalar metric (AP in percent for fine-tunes)."""
    keys = SUMMARY_KEYS if run.kind == "finetune" else sorted({k for r in per_seed.values() for k in r})
    summary: dict[str, Any] = {"run": run.name, "seeds": sorted(per_seed)}
    for key in keys:
        values = [float(r[key]) for r in per_seed.values() if isinstance(r.get(key), int | float)]
        if not values:
            summary[key] = None
            continue
        summary[key] = statistics.fmean(values)
        summary[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        summary[f"{key}_n"] = len(values)
    return summary


def curve_csv(root: Path, seeds: list[int]) -> str:
    """AP per evaluated epoch, one column per seed plus their mean: the stage's `dvc plots` curve."""

    curves: dict[int, dict[int, float]] = {}
    for seed in seeds:
        path = root / f"s{seed}" / "history.json"
        history = json.loads(path.read_text()) if path.is_file() else []
        curves[seed] = {r["epoch"] + 1: r["metrics"]["AP"] for r in history if r.get("metrics")}
    epochs = sorted({e for c in curves.values() for e in c})
    lines = ["epoch,AP," + ",".join(f"AP_s{s}" for s in seeds)]
    for e in epochs:
        vals = [curves[s].get(e) for s in seeds]
        known = [v for v in vals if v is not None]
        mean = statistics.fmean(known) if known else float("nan")
        lines.append(f"{e},{mean:.4f}," + ",".join("" if v is None else f"{v:.4f}" for v in vals))
    return "\n".join(lines) + "\n"
