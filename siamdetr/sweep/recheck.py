"""Against seed noise: the best trials and the paper's values, re-run with every seed of the profile.

A search ranks trials by one seed's AP, and one short run's AP is noisy, so the best trial is partly the
luckiest. The re-check runs each of the top-k trials' values and the paper's defaults with each of
grid.seeds, pretraining included (seed s pretrains with s, whatever grid.pretrain_seeds says: the values
under test act through the pretraining, and two pretrainings of one setting can differ by several AP points
on the tiny profile — docs/method.md); a trial's own runs are reused for the seed it already has. Jobs
(candidate × seed) run in `workers` processes of one thread each. The verdict: does the re-checked best beat
the defaults by more than the larger seed std, and does the paired 95 % interval of (best − defaults)
exclude zero?
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import optuna
import pandas as pd

from siamdetr.grid import load_runs, seeds_of
from siamdetr.report.reading import paired
from siamdetr.spread import mean_std
from siamdetr.sweep import trial

log = logging.getLogger(__name__)

DEFAULTS = "defaults"


def candidates(plan: Any, study: optuna.Study) -> dict[str, tuple[dict[str, float], Path]]:
    """{name: (values, directory)}: the paper's values (what the runs resolve to without the sweep) and
    the top-k complete trials by their search value."""
    base = plan.layers.load()
    runs = load_runs(base.grid.runs_file)
    pre_cfg, _ = trial.candidate_configs(plan.layers, base, runs, _pair(plan, runs), {}, plan.out, 0, 0)
    defaults = {key: _get(pre_cfg, key) for key in plan.space.keys}
    out = {DEFAULTS: (defaults, plan.out / DEFAULTS)}
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    for t in sorted(complete, key=lambda t: (-t.value, t.number))[: plan.space.top_k]:
        out[f"trial-{t.number}"] = (dict(t.params), Path(t.user_attrs["dir"]))
    return out


def _pair(plan: Any, runs: dict) -> tuple:
    return runs[plan.space.pretrain_run], runs[plan.space.finetune_run]


def _get(cfg: Any, dotted: str) -> float:
    node = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return float(node)


def recheck(plan: Any, study: optuna.Study, workers: int = 1) -> dict[str, Any]:
    """Run (or reuse) every candidate × seed; returns per-candidate values per seed, mean ± std, and the
    verdict of the re-checked best against the defaults."""
    base = plan.layers.load()
    seeds = seeds_of(base, "finetune")
    metric = plan.space.objective
    jobs = [(plan, name, *candidate, seed) for name, candidate in candidates(plan, study).items() for seed in seeds]
    if workers > 1 and len(jobs) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        context = multiprocessing.get_context("spawn")  # not fork: OpenMP and MLflow state
        with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=context) as pool:
            scores = list(pool.map(_run_job, jobs, [1] * len(jobs)))
    else:
        scores = [_run_job(job) for job in jobs]
    results: dict[str, dict[str, Any]] = {}
    for (_, name, values, _, seed), score in zip(jobs, scores, strict=True):
        results.setdefault(name, {"values": values, "per_seed": {}})["per_seed"][seed] = score
    for r in results.values():
        r["mean"], r["std"] = mean_std(r["per_seed"].values())
    rows = [{"run_key": n, "seed": s, metric: v} for n, r in results.items() for s, v in r["per_seed"].items()]
    return {"metric": metric, "seeds": seeds, "candidates": results, **verdict(results, pd.DataFrame(rows), metric)}


def _run_job(job: tuple, threads: int | None = None) -> float:
    """One candidate × seed: its own pretraining with that seed, then the fine-tune; the objective."""
    plan, name, values, root, seed = job
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    base = plan.layers.load()
    runs = load_runs(base.grid.runs_file)
    pre_cfg, ft_cfg = trial.candidate_configs(plan.layers, base, runs, _pair(plan, runs), values, root, seed, seed)
    log.info("re-check %s seed %d", name, seed)
    tags = {"run_key": f"sweep:{plan.study}/{name}", "sweep_study": plan.study, "sweep_role": "recheck"}
    return float(trial.train_candidate(pre_cfg, ft_cfg, tags)[plan.space.objective])


def verdict(results: dict[str, dict[str, Any]], table: pd.DataFrame, metric: str) -> dict[str, Any]:
    """Which re-checked trial is best, and whether it beats the defaults beyond seed noise."""
    trials = {k: v for k, v in results.items() if k != DEFAULTS}
    if not trials:
        return {"best": None, "beats_defaults": None, "text": "no complete trial to re-check"}
    best = max(trials, key=lambda k: trials[k]["mean"])
    b, d = trials[best], results[DEFAULTS]
    gain, spread = b["mean"] - d["mean"], max(b["std"], d["std"])
    p = paired(table, best, DEFAULTS, metric)
    interval = None if p is None or p.low is None else [p.low, p.high]
    beats = gain > spread and len(b["per_seed"]) > 1
    text = (
        f"{best} {b['mean']:.2f} ± {b['std']:.2f} vs defaults {d['mean']:.2f} ± {d['std']:.2f} {metric} "
        f"over {len(b['per_seed'])} seeds: {gain:+.2f}"
        + ("" if interval is None else f" (paired 95% CI {interval[0]:+.2f}, {interval[1]:+.2f})")
        + (
            "; beats the defaults by more than the seed spread"
            if beats
            else f"; not beyond the seed spread ({spread:.2f}): keep the paper's values"
        )
    )
    return {
        "best": best,
        "gain": gain,
        "spread": spread,
        "paired_ci": interval,
        "beats_defaults": beats,
        "beyond_paired_noise": None if p is None else p.beyond_noise,
        "text": text,
    }
