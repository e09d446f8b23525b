"""Fine-tuning runs from MLflow (any tracking URI) into pandas, picked by tags, summarised over seeds."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from siamdetr.spread import mean_std
from siamdetr.tracking import EXPERIMENT

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
IOU_POINTS = tuple(range(50, 100, 5))


def workspace_results(finetune_dir: Path) -> dict[tuple[str, int], str]:
    """(run name, seed) → run_hash of every fine-tune whose finished result the workspace holds
    (`<finetune.out_dir>/<stage>/<run>/s<seed>/done.json`, written by the grid)."""
    found = {}
    for done in sorted(Path(finetune_dir).glob("*/*/s*/done.json")):
        try:
            key = json.loads(done.read_text()).get("key")
            seed = int(done.parent.name[1:])
        except (ValueError, OSError):
            continue
        if isinstance(key, str):
            found[(done.parent.parent.name, seed)] = key
    return found


def select_matching(runs: pd.DataFrame, results: dict[tuple[str, int], str], experiment: str) -> pd.DataFrame:
    """The runs that produced the workspace's results: per (run, seed), those whose run_hash tag is the
    result's, preferring runs of this DVC experiment ('' outside one), then the latest. A result that an
    experiment reused (settings unchanged, so not retrained) keeps the run that made it."""
    if runs.empty:
        return runs
    wanted = [results.get((k, s)) for k, s in zip(runs["run_key"], runs["seed"], strict=True)]
    matching = runs[[w is not None and h == w for w, h in zip(wanted, runs["run_hash"], strict=True)]].copy()
    matching["_this_experiment"] = matching["dvc_exp_name"] == experiment
    matching = matching.sort_values(["_this_experiment", "start_time"]).drop_duplicates(
        ["run_key", "seed"], keep="last"
    )
    return matching.drop(columns="_this_experiment").reset_index(drop=True)


def finetune_runs(
    tracking_uri: str, profile: str | None = None, filter_string: str = "", latest_only: bool = True
) -> pd.DataFrame:
    """One row per finished fine-tuning run of the grid (tag run_key): run_id, run_key, seed, start_time,
    dvc_exp_name, run_hash and every metric's last value. A (run_key, seed) logged twice keeps its latest run
    unless `latest_only` is false (the report picks the runs behind the workspace's results: select_matching)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    if exp is None:
        if filter_string:  # still say when the filter itself is invalid (MLflow's Default experiment has id 0)
            client.search_runs(["0"], filter_string, max_results=1)
        return pd.DataFrame(columns=["run_id", "run_key", "seed", "start_time"])
    filters = ["tags.stage = 'finetune'", "attributes.status = 'FINISHED'"]
    if profile:
        filters.append(f"tags.profile = '{profile}'")
    if filter_string:
        filters.append(filter_string)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracking_uri)  # mlflow.search_runs reads the global URI
    try:
        found = mlflow.search_runs([exp.experiment_id], " and ".join(filters), output_format="pandas")
    finally:
        mlflow.set_tracking_uri(previous)
    if found.empty or "tags.run_key" not in found:
        return pd.DataFrame(columns=["run_id", "run_key", "seed", "start_time"])
    found = found[found["tags.run_key"].notna()]

    def tag(name: str) -> pd.Series:
        return found.get(f"tags.{name}", pd.Series("", index=found.index)).fillna("")

    df = pd.DataFrame(
        {
            "run_id": found["run_id"],
            "run_key": found["tags.run_key"],
            "seed": tag("seed").replace("", "0").astype(int),
            "start_time": found["start_time"],
            "dvc_exp_name": tag("dvc_exp_name"),
            "run_hash": tag("run_hash"),
        }
    )
    metrics = found.filter(like="metrics.").rename(columns=lambda c: c.removeprefix("metrics."))
    df = pd.concat([df, metrics], axis=1).sort_values("start_time")
    if latest_only:
        df = df.drop_duplicates(["run_key", "seed"], keep="last")
    return df.reset_index(drop=True)


def summary(df: pd.DataFrame, run_key: str, metric: str) -> tuple[float, float, int] | None:
    """(mean, sample std, n) of a metric over the seeds of one run; None when no seed has it."""
    if df.empty or metric not in df:
        return None
    values = [float(v) for v in df.loc[df["run_key"] == run_key, metric] if pd.notna(v)]
    if not values:
        return None
    return (*mean_std(values), len(values))


def metric_curves(tracking_uri: str, run_ids: Iterable[str], metric: str = "AP") -> dict[str, dict[int, float]]:
    """{run_id: {epoch (1-based): value}} from each run's metric history (Figure 6)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    return {rid: {int(m.step) + 1: float(m.value) for m in client.get_metric_history(rid, metric)} for rid in run_ids}
