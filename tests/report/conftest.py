"""An MLflow store made in the test: finished fine-tuning runs with the grid's tags and metrics."""

import pytest


def log_run(
    client, exp_id, run_key, seed, ap, profile="tiny", exp_name="", curve=(1.0, 2.0), status="FINISHED", run_hash=""
):
    """One fine-tuning run as the grid logs it: tags, per-epoch AP (the last = `ap`), AP at each IoU."""
    import mlflow.entities

    tags = {"stage": "finetune", "run_key": run_key, "seed": str(seed), "profile": profile}
    if exp_name:
        tags["dvc_exp_name"] = exp_name
    if run_hash:
        tags["run_hash"] = run_hash
    run = client.create_run(exp_id, tags=tags)
    rid = run.info.run_id
    for epoch, value in enumerate((*curve, ap)):
        client.log_metric(rid, "AP", value, step=epoch)
    for name in ("AP50", "AP75", "APs", "APm", "APl"):
        client.log_metric(rid, name, ap + 1.0, step=len(curve))
    for prefix in ("AP", "APs", "APm", "APl"):
        for t in range(50, 100, 5):
            client.log_metric(rid, f"{prefix}_iou{t}", ap * (100 - t) / 50, step=len(curve))
    client.set_terminated(rid, status=mlflow.entities.RunStatus.to_string(getattr(mlflow.entities.RunStatus, status)))
    return rid


@pytest.fixture
def store(tmp_path):
    """(tracking uri, client, experiment id) of an empty store with the siamdetr experiment."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    exp_id = client.create_experiment("siamdetr", artifact_location=(tmp_path / "artifacts").as_uri())
    return uri, client, exp_id
