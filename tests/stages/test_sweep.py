"""A smoke sweep end to end: trials that complete, fail and get pruned; MLflow and the study agree; a rerun
resumes the study; the re-check and the report files."""

import json

import mlflow
import optuna
import pytest
import yaml

from siamdetr.grid import Layers
from siamdetr.stages import sweep as stage
from siamdetr.sweep import trial
from tests.sweep_workspace import write_space

LAYERS = Layers("params.yaml", None, (), ("grid.epoch_scale=0.04",))  # smoke fine-tunes: 2 epochs, AP each
FAILING, PRUNED = 1, 2


class PruneOne(optuna.pruners.BasePruner):
    """Prunes one chosen trial at its first report: pruning is then certain, not a matter of AP noise. It
    would prune every trial at its last epoch too, which the sweep never asks: a finished fine-tune is
    complete."""

    def prune(self, study, frozen):
        return frozen.number == PRUNED or frozen.last_step == 2


@pytest.fixture
def rigged(monkeypatch):
    real = trial.train_candidate

    def train(pre_cfg, ft_cfg, tags, on_epoch=None):
        if f"trial-{FAILING:04d}" in pre_cfg.pretrain.out_dir:
            raise RuntimeError("forced failure")
        return real(pre_cfg, ft_cfg, tags, on_epoch)

    monkeypatch.setattr(trial, "train_candidate", train)
    monkeypatch.setattr(stage, "make_pruner", lambda space: PruneOne())


def trial_runs():
    client = mlflow.MlflowClient()
    return {
        int(r.data.tags["optuna_trial"]): r
        for r in client.search_runs(
            ["0", *[e.experiment_id for e in client.search_experiments()]], "tags.sweep_role = 'trial'"
        )
    }


@pytest.mark.slow
def test_a_sweep_with_a_failed_and_a_pruned_trial_completes_and_mlflow_agrees(workspace, rigged):
    space = write_space(workspace, n_trials=4, recheck={"top_k": 2})
    first = stage.prepare(LAYERS, space, n_trials=2)
    stage.run(first, search_only=True)
    study = optuna.load_study(study_name=first.study, storage=first.storage)
    started = {t.number: t.datetime_start for t in study.trials}
    assert len(started) == 2

    plan = stage.prepare(LAYERS, space)  # the same command with the file's 4 trials: resumes
    written = stage.run(plan)
    study = optuna.load_study(study_name=plan.study, storage=plan.storage)
    states = {t.number: t.state for t in study.trials}
    assert states == {
        0: optuna.trial.TrialState.COMPLETE,
        1: optuna.trial.TrialState.FAIL,
        2: optuna.trial.TrialState.PRUNED,
        3: optuna.trial.TrialState.COMPLETE,
    }
    assert {t.number: t.datetime_start for t in study.trials if t.number < 2} == started  # not rerun
    assert set(study.trials[PRUNED].intermediate_values) == {1}  # stopped after its first evaluated epoch of 2
    assert set(study.trials[3].intermediate_values) == {1, 2}

    runs = trial_runs()
    assert set(runs) == set(states)
    status = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}
    for number, state in states.items():
        assert runs[number].data.tags["optuna_state"] == state.name
        assert runs[number].info.status == status[state.name]
    assert "forced failure" in runs[FAILING].data.tags["error"]
    assert "sweep_AP50" in runs[PRUNED].data.metrics  # its intermediate AP reached MLflow
    parents = {r.data.tags["mlflow.parentRunId"] for r in runs.values()}
    assert len(parents) == 1  # one parent run per study

    out = workspace / "reports" / "sweeps" / plan.study
    assert {p.name for p in written} >= {"best.yaml", "trials.csv", "index.md", "history.png", "ap_vs_tau.png"}
    best = yaml.safe_load((out / "best.yaml").read_text())
    assert best["best_trial"] in {"trial-0", "trial-3"}
    assert set(best["recheck"]) == {"defaults", "trial-0", "trial-3"}
    assert all(len(c["per_seed"]) == 2 for c in best["recheck"].values())  # the smoke profile's seeds
    assert best["recheck"]["defaults"]["values"]["pretrain.lambda_r"] == 5.0  # the run's own value
    trial0 = workspace / "runs" / "sweeps" / plan.study / "trial-0000"
    assert {p.parent.name for p in trial0.glob("pretrain/s*/pretrained.pth")} == {"s0", "s1"}  # one per seed
    assert best["command"].startswith("dvc exp run -S ")
    assert len((out / "trials.csv").read_text().splitlines()) == 5

    done = workspace / "runs" / "sweeps" / plan.study / "defaults" / "finetune" / "s1" / "done.json"
    before = done.stat().st_mtime_ns, json.loads(done.read_text())
    stage.run(stage.prepare(LAYERS, space))  # a third run: nothing left to train
    assert len(optuna.load_study(study_name=plan.study, storage=plan.storage).trials) == 4
    assert (done.stat().st_mtime_ns, json.loads(done.read_text())) == before


def test_a_trial_uses_its_values_over_the_runs_own(workspace):
    plan = stage.prepare(LAYERS, write_space(workspace))
    base = LAYERS.load()
    from siamdetr.grid import load_runs

    runs = load_runs(base.grid.runs_file)
    pair = stage.runs_of(plan.space, runs, base.grid.runs_file)
    values = {"pretrain.lambda_r": 2.5, "pretrain.tau": 0.65}
    pre, ft = trial.candidate_configs(LAYERS, base, runs, pair, values, workspace / "t", 1, 1)
    assert (pre.pretrain.lambda_r, pre.pretrain.tau, pre.seed) == (2.5, 0.65, 1)  # the run sets λ_r 5
    assert pre.pretrain.out_dir == str(workspace / "t" / "pretrain" / "s1")
    assert ft.finetune.init == str(workspace / "t" / "pretrain" / "s1" / "pretrained.pth")
    assert ft.model.num_queries == pre.model.num_queries == 10  # the profile's scaling of the runs
