"""Typed, validated configuration.

A run's configuration is layered, later layers winning key by key:

    dataclass defaults → profile (siamdetr/profiles/<name>.yaml) → params.yaml → experiment files → --set

Validation happens once, at load time, before any compute: a wrong type, an out-of-range value, an unknown
key or a missing input path raises one :class:`ConfigError` that names the key and the file it came from.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

PROFILES_DIR = Path(__file__).parent / "profiles"
DEFAULT_PARAMS = Path("params.yaml")
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


# ------------------------------------------------------------------------------------ loading + merging
def profile_path(name: str) -> Path:
    path = PROFILES_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))
        raise ConfigError(f"profile {name!r} does not exist (known profiles: {', '.join(known)})")
    return path


def read_yaml(path: Path) -> dict[str, Any]:
    """A YAML mapping from a file, with errors that name the file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config file ({e.strerror})") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start} cannot be decoded); save it as UTF-8") from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level, got {type(data).__name__}")
    return data


def parse_override(text: str) -> tuple[str, Any]:
    """`key.sub=value` → (key.sub, YAML-parsed value)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. pretrain.tau=0.7")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {text!r}: value is not valid YAML: {e}") from e
    return key.strip(), value


def nest(dotted: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in dotted.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: {p} is set to a value and to a section")
        node[leaf] = value
    return out


def merge(
    base: dict[str, Any], layer: Mapping[str, Any], source: str, sources: dict[str, str], prefix: str = ""
) -> None:
    """Deep-merge `layer` into `base`, remembering which file set each leaf."""
    for key, value in layer.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            merge(base[key], value, source, sources, dotted + ".")
        else:
            base[key] = value
            sources[dotted] = source
            if isinstance(value, Mapping):
                for sub in _leaves(value, dotted + "."):
                    sources[sub] = source


def _leaves(d: Mapping[str, Any], prefix: str) -> Iterable[str]:
    for k, v in d.items():
        if isinstance(v, Mapping):
            yield from _leaves(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}"


def load_config(
    params: Path | None = DEFAULT_PARAMS,
    profile: str | None = None,
    experiments: Iterable[Path] = (),
    overrides: Iterable[str] = (),
    check_paths: Iterable[str] | bool = True,
    run_layer: tuple[str, Mapping[str, Any]] | None = None,
) -> Config:
    """Resolve and validate the configuration of a run.

    `params` may be None or absent (then only the profile and overrides apply). `profile` given here wins
    over the one named in params.yaml. `run_layer` is a named grid run's (source, dotted overrides), applied
    after the experiment files and before `overrides`. `check_paths`: True checks every input path, or name
    the sections a stage reads (an input written by an earlier stage does not exist before that stage has run).
    """
    sources: dict[str, str] = {}
    layers: list[tuple[str, dict[str, Any]]] = []
    params_data: dict[str, Any] = {}
    if params is not None and Path(params) != DEFAULT_PARAMS and not Path(params).exists():
        raise ConfigError(f"{params}: params file not found (only the default ./params.yaml may be absent)")
    if params is not None and Path(params).exists():
        params_data = read_yaml(Path(params))
        layers.append((str(params), params_data))
    for exp in experiments:
        layers.append((str(exp), read_yaml(Path(exp))))
    if run_layer is not None:  # a named run of the experiment grid (siamdetr.grid), as dotted keys
        layers.append((run_layer[0], nest(run_layer[1])))
    dotted = dict(parse_override(o) for o in overrides)
    if dotted:
        layers.append(("--set", nest(dotted)))

    name = profile or _last_profile(layers) or "tiny"
    if not isinstance(name, str):
        raise ConfigError(f"{_profile_source(layers)}: profile = {name!r}: expected a profile name")
    merged: dict[str, Any] = {}
    for source, layer in profile_layers(name):
        merge(merged, layer, source, sources)
    for source, layer in layers:
        merge(merged, layer, source, sources)
    merged["profile"] = name
    if profile:
        sources["profile"] = "--profile"
    cfg = build(Config, merged, sources, "")
    cfg.sources = sources
    check_consistency(cfg)
    if check_paths:
        check_input_paths(cfg, SECTIONS if check_paths is True else tuple(check_paths))
    return cfg


def profile_layers(name: str) -> list[tuple[str, dict[str, Any]]]:
    """A profile's values, after those of the profile it `extends` (and so on), as (source, values) layers."""
    chain: list[tuple[str, dict[str, Any]]] = []
    seen: list[str] = []
    while name is not None:
        if name in seen:
            raise ConfigError(f"profile {name!r} extends itself ({' → '.join([*seen, name])})")
        seen.append(name)
        path = profile_path(name)
        data = read_yaml(path)
        name = data.pop("extends", None)
        chain.append((str(path), data))
    return chain[::-1]


