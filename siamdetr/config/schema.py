"""The configuration's schema: one dataclass per params.yaml section, each key with its default, its check
and its doc string (`siamdetr config show` prints them). Loading, merging and validation are `load.py`'s."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

DEFAULTS_SOURCE = "built-in defaults"


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the file and the key."""


# ----------------------------------------------------------------------------------------------- checks
Check = Callable[[Any], str | None]


def positive(v: Any) -> str | None:
    return None if v > 0 else "must be > 0"


def learning_rate(v: Any) -> str | None:
    return None if 0 < v <= 1 else "must be in (0, 1]: a larger step diverges"


def seed_range(v: Any) -> str | None:
    return None if 0 <= v < 2**31 else "must be in [0, 2**31) (seeds are combined with epochs and indices)"


def non_negative(v: Any) -> str | None:
    return None if v >= 0 else "must be >= 0"


def at_least(lo: int) -> Check:
    def check(v: Any) -> str | None:
        return None if v >= lo else f"must be >= {lo}"

    return check


def between(lo: int, hi: int) -> Check:
    def check(v: Any) -> str | None:
        return None if lo <= v <= hi else f"must be in [{lo}, {hi}]"

    return check


def open_unit_interval(v: Any) -> str | None:
    return None if 0 < v < 1 else "must be in the open interval (0, 1)"


def half_open_half(v: Any) -> str | None:
    return None if 0 <= v < 0.5 else "must be in [0, 0.5) (a larger jitter can turn a box inside out)"


def unit_interval(v: Any) -> str | None:
    return None if 0 <= v <= 1 else "must be in [0, 1]"


def probabilities(v: Any) -> str | None:
    ok = len(v) == 3 and all(x >= 0 for x in v) and abs(sum(v) - 1) < 1e-6
    return None if ok else "must be 3 non-negative numbers that sum to 1"


def opt(default: Any, check: Check | None = None, must_exist: bool = False, doc: str = "") -> Any:
    """A config field with an optional range check and, for input paths, an existence check."""
    meta = {"check": check, "must_exist": must_exist, "doc": doc}
    if isinstance(default, list | dict):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


def section(cls: type) -> Any:
    return field(default_factory=cls)


# --------------------------------------------------------------------------------------------- sections
@dataclass
class SynthConfig:
    """Size of the embedded synthetic datasets (written by `siamdetr data synth`)."""

    image_size: int = opt(128, at_least(32), doc="long side of every image, px")
    imagenet_classes: int = opt(14, between(1, 14), doc="wnid folders (shape classes) in the ImageNet-like set")
    imagenet_images: int = opt(400, at_least(1), doc="unlabeled object-centric images")
    coco_train: int = opt(200, at_least(1))
    coco_val: int = opt(50, at_least(1))
    voc_trainval: int = opt(200, at_least(1))
    voc_test: int = opt(100, at_least(1))
    max_objects: int = opt(8, at_least(1), doc="objects per scene-centric image, at most")
    size_mix: list[float] = opt([0.35, 0.4, 0.25], probabilities, doc="small / medium / large object mix (COCO's)")
    clutter: float = opt(1.0, unit_interval, doc="background clutter (lines, curves, outlines, blotches): 0-1")
    imagenet_clutter: float | None = opt(
        None, unit_interval, doc="clutter of the object-centric ImageNet-like images; None: the same as clutter"
    )
    class_appearance: float = opt(
        0.0, unit_interval, doc="probability that an object has its class's typical hue and texture"
    )
    max_rotation: float = opt(180.0, between(0, 180), doc="objects are turned up to this many degrees; 180: any")
    background_saturation: float = opt(1.0, unit_interval, doc="colourfulness of the backgrounds' gradient, 0-1")
    min_object_side: float = opt(0.0, non_negative, doc="objects in scene images are at least this wide, px")
    workers: int = opt(0, non_negative, doc="processes; 0 = all cores")


@dataclass
class DataConfig:
    """Where the datasets are. `synthetic: true` generates them; false reads the roots below."""

    synthetic: bool = opt(True)
    prepared_dir: str = opt("data/prepared", doc="written by the data stage (synthetic tree, VOC json)")
    imagenet_root: str | None = opt(None, must_exist=True, doc="ImageNet train dir (<wnid>/<img>.JPEG)")
    coco_root: str | None = opt(None, must_exist=True, doc="dir with train2017/, val2017/, annotations/")
    voc_root: str | None = opt(None, must_exist=True, doc="VOCdevkit dir with VOC2007/ (and VOC2012/)")
    voc_train_years: list[int] = opt([2007, 2012])
    voc_train_split: str = opt("trainval")
    voc_test_years: list[int] = opt([2007])
    voc_test_split: str = opt("test")
    voc_classes: list[str] | None = opt(None, doc="class names; default: the devkit's, else VOC's 20")
    voc_protocol: Literal["official", "voc_standard"] = opt(
        "official",
        doc="official: every object is ground truth, bbox [xmin, ymin, xmax-xmin, ymax-ymin] (Siamese DETR's json, "
        "the paper's numbers); voc_standard: difficult ignored, 1-based corners made 0-based",
    )
    on_bad_image: Literal["skip", "error"] = opt("skip", doc="an unreadable image: skip+count or fail")
    synth: SynthConfig = section(SynthConfig)


