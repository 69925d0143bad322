"""The training configuration: one typed tree from defaults, a TOML file and `key=value` overrides.

Every number the trainer uses lives here. Unknown keys and ill-typed values are errors that name the
key, so a typo never silently trains with a default. The resolved tree is written to the run folder.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from colord.model import PRESETS, SIZE_MULTIPLE
from colord.model.networks import WEIGHT_INITS
from colord.model.presets import AGGREGATIONS, ATTENTION_STRIDES
from colord.training.train.backbones import BACKBONES

CONFIG_DIR = Path(__file__).parents[1] / "configs"  # training/configs


class ConfigError(ValueError):
    """A configuration that cannot be trained: unknown key, wrong type or impossible value."""


@dataclass
class DataConfig:
    images: str = ""  # folder of colour images (searched recursively)
    lineart: str = ""  # optional folder of paired line art (same file stems); XDoG where absent
    size: int = 256  # training crop, a multiple of 16 (paper: 256)
    zero_reference_ratio: float = 0.1  # share of samples with a zero-filled reference (A.5)
    workers: int = 2  # DataLoader worker processes per rank
    min_crop_fraction: float = 0.7  # random crops span this much of the image side, or more
    warp_max_displacement: float = 0.15  # s(·): TPS control point moves, [-1, 1] frame units
    # s(·) beyond the paper: a random similarity before the spline, so the matching part of the
    # reference is not at the sketch position (shift: fraction of the side; zoom: max |log2|;
    # rotation: degrees). 0 = the paper's warp.
    reference_shift: float = 0.0
    reference_zoom: float = 0.0
    reference_rotation: float = 0.0


@dataclass
class ModelConfig:
    preset: str = "paper"  # colord.model preset: paper | default | tiny
    aggregation: str = "scft"  # scft | add | adain (the paper's Table 4 ablation)
    init: str = ""  # generator checkpoint to fine-tune from ("" = random init)
    attention_stride: int = 16  # pixels per SCFT attention cell: 16 (the paper) or 8
    color_hint: bool = False  # the attention also carries the reference's pixels to the decoder
    weight_init: str = (
        "paper"  # paper: N(0, 0.02) | kaiming: variance-preserving (not in the paper)
    )


@dataclass
class LossConfig:
    rec: float = 30.0  # λ_rec, L1 reconstruction
    adv: float = 1.0  # λ_adv, conditional LSGAN
    perc: float = 0.01  # λ_perc, L1 on the 5 backbone feature maps
    style: float = 50.0  # λ_style, L1 on their Gram matrices
    triplet: float = 1.0  # λ_tr, similarity-based triplet loss (0 = the Table 3 ablation)
    triplet_margin: float = 12.0  # γ
    negative_min_distance: float = 2.0  # grid cells between a negative and the positive, at least
    correspondence: float = 0.0  # λ_corr, dense cross-entropy of the attention (not in the paper)
    correspondence_sigma: float = 0.5  # its soft target's spread, in attention cells
    backbone: str = "auto"  # auto (VGG19 if its weights are found) | vgg19 | efficientnet_lite0
    vgg_weights: str = ""  # path of torchvision's vgg19-dcbb9e9d.pth ("" = torchvision's cache)


@dataclass
class OptimConfig:
    batch_size: int = 16  # images per step over all ranks
    lr_g: float = 1e-4
    lr_d: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    constant_epochs: float = 100.0  # epochs at the initial learning rate
    decay_epochs: float = 100.0  # epochs of linear decay to zero after them
    # With model.init (the discriminator starts fresh): steps over which the generator's learning
    # rate and λ_adv rise linearly from 0 while the discriminator learns at full rate, so the first
    # steps do not pull the starting model towards an untrained critic. 0 = no warm-up.
    finetune_warmup_steps: int = 0


@dataclass
class RunConfig:
    out: str = "runs/colord"  # run folder: config.json, logs, images, checkpoints
    seed: int = 0
    device: str = "auto"  # auto (CUDA if present) | cpu | cuda | cuda:N
    bf16: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    channels_last: bool = True  # channels-last memory format on CUDA
    max_steps: int = 0  # stop after this many steps (0 = all); does not change the schedule
    max_minutes: float = 0.0  # stop, with a checkpoint, after this much training time (0 = none)
    log_every: int = 50  # steps between scalar logs
    image_every: int = 1000  # steps between image grids and attention maps
    checkpoint_every: int = 1000  # steps between resume states and exported generators
    checkpoint_minutes: float = 5.0  # and at most this much training time between them (0 = off)


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def write_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")


def preset_path(name: str) -> Path:
    path = CONFIG_DIR / f"{name}.toml"
    if not path.is_file():
        names = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.toml")))
        raise ConfigError(f"unknown training preset {name!r}; choose one of {names}")
    return path


def load_config(
    path: str | Path | None = None,
    *,
    preset: str | None = None,
    values: typing.Mapping[str, Any] | None = None,
    overrides: typing.Iterable[str] = (),
) -> TrainConfig:
    """Defaults, then a preset or a TOML file, then `values` ({"section.key": value}, e.g. from
    command-line flags), then `section.key=value` overrides; validated."""
    if path is not None and preset is not None:
        raise ConfigError("give a config file or a preset, not both")
    source = Path(path) if path is not None else preset_path(preset or "paper")
    try:
        file_values = tomllib.loads(source.read_text())
    except OSError as error:
        raise ConfigError(f"cannot read config {source}: {error.strerror}") from error
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{source} is not valid TOML: {error}") from error
    cfg = from_dict(file_values, origin=str(source))
    for name, value in (values or {}).items():
        set_value(cfg, name, value)
    for item in overrides:
        apply_override(cfg, item)
    validate(cfg)
    return cfg


def from_dict(values: dict[str, Any], *, origin: str = "config") -> TrainConfig:
    cfg = TrainConfig()
    for section_name, section_values in values.items():
        section = _section(cfg, section_name, origin)
        if not isinstance(section_values, dict):
            raise ConfigError(f"{origin}: [{section_name}] must be a table")
        for key, value in section_values.items():
            _assign(section, section_name, key, value, origin)
    return cfg


def apply_override(cfg: TrainConfig, item: str) -> None:
    """One `section.key=value`: the value is read as TOML (numbers, true/false), else as text."""
    name, sep, text = item.partition("=")
    if not sep or "." not in name:
        raise ConfigError(f"override {item!r} is not of the form section.key=value")
    try:
        value = tomllib.loads(f"value = {text.strip()}")["value"]
    except tomllib.TOMLDecodeError:
        value = text.strip()
    set_value(cfg, name.strip(), value, origin="--set")


def set_value(cfg: TrainConfig, name: str, value: Any, *, origin: str = "option") -> None:
    """Set `section.key` to a Python value, type-checked like a file's."""
    section_name, _, key = name.partition(".")
    _assign(_section(cfg, section_name, origin), section_name, key, value, origin)


