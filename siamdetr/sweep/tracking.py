"""MLflow for a sweep: one parent run per study, one nested run per trial, the pretraining and fine-tune of a
trial nested below it (MLflow's `mlflow.parentRunId` tag).

Written with MlflowClient and explicit run ids rather than Optuna's MLflowCallback: that callback is
deprecated (optuna-integration 4.9, removal in 6.0), logs a trial only once it has ended (no intermediate AP
while it runs) and does not give pruned or failed trials a run status. Every worker, on any machine, finds
the study's parent run by its tags, so a study has one parent however many workers feed it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import mlflow
import optuna

from siamdetr.tracking import default_tracking_uri, ensure_experiment, git_commit, store_lock

STATUS = {  # optuna state -> MLflow run status
    optuna.trial.TrialState.COMPLETE: "FINISHED",
    optuna.trial.TrialState.PRUNED: "KILLED",
    optuna.trial.TrialState.FAIL: "FAILED",
}
PARENT = "mlflow.parentRunId"


def client() -> mlflow.MlflowClient:
    return mlflow.MlflowClient(default_tracking_uri())


def study_run(study: str, profile: str, params: Mapping[str, Any]) -> str:
    """The id of the study's parent run, created by the first worker that asks."""
    uri = default_tracking_uri()
    with store_lock(uri):
        experiment_id = ensure_experiment(uri)
        c = client()
        found = c.search_runs(
            [experiment_id],
            f"tags.sweep_study = '{study}' and tags.sweep_role = 'study'",
            order_by=["attributes.start_time ASC"],
            max_results=1,
        )
        if found:
            return found[0].info.run_id
        run = c.create_run(
            experiment_id,
            run_name=f"sweep-{study}",
            tags={"sweep_study": study, "sweep_role": "study", "profile": profile, "git_commit": git_commit()},
        )
        for key, value in params.items():
            c.log_param(run.info.run_id, key, str(value))
        return run.info.run_id


def trial_run(parent: str, study: str, trial: optuna.trial.Trial, profile: str, seed: int, retry_of: int | None) -> str:
    """A nested run for one trial (state RUNNING until `end_trial_run`), tagged like the grid's runs."""
    c = client()
    experiment_id = c.get_run(parent).info.experiment_id
    tags = {
        PARENT: parent,
        "sweep_study": study,
        "sweep_role": "trial",
        "optuna_trial": str(trial.number),
        "optuna_state": "RUNNING",
        "stage": "sweep",
        "profile": profile,
        "seed": str(seed),
        "git_commit": git_commit(),
    }
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc_exp_name"] = os.environ["DVC_EXP_NAME"]
    if retry_of is not None:
        tags["retry_of"] = str(retry_of)
    run = c.create_run(experiment_id, run_name=f"trial-{trial.number}", tags=tags)
    for key, value in trial.params.items():
        c.log_param(run.info.run_id, key, str(value))
    return run.info.run_id


def log_intermediate(run_id: str, name: str, value: float, step: int) -> None:
    client().log_metric(run_id, name, value, step=step)


def end_trial_run(run_id: str, state: optuna.trial.TrialState, name: str, value: float | None) -> None:
    c = client()
    if value is not None:
        c.log_metric(run_id, name, value)
    c.set_tag(run_id, "optuna_state", state.name)
    c.set_terminated(run_id, STATUS.get(state, "FAILED"))


def trial_runs(parent: str) -> dict[int, Any]:
    """{trial number: run} of the study's trial runs (the latest run of a number, should one repeat)."""
    c = client()
    experiment_id = c.get_run(parent).info.experiment_id
    runs: dict[int, Any] = {}
    for run in c.search_runs(
        [experiment_id],
        f"tags.`{PARENT}` = '{parent}' and tags.sweep_role = 'trial'",
        order_by=["attributes.start_time ASC"],
        max_results=50000,
    ):
        runs[int(run.data.tags["optuna_trial"])] = run
    return runs


def reconcile(parent: str, study: optuna.Study) -> int:
    """Close the runs of trials the study has ended without their worker (a killed worker's trial, failed
    by a heartbeat) with the study's state; returns how many it closed."""
    states = {t.number: t.state for t in study.get_trials(deepcopy=False)}
    closed = 0
    for number, run in trial_runs(parent).items():
        state = states.get(number)
        if state in STATUS and run.data.tags.get("optuna_state") != state.name:
            end_trial_run(run.info.run_id, state, "", None)
            closed += 1
    return closed


def finish_study_run(parent: str) -> None:
    client().set_terminated(parent, "FINISHED")
