"""The experiment grid: named runs (experiments/runs.yaml) → the config of each seed of each run.

A run is a mapping of config overrides. It is applied as one more layer after params.yaml, so `--set` (and a
sweep) still wins, and every value keeps a source that names the run: `experiments/runs.yaml:
siamese_runs.in-cond100-siamese`. dvc.yaml expands one stage per run; the stage calls
`siamdetr pretrain --run NAME` or `siamdetr finetune --run NAME`, which runs every seed of grid.seeds in one
process (a finished seed is skipped, an interrupted one resumes from its checkpoint).
"""

from __future__ import annotations

import fnmatch
import json
import logging
import math
import os
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from siamdetr.config import Config, ConfigError, load_config, read_yaml
from siamdetr.engine.checkpoint import CHECKPOINT
from siamdetr.io import atomic_write_json, atomic_write_text
from siamdetr.run_hash import run_hash
from siamdetr.spread import mean_std
from siamdetr.tracking import flatten

log = logging.getLogger(__name__)

SECTIONS = {"pretrain_stages": "pretrain", "finetune_stages": "finetune"}
DONE = "done.json"
SUMMARY_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


@dataclass(frozen=True)
class Run:
    """One named run: its kind, its overrides (dotted keys) and, for a fine-tune, the pretraining it starts from."""

    name: str
    kind: str  # "pretrain" or "finetune"
    stage: str  # the group of runs one DVC stage runs
    source: str  # "<file>: <group>.<name>", the source of its values in error messages and `config show`
    overrides: dict[str, Any]
    pretrain: str | None = None


@dataclass(frozen=True)
class Layers:
    """The command line's configuration layers (params file, profile, experiment files, --set), kept so that
    each run, seed or trial resolves its config as the command would (in a worker process too)."""

    params: Path | None
    profile: str | None
    experiments: tuple[Path, ...] = ()
    overrides: tuple[str, ...] = field(default=())

    def load(
        self,
        extra: Sequence[str] = (),
        run: Run | None = None,
        settings: Mapping[str, Any] | None = None,
        check: Sequence[str] | bool = (),
    ) -> Config:
        run_layer = None if run is None else (run.source, dict(settings or {}))
        return load_config(self.params, self.profile, self.experiments, [*self.overrides, *extra], check, run_layer)


def load_runs(path: str | Path) -> dict[str, Run]:
    """Every pretraining and fine-tuning run of the file, validated (names unique, references resolve)."""
    path = Path(path)
    data = read_yaml(path)
    unknown = sorted(set(data) - {"proposal_sets", *SECTIONS})
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {unknown}; expected proposal_sets, {', '.join(SECTIONS)}")
    runs: dict[str, Run] = {}
    for section, kind in SECTIONS.items():
        for stage, members in _mapping(data.get(section) or {}, f"{path}: {section}").items():
            for name, spec in _mapping(members, f"{path}: {section}.{stage}").items():
                src = f"{path}: {section}.{stage}.{name}"
                spec = dict(_mapping(spec, src))
                init = spec.pop("init", None)
                if init is not None and kind != "finetune":
                    raise ConfigError(f"{src}: `init` belongs to fine-tuning runs only")
                if name in runs:
                    raise ConfigError(f"{src}: the name {name!r} is used twice")
                runs[name] = Run(name, kind, stage, src, flatten(spec), init)
    for run in runs.values():
        if run.kind == "finetune" and run.pretrain is not None:
            target = runs.get(run.pretrain)
            if target is None or target.kind != "pretrain":
                raise ConfigError(f"{run.source}: init = {run.pretrain!r} is not a pretraining run of {path}")
    return runs


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {value!r}")
    return value


def selected(candidates: list[Run], runs: Mapping[str, Run], cfg: Config) -> list[Run]:
    """The candidates this profile runs (grid.include: patterns of run names); a fine-tune is only run
    together with the pretraining it starts from."""
    patterns = cfg.grid.include
    chosen = [r for r in candidates if any(fnmatch.fnmatchcase(r.name, p) for p in patterns)]
    for run in chosen:
        if run.pretrain is not None and not any(fnmatch.fnmatchcase(run.pretrain, p) for p in patterns):
            raise ConfigError(
                f"{cfg.source_of('grid.include')}: grid.include selects {run.name} but not the pretraining "
                f"{run.pretrain} it starts from"
            )
    return chosen


def scaled(run: Run, cfg: Config) -> dict[str, Any]:
    """The run's overrides with paper-scale query counts and schedules shrunk by the profile's grid scales,
    and without the keys the profile sets for itself (e.g. COCO's pretraining batch of 64 and 480-800 px
    views, which a CPU profile cannot afford)."""
    g = cfg.grid
    out = {k: v for k, v in run.overrides.items() if k not in g.profile_keys}
    if "model.num_queries" in out:
        out["model.num_queries"] = max(1, round(out["model.num_queries"] * g.query_scale))
    for key in ("finetune.epochs", "finetune.lr_drop"):
        if key in out:
            out[key] = max(1, math.ceil(out[key] * g.epoch_scale - 1e-9))
    return out


