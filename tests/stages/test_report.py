"""Every table and figure built from an MLflow store made in the test: cells, bold, missing runs, run ids."""

import json

import pytest

from siamdetr.config import load_config
from siamdetr.stages.report import run as build_reports
from tests.report.conftest import log_run

VOC_COND = {  # Table 2's ImageNet-pretrained Conditional DETR group, three seeds each
    "voc-cond100-e50-scratch": [1.0, 2.0, 3.0],
    "voc-cond100-e50-in-updetr": [2.0, 3.0, 4.0],
    "voc-cond100-e50-in-siamese": [5.0, 6.0, 7.0],
}  # voc-cond100-e50-in-detreg is left out: a missing run


@pytest.fixture
def report(store, tmp_path):
    uri, client, exp = store
    ids = {}
    for key, aps in VOC_COND.items():
        ids[key] = [log_run(client, exp, key, seed, ap) for seed, ap in enumerate(aps)]
    for seed, ap in enumerate([3.0, 4.0]):  # Figure 4's pair on COCO
        log_run(client, exp, "coco-cond100-e50-in-updetr", seed, ap)
        log_run(client, exp, "coco-cond100-e50-in-siamese", seed, ap + 2)
    log_run(client, exp, "voc-cond100-e50-in-siamese", 0, 99.0, profile="smoke")  # another profile: ignored
    log_run(client, exp, "voc-cond100-e50-scratch", 0, 99.0, status="FAILED")  # unfinished: ignored
    cfg = load_config(params=None, overrides=[f"finetune.out_dir={tmp_path / 'none'}"], check_paths=False)
    record = build_reports(cfg, tmp_path / "reports", uri)
    return tmp_path / "reports", record, ids


def test_every_table_and_figure_is_written(report):
    out, _, _ = report
    for n in (1, 2, 3, 4):
        for ext in ("md", "csv", "tex"):
            assert (out / "tables" / f"table{n}.{ext}").stat().st_size > 0
    for fig in ("figure4", "figure6"):
        for ext in ("png", "svg"):
            assert (out / "figures" / f"{fig}.{ext}").stat().st_size > 1000
    index = (out / "index.md").read_text()
    assert "![Figure 4](figures/figure4.png)" in index and "## Table 3" in index


def test_a_rebuild_from_the_same_runs_gives_the_same_figure_bytes(report, store, tmp_path):
    out, _, _ = report
    uri, _, _ = store
    cfg = load_config(params=None, overrides=[f"finetune.out_dir={tmp_path / 'none'}"], check_paths=False)
    build_reports(cfg, tmp_path / "again", uri)
    for name in ("figure4.svg", "figure4.png", "figure6.svg", "figure6.png"):
        assert (tmp_path / "again" / "figures" / name).read_bytes() == (out / "figures" / name).read_bytes(), name


def test_cells_are_mean_std_n_and_the_difference_to_the_paper(report):
    out, _, _ = report
    md = (out / "tables" / "table2.md").read_text()
    ours = next(line for line in md.splitlines() if line.startswith("| ours | SwAV R50 | Conditional | ImageNet"))
    cells = [c.strip() for c in ours.strip("|").split("|")]
    # paper 58.1; ours mean 6.0, sample std 1.0 over 3 seeds; the best of its group → bold
    assert cells[6:9] == ["**58.1**", "**6.0 ± 1.0 (n=3)**", "-52.1"]
    csv = (out / "tables" / "table2.csv").read_text().splitlines()
    row = next(r for r in csv if r.startswith("ours,SwAV R50,Conditional,ImageNet"))
    assert ",58.1,6.0,1.0,3,-52.1," in row
    tex = (out / "tables" / "table2.tex").read_text()
    assert r"\toprule" in tex and r"\textbf{6.0 $\pm$ 1.0 (n=3)}" in tex


