"""Finished fine-tuning runs with the grid's tags and metrics, logged into the `store` fixture (tests/conftest.py)."""


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