@dataclass
class BackboneConfig:
    """The `backbone` stage: SwAV self-supervision of the small ResNet on the unlabeled pretraining images
    (the paper uses a SwAV ResNet-50 checkpoint instead: model.backbone_checkpoint)."""

    method: Literal["swav", "supervised"] = opt(
        "swav", doc="swav (self-supervised, as the paper's trunk) or supervised on the folder labels ('Sup.')"
    )
    epochs: int = opt(20, at_least(1))
    batch_size: int = opt(64, at_least(2))
    lr: float = opt(1e-3, learning_rate)
    warmup_steps: int = opt(0, non_negative, doc="linear lr warm-up before the cosine decay")
    weight_decay: float = opt(1e-6, non_negative)
    prototypes: int = opt(64, at_least(2), doc="SwAV prototype vectors (clusters)")
    feature_dim: int = opt(128, at_least(2), doc="projection output size")
    temperature: float = opt(0.1, positive)
    epsilon: float = opt(0.05, positive, doc="Sinkhorn-Knopp entropy regularisation")
    sinkhorn_iters: int = opt(3, at_least(1))
    global_size: int = opt(96, at_least(8), doc="side of the 2 global crops")
    local_size: int = opt(48, at_least(8), doc="side of the small crops")
    n_local: int = opt(4, non_negative, doc="small crops per image (multi-crop)")
    freeze_prototypes_steps: int = opt(50, non_negative)
    num_workers: int = opt(1, non_negative)
    out_dir: str = opt("runs/backbone")


@dataclass
class ProposalsConfig:
    """The `proposals` stage: offline boxes for the pretraining images (paper §3.2, Table 4)."""

    top_k: int = opt(512, at_least(1), doc="boxes kept per image (EdgeBoxes' maxBoxes)")
    workers: int = opt(0, non_negative, doc="processes; 0 = all cores")
    shard_size: int = opt(1000, at_least(1), doc="images per resumable shard")
    edge_map: Literal["gradient", "structure_tensor"] = opt("gradient", doc="edge map when no SED model is given")
    sed_model: str | None = opt(None, must_exist=True, doc="OpenCV SED model.yml.gz (non-commercial; never shipped)")
    min_box_area: float = opt(1000.0, positive, doc="EdgeBoxes' minBoxArea, px² (OpenCV default 1000)")
    eb_max_side: int = opt(2000, at_least(16), doc="EdgeBoxes searches a larger image on a copy this long")
    ss_square: int | None = opt(
        128, at_least(16), doc="Selective Search runs on the image resized to this x this, as DETReg; None: ss_max_side"
    )
    ss_max_side: int = opt(500, at_least(16), doc="ss_square None: Selective Search on a copy this long at most")
    out_dir: str = opt("runs/proposals", doc="one store per <dataset>_<method> below it")


@dataclass
class UPDETRConfig:
    """The UP-DETR baseline as its published code trains it (docs/method.md, Baselines)."""

    num_patches: int = opt(10, at_least(1), doc="query patches per image")
    min_patch: int = opt(8, at_least(1), doc="random patches: each side from this to the image's side minus this, px")
    mask_ratio: float = opt(0.1, unit_interval, doc="share of the patch queries whose patch feature is dropped")
    lambda_r: float = opt(1.0, non_negative, doc="weight of the feature reconstruction loss (every decoder layer)")


@dataclass
class DETRegConfig:
    """The DETReg baseline as its published code trains it (docs/method.md, Baselines)."""

    num_targets: int = opt(30, at_least(1), doc="the top proposals of an image, all of them targets")
    embed_level: Literal["C3", "C4", "C5"] = opt("C3", doc="backbone level pooled into the embedding targets")
    lambda_embed: float = opt(1.0, non_negative, doc="weight of the L1 embedding loss (last decoder layer)")
    crop: bool = opt(True, doc="DETReg's random-size crop on half the samples; false: resize and flip only")


