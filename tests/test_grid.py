"""The experiment grid: run files validated, paper values scaled, a finished seed skipped only when
nothing it depends on changed."""

import json
from pathlib import Path

import pytest
import yaml

from siamdetr.config import ConfigError, load_config
from siamdetr.grid import (
    DONE,
    execute,
    load_runs,
    plan,
    scaled,
    seed_overrides,
    seeds_of,
    selected,
    split_placement,
)
from siamdetr.report.paper import load_paper

RUNS_FILE = Path(__file__).parents[1] / "experiments" / "runs.yaml"


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "runs.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_the_shipped_grid_covers_every_row_of_the_paper_tables():
    runs = load_runs(RUNS_FILE)
    rows = [r for t in load_paper().values() for r in t.rows]
    wanted = {r.run for r in rows if r.run}
    assert wanted <= set(runs), sorted(wanted - set(runs))
    finetunes = {n for n, r in runs.items() if r.kind == "finetune"}
    assert finetunes == wanted  # no fine-tune that no table shows
    used_pretrains = {runs[n].pretrain for n in finetunes if runs[n].pretrain}
    assert used_pretrains == {n for n, r in runs.items() if r.kind == "pretrain"}
    assert all(r.why for r in rows if r.run is None)  # every row left out says why


def test_shipped_runs_resolve_to_valid_configs_with_the_paper_settings():
    runs = load_runs(RUNS_FILE)
    base = load_config(params=None, profile="paper", check_paths=False)

    def cfg_of(name):
        return load_config(
            params=None,
            profile="paper",
            check_paths=False,
            run_layer=(runs[name].source, seed_overrides(base, runs, runs[name], 0)),
        )

    assert cfg_of("in-cond100-siamese").pretrain.lambda_r == 5.0  # Conditional on ImageNet: L_r weight 5
    assert cfg_of("in-dms300-siamese").pretrain.lambda_r == 3.0
    assert cfg_of("coco-cond100-siamese").pretrain.lambda_g == 0.3  # COCO: L_g weight 0.3
    assert cfg_of("in-cond100-updetr").pretrain.proposals == "random"
    assert cfg_of("in-cond100-detreg").pretrain.proposals == "selective_search"
    c = cfg_of("coco-vanilla100-e150-in-siamese")
    assert (c.model.variant, c.model.num_queries, c.finetune.epochs, c.finetune.lr_drop) == ("vanilla", 100, 150, 120)
    assert c.finetune.init.endswith("imagenet/in-vanilla100-siamese/s0/pretrained.pth")
    d = cfg_of("voc-dms300-e50-in-detreg")
    assert (d.model.num_queries, d.finetune.lr, d.finetune.lr_backbone) == (300, 2e-4, 2e-5)
    assert cfg_of("voc-cond100-e50-scratch").finetune.init is None
    coco = cfg_of("coco-cond100-updetr").pretrain  # COCO pretraining: batch 64, 480-800 px views (official code)
    assert (coco.batch_size, coco.short_min, coco.short_max, coco.max_size) == (64, 480, 800, 1333)
    imagenet = cfg_of("in-cond100-updetr").pretrain
    assert (imagenet.batch_size, imagenet.short_min, imagenet.short_max, imagenet.max_size) == (256, 320, 480, 600)


def test_a_profile_keeps_its_own_value_of_its_profile_keys():
    runs = load_runs(RUNS_FILE)
    tiny = load_config(params=None, profile="tiny", check_paths=False)
    overrides = scaled(runs["coco-cond100-siamese"], tiny)
    assert "pretrain.batch_size" not in overrides and overrides["pretrain.lambda_g"] == 0.3
    with pytest.raises(ConfigError, match="grid.profile_keys: 'pretrain.batchsize' is not a config key"):
        load_config(params=None, overrides=["grid.profile_keys=[pretrain.batchsize]"], check_paths=False)


def test_scaled_shrinks_queries_and_schedules_but_never_to_zero(tmp_path):
    path = write(
        tmp_path,
        {"finetune_stages": {"s": {"r": {"model": {"num_queries": 300}, "finetune": {"epochs": 50, "lr_drop": 40}}}}},
    )
    run = load_runs(path)["r"]
    cfg = load_config(params=None, overrides=["grid.query_scale=0.1", "grid.epoch_scale=0.04"])
    assert scaled(run, cfg) == {"model.num_queries": 30, "finetune.epochs": 2, "finetune.lr_drop": 2}
    tiny = load_config(params=None, overrides=["grid.query_scale=0.001", "grid.epoch_scale=0.001"])
    assert scaled(run, tiny) == {"model.num_queries": 1, "finetune.epochs": 1, "finetune.lr_drop": 1}


@pytest.mark.parametrize(
    "data, message",
    [
        ({"pretrain_stages": {"a": {"x": {}}}, "finetune_stages": {"b": {"x": {}}}}, "used twice"),
        ({"finetune_stages": {"b": {"y": {"init": "nope"}}}}, "init = 'nope' is not a pretraining run"),
        ({"pretrain_stages": {"a": {"x": {"init": "z"}}}}, "`init` belongs to fine-tuning runs only"),
        ({"runs": {}}, "unknown section"),
        ({"pretrain_stages": {"a": ["not", "a", "mapping"]}}, "expected a mapping"),
    ],
)
def test_bad_run_files_are_refused_with_the_file_and_the_key(tmp_path, data, message):
    with pytest.raises(ConfigError, match=message) as err:
        load_runs(write(tmp_path, data))
    assert "runs.yaml" in str(err.value)


