"""The paper profile holds the paper's §4.1 settings and the official code's exactly."""

from pathlib import Path

from siamdetr.config import load_config
from siamdetr.grid import load_runs, selected


def test_paper_profile_matches_section_4_1():
    cfg = load_config(params=None, profile="paper")
    m, p, f = cfg.model, cfg.pretrain, cfg.finetune
    # Architecture: frozen R50, 6+6 layers of 256 dims and 8 heads, 100 queries (300 set per experiment).
    assert (m.backbone, m.d_model, m.nheads, m.enc_layers, m.dec_layers) == ("resnet50", 256, 8, 6, 6)
    assert (m.num_queries, m.dropout, m.n_points) == (100, 0.1, 4)
    # Pretraining: AdamW, batch 256 (ImageNet), lr 1e-4, wd 1e-4, 40/60 schedule, clip 0.1.
    assert (p.batch_size, p.lr, p.weight_decay, p.epochs, p.lr_drop, p.clip_max_norm) == (256, 1e-4, 1e-4, 60, 40, 0.1)
    # Method: τ = 0.5, n = 10, EdgeBoxes, the full method; loss weights of the official ImageNet config.
    assert (p.tau, p.n_proposals, p.proposals, p.method, p.semantic) == (0.5, 10, "edgeboxes", "siamese", "R-C+G")
    assert (p.lambda_loc, p.lambda_r, p.lambda_g) == (1.0, 3.0, 10.0)
    assert (p.short_min, p.short_max, p.max_size, p.crop_size, p.jitter) == (320, 480, 600, 128, 0.1)
    # Fine-tuning: batch 32, Transformer lr 1e-4, backbone 5e-5, 40/50 schedule, DETR's multi-scale augmentation.
    assert (f.batch_size, f.lr, f.lr_backbone, f.epochs, f.lr_drop, f.clip_max_norm) == (32, 1e-4, 5e-5, 50, 40, 0.1)
    assert f.train_scales == list(range(480, 801, 32)) and (f.max_size, f.test_size) == (1333, 800)
    assert (f.crop_min, f.crop_max) == (384, 600)
    # Real data: VOC 07+12 trainval → VOC 07 test.
    assert cfg.data.synthetic is False
    assert (cfg.data.voc_train_years, cfg.data.voc_test_years) == ([2007, 2012], [2007])


RUNS_FILE = Path(__file__).parents[1] / "experiments" / "runs.yaml"


def test_tiny_runs_table_2s_voc_conditional_row_with_its_pretrainings():
    cfg = load_config(params=None, profile="tiny", check_paths=False)
    runs = load_runs(RUNS_FILE)
    chosen = {r.name for r in selected(list(runs.values()), runs, cfg)}
    assert chosen == {
        "in-cond100-siamese",
        "in-cond100-updetr",
        "in-cond100-detreg",
        "voc-cond100-e50-scratch",
        "voc-cond100-e50-in-updetr",
        "voc-cond100-e50-in-detreg",
        "voc-cond100-e50-in-siamese",
    }
    assert len(cfg.grid.seeds) >= 3 and cfg.backbone.method == "supervised"
    # the paper's regime: many unlabeled pretraining images, fewer labeled fine-tuning ones
    assert cfg.data.synth.imagenet_images > 2 * cfg.data.synth.voc_trainval


def test_tiny_all_is_tiny_with_every_run():
    tiny = load_config(params=None, profile="tiny", check_paths=False)
    every = load_config(params=None, profile="tiny-all", check_paths=False)
    runs = load_runs(RUNS_FILE)
    assert len(selected(list(runs.values()), runs, every)) == len(runs)
    for section in ("data", "model", "backbone", "pretrain", "finetune"):
        assert getattr(every, section) == getattr(tiny, section)
