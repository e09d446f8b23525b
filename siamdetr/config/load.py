"""Loading a run's configuration, layered, later layers winning key by key:

    dataclass defaults → profile (siamdetr/profiles/<name>.yaml) → params.yaml → experiment files → --set

Validation happens once, at load time, before any compute: a wrong type, an out-of-range value, an unknown
key or a missing input path raises one :class:`ConfigError` that names the key and the file it came from;
every value keeps the file it came from (`Config.source_of`, `describe`).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml

from siamdetr.config.schema import (
    DEFAULTS_SOURCE,
    Config,
    ConfigError,
    backbone_stride,
)

PROFILES_DIR = Path(__file__).parents[1] / "profiles"
DEFAULT_PARAMS = Path("params.yaml")


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