def test_a_missing_run_shows_as_a_dash_and_is_listed(report):
    out, record, _ = report
    md = (out / "tables" / "table2.md").read_text()
    detreg = next(line for line in md.splitlines() if line.startswith("| DETReg | SwAV R50 | Conditional | ImageNet"))
    assert "| 57.5 | — | — |" in detreg
    assert "voc-cond100-e50-in-detreg (no finished MLflow run)" in record["missing"]["table2"]
    # Table 1's supervised-backbone row is not in the grid, and the table says why
    assert "from scratch (supervised ImageNet backbone: not part of the grid)" in record["missing"]["table1"]


def test_the_report_records_the_run_ids_it_used(report):
    out, record, ids = report
    used = json.loads((out / "runs.json").read_text())["runs_used"]
    assert sorted(used["table2"]) == sorted(sum(ids.values(), []))  # not the other profile's, not the failed one
    assert len(used["figure4"]) == 4 and len(used["figure6"]) == 9 + 4  # Tables 2 and 1 groups


def test_the_reading_checks_claims_with_numbers(report):
    out, _, _ = report
    index = (out / "index.md").read_text()
    line = next(x for x in index.splitlines() if "best AP (Conditional 100 queries 50 epochs, ImageNet" in x)
    assert "| yes | yes |" in line  # holds, and every seed's difference is +3: beyond noise
    assert (
        "ours − UP-DETR = +3.00 AP [95% CI +3.00, +3.00] over 3 paired seeds (ours 6.00±1.00, UP-DETR 3.00±1.00)"
        in line
    )
    line = next(
        x
        for x in index.splitlines()
        if "UP-DETR pretraining beats training from scratch (Conditional 100 queries 50 epochs, ImageNet" in x
    )
    assert "| yes | yes |" in line and "UP-DETR − scratch = +1.00 AP" in line  # +1 on every seed despite std 1
    not_judged = next(x for x in index.splitlines() if x.startswith("Not judged, for lack of runs"))
    assert "Siamese DETR has the best AP (Deform-MS 300 queries 50 epochs, ImageNet-pretrained) (Table 2)" in not_judged
    assert "| Siamese DETR has the best AP (Deform-MS" not in index


def test_figure6_is_read_on_the_whole_curve_paired_by_seed(report):
    """Each run logs AP 1, 2 and then its final AP: ours' curves lie 4/3 above scratch's on every seed."""
    out, _, _ = report
    index = (out / "index.md").read_text()
    line = next(
        x for x in index.splitlines() if "converges faster than training from scratch (VOC, Conditional 100" in x
    )
    assert "| Figure 6 | yes | yes |" in line
    assert "ours − scratch = +1.33 mean AP over the fine-tuning curve [95% CI +1.33, +1.33] over 3 paired seeds" in line
    not_judged = next(x for x in index.splitlines() if x.startswith("Not judged, for lack of runs"))
    assert "converges faster than training from scratch (COCO, Vanilla 100 queries 150 epochs)" in not_judged
    assert "converges faster than training from scratch (VOC, Conditional 100 queries 50 epochs, COCO" not in index


def test_an_empty_store_gives_dashes_not_a_crash(store, tmp_path):
    uri, _, _ = store
    record = build_reports(load_config(params=None, check_paths=False), tmp_path / "r", uri)
    assert len(record["missing"]["table3"]) == 6
    assert (tmp_path / "r" / "figures" / "figure6.png").is_file()


def test_paired_differences_separate_a_consistent_gain_from_noise(store):
    from siamdetr.report.reading import paired
    from siamdetr.report.runs import finetune_runs

    uri, client, exp = store
    for seed, (a, b, c) in enumerate([(10.0, 9.0, 12.0), (20.0, 19.2, 15.0), (30.0, 28.9, 31.0)]):
        log_run(client, exp, "a", seed, a)
        log_run(client, exp, "b", seed, b)  # about 1 below a on every seed, though the seeds differ by 10
        log_run(client, exp, "c", seed, c)
    log_run(client, exp, "b", 3, 0.0)  # a seed that `a` lacks is not paired
    runs = finetune_runs(uri)
    gain = paired(runs, "a", "b")
    assert gain.n == 3 and gain.mean == pytest.approx(0.9667, abs=1e-4)
    assert gain.beyond_noise and 0 < gain.low < gain.mean < gain.high < 2  # t(0.975, 2) = 4.303
    noise = paired(runs, "a", "c")
    assert noise.low < 0 < noise.high and noise.beyond_noise is False
    assert paired(runs, "a", "missing") is None


