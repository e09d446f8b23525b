"""The `sweep` stage: an Optuna study over the sweep file's ranges, then a seed re-check of the best trials
against the paper's values, then reports/sweeps/<study>/.

A trial pretrains Siamese DETR with the trial's values and fine-tunes from it, both with the profile's first
seed; the fine-tune's AP after each evaluated epoch goes to the pruner. The study resumes: rerunning the command
finishes the trials still to do (finished, pruned and failed trials all count towards n_trials), and the
re-check and the reports reuse every run already finished.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import re
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from siamdetr.config import ConfigError
from siamdetr.errors import Stopped
from siamdetr.grid import Layers, Run, load_runs, seeds_of
from siamdetr.sweep import tracking, trial
from siamdetr.sweep.space import SweepSpace, load_space
from siamdetr.sweep.storage import default_storage, is_sqlite, open_storage

log = logging.getLogger(__name__)

ENDED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class Pruned(Stopped):
    """The pruner stopped the trial's fine-tune."""


@dataclass(frozen=True)
class Plan:
    """What every worker needs to run trials of one study (picklable: workers are spawned)."""

    layers: Layers
    space: SweepSpace
    study: str
    storage: str
    n_trials: int
    out: Path  # runs/sweeps/<study>


def prepare(
    layers: Layers,
    space_path: str | Path,
    study: str | None = None,
    storage: str | None = None,
    n_trials: int | None = None,
    workers: int = 1,
    out_root: str | Path = "runs/sweeps",
) -> Plan:
    """Validate everything a sweep reads — the sweep file against the config, the runs, the storage —
    before any training."""
    space = load_space(space_path)
    name = study or space.study
    if not STUDY_NAME.match(name):
        raise ConfigError(f"--study {name!r}: use letters, digits, '.', '_' and '-' (it names a directory)")
    if workers < 1:
        raise ConfigError(f"--workers {workers}: must be >= 1")
    if n_trials is not None and n_trials < 1:
        raise ConfigError(f"--n-trials {n_trials}: must be >= 1")
    base = layers.load()
    pair = runs_of(space, load_runs(base.grid.runs_file), base.grid.runs_file)
    out = Path(out_root) / name
    url = storage or default_storage(Path(out_root))
    if workers > 1 and is_sqlite(url):
        raise ConfigError(
            f"--workers {workers}: one SQLite file cannot serve several workers; use "
            f"--storage journal:///{Path(out_root).resolve() / (name + '.journal')} (one machine) or a "
            "PostgreSQL URL (many)"
        )
    plan = Plan(layers, space, name, url, n_trials or space.n_trials, out)
    check_space(plan, pair)
    open_storage(url, space)  # reachable, or one line now
    return plan


def runs_of(space: SweepSpace, runs: dict[str, Run], runs_file: str) -> tuple[Run, Run]:
    """The sweep file's (pretraining run, fine-tune run) from the grid's runs file."""
    pair = []
    for key, kind in (("pretrain_run", "pretrain"), ("finetune_run", "finetune")):
        name = getattr(space, key)
        run = runs.get(name)
        if run is None or run.kind != kind:
            raise ConfigError(f"{space.path}: {key}: {name!r} is not a {kind} run of {runs_file}")
        pair.append(run)
    return pair[0], pair[1]


def check_space(plan: Plan, pair: tuple[Run, Run]) -> None:
    """Every searched key is a config value that both ends of its range may take."""
    base = plan.layers.load()
    runs = load_runs(base.grid.runs_file)
    for r in plan.space.ranges:
        for value in (r.low, r.high):
            try:
                trial.candidate_configs(plan.layers, base, runs, pair, {r.key: value}, plan.out, 0, 0)
            except ConfigError as e:
                message = str(e).replace("--set: ", "").replace("--set ", "")
                raise ConfigError(f"{plan.space.path}: space.{r.key} = {value}: {message}") from None
    seed = seeds_of(base, "finetune")[0]
    trial.candidate_configs(  # input paths (trunk, prepared data) exist: checked once, with the defaults
        plan.layers, base, runs, pair, {}, plan.out, seed, seed, check=True
    )


def make_pruner(space: SweepSpace) -> optuna.pruners.BasePruner:
    options = space.pruner_options
    if space.pruner == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=options.get("n_startup_trials", 3), n_warmup_steps=options.get("n_warmup_steps", 0)
        )
    if space.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, reduction_factor=options.get("reduction_factor", 3))
    return optuna.pruners.NopPruner()


def load_study(plan: Plan, worker: int = 0) -> optuna.Study:
    """The study, created on first use; the sampler's seed is offset per worker so that parallel workers do
    not draw the same start-up points."""
    sampler = optuna.samplers.TPESampler(
        seed=plan.space.sampler_seed + worker, n_startup_trials=plan.space.n_startup_trials
    )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=plan.study,
        storage=open_storage(plan.storage, plan.space),
        sampler=sampler,
        pruner=make_pruner(plan.space),
        direction="maximize",
        load_if_exists=True,
    )
    searched = {r.key: [r.low, r.high, r.log] for r in plan.space.ranges}
    recorded = study.user_attrs.get("space")
    if recorded is None:
        study.set_user_attr("space", searched)
        study.set_user_attr("objective", plan.space.objective)
    elif recorded != searched or study.user_attrs.get("objective") != plan.space.objective:
        raise ConfigError(
            f"study {plan.study!r} in {plan.storage} was made with another search space or objective "
            f"({recorded}, {study.user_attrs.get('objective')}); use another --study"
        )
    return study