@dataclass
class PretrainConfig:
    """Self-supervised pretraining of the Transformer (paper §3, §4.1)."""

    method: Literal["siamese", "updetr", "detreg"] = opt("siamese")
    tau: float = opt(0.5, open_unit_interval, doc="IoU between the two views, at least")
    n_proposals: int = opt(10, at_least(1), doc="Siamese DETR: boxes per view (n)")
    lambda_r: float = opt(3.0, non_negative, doc="Siamese DETR: weight of the region discrimination loss L_r")
    lambda_g: float = opt(10.0, non_negative, doc="weight of the global discrimination loss L_g")
    lambda_loc: float = opt(1.0, non_negative, doc="weight of the localisation loss L_loc")
    batch_size: int = opt(16, at_least(1))
    lr: float = opt(1e-4, learning_rate)
    weight_decay: float = opt(1e-4, non_negative)
    epochs: int = opt(2, at_least(1))
    lr_drop: int = opt(2, at_least(1), doc="epoch at which the lr is divided by 10")
    clip_max_norm: float = opt(0.1, non_negative)
    dataset: Literal["imagenet", "coco"] = opt("imagenet", doc="unlabeled pretraining images")
    proposals: Literal["edgeboxes", "selective_search", "random"] = opt(
        "edgeboxes", doc="offline store the boxes come from; UP-DETR with random draws its own patches per sample"
    )
    max_missing_proposals: float = opt(
        0.01, unit_interval, doc="error when more than this fraction of the images have no usable proposals"
    )
    region_detection: Literal["multi", "single"] = opt("multi", doc="Table 3: detect in the other view or own")
    semantic: Literal["none", "G", "R-O", "R-C", "R-C+G"] = opt("R-C+G", doc="Table 3: semantic discrimination")
    sample_proposals: bool = opt(True, doc="sample the n boxes from the top proposals (else take the first)")
    jitter: float = opt(
        0.1, half_open_half, doc="query-box jitter: at most this fraction of w/h, as 2·sigmoid(N(0,1))−1 times it"
    )
    crop_size: int = opt(128, at_least(8), doc="side of the region crops (L_r targets, UP-DETR and DETReg patches)")
    short_min: int = opt(320, at_least(8), doc="view scale: short side range and long-side cap")
    short_max: int = opt(480, at_least(8))
    max_size: int = opt(600, at_least(8))
    amp: bool = opt(True, doc="bf16 autocast on GPU (ignored on CPU)")
    num_workers: int = opt(2, non_negative)
    log_every: int = opt(10, at_least(1), doc="MLflow per-step loss logging interval")
    out_dir: str = opt("runs/pretrain")
    updetr: UPDETRConfig = section(UPDETRConfig)
    detreg: DETRegConfig = section(DETRegConfig)


@dataclass
class ModelConfig:
    """The DETR detector: variant, backbone and Transformer sizes (paper §4.1 in the paper profile)."""

    variant: Literal["vanilla", "conditional", "deform_ss", "deform_ms"] = opt("conditional")
    backbone: Literal["resnet50", "small"] = opt("small", doc="resnet50 (paper) or a small ResNet for CPU")
    backbone_checkpoint: str | None = opt(None, must_exist=True, doc="SwAV / torchvision ResNet weights")
    small_width: int = opt(32, at_least(4), doc="the small ResNet's first stage width (then x2, x4, x8)")
    dilation: bool = opt(False, doc="DETR's DC5: dilate the last stage, so C5 has the stride of C4")
    train_backbone: bool = opt(True, doc="fine-tune the backbone (at lr_backbone)")
    d_model: int = opt(256, at_least(8))
    nheads: int = opt(8, at_least(1))
    enc_layers: int = opt(6, at_least(1))
    dec_layers: int = opt(6, at_least(1))
    dim_feedforward: int | None = opt(None, at_least(1), doc="None: the variant's (2048; Deformable 1024)")
    dropout: float = opt(0.1, unit_interval)
    num_queries: int = opt(100, at_least(1))
    n_points: int = opt(4, at_least(1), doc="Deformable attention sampling points")
    aux_loss: bool = opt(True, doc="losses on every decoder layer")