def validate(cfg: TrainConfig) -> None:
    """Values that type-check but cannot train."""
    checks = [
        (
            cfg.data.size > 0 and cfg.data.size % SIZE_MULTIPLE == 0,
            f"data.size must be a multiple of {SIZE_MULTIPLE}",
        ),
        (0 <= cfg.data.zero_reference_ratio <= 1, "data.zero_reference_ratio must be in [0, 1]"),
        (cfg.data.workers >= 0, "data.workers must be >= 0"),
        (0 < cfg.data.min_crop_fraction <= 1, "data.min_crop_fraction must be in (0, 1]"),
        (cfg.data.warp_max_displacement >= 0, "data.warp_max_displacement must be >= 0"),
        (
            min(cfg.data.reference_shift, cfg.data.reference_zoom, cfg.data.reference_rotation)
            >= 0,
            "data.reference_shift, reference_zoom and reference_rotation must be >= 0",
        ),
        (cfg.model.preset in PRESETS, f"model.preset must be one of {', '.join(PRESETS)}"),
        (cfg.model.aggregation in AGGREGATIONS, f"model.aggregation must be one of {AGGREGATIONS}"),
        (cfg.loss.backbone in BACKBONES, f"loss.backbone must be one of {BACKBONES}"),
        (cfg.optim.batch_size > 0, "optim.batch_size must be > 0"),
        (cfg.optim.lr_g > 0 and cfg.optim.lr_d > 0, "learning rates must be > 0"),
        (0 <= cfg.optim.beta1 < 1 and 0 <= cfg.optim.beta2 < 1, "Adam betas must be in [0, 1)"),
        (cfg.optim.constant_epochs >= 0 and cfg.optim.decay_epochs >= 0, "epochs must be >= 0"),
        (cfg.optim.constant_epochs + cfg.optim.decay_epochs > 0, "the schedule has no epochs"),
        (cfg.run.max_steps >= 0, "run.max_steps must be >= 0"),
        (cfg.run.max_minutes >= 0, "run.max_minutes must be >= 0"),
        (cfg.run.checkpoint_minutes >= 0, "run.checkpoint_minutes must be >= 0"),
        (cfg.optim.finetune_warmup_steps >= 0, "optim.finetune_warmup_steps must be >= 0"),
        (
            min(cfg.run.log_every, cfg.run.image_every, cfg.run.checkpoint_every) > 0,
            "run.log_every, run.image_every and run.checkpoint_every must be > 0",
        ),
        (
            cfg.loss.triplet == 0 or cfg.model.aggregation == "scft",
            "the triplet loss supervises SCFT's attention: set loss.triplet = 0 with "
            f"model.aggregation = {cfg.model.aggregation!r}",
        ),
        (
            cfg.loss.correspondence == 0 or cfg.model.aggregation == "scft",
            "the correspondence loss supervises SCFT's attention: set loss.correspondence = 0 "
            f"with model.aggregation = {cfg.model.aggregation!r}",
        ),
        (cfg.loss.correspondence_sigma > 0, "loss.correspondence_sigma must be > 0"),
        (
            cfg.model.attention_stride in ATTENTION_STRIDES,
            f"model.attention_stride must be one of {ATTENTION_STRIDES}",
        ),
        (cfg.model.weight_init in WEIGHT_INITS, f"model.weight_init must be one of {WEIGHT_INITS}"),
        (
            not cfg.model.color_hint or cfg.model.aggregation == "scft",
            "model.color_hint needs model.aggregation = 'scft'",
        ),
    ]
    for weight in ("rec", "adv", "perc", "style", "triplet", "correspondence"):
        checks.append((getattr(cfg.loss, weight) >= 0, f"loss.{weight} must be >= 0"))
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def _section(cfg: TrainConfig, name: str, origin: str) -> Any:
    if name not in {f.name for f in dataclasses.fields(cfg)}:
        known = ", ".join(f.name for f in dataclasses.fields(cfg))
        raise ConfigError(f"{origin}: unknown section {name!r} (sections: {known})")
    return getattr(cfg, name)


def _assign(section: Any, section_name: str, key: str, value: Any, origin: str) -> None:
    types_by_name = typing.get_type_hints(type(section))
    if key not in types_by_name:
        known = ", ".join(types_by_name)
        raise ConfigError(f"{origin}: unknown key {section_name}.{key} (known: {known})")
    setattr(section, key, _coerce(types_by_name[key], value, f"{section_name}.{key}", origin))


def _coerce(expected: type, value: Any, name: str, origin: str) -> Any:
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is bool and not isinstance(value, bool):
        raise ConfigError(f"{origin}: {name} must be true or false, got {value!r}")
    if expected is int and isinstance(value, bool):
        raise ConfigError(f"{origin}: {name} must be an integer, got {value!r}")
    if not isinstance(value, expected):
        raise ConfigError(f"{origin}: {name} must be {expected.__name__}, got {value!r}")
    return value
