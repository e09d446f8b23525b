"""The sweep file (experiments/sweep.yaml): what is searched, over which ranges, how trials are judged.

Read and checked once, before any work: an unknown key, an empty range or a value the config would refuse
(say τ = 1.2) is one ConfigError naming the file and the key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from siamdetr.config import ConfigError, read_yaml

OBJECTIVES = ("AP", "AP50", "AP75")
PRUNERS = ("median", "hyperband", "none")
TOP_LEVEL = {
    "study",
    "pretrain_run",
    "finetune_run",
    "objective",
    "n_trials",
    "sampler",
    "pruner",
    "recheck",
    "heartbeat",
    "space",
}


@dataclass(frozen=True)
class Range:
    """One searched config key: uniform over [low, high], or log-uniform."""

    key: str
    low: float
    high: float
    log: bool = False


@dataclass(frozen=True)
class SweepSpace:
    """Everything the sweep file says, validated."""

    path: Path
    study: str
    pretrain_run: str
    finetune_run: str
    objective: str
    n_trials: int
    sampler_seed: int
    n_startup_trials: int
    pruner: Literal["median", "hyperband", "none"]
    pruner_options: dict[str, Any]
    top_k: int
    heartbeat_interval: int
    grace_period: int
    max_retry: int
    ranges: tuple[Range, ...]

    @property
    def keys(self) -> list[str]:
        return [r.key for r in self.ranges]


def _section(data: dict[str, Any], name: str, path: Path, allowed: set[str]) -> dict[str, Any]:
    value = data.get(name) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: {name}: expected a mapping, got {value!r}")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise ConfigError(f"{path}: {name}: unknown key(s) {unknown}; expected {sorted(allowed)}")
    return value


def _number(value: Any, where: str, integer: bool = False, minimum: float | None = None) -> Any:
    ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok or (not integer and not math.isfinite(value)):
        raise ConfigError(f"{where}: expected {'an integer' if integer else 'a finite number'}, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{where}: must be >= {minimum}, got {value!r}")
    return value


def _range(key: Any, spec: Any, path: Path) -> Range:
    where = f"{path}: space.{key}"
    if not isinstance(spec, dict) or not {"low", "high"} <= set(spec) or set(spec) - {"low", "high", "log"}:
        raise ConfigError(f"{where}: expected {{low: X, high: Y}} with an optional log: true, got {spec!r}")
    low, high = _number(spec["low"], f"{where}.low"), _number(spec["high"], f"{where}.high")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{where}.log: expected true or false, got {log!r}")
    if not low < high:
        raise ConfigError(f"{where}: empty range: low ({low}) must be below high ({high})")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log range needs low > 0, got {low}")
    return Range(str(key), float(low), float(high), log)


def load_space(path: str | Path) -> SweepSpace:
    """Parse and check the sweep file (the config keys themselves are checked against the config by
    `stage.check_space`, which knows the profile)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: sweep file not found (--space)")
    data = read_yaml(path)
    unknown = sorted(set(data) - TOP_LEVEL)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {unknown}; expected {sorted(TOP_LEVEL)}")
    for key in ("study", "pretrain_run", "finetune_run"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise ConfigError(f"{path}: {key}: expected a name, got {data.get(key)!r}")
    objective = data.get("objective", "AP")
    if objective not in OBJECTIVES:
        raise ConfigError(f"{path}: objective: {objective!r} is not one of {', '.join(OBJECTIVES)}")
    sampler = _section(data, "sampler", path, {"seed", "n_startup_trials"})
    pruner = dict(_section(data, "pruner", path, {"type", "n_startup_trials", "n_warmup_steps", "reduction_factor"}))
    kind = pruner.pop("type", "median")
    if kind not in PRUNERS:
        raise ConfigError(f"{path}: pruner.type: {kind!r} is not one of {', '.join(PRUNERS)}")
    for k, v in pruner.items():
        _number(v, f"{path}: pruner.{k}", integer=True, minimum=0)
    recheck = _section(data, "recheck", path, {"top_k"})
    heartbeat = _section(data, "heartbeat", path, {"interval", "grace", "max_retry"})
    space = data.get("space")
    if not isinstance(space, dict) or not space:
        raise ConfigError(f"{path}: space: expected a mapping of config keys to {{low, high}} ranges")
    interval = _number(heartbeat.get("interval", 60), f"{path}: heartbeat.interval", integer=True, minimum=1)
    grace = _number(heartbeat.get("grace", 2 * interval), f"{path}: heartbeat.grace", integer=True, minimum=1)
    if grace <= interval:
        raise ConfigError(f"{path}: heartbeat.grace ({grace}) must exceed heartbeat.interval ({interval})")
    return SweepSpace(
        path=path,
        study=data["study"],
        pretrain_run=data["pretrain_run"],
        finetune_run=data["finetune_run"],
        objective=objective,
        n_trials=_number(data.get("n_trials", 20), f"{path}: n_trials", integer=True, minimum=1),
        sampler_seed=_number(sampler.get("seed", 0), f"{path}: sampler.seed", integer=True, minimum=0),
        n_startup_trials=_number(
            sampler.get("n_startup_trials", 5), f"{path}: sampler.n_startup_trials", integer=True, minimum=0
        ),
        pruner=kind,
        pruner_options=pruner,
        top_k=_number(recheck.get("top_k", 3), f"{path}: recheck.top_k", integer=True, minimum=0),
        heartbeat_interval=interval,
        grace_period=grace,
        max_retry=_number(heartbeat.get("max_retry", 1), f"{path}: heartbeat.max_retry", integer=True, minimum=0),
        ranges=tuple(_range(k, v, path) for k, v in space.items()),
    )