def ended(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=ENDED))


def objective_fn(plan: Plan, parent: str):
    """The objective of a trial: pretrain → fine-tune with the trial's values; the fine-tune's AP."""
    base = plan.layers.load()
    runs = load_runs(base.grid.runs_file)
    pair = runs_of(plan.space, runs, base.grid.runs_file)
    seed = seeds_of(base, "finetune")[0]
    metric = plan.space.objective

    def objective(t: optuna.Trial) -> float:
        values = {r.key: t.suggest_float(r.key, r.low, r.high, log=r.log) for r in plan.space.ranges}
        original = retried_from(t)
        root = plan.out / f"trial-{t.number if original is None else original:04d}"  # a retry resumes its runs
        t.set_user_attr("dir", str(root))
        t.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        pre_cfg, ft_cfg = trial.candidate_configs(plan.layers, base, runs, pair, values, root, seed, seed)
        run_id = tracking.trial_run(parent, plan.study, t, base.profile, seed, original)
        tags = {tracking.PARENT: run_id, "run_key": f"sweep:{plan.study}/trial-{t.number}", "sweep_study": plan.study}

        def on_epoch(epoch: int, record: dict[str, Any]) -> None:
            if "metrics" not in record:
                return
            value = float(record["metrics"][metric])
            t.report(value, epoch + 1)
            tracking.log_intermediate(run_id, f"sweep_{metric}", value, epoch + 1)
            if epoch + 1 < ft_cfg.finetune.epochs and t.should_prune():  # a finished fine-tune is complete
                raise Pruned(f"trial {t.number}: pruned after epoch {epoch + 1} ({metric} {value:.2f})")

        try:
            result = trial.train_candidate(pre_cfg, ft_cfg, tags, on_epoch)
        except Pruned as e:
            tracking.end_trial_run(run_id, optuna.trial.TrialState.PRUNED, f"sweep_{metric}", None)
            raise optuna.TrialPruned(str(e)) from None
        except BaseException as e:
            tracking.client().set_tag(run_id, "error", f"{type(e).__name__}: {e}"[:500])
            tracking.end_trial_run(run_id, optuna.trial.TrialState.FAIL, f"sweep_{metric}", None)
            raise
        value = float(result[metric])
        tracking.end_trial_run(run_id, optuna.trial.TrialState.COMPLETE, f"sweep_{metric}", value)
        return value

    return objective


def retried_from(t: optuna.Trial) -> int | None:
    """The number of the stale trial this one repeats (RetryHeartbeatStaleTrialCallback's copy), if any."""
    frozen = next(f for f in t.study.get_trials(deepcopy=False) if f.number == t.number)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(frozen)


def search(plan: Plan, worker: int = 0, threads: int | None = None) -> None:
    """Run trials until the study has n_trials ended ones (this worker's share of them)."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    study = load_study(plan, worker)
    base = plan.layers.load()
    parent = tracking.study_run(plan.study, base.profile, {r.key: f"[{r.low}, {r.high}]" for r in plan.space.ranges})
    remaining = plan.n_trials - ended(study)
    if remaining <= 0:
        log.info("study %s: %d trials ended already; no new trial", plan.study, ended(study))
        return
    study.optimize(
        objective_fn(plan, parent),
        n_trials=remaining,
        catch=(Exception,),
        callbacks=[optuna.study.MaxTrialsCallback(plan.n_trials, states=ENDED)],
        gc_after_trial=True,
    )
    tracking.reconcile(parent, study)


def _worker(plan: Plan, worker: int) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    search(plan, worker, threads=1)


def run(plan: Plan, workers: int = 1, search_only: bool = False, report_root: str | Path = "reports/sweeps"):
    """Search (in `workers` processes of one thread each when > 1), then re-check and report."""
    from siamdetr.sweep import recheck, report

    base = plan.layers.load()
    parent = tracking.study_run(plan.study, base.profile, {r.key: f"[{r.low}, {r.high}]" for r in plan.space.ranges})
    load_study(plan)  # created once here, before workers race to create it
    if workers == 1:
        search(plan)
    else:
        context = multiprocessing.get_context("spawn")  # not fork: OpenMP and MLflow state
        processes = [context.Process(target=_worker, args=(plan, i)) for i in range(workers)]
        for p in processes:
            p.start()
        for p in processes:
            p.join()
        bad = [p.exitcode for p in processes if p.exitcode]
        if bad:
            raise RuntimeError(f"study {plan.study}: {len(bad)} worker(s) exited with status {bad}")
    study = load_study(plan)
    tracking.reconcile(parent, study)
    if search_only:
        return None
    verdict = recheck.recheck(plan, study, workers)
    paths = report.write(plan, study, verdict, Path(report_root) / plan.study)
    tracking.finish_study_run(parent)
    return paths