def stage_dir(cfg: Config, kind: str, stage: str) -> Path:
    """The output directory of one grid stage (what dvc.yaml declares)."""
    return Path(cfg.pretrain.out_dir if kind == "pretrain" else cfg.finetune.out_dir) / stage


def run_dir(cfg: Config, run: Run) -> Path:
    return stage_dir(cfg, run.kind, run.stage) / run.name


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
            init = str(run_dir(base, runs[run.pretrain]) / f"s{pretraining_seed(base, seed)}" / "pretrained.pth")
        out["finetune.init"] = init
    return out


def seeds_of(cfg: Config, kind: str) -> list[int]:
    """The seeds a run of this kind repeats with."""
    if kind == "pretrain" and cfg.grid.pretrain_seeds is not None:
        return list(cfg.grid.pretrain_seeds)
    return list(cfg.grid.seeds)


def pretraining_seed(cfg: Config, seed: int) -> int:
    """The pretraining a fine-tune of `seed` starts from: the same seed's, else the first pretraining seed's."""
    seeds = seeds_of(cfg, "pretrain")
    return seed if seed in seeds else seeds[0]


PLACEMENT = ("seed", "pretrain.out_dir", "finetune.out_dir", "finetune.init")


def split_placement(overrides: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A seed's overrides → (the run's settings: a config layer below --set, its placement as --set strings).
    Where a seed writes and which weights it starts from are fixed by the grid, so they win over --set
    (a `--set finetune.out_dir=X` moves the whole grid: the base config puts every run below X)."""
    settings = {k: v for k, v in overrides.items() if k not in PLACEMENT}
    placement = [f"{k}={json.dumps(v)}" for k, v in overrides.items() if k in PLACEMENT]
    return settings, placement


@dataclass(frozen=True)
class Job:
    """One seed of one run, resolved: its config, where it writes, and the key a finished copy must match."""

    run: Run
    seed: int
    cfg: Config
    out: Path
    key: str


def plan(
    run: Run, seeds: list[int], configure: Callable[[dict[str, Any]], Config], base: Config, runs: Mapping[str, Run]
) -> list[Job]:
    """Every seed of `run` as a Job; `configure(overrides)` resolves a seed's config."""
    jobs = []
    for seed in seeds:
        cfg = configure(seed_overrides(base, runs, run, seed))
        out = Path(cfg.pretrain.out_dir if run.kind == "pretrain" else cfg.finetune.out_dir)
        jobs.append(Job(run, seed, cfg, out, run_hash(cfg, run.kind)))
    return jobs


def run_named(
    kind: str, layers: Layers, sections: tuple[str, ...], name: str | None, stage: str | None, seed: int | None
) -> dict[str, Any]:
    """`--run NAME` or `--stage GROUP` of a `kind` command: named runs of the experiment grid (grid.runs_file),
    every seed of grid.seeds (or only `seed`), in grid.workers processes; returns {run name: summary over
    seeds}. `sections` are those whose input paths each run's config checks."""
    base = layers.load()
    runs = load_runs(base.grid.runs_file)
    mine = {n: r for n, r in runs.items() if r.kind == kind}
    if stage:
        known = sorted({r.stage for r in mine.values()})
        if stage not in known:
            raise ConfigError(f"{base.grid.runs_file}: no {kind} stage {stage!r} (stages: {', '.join(known)})")
        chosen = selected([r for r in mine.values() if r.stage == stage], runs, base)
        if not chosen:
            log.info("stage %s: no run of it is in grid.include of profile %s", stage, base.profile)
    elif name in mine:
        chosen = [mine[name]]
    else:
        raise ConfigError(
            f"{base.grid.runs_file}: no {kind} run named {name!r} (there are {len(mine)}: "
            f"{', '.join(sorted(mine)[:5])}, ...)"
        )
    seeds = [seed] if seed is not None else seeds_of(base, kind)
    jobs = []
    for run in chosen:

        def configure(overrides: dict, run: Run = run) -> Config:
            settings, placement = split_placement(overrides)
            return layers.load(placement, run, settings, sections)

        jobs += plan(run, seeds, configure, base, runs)
    summaries = execute(jobs, base.grid.workers)
    if stage:  # DVC's output, even where this profile runs none of the stage's runs
        stage_dir(base, kind, stage).mkdir(parents=True, exist_ok=True)
    if kind == "finetune" and stage:
        write_stage_summary(base, stage, summaries, seeds)
    return summaries