@dataclass
class FinetuneConfig:
    """Supervised fine-tuning of a DETR variant (paper §4.1)."""

    dataset: Literal["voc", "coco"] = opt("voc", doc="downstream dataset")
    init: str | None = opt(None, doc="pretrained checkpoint to start from (None: from scratch)")
    init_only: list[str] = opt(
        [],
        doc="load only the checkpoint tensors whose names start with one of these ([]: all but the class head; "
        "[transformer.encoder_layers, input_proj]: the encoder alone, an ablation of what transfers)",
    )
    batch_size: int = opt(16, at_least(1), doc="global batch (split over processes)")
    lr: float = opt(1e-4, learning_rate)
    lr_backbone: float = opt(5e-5, non_negative)
    lr_linear_proj_mult: float = opt(
        0.1, non_negative, doc="Deformable: lr multiplier of sampling_offsets and reference_points (its main.py's)"
    )
    weight_decay: float = opt(1e-4, non_negative)
    epochs: int = opt(2, at_least(1))
    lr_drop: int = opt(2, at_least(1))
    clip_max_norm: float = opt(0.1, non_negative)
    loss_ce: float | None = opt(None, non_negative, doc="None: 1 (softmax) or 2 (focal variants)")
    loss_bbox: float = opt(5.0, non_negative)
    loss_giou: float = opt(2.0, non_negative)
    eos_coef: float = opt(0.1, unit_interval, doc="weight of the no-object class (softmax variants)")
    train_scales: list[int] = opt([480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800], doc="short sides")
    max_size: int = opt(1333, at_least(1))
    crop_min: int = opt(384, at_least(1), doc="random crop side range of DETR's augmentation")
    crop_max: int = opt(600, at_least(1))
    test_size: int = opt(800, at_least(1))
    augment: bool = opt(True, doc="DETR's flip / multi-scale / crop augmentation")
    eval_every: int = opt(1, at_least(1), doc="evaluate every k epochs (and after the last)")
    num_workers: int = opt(2, non_negative)
    out_dir: str = opt("runs/finetune")
    amp: bool = opt(True, doc="bf16 autocast on GPU (ignored on CPU)")


@dataclass
class GridConfig:
    """The experiment grid behind Tables 1-4 (`grid.runs_file`): the seeds of every run, and how the rows'
    paper-scale query counts and fine-tuning schedules shrink in this profile."""

    runs_file: str = opt("experiments/runs.yaml", doc="named pretraining and fine-tuning runs")
    seeds: list[int] = opt([0], doc="every grid run is repeated with each seed")
    pretrain_seeds: list[int] | None = opt(
        None, doc="seeds of the pretrainings (None: grid.seeds); a fine-tune whose seed has none starts from the first"
    )
    query_scale: float = opt(1.0, positive, doc="a row's model.num_queries is multiplied by this")
    epoch_scale: float = opt(1.0, positive, doc="a row's finetune.epochs and lr_drop are multiplied by this")
    keep_checkpoints: bool = opt(True, doc="false: a finished run keeps its outputs but drops checkpoint.pth")
    profile_keys: list[str] = opt([], doc="dotted keys whose row values this profile replaces with its own")
    include: list[str] = opt(["*"], doc="run names this profile runs (shell patterns); the others are skipped")
    workers: int = opt(1, at_least(1), doc="processes per grid stage; with more than 1, one thread each")
    note: str = opt("", doc="what this profile's numbers mean, printed at the top of the report")


@dataclass
class Config:
    """The whole resolved configuration of one run."""

    profile: str = opt("tiny")
    seed: int = opt(0, seed_range)
    data: DataConfig = section(DataConfig)
    model: ModelConfig = section(ModelConfig)
    backbone: BackboneConfig = section(BackboneConfig)
    proposals: ProposalsConfig = section(ProposalsConfig)
    pretrain: PretrainConfig = section(PretrainConfig)
    finetune: FinetuneConfig = section(FinetuneConfig)
    grid: GridConfig = section(GridConfig)
    sources: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (no `sources`): what MLflow logs and what the params hash covers."""
        d = dataclasses.asdict(self)
        d.pop("sources")
        return d

    def params_hash(self) -> str:
        """Identifies what a run computes. `grid` is left out: it says which runs exist, not how one runs."""
        d = self.to_dict()
        d.pop("grid")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]

    def source_of(self, key: str) -> str:
        return self.sources.get(key, DEFAULTS_SOURCE)

    def data_root(self, name: Literal["imagenet", "coco", "voc"]) -> Path:
        """The root of one dataset: the synthetic tree, or the user's path from params."""
        if self.data.synthetic:
            sub = {"imagenet": "imagenet_like", "coco": "coco_like", "voc": "VOCdevkit"}[name]
            return Path(self.data.prepared_dir) / "synthetic" / sub
        root = getattr(self.data, f"{name}_root")
        if root is None:
            raise ConfigError(
                f"{self.source_of('data.synthetic')}: data.{name}_root is not set but data.synthetic is "
                f"false; set data.{name}_root to your dataset directory or use data.synthetic: true"
            )
        return Path(root)


def backbone_stride(model: ModelConfig) -> int:
    """The deepest feature map's stride: ResNet-50's C5 32 (16 dilated), the small ResNet's 16 (8)."""
    stride = 32 if model.backbone == "resnet50" else 16
    return stride // 2 if model.dilation else stride