def test_the_index_says_which_trunk_the_detectors_used(store, tmp_path):
    uri, _, _ = store
    backbone = tmp_path / "backbone"
    backbone.mkdir()
    metrics = {"backbone": "small", "method": "supervised", "trained": True, "knn_k": 5, "knn_acc": 0.874}
    metrics |= {"knn_held_out_images": 840, "knn_classes": 14, "knn_acc_random_init": 0.362}
    (backbone / "metrics.json").write_text(json.dumps(metrics))
    cfg = load_config(params=None, overrides=[f"backbone.out_dir={backbone}"], check_paths=False)
    build_reports(cfg, tmp_path / "r", uri)
    index = (tmp_path / "r" / "index.md").read_text()
    assert 'trained supervised (Table 1\'s "Sup." setting, not SwAV)' in index
    assert "5-NN probe 0.87 on 840 held-out images of 14 classes (random init 0.36)" in index


def test_the_index_links_every_sweep_with_its_verdict(tmp_path):
    from siamdetr.stages.report import sweeps_section

    assert sweeps_section(tmp_path) == []
    study = tmp_path / "sweeps" / "weights"
    study.mkdir(parents=True)
    (study / "best.yaml").write_text("verdict: trial-3 1.0 vs defaults 0.5; not beyond the seed spread\n")
    (tmp_path / "sweeps" / "unfinished").mkdir()  # no best.yaml yet: not linked
    lines = sweeps_section(tmp_path)
    assert lines[0] == "## Sweeps"
    assert lines[2] == "- [weights](sweeps/weights/index.md): trial-3 1.0 vs defaults 0.5; not beyond the seed spread"
    assert not any("unfinished" in line for line in lines)


def test_the_report_uses_the_runs_behind_the_workspaces_results(store, tmp_path, monkeypatch):
    uri, client, exp = store
    finetune_dir = tmp_path / "finetune"
    for seed in (0, 1):
        done = finetune_dir / "voc-cond100-e50" / "voc-cond100-e50-scratch" / f"s{seed}" / "done.json"
        done.parent.mkdir(parents=True)
        done.write_text(json.dumps({"key": "current", "result": {}}))
    run = "voc-cond100-e50-scratch"
    behind_s0 = log_run(client, exp, run, 0, 1.0, run_hash="current")
    log_run(client, exp, run, 0, 50.0, run_hash="old-settings")  # newer, but not what the workspace holds
    behind_s1 = log_run(client, exp, run, 1, 2.0, run_hash="current")
    in_exp = log_run(client, exp, run, 1, 60.0, run_hash="current", exp_name="lr-test")  # same settings, elsewhere
    cfg = load_config(params=None, overrides=[f"finetune.out_dir={finetune_dir}"], check_paths=False)

    record = build_reports(cfg, tmp_path / "r", uri)
    assert sorted(record["runs_used"]["table2"]) == sorted([behind_s0, behind_s1])
    index = (tmp_path / "r" / "index.md").read_text()
    assert "2 runs: those whose settings hash matches the 2 results in" in index
    assert "2 of them made in the workspace (no DVC experiment), 0 reused" in index
    assert "2 other finished runs in the store" in index

    monkeypatch.setenv("DVC_EXP_NAME", "lr-test")  # the report stage of `dvc exp run` prefers its own runs
    record = build_reports(cfg, tmp_path / "r", uri)
    assert sorted(record["runs_used"]["table2"]) == sorted([behind_s0, in_exp])
    assert "1 of them made in DVC experiment `lr-test`, 1 reused unchanged" in (tmp_path / "r" / "index.md").read_text()
