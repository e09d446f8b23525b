"""`siamdetr compare`: two DVC experiments side by side, with the difference and the seed spread."""

from siamdetr.cli import main
from siamdetr.report.compare import compare_runs, select

from .conftest import log_run


def test_compare_two_experiments(store, tmp_path, capsys):
    uri, client, exp = store
    for seed, ap in enumerate([10.0, 11.0, 12.0]):
        log_run(client, exp, "voc-cond100-e50-in-siamese", seed, ap, exp_name="tau-05")
        log_run(client, exp, "voc-cond100-e50-in-siamese", seed, ap + 5.0, exp_name="tau-07")
        log_run(client, exp, "voc-cond100-e50-scratch", seed, ap, exp_name="tau-05")
        log_run(client, exp, "voc-cond100-e50-scratch", seed, ap + 0.5, exp_name="tau-07")
    log_run(client, exp, "voc-cond100-e50-in-updetr", 0, 1.0, exp_name="tau-07")  # on one side only
    table = compare_runs(select(uri, "exp:tau-05"), select(uri, "exp:tau-07"))
    ap = table[table["metric"] == "AP"].set_index("run")
    assert ap.loc["voc-cond100-e50-in-siamese", "B - A"] == 5.0
    assert ap.loc["voc-cond100-e50-in-siamese", "beyond seed spread"]  # 5 > std 1
    assert not ap.loc["voc-cond100-e50-scratch", "beyond seed spread"]  # 0.5 < std 1
    assert ap.loc["voc-cond100-e50-in-updetr", "A"] == "—"
    assert main(["compare", "exp:tau-05", "exp:tau-07", "--tracking-uri", uri, "--out", str(tmp_path / "c.md")]) == 0
    text = (tmp_path / "c.md").read_text()
    assert (
        "A = `exp:tau-05`" in text
        and "| voc-cond100-e50-in-siamese | AP | 11.00 ± 1.00 (n=3) | 16.00 ± 1.00 (n=3) | 5.0 | True |" in text
    )


def test_workspace_side_is_the_runs_outside_dvc_exp(store):
    uri, client, exp = store
    log_run(client, exp, "voc-cond100-e50-scratch", 0, 1.0)
    log_run(client, exp, "voc-cond100-e50-scratch", 1, 2.0, exp_name="x")
    assert list(select(uri, "workspace")["seed"]) == [0]
