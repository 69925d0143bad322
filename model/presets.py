"""Architecture presets: every number that shapes the networks, in one frozen record.

A checkpoint stores its preset's fields, so a model can be rebuilt from the file alone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

# Table 5 of the paper's supplement: ten 3x3 convs, stride 2 at layers 3, 5, 7 and 9.
PAPER_ENCODER_CHANNELS = (16, 16, 32, 32, 64, 64, 128, 128, 256, 256)
AGGREGATIONS = ("scft", "add", "adain")
ATTENTION_STRIDES = (16, 8)  # the paper's 1/16 grid, or a finer 1/8 one for small crops
# Sanity bounds for a preset read from a file: far above any real model (the paper's widest layer
# has 992 channels, d_v is 992), far below one that would not fit in memory.
MAX_CHANNELS = 2048
MAX_FEATURE_DIM = 4096
MAX_RES_BLOCKS = 64


@dataclass(frozen=True)
class Preset:
    name: str
    encoder_channels: tuple[int, ...] = PAPER_ENCODER_CHANNELS  # E_s and E_r, layers 1..10
    res_channels: int | None = None  # width of the residual blocks; None = d_v (no projection)
    num_res_blocks: int = 4
    decoder_channels: tuple[int, int, int, int] = (256, 128, 64, 32)  # at 1/8, 1/4, 1/2, 1/1
    discriminator_channels: int = 64  # first PatchGAN width; doubles per stride-2 layer
    aggregation: str = "scft"  # how reference features join the sketch's: scft | add | adain
    attention_stride: int = 16  # image pixels per attention cell (the paper: 16)
    # The attention also carries the reference's pixels (each cell's patch) to the sketch cells and
    # the decoder receives that warped reference, so placing a colour is copying, not memorising.
    color_hint: bool = False

    def __post_init__(self) -> None:
        self._check_types_and_ranges()
        if len(self.encoder_channels) != 10:
            raise ValueError(f"encoder_channels needs 10 values, got {len(self.encoder_channels)}")
        if len(self.decoder_channels) != 4:
            raise ValueError(f"decoder_channels needs 4 values, got {len(self.decoder_channels)}")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {self.aggregation!r}")
        if self.attention_stride not in ATTENTION_STRIDES:
            raise ValueError(
                f"attention_stride must be one of {ATTENTION_STRIDES}, got {self.attention_stride}"
            )
        if self.color_hint and self.aggregation != "scft":
            raise ValueError("color_hint needs the SCFT attention (aggregation 'scft')")

    def _check_types_and_ranges(self) -> None:
        """Every field of the right type and in a sane range, so that a damaged or hostile
        checkpoint fails here in one sentence instead of allocating terabytes."""
        if not isinstance(self.name, str):
            raise ValueError(f"name must be a string, got {self.name!r}")
        channels = {
            "encoder_channels": self.encoder_channels,
            "decoder_channels": self.decoder_channels,
            "res_channels": () if self.res_channels is None else (self.res_channels,),
            "discriminator_channels": (self.discriminator_channels,),
        }
        for name, values in channels.items():
            if not isinstance(values, tuple) or not all(
                _is_int(value) and 1 <= value <= MAX_CHANNELS for value in values
            ):
                raise ValueError(f"{name} must be ints from 1 to {MAX_CHANNELS}, got {values!r}")
        if sum(self.encoder_channels) > MAX_FEATURE_DIM:
            raise ValueError(
                f"encoder_channels sum to {sum(self.encoder_channels)}; at most "
                f"{MAX_FEATURE_DIM} (the attention's width)"
            )
        if not (_is_int(self.num_res_blocks) and 0 <= self.num_res_blocks <= MAX_RES_BLOCKS):
            raise ValueError(
                f"num_res_blocks must be an int from 0 to {MAX_RES_BLOCKS}, "
                f"got {self.num_res_blocks!r}"
            )
        if not isinstance(self.aggregation, str):
            raise ValueError(f"aggregation must be a string, got {self.aggregation!r}")
        if not _is_int(self.attention_stride):
            raise ValueError(f"attention_stride must be an int, got {self.attention_stride!r}")
        if not isinstance(self.color_hint, bool):
            raise ValueError(f"color_hint must be true or false, got {self.color_hint!r}")

    @property
    def feature_dim(self) -> int:
        """d_v: the channels of every encoder layer, concatenated (992 for the paper)."""
        return sum(self.encoder_channels)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> Preset:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown preset fields: {', '.join(unknown)}")
        tuples = {"encoder_channels", "decoder_channels"}
        for key in tuples & set(values):
            if not isinstance(values[key], list | tuple):
                raise ValueError(f"{key} must be a list of ints, got {values[key]!r}")
        return cls(**{k: tuple(v) if k in tuples else v for k, v in values.items()})


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


PRESETS: dict[str, Preset] = {
    # The paper: residual blocks at the full 992-channel width (~80 M parameters).
    "paper": Preset(name="paper"),
    # The shipped model: a 1x1 projection to 256 channels before the residual blocks; the attention
    # keeps the paper's 992-d query, key and value.
    "default": Preset(name="default", res_channels=256, decoder_channels=(128, 64, 32, 32)),
    # For tests: a few thousand parameters' worth of everything, same topology.
    "tiny": Preset(
        name="tiny",
        encoder_channels=(4, 4, 8, 8, 8, 8, 16, 16, 16, 16),
        res_channels=16,
        num_res_blocks=2,
        decoder_channels=(16, 8, 8, 8),
        discriminator_channels=8,
    ),
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