def test_a_run_value_is_overridden_by_set_and_names_its_source(tmp_path):
    path = write(tmp_path, {"pretrain_stages": {"s": {"r": {"pretrain": {"tau": 0.6}}}}})
    run = load_runs(path)["r"]
    cfg = load_config(params=None, run_layer=(run.source, run.overrides))
    assert cfg.pretrain.tau == 0.6 and cfg.source_of("pretrain.tau").endswith("pretrain_stages.s.r")
    cfg = load_config(params=None, run_layer=(run.source, run.overrides), overrides=["pretrain.tau=0.7"])
    assert cfg.pretrain.tau == 0.7


def test_a_seeds_placement_wins_over_set_so_set_out_dir_moves_the_whole_grid(tmp_path):
    path = write(tmp_path, {"finetune_stages": {"st": {"r": {"finetune": {"lr": 3e-4}}}}})
    runs = load_runs(path)
    base = load_config(params=None, profile="smoke", overrides=["finetune.out_dir=/elsewhere"])
    settings, placement = split_placement(seed_overrides(base, runs, runs["r"], 2))
    cfg = load_config(
        params=None,
        profile="smoke",
        overrides=["finetune.out_dir=/elsewhere", "finetune.lr=1e-5", *placement],
        run_layer=(runs["r"].source, settings),
    )
    assert cfg.finetune.out_dir == "/elsewhere/st/r/s2" and cfg.seed == 2
    assert cfg.finetune.lr == 1e-5  # a setting of the run still yields to --set


def small_grid(tmp_path: Path) -> dict:
    return load_runs(
        write(
            tmp_path,
            {
                "pretrain_stages": {"p": {"pa": {}, "pb": {}}},
                "finetune_stages": {"f": {"fa": {"init": "pa"}, "fb": {"init": "pb"}, "fs": {}}},
            },
        )
    )


def test_grid_include_selects_runs_by_pattern_and_keeps_a_finetune_with_its_pretraining(tmp_path):
    runs = small_grid(tmp_path)
    finetunes = [r for r in runs.values() if r.kind == "finetune"]
    cfg = load_config(params=None, overrides=["grid.include=[pa, fa, 'f?']"], check_paths=False)
    with pytest.raises(ConfigError, match="selects fb but not the pretraining pb"):
        selected(finetunes, runs, cfg)
    cfg = load_config(params=None, overrides=["grid.include=[pa, fa, fs]"], check_paths=False)
    assert [r.name for r in selected(finetunes, runs, cfg)] == ["fa", "fs"]
    everything = load_config(params=None, overrides=['grid.include=["*"]'], check_paths=False)
    assert len(selected(finetunes, runs, everything)) == 3


def fake_train(job, threads):
    """What a training writes that the grid reads back: a result that depends only on the run and seed."""
    job.out.mkdir(parents=True, exist_ok=True)
    (job.out / "trained").write_text(str(threads))
    return {"AP": float(job.seed * 10 + len(job.run.name)), "AP50": 1.0}


@pytest.mark.parametrize("workers", [1, 2])
def test_execute_runs_pending_seeds_once_in_any_number_of_processes(tmp_path, workers):
    runs = small_grid(tmp_path)
    dirs = [f"finetune.out_dir={tmp_path / 'ft'}", f"pretrain.out_dir={tmp_path / 'pt'}"]
    base = load_config(params=None, profile="smoke", overrides=dirs, check_paths=False)
    for seed in (0, 1):  # the pretrained weights fa starts from (the skip key hashes them)
        weights = tmp_path / "pt" / "p" / "pa" / f"s{seed}" / "pretrained.pth"
        weights.parent.mkdir(parents=True)
        weights.write_bytes(b"weights")

    def configure(overrides):
        sets = [f"{k}={json.dumps(v)}" for k, v in overrides.items()]
        return load_config(params=None, profile="smoke", overrides=sets, check_paths=False)

    jobs = [j for name in ("fs", "fa") for j in plan(runs[name], [0, 1], configure, base, runs)]
    summaries = execute(jobs, workers, fake_train)
    assert summaries["fs"]["AP"] == pytest.approx(7.0) and summaries["fs"]["AP_n"] == 2  # (2 + 12) / 2
    assert summaries["fa"]["AP"] == pytest.approx(7.0)
    assert {(j.out / "trained").read_text() for j in jobs} == {"None" if workers == 1 else "1"}
    for job in jobs:
        (job.out / "trained").unlink()
    assert execute(jobs, workers, fake_train) == summaries  # every seed is done: nothing retrains
    assert not any((j.out / "trained").exists() for j in jobs)
    (jobs[0].out / DONE).unlink()  # one seed left to redo (a resumed grid): same thread count as before
    assert execute(jobs, workers, fake_train) == summaries
    assert (jobs[0].out / "trained").read_text() == ("None" if workers == 1 else "1")


def test_finetunes_start_from_their_seeds_pretraining_or_the_first_pretraining_seed(tmp_path):
    runs = small_grid(tmp_path)
    cfg = load_config(params=None, overrides=["grid.seeds=[0, 1, 2]", "grid.pretrain_seeds=[1]"], check_paths=False)
    assert seeds_of(cfg, "pretrain") == [1] and seeds_of(cfg, "finetune") == [0, 1, 2]
    inits = [seed_overrides(cfg, runs, runs["fa"], seed)["finetune.init"] for seed in (0, 1, 2)]
    assert all(init.endswith("p/pa/s1/pretrained.pth") for init in inits)
    same = load_config(params=None, overrides=["grid.seeds=[0, 1]", "grid.pretrain_seeds=null"], check_paths=False)
    assert seed_overrides(same, runs, runs["fa"], 1)["finetune.init"].endswith("p/pa/s1/pretrained.pth")
    assert seeds_of(same, "pretrain") == [0, 1]