def _last_profile(layers: list[tuple[str, dict[str, Any]]]) -> Any:
    found = None
    for _, layer in layers:
        if "profile" in layer:
            found = layer["profile"]
    return found


def _profile_source(layers: list[tuple[str, dict[str, Any]]]) -> str:
    return next((s for s, layer in reversed(layers) if "profile" in layer), DEFAULTS_SOURCE)


# ------------------------------------------------------------------------------------------ validation
def build(cls: type, data: Any, sources: dict[str, str], prefix: str) -> Any:
    """Instantiate dataclass `cls` from a mapping, checking keys, types and ranges."""
    where = prefix.rstrip(".") or "top level"
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{sources.get(prefix.rstrip('.'), DEFAULTS_SOURCE)}: {where}: expected a mapping of keys, got {data!r}"
        )
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "sources"}
    for key in data:
        if key not in fields:
            dotted = f"{prefix}{key}"
            hint = difflib.get_close_matches(str(key), list(fields), n=1)
            near = f"; did you mean '{prefix}{hint[0]}'?" if hint else ""
            raise ConfigError(
                f"{_source(sources, dotted)}: unknown key '{dotted}'{near} (keys of {where}: {', '.join(fields)})"
            )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, f in fields.items():
        if name not in data:
            continue
        dotted = f"{prefix}{name}"
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = build(tp, data[name], sources, dotted + ".")
            continue
        value = coerce(tp, data[name], dotted, _source(sources, dotted))
        check = f.metadata.get("check")
        if check is not None and value is not None and (msg := check(value)):
            raise ConfigError(f"{_source(sources, dotted)}: {dotted} = {value!r}: {msg}")
        kwargs[name] = value
    return cls(**kwargs)


def _source(sources: dict[str, str], dotted: str) -> str:
    return sources.get(dotted, DEFAULTS_SOURCE)