def train_job(job: Job, threads: int | None = None) -> dict[str, Any]:
    """Train one job (in this process or a pool worker) with the stage's function for its kind."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    tags = {"run_key": job.run.name, "dvc_stage": f"{job.run.kind}@{job.run.stage}", "grid_stage": job.run.stage}
    if job.run.kind == "pretrain":
        from siamdetr.stages import pretrain

        return pretrain.run(job.cfg, tags=tags)
    from siamdetr.stages import finetune

    return finetune.run(job.cfg, tags=tags)


Train = Callable[[Job, int | None], dict[str, Any]]


def execute(jobs: list[Job], workers: int = 1, train: Train = train_job) -> dict[str, Any]:
    """Run every job not already finished with the same settings; returns {run name: summary over seeds}.

    With workers > 1 the pending jobs run in that many processes of one thread each, longest-first in the
    order given; a job's result does not depend on which process runs it (each seeds itself), only on the
    thread count, which is therefore always 1 in a pool.
    """
    results: dict[tuple[str, int], dict[str, Any]] = {}
    pending = []
    for job in jobs:
        done = _read_done(job.out / DONE, job.key)
        if done is None:
            pending.append(job)
        else:
            log.info("%s seed %d: already finished (%s); skipped", job.run.name, job.seed, job.out / DONE)
            results[job.run.name, job.seed] = done
    if workers <= 1 or len(pending) <= 1:
        threads = None if workers <= 1 else 1  # a lone job left of a pooled grid trains as the pool would
        for job in pending:
            results[job.run.name, job.seed] = _finish(job, train(job, threads))
    else:
        results |= _execute_in_pool(pending, workers, train)
    summaries: dict[str, Any] = {}
    for job in jobs:
        per_seed = {j.seed: results[j.run.name, j.seed] for j in jobs if j.run.name == job.run.name}
        summaries.setdefault(job.run.name, summarise(job.run, per_seed))
    return summaries


def _execute_in_pool(pending: list[Job], workers: int, train: Train) -> dict[tuple[str, int], dict[str, Any]]:
    import multiprocessing
    from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait

    # spawn, not fork: a forked child inherits the parent's OpenMP and MLflow state
    context = multiprocessing.get_context("spawn")
    results = {}
    with ProcessPoolExecutor(min(workers, len(pending)), mp_context=context, initializer=_quiet_worker) as pool:
        futures = {pool.submit(_train_in_worker, train, job): job for job in pending}
        finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
        for future in finished:
            if future.exception() is not None:
                for other in futures:
                    other.cancel()
                raise future.exception()
        for future, job in futures.items():
            results[job.run.name, job.seed] = _finish(job, future.result())
    return results


def _quiet_worker() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _train_in_worker(train: Train, job: Job) -> dict[str, Any]:
    log.warning("%s seed %d: started", job.run.name, job.seed)
    result = train(job, 1)
    log.warning("%s seed %d: finished", job.run.name, job.seed)
    return result


def _finish(job: Job, result: dict[str, Any]) -> dict[str, Any]:
    """Record a finished job (under torchrun every process runs the grid; one writes)."""
    if is_main_process():
        if not job.cfg.grid.keep_checkpoints:
            (job.out / CHECKPOINT).unlink(missing_ok=True)
        atomic_write_json(job.out / DONE, {"key": job.key, "result": result}, indent=2)
    return result


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _read_done(path: Path, key: str) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    done = json.loads(path.read_text())
    return done["result"] if done.get("key") == key else None


def write_stage_summary(base: Config, stage: str, summaries: Mapping[str, dict[str, Any]], seeds: list[int]) -> None:
    """A fine-tune stage's metrics (mean ± std over seeds per run) and AP curves, beside its directory."""
    if not is_main_process():
        return
    root = stage_dir(base, "finetune", stage)
    root.mkdir(parents=True, exist_ok=True)  # a stage without runs in this profile still has its output
    atomic_write_json(root.with_name(stage + ".metrics.json"), dict(summaries), indent=2)
    curves = {name: mean_curve(root / name, seeds) for name in summaries}
    atomic_write_text(root.with_name(stage + ".curves.csv"), curves_csv(curves))


def summarise(run: Run, per_seed: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """Mean, sample std and n over seeds of each scalar metric (AP in percent for fine-tunes)."""
    keys = SUMMARY_KEYS if run.kind == "finetune" else sorted({k for r in per_seed.values() for k in r})
    summary: dict[str, Any] = {"run": run.name, "seeds": sorted(per_seed)}
    for key in keys:
        values = [float(r[key]) for r in per_seed.values() if isinstance(r.get(key), int | float)]
        if not values:
            summary[key] = None
            continue
        summary[key], summary[f"{key}_std"] = mean_std(values)
        summary[f"{key}_n"] = len(values)
    return summary


def mean_curve(root: Path, seeds: list[int]) -> dict[int, float]:
    """AP per evaluated epoch (1-based), averaged over the seeds that reached it."""
    points: dict[int, list[float]] = {}
    for seed in seeds:
        path = root / f"s{seed}" / "history.json"
        for record in json.loads(path.read_text()) if path.is_file() else []:
            if record.get("metrics"):
                points.setdefault(record["epoch"] + 1, []).append(record["metrics"]["AP"])
    return {epoch: statistics.fmean(v) for epoch, v in sorted(points.items())}


def curves_csv(curves: Mapping[str, Mapping[int, float]]) -> str:
    """One row per epoch, one column per run: the stage's `dvc plots` curve of AP against epoch."""
    epochs = sorted({e for c in curves.values() for e in c})
    lines = ["epoch," + ",".join(curves)]
    for e in epochs:
        lines.append(f"{e}," + ",".join("" if e not in c else f"{c[e]:.4f}" for c in curves.values()))
    return "\n".join(lines) + "\n"
