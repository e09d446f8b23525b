"""The paper's settings, held against a table written here with each value's source, so that a change to the
`paper` profile, params.yaml, experiments/runs.yaml or the variant registry cannot drift from the paper
silently. Configs are resolved as `dvc repro` resolves them with `profile: paper`: params.yaml, the profile,
then the run's row of experiments/runs.yaml.

Sources: §4.1 is the paper's Implementation Details (Tables 1-4 likewise); SD is Zx55/SiameseDETR (its
pretraining configs under configs/selfsup/, its fine-tuning under downstream_finetune/conditionaldetr/);
DETR, CondDETR, DeformDETR are facebookresearch/detr, Atten4Vis/ConditionalDETR and
fundamentalvision/Deformable-DETR (main.py's defaults, models/*.py).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest

from siamdetr.config import Config, load_config
from siamdetr.grid import Run, load_runs, seed_overrides
from siamdetr.models.variants import VARIANTS
from siamdetr.pretrain.base import LOC_WEIGHTS
from siamdetr.report.paper import load_paper
from siamdetr.stages.finetune import build_criterion

ROOT = Path(__file__).parents[1]
RUNS = load_runs(ROOT / "experiments" / "runs.yaml")

SD_IN = "SD configs/selfsup/siamese_detr/imgnet_edgebox_crop_bs8.py"
SD_COCO = "SD configs/selfsup/siamese_detr/coco_edgebox_crop_bs4.py"
SD_MAIN = "SD configs/selfsup/siamese_detr/main/"
SD_VOC = "SD downstream_finetune/conditionaldetr/datasets/voc.py make_voc_transforms"

# ------------------------------------------------------------------------------------ the profile itself
PROFILE: list[tuple[str, Any, str]] = [
    ("model.backbone", "resnet50", "§4.1 Architecture: a frozen ResNet-50 (SwAV)"),
    ("model.train_backbone", True, "§4.1 Finetuning: the backbone trains at its own learning rate"),
    ("model.d_model", 256, "§4.1: 6 layers of 256 dimensions and 8 attention heads"),
    ("model.nheads", 8, "§4.1"),
    ("model.enc_layers", 6, "§4.1"),
    ("model.dec_layers", 6, "§4.1"),
    ("model.dim_feedforward", None, "the variant's: DETR/CondDETR main.py 2048, DeformDETR main.py 1024"),
    ("model.dropout", 0.1, "DETR, CondDETR, DeformDETR main.py --dropout 0.1"),
    ("model.n_points", 4, "DeformDETR main.py --enc_n_points/--dec_n_points 4"),
    ("model.aux_loss", True, "DETR main.py: auxiliary decoding losses on; SD weight_dict num_repeat=num_dec_layers"),
    ("pretrain.lr", 1e-4, "§4.1 Pretraining: AdamW, learning rate 1e-4"),
    ("pretrain.weight_decay", 1e-4, "§4.1: weight decay 1e-4"),
    ("pretrain.epochs", 60, "§4.1: the 40/60 schedule"),
    ("pretrain.lr_drop", 40, "§4.1: the 40/60 schedule"),
    ("pretrain.clip_max_norm", 0.1, f"{SD_IN}: optimizer_config grad_clip max_norm 0.1"),
    ("pretrain.tau", 0.5, f"{SD_IN}: iou=0.5"),
    ("pretrain.n_proposals", 10, f"{SD_IN}: num_patches = 10 (anchor_num)"),
    ("pretrain.jitter", 0.1, f"{SD_MAIN}*.py: box_disturbance=0.1"),
    ("pretrain.crop_size", 128, f"{SD_IN}: crop_pipeline Resize (128, 128)"),
    ("pretrain.lambda_loc", 1.0, f"{SD_MAIN}*.py weight_dict: loss_ce 1, loss_bbox 5, loss_giou 2 (LOC_WEIGHTS x 1)"),
    ("pretrain.region_detection", "multi", "Table 3 (e): multi-view region detection"),
    ("pretrain.semantic", "R-C+G", "Table 3 (e): R-C + G"),
    ("finetune.batch_size", 32, "§4.1 Finetuning: batch size 32 for all setups"),
    ("finetune.lr", 1e-4, "§4.1: Transformer lr 1e-4 (Vanilla, Conditional)"),
    ("finetune.lr_backbone", 5e-5, "§4.1: backbone lr 5e-5 (Vanilla, Conditional)"),
    ("finetune.lr_linear_proj_mult", 0.1, "DeformDETR main.py --lr_linear_proj_mult 0.1"),
    ("finetune.weight_decay", 1e-4, "DETR, CondDETR, DeformDETR main.py --weight_decay 1e-4"),
    ("finetune.clip_max_norm", 0.1, "DETR, CondDETR, DeformDETR main.py --clip_max_norm 0.1"),
    ("finetune.loss_ce", None, "the variant's: DETR 1, CondDETR/DeformDETR main.py --cls_loss_coef 2"),
    ("finetune.loss_bbox", 5.0, "DETR, CondDETR, DeformDETR main.py --bbox_loss_coef 5"),
    ("finetune.loss_giou", 2.0, "DETR, CondDETR, DeformDETR main.py --giou_loss_coef 2"),
    ("finetune.eos_coef", 0.1, "DETR main.py --eos_coef 0.1"),
    ("finetune.train_scales", list(range(480, 801, 32)), f"{SD_VOC}: scales 480..800"),
    ("finetune.max_size", 1333, f"{SD_VOC}: RandomResize(scales, max_size=1333)"),
    ("finetune.crop_min", 384, f"{SD_VOC}: RandomSizeCrop(384, 600)"),
    ("finetune.crop_max", 600, f"{SD_VOC}: RandomSizeCrop(384, 600)"),
    ("finetune.test_size", 800, f"{SD_VOC}: val RandomResize([800], max_size=1333)"),
    ("finetune.augment", True, f"{SD_VOC}: flip, multi-scale, crop"),
    ("data.voc_train_years", [2007, 2012], "§4.1 Evaluation Protocol: PASCAL VOC trainval07+12"),
    ("data.voc_train_split", "trainval", "§4.1: trainval07+12"),
    ("data.voc_test_years", [2007], "§4.1: PASCAL VOC test2007"),
    ("data.voc_test_split", "test", "§4.1: test2007"),
    (
        "data.voc_protocol",
        "official",
        "SD data/datasets/voc_meta/voc_test2007.cocostyle.json: difficult kept, iscrowd 0",
    ),
    ("proposals.top_k", 512, "SD official EdgeBoxes setting: maxBoxes 512"),
]

# --------------------------------------------------------------------------------- pretraining runs
VIEWS = {  # (batch, short side min, max, long-side cap) per pretraining dataset
    "imagenet": (
        (256, 320, 480, 600),
        f"§4.1: batch 256 on ImageNet; {SD_IN}: imgs_per_gpu 8 x 32, sizes 320-480, max 600",
    ),
    "coco": ((64, 480, 800, 1333), f"§4.1: batch 64 on COCO; {SD_COCO}: imgs_per_gpu 4 x 16, sizes 480-800, max 1333"),
}
SIAMESE_WEIGHTS = {  # (variant, dataset) -> (lambda_r = loss_feature, lambda_g = loss_enc_global_contra)
    ("vanilla", "imagenet"): ((3.0, 10.0), f"{SD_MAIN}r50_vanillatr_syncbn_imgnet_*.py"),
    ("conditional", "imagenet"): ((5.0, 10.0), f"{SD_MAIN}r50_condtr_{{100q,300q}}_syncbn_imgnet_*.py"),
    ("deform_ss", "imagenet"): ((3.0, 10.0), f"{SD_MAIN}r50_deformtr_ss_300q_syncbn_imgnet_*.py"),
    ("deform_ms", "imagenet"): ((3.0, 10.0), f"{SD_MAIN}r50_deformtr_ms_300q_syncbn_imgnet_*.py"),
    ("conditional", "coco"): ((3.0, 0.3), f"{SD_MAIN}r50_condtr_100q_syncbn_coco_*.py"),
}
BASELINE_VALUES = [  # (method, key, value, source)
    ("updetr", "pretrain.updetr.lambda_r", 1.0, "SD configs/selfsup/updetr/main/*.py: loss_feature=1"),
    ("updetr", "pretrain.updetr.num_patches", 10, "up-detr main.py: --num_patches 10"),
    ("updetr", "pretrain.updetr.min_patch", 8, "up-detr datasets/selfdet.py: min_pixel=8"),
    ("updetr", "pretrain.updetr.mask_ratio", 0.1, "up-detr models/updetr.py: mask_ratio=0.1"),
    ("detreg", "pretrain.detreg.lambda_embed", 1.0, "DETReg util/default_args.py: 1"),
    ("detreg", "pretrain.detreg.num_targets", 30, "DETReg configs/DETReg_top30_*.sh: --max_prop 30"),
    ("detreg", "pretrain.detreg.embed_level", "C3", "DETReg models/backbone.py: layer2 is the first level returned"),
]
DEFAULT_PROPOSALS = {"siamese": "edgeboxes", "updetr": "random", "detreg": "selective_search"}  # §4.1 Pretraining
MODEL_OF = {  # name token -> (variant, queries): §4.1 "100 queries in Vanilla and Conditional DETR, 300 in ..."
    "vanilla100": ("vanilla", 100),
    "cond100": ("conditional", 100),
    "cond300": ("conditional", 300),
    "dss300": ("deform_ss", 300),
    "dms300": ("deform_ms", 300),
}
TABLE3_SEMANTIC = {"a": "none", "b": "G", "c": "R-O", "d": "R-C"}  # Table 3 rows (a)-(d); (e) is the default
TABLE4_PROPOSALS = ("random", "edgeboxes", "selective_search")  # a run named ...-<proposals> (Table 4)

# --------------------------------------------------------------------------------- fine-tuning runs
SCHEDULES = {"e50": (50, 40), "e150": (150, 120)}  # §4.1: the 40/50 and 120/150 schedules
LR = {  # variant family -> (lr, lr_backbone), §4.1 Finetuning
    "deformable": (2e-4, 2e-5),
    "other": (1e-4, 5e-5),
}
CRITERION = {  # variant -> (loss_ce, loss_bbox, loss_giou), (matcher costs class, L1, GIoU)
    "vanilla": (((1.0, 5.0, 2.0), (1.0, 5.0, 2.0)), "DETR main.py: ce 1, bbox 5, giou 2; set_cost 1/5/2"),
    "conditional": (((2.0, 5.0, 2.0), (2.0, 5.0, 2.0)), "CondDETR main.py: cls 2, bbox 5, giou 2; set_cost 2/5/2"),
    "deform_ss": (((2.0, 5.0, 2.0), (2.0, 5.0, 2.0)), "DeformDETR main.py: cls 2, bbox 5, giou 2; set_cost 2/5/2"),
    "deform_ms": (((2.0, 5.0, 2.0), (2.0, 5.0, 2.0)), "DeformDETR main.py: cls 2, bbox 5, giou 2; set_cost 2/5/2"),
}
ARCHITECTURE = {  # variant -> (FFN, backbone levels, extra strided levels, box head init)
    "vanilla": ((2048, ("C5",), 0, None), "DETR main.py dim_feedforward 2048; models/detr.py: PyTorch's init"),
    "conditional": ((2048, ("C5",), 0, (0.0, 0.0, 0.0, 0.0)), "CondDETR main.py 2048; conditional_detr.py: zeros"),
    "deform_ss": ((1024, ("C5",), 0, (0.0, 0.0, -2.0, -2.0)), "DeformDETR 1024, 1 level; deformable_detr.py: wh -2"),
    "deform_ms": ((1024, ("C3", "C4", "C5"), 1, (0.0, 0.0, -2.0, -2.0)), "DeformDETR 1024, 4 levels; wh bias -2"),
}


# -------------------------------------------------------------------------------------------- helpers
LAYERS = {"profile": None, "params+profile": ROOT / "params.yaml"}  # the profile alone, and as `dvc repro` reads it


@functools.cache
def paper(layers: str = "params+profile") -> Config:
    return load_config(params=LAYERS[layers], profile="paper", check_paths=False)


@functools.cache
def resolved(name: str, layers: str = "params+profile") -> Config:
    run = RUNS[name]
    return load_config(
        params=LAYERS[layers],
        profile="paper",
        check_paths=False,
        run_layer=(run.source, seed_overrides(paper(layers), RUNS, run, 0)),
    )


def value(cfg: Config, key: str) -> Any:
    return functools.reduce(getattr, key.split("."), cfg)


def runs_of(kind: str) -> list[Run]:
    return [r for r in RUNS.values() if r.kind == kind]


def model_token(name: str) -> tuple[str, int]:
    tokens = [t for t in name.split("-") if t in MODEL_OF]
    assert len(tokens) == 1, f"{name}: no single variant/queries token of {sorted(MODEL_OF)}"
    return MODEL_OF[tokens[0]]


def pretraining_expectations(run: Run, layers: str) -> list[Any]:
    """pytest.param(key, actual, expected, source) of one pretraining run."""
    cfg = resolved(run.name, layers)
    method, dataset = cfg.pretrain.method, cfg.pretrain.dataset
    variant, queries = model_token(run.name)
    suffix = run.name.rsplit("-", 1)[-1]
    (batch, short_min, short_max, max_size), views = VIEWS[dataset]
    rows = [
        ("model.variant", variant, "the run's name"),
        ("model.num_queries", queries, "§4.1: 100 queries (Vanilla, Conditional), 300 (Conditional-300, Deformable)"),
        ("pretrain.dataset", "coco" if run.name.startswith("coco-") else "imagenet", "the run's name"),
        ("pretrain.batch_size", batch, views),
        ("pretrain.short_min", short_min, views),
        ("pretrain.short_max", short_max, views),
        ("pretrain.max_size", max_size, views),
        ("pretrain.proposals", suffix if suffix in TABLE4_PROPOSALS else DEFAULT_PROPOSALS[method], "§4.1; Table 4"),
    ]
    if method == "siamese":
        assert (variant, dataset) in SIAMESE_WEIGHTS, f"{run.name}: no official config for {variant} on {dataset}"
        (lambda_r, lambda_g), source = SIAMESE_WEIGHTS[(variant, dataset)]
        rows += [("pretrain.lambda_r", lambda_r, source), ("pretrain.lambda_g", lambda_g, source)]
        rows.append(("pretrain.semantic", TABLE3_SEMANTIC.get(suffix, "R-C+G"), "Table 3 rows (a)-(e)"))
    cases = [pytest.param(key, value(cfg, key), expected, source) for key, expected, source in rows]
    for m, key, expected, source in BASELINE_VALUES:
        if m == method:
            cases.append(pytest.param(key, value(cfg, key), expected, source))
    return cases


PRETRAIN_CASES = [
    pytest.param(f"{run.name} ({layers})", *case.values, marks=case.marks)
    for layers in LAYERS
    for run in runs_of("pretrain")
    for case in pretraining_expectations(run, layers)
]


# ---------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("layers", list(LAYERS))
@pytest.mark.parametrize(("key", "expected", "source"), PROFILE, ids=[key for key, *_ in PROFILE])
def test_the_paper_profile_holds_the_papers_settings(key: str, expected: Any, source: str, layers: str) -> None:
    assert value(paper(layers), key) == expected, f"{key} ({layers}): expected {expected!r} ({source})"


def test_the_localisation_loss_weights_are_the_official_ones() -> None:
    assert LOC_WEIGHTS == {"loss_ce": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0}, f"{SD_MAIN}*.py weight_dict"


@pytest.mark.parametrize(
    ("run", "key", "actual", "expected", "source"),
    PRETRAIN_CASES,
    ids=[f"{case.values[0]}:{case.values[1]}" for case in PRETRAIN_CASES],
)
def test_every_pretraining_run_has_its_methods_published_settings(
    run: str, key: str, actual: Any, expected: Any, source: str
) -> None:
    assert actual == expected, f"{run} {key}: {actual!r}, expected {expected!r} ({source})"


@pytest.mark.parametrize("layers", list(LAYERS))
@pytest.mark.parametrize("name", [r.name for r in runs_of("finetune")])
def test_every_fine_tuning_run_has_the_papers_schedule_and_learning_rates(name: str, layers: str) -> None:
    run, cfg = RUNS[name], resolved(name, layers)
    f = cfg.finetune
    epochs = next(t for t in name.split("-") if t in SCHEDULES)
    assert (f.epochs, f.lr_drop) == SCHEDULES[epochs], f"{name}: §4.1's {SCHEDULES[epochs][1]}/{SCHEDULES[epochs][0]}"
    assert epochs == "e50" or cfg.model.variant == "vanilla", f"{name}: §4.1 runs 150 epochs for Vanilla DETR only"
    assert (cfg.model.variant, cfg.model.num_queries) == model_token(name), f"{name}: §4.1 queries per variant"
    family = "deformable" if VARIANTS[cfg.model.variant].deformable else "other"
    assert (f.lr, f.lr_backbone) == LR[family], f"{name}: §4.1 Finetuning learning rates"
    assert f.lr_linear_proj_mult == 0.1, f"{name}: DeformDETR main.py --lr_linear_proj_mult 0.1"
    assert f.batch_size == 32, f"{name}: §4.1 batch 32"
    assert f.dataset == name.split("-")[0], f"{name}: downstream dataset"
    if run.pretrain is None:
        assert f.init is None and "scratch" in name.split("-")
        return
    init = resolved(run.pretrain, layers)
    assert (init.model.variant, init.model.num_queries) == (cfg.model.variant, cfg.model.num_queries), name
    assert init.pretrain.dataset == ("coco" if "-coco-" in name else "imagenet"), f"{name}: pretraining dataset"


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_variant_has_its_own_codes_loss_weights_and_architecture(variant: str) -> None:
    cfg = load_config(
        params=ROOT / "params.yaml", profile="paper", check_paths=False, overrides=[f"model.variant={variant}"]
    )
    criterion, weights = build_criterion(cfg, num_classes=20)
    m = criterion.matcher
    (loss_weights, costs), source = CRITERION[variant]
    assert (weights["loss_ce"], weights["loss_bbox"], weights["loss_giou"]) == loss_weights, source
    assert (m.cost_class, m.cost_bbox, m.cost_giou) == costs, source
    assert criterion.weight_dict == weights and weights["loss_ce_0"] == loss_weights[0]  # auxiliary layers alike
    v = VARIANTS[variant]
    expected, source = ARCHITECTURE[variant]
    assert (v.dim_feedforward, v.levels, v.extra_levels, v.box_bias) == expected, source


def test_the_tables_rows_point_at_runs_with_their_queries_epochs_and_pretraining() -> None:
    """Tables 1-2 (siamdetr/report/paper.yaml, itself checked against the paper's text): each row's run has
    the row's variant, #query, #epoch and pretraining dataset; Table 4's its proposals."""
    variant_of = {
        "Vanilla": "vanilla",
        "Conditional": "conditional",
        "Deform-SS": "deform_ss",
        "Deform-MS": "deform_ms",
    }
    proposals_of = {"Random": "random", "Edgeboxes": "edgeboxes", "SelectiveSearch": "selective_search"}
    tables = load_paper()
    for name in ("table1", "table2"):
        for row in tables[name].rows:
            if row.run is None:
                continue
            cfg, labels = resolved(row.run), row.labels
            assert cfg.model.variant == variant_of[labels["variant"]], row
            assert cfg.model.num_queries == int(labels["queries"]), row
            assert cfg.finetune.epochs == int(labels["epochs"]), row
            init = RUNS[row.run].pretrain
            dataset = labels.get("pretrain_dataset", "ImageNet")
            assert (init is None) == (labels["method"] == "from scratch"), row
            if init is not None:
                assert resolved(init).pretrain.dataset == dataset.lower(), row
    for row in tables["table4"].rows:
        init = RUNS[row.run].pretrain
        assert init is not None and resolved(init).pretrain.proposals == proposals_of[row.labels["proposals"]], row