def coerce(tp: Any, value: Any, key: str, source: str) -> Any:
    """Check `value` against type `tp`; the only conversions are int→float and YAML's '1e-4' strings."""

    def fail(expected: str) -> ConfigError:
        return ConfigError(f"{source}: {key} = {value!r}: expected {expected}")

    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return coerce(inner[0], value, key, source)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise fail("one of " + ", ".join(map(repr, choices)))
        return value
    if origin is list:
        if not isinstance(value, list):
            raise fail(f"a list of {typing.get_args(tp)[0].__name__}")
        (item,) = typing.get_args(tp)
        return [coerce(item, v, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise fail("true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail("an integer")
        return value
    if tp is float:
        if isinstance(value, str):
            try:
                number = float(value)  # PyYAML reads 1e-4 (no dot) as a string
            except ValueError:
                raise fail("a number") from None
        elif isinstance(value, bool) or not isinstance(value, int | float):
            raise fail("a number")
        else:
            number = float(value)
        if not math.isfinite(number):
            raise fail("a finite number")
        return number
    if tp is str:
        if not isinstance(value, str):
            raise fail("a string")
        return value
    raise TypeError(f"config field {key} has an unsupported type {tp}")


def check_consistency(cfg: Config) -> None:
    """Rules that involve more than one key."""
    m, f = cfg.model, cfg.finetune
    if m.d_model % m.nheads:
        raise ConfigError(
            f"{cfg.source_of('model.nheads')}: model.nheads = {m.nheads} must divide model.d_model = {m.d_model}"
        )
    if f.crop_min > f.crop_max:
        raise ConfigError(
            f"{cfg.source_of('finetune.crop_min')}: finetune.crop_min = {f.crop_min} is larger than "
            f"finetune.crop_max = {f.crop_max}"
        )
    for key in cfg.grid.profile_keys:
        section, _, name = key.partition(".")
        known = SECTIONS if section in SECTIONS else ()
        if not known or name not in {x.name for x in dataclasses.fields(getattr(cfg, section))}:
            raise ConfigError(f"{cfg.source_of('grid.profile_keys')}: grid.profile_keys: {key!r} is not a config key")
    p = cfg.pretrain
    if p.method == "detreg" and cfg.proposals.top_k < p.detreg.num_targets:
        raise ConfigError(
            f"{cfg.source_of('proposals.top_k')}: proposals.top_k = {cfg.proposals.top_k} is below "
            f"pretrain.detreg.num_targets = {p.detreg.num_targets}: the store would not hold DETReg's targets"
        )
    if not f.train_scales:
        raise ConfigError(f"{cfg.source_of('finetune.train_scales')}: finetune.train_scales is empty")
    check_image_sizes(cfg)


def backbone_stride(model: ModelConfig) -> int:
    """The deepest feature map's stride: ResNet-50's C5 32 (16 dilated), the small ResNet's 16 (8)."""
    stride = 32 if model.backbone == "resnet50" else 16
    return stride // 2 if model.dilation else stride


def check_image_sizes(cfg: Config) -> None:
    """Image sides the model can see (at least one stride) and resize limits torchvision accepts."""
    stride, f, p = backbone_stride(cfg.model), cfg.finetune, cfg.pretrain
    sides = {
        "finetune.train_scales": min(f.train_scales),
        "finetune.test_size": f.test_size,
        "finetune.crop_min": f.crop_min,
        "pretrain.short_min": p.short_min,
    }
    for key, side in sides.items():
        if side < stride:
            raise ConfigError(
                f"{cfg.source_of(key)}: {key} = {side} is below the {cfg.model.backbone} backbone's stride of "
                f"{stride} pixels: its feature map would be empty"
            )
    for key, side in (("finetune.train_scales", max(f.train_scales)), ("finetune.test_size", f.test_size)):
        if f.max_size <= side:
            raise ConfigError(
                f"{cfg.source_of('finetune.max_size')}: finetune.max_size = {f.max_size} must exceed {key} "
                f"({side}): it caps the long side of an image whose short side is resized to {side}"
            )
    if p.short_min > p.short_max or p.max_size < p.short_max:
        raise ConfigError(
            f"{cfg.source_of('pretrain.short_min')}: pretrain view sizes need short_min <= short_max <= "
            f"max_size (here {p.short_min}, {p.short_max}, {p.max_size})"
        )


SECTIONS = ("data", "model", "backbone", "proposals", "pretrain", "finetune")


def backbone_stage_output(cfg: Config) -> str | None:
    """Where the backbone stage writes the small ResNet (None for the ResNet-50, which the user gives)."""
    return str(Path(cfg.backbone.out_dir) / "backbone.pth") if cfg.model.backbone == "small" else None


def check_input_paths(cfg: Config, sections: tuple[str, ...] = SECTIONS) -> None:
    """Every input path the user set in these sections must exist (outputs are created later)."""
    for sec_name in sections:
        sec = getattr(cfg, sec_name)
        for f in dataclasses.fields(sec):
            value = getattr(sec, f.name)
            key = f"{sec_name}.{f.name}"
            if key == "model.backbone_checkpoint" and value == backbone_stage_output(cfg):
                continue  # an output of the backbone stage, not a user's input (loading it says if it is missing)
            if f.metadata.get("must_exist") and value is not None and not Path(value).exists():
                raise ConfigError(f"{cfg.source_of(key)}: {key} = {value!r}: path does not exist")


def describe(cfg: Config) -> str:
    """The resolved configuration as YAML, each leaf annotated with the file that set it."""
    lines = []

    def walk(d: Mapping[str, Any], prefix: str, indent: int) -> None:
        for k, v in d.items():
            dotted = f"{prefix}{k}"
            if isinstance(v, Mapping):
                lines.append(" " * indent + f"{k}:")
                walk(v, dotted + ".", indent + 2)
            else:
                dumped = yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("...").strip()
                lines.append(" " * indent + f"{k}: {dumped}  # {cfg.source_of(dotted)}")

    walk(cfg.to_dict(), "", 0)
    return "\n".join(lines) + "\n"
