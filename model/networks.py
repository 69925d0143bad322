"""The SCFT colorization networks (Lee et al., CVPR 2020), top-down.

conv block -> encoder (Table 5) -> multi-level features V -> aggregation (SCFT attention, or the
ablations' add / AdaIN) -> residual blocks -> U-Net decoder -> Generator; then the conditional
PatchGAN Discriminator.

Tensor conventions: sketch (B, 1, H, W) in [-1, 1] with a white (+1) background and black (-1)
lines; reference and output (B, 3, H, W) RGB in [-1, 1]. H and W must be multiples of 16; the
reference may have another size (also multiples of 16) under SCFT and AdaIN.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .pixels import SIZE_MULTIPLE  # = 2 ** len(STRIDE_TWO_LAYERS)
from .presets import Preset

STRIDE_TWO_LAYERS = (2, 4, 6, 8)  # 0-based: layers 3, 5, 7, 9 of Table 5
SKIP_LAYERS = (7, 5, 3, 1)  # 0-based: last sketch feature at 1/8, 1/4, 1/2, 1/1 for the decoder


class EncoderLayer(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
        )


class Encoder(nn.Module):
    """Table 5: ten 3x3 convs with LeakyReLU 0.2; every layer's output is kept."""

    def __init__(self, in_channels: int, channels: tuple[int, ...]) -> None:
        super().__init__()
        widths = (in_channels, *channels)
        self.layers = nn.ModuleList(
            EncoderLayer(widths[i], widths[i + 1], 2 if i in STRIDE_TWO_LAYERS else 1)
            for i in range(len(channels))
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for layer in self.layers:
            x = layer(x)
            features.append(x)
        return features


def stack_levels(features: list[torch.Tensor], stride: int = SIZE_MULTIPLE) -> torch.Tensor:
    """Eq. 1: bring every level to 1/`stride` of the input and concatenate: (B, d_v, h, w).

    At the paper's stride 16 every level is average-pooled to the last level's size. At a finer
    stride, finer levels are average-pooled and the coarser last levels repeated (nearest). Sizes
    are exact multiples, so fixed kernels equal the adaptive ones and keep shapes static for
    compilers.
    """
    target_width = features[0].shape[-1] // stride
    resized = []
    for f in features:
        width = f.shape[-1]
        if width > target_width:
            f = F.avg_pool2d(f, width // target_width)
        elif width < target_width:
            f = F.interpolate(f, scale_factor=float(target_width // width), mode="nearest")
        resized.append(f)
    return torch.cat(resized, dim=1)


@dataclass
class SCFTExtras:
    """What the triplet loss and the attention visualisation need from one forward pass."""

    query: torch.Tensor | None  # (B, N, d_v), N = h*w sketch positions, row-major
    key: torch.Tensor | None  # (B, M, d_v), M = hr*wr reference positions
    attention: torch.Tensor | None  # (B, N, M), rows sum to 1
    sketch_grid: tuple[int, int]
    reference_grid: tuple[int, int]


class SCFT(nn.Module):
    """Eqs. 2-4: c_i = v_i^s + sum_j softmax_j(W_q v_i^s . W_k v_j^r / sqrt(d_v)) W_v v_j^r.

    `carried` (B, M, k), optional: values that ride along with the same attention weights (the
    reference's pixels, for the colour hint); their attention-weighted sums are appended to the
    output as k extra channels.

    `project`, optional: the 1x1 convolution that follows (d -> p channels), folded in, for
    inference. Being linear, P(v_s + sum_j a_ij W_v v_j) + b = (P v_s + b) + sum_j a_ij (P W_v) v_j,
    so the attention averages p-channel values instead of d-channel ones; and the logits
    (W_q v_i) . (W_k v_j) are (W_k^T W_q v_i) . v_j, one projection instead of two. For the
    default model (p = 256) that is a third fewer multiply-adds; the output's first p channels
    are the projection's.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.query = nn.Linear(dim, dim, bias=False)
        self.key = nn.Linear(dim, dim, bias=False)
        self.value = nn.Linear(dim, dim, bias=False)
        self.scale = dim**-0.5

    def forward(
        self,
        sketch_features: torch.Tensor,
        reference_features: torch.Tensor,
        return_extras: bool,
        carried: torch.Tensor | None = None,
        project: nn.Conv2d | None = None,
    ) -> tuple[torch.Tensor, SCFTExtras | None]:
        b, d, h, w = sketch_features.shape
        hr, wr = reference_features.shape[-2:]
        v_s = sketch_features.flatten(2).transpose(1, 2)  # (B, N, d)
        v_r = reference_features.flatten(2).transpose(1, 2)  # (B, M, d)
        if project is None:
            q, k, v = self.query(v_s), self.key(v_r), self.value(v_r)
        else:  # the same logits and values, with the weights multiplied first
            projection = project.weight.flatten(1)  # (p, d)
            q = F.linear(v_s, self.key.weight.T @ self.query.weight)  # (W_q v_s) . (W_k v_r)
            k = v_r
            v = F.linear(v_r, projection @ self.value.weight)
            v_s = F.linear(v_s, projection, project.bias)
            d = projection.shape[0]
        if carried is not None:
            v = torch.cat([v, carried.to(v.dtype)], dim=-1)
        # The scale applies to the logits, before the softmax (the paper's Eq. 2); SDPA's default
        # scale is exactly 1/sqrt(d_v) and keeps memory linear in N at high resolution.
        context = F.scaled_dot_product_attention(q, k, v)  # (B, N, d [+ k])
        if carried is not None:
            context, carried_out = context.split([d, carried.shape[-1]], dim=-1)
            context = torch.cat([v_s + context, carried_out], dim=-1)
        else:
            context = v_s + context
        c = context.transpose(1, 2).reshape(b, context.shape[-1], h, w)
        if not return_extras:
            return c, None
        attention = torch.softmax((q @ k.transpose(1, 2)) * self.scale, dim=-1)  # (B, N, M)
        return c, SCFTExtras(q, k, attention, (h, w), (hr, wr))


class AddAggregation(nn.Module):
    """Table 4 ablation: add the reference features position by position."""

    def forward(
        self, sketch_features: torch.Tensor, reference_features: torch.Tensor, return_extras: bool
    ) -> tuple[torch.Tensor, SCFTExtras | None]:
        if reference_features.shape[-2:] != sketch_features.shape[-2:]:
            reference_features = F.interpolate(
                reference_features, size=sketch_features.shape[-2:], mode="bilinear"
            )
        c = sketch_features + reference_features
        return c, _no_attention(sketch_features, reference_features) if return_extras else None


class AdaINAggregation(nn.Module):
    """Table 4 ablation: give the sketch features the reference features' channel statistics."""

    def forward(
        self, sketch_features: torch.Tensor, reference_features: torch.Tensor, return_extras: bool
    ) -> tuple[torch.Tensor, SCFTExtras | None]:
        eps = 1e-5
        s_mean = sketch_features.mean(dim=(2, 3), keepdim=True)
        s_std = sketch_features.std(dim=(2, 3), keepdim=True) + eps
        r_mean = reference_features.mean(dim=(2, 3), keepdim=True)
        r_std = reference_features.std(dim=(2, 3), keepdim=True) + eps
        c = (sketch_features - s_mean) / s_std * r_std + r_mean
        return c, _no_attention(sketch_features, reference_features) if return_extras else None


def _no_attention(sketch_features: torch.Tensor, reference_features: torch.Tensor) -> SCFTExtras:
    return SCFTExtras(
        None, None, None, tuple(sketch_features.shape[-2:]), tuple(reference_features.shape[-2:])
    )


def make_aggregation(kind: str, dim: int) -> nn.Module:
    if kind == "scft":
        return SCFT(dim)
    if kind == "add":
        return AddAggregation()
    if kind == "adain":
        return AdaINAggregation()
    raise ValueError(f"unknown aggregation {kind!r}")


class ResidualBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus the identity (supplement A.3)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class UpBlock(nn.Module):
    """x2 upsampling (or none, `upsample=False`), concatenation with the sketch encoder's map of
    that size (and the colour hint, when given), two convs."""

    def __init__(
        self,
        in_channels: int,
        skip_channels: int,
        out_channels: int,
        *,
        hint_channels: int = 0,
        upsample: bool = True,
    ) -> None:
        super().__init__()
        self.upsample = upsample
        self.body = nn.Sequential(
            nn.Conv2d(
                in_channels + skip_channels + hint_channels, out_channels, 3, padding=1, bias=False
            ),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(
        self, x: torch.Tensor, skip: torch.Tensor, hint: torch.Tensor | None = None
    ) -> torch.Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        parts = [x, skip]
        if hint is not None:  # the full-size colour hint, averaged down to this block's size
            factor = hint.shape[-1] // skip.shape[-1]
            parts.append(F.avg_pool2d(hint, factor) if factor > 1 else hint)
        return self.body(torch.cat(parts, dim=1))


class Decoder(nn.Module):
    """U-Net decoder with skips from the sketch encoder at 1/8, 1/4, 1/2 and 1/1, tanh RGB output.

    It starts at the attention grid: four x2 upsamplings from 1/16, or three from 1/8 (the first
    block then only merges its skip).
    """

    def __init__(self, in_channels: int, preset: Preset) -> None:
        super().__init__()
        skip_channels = [preset.encoder_channels[i] for i in SKIP_LAYERS]
        widths = (in_channels, *preset.decoder_channels)
        hint_channels = 3 if preset.color_hint else 0
        self.ups = nn.ModuleList(
            UpBlock(
                widths[i],
                skip_channels[i],
                widths[i + 1],
                hint_channels=hint_channels,
                upsample=i > 0 or preset.attention_stride == SIZE_MULTIPLE,
            )
            for i in range(4)
        )
        self.to_rgb = nn.Conv2d(widths[-1], 3, 3, padding=1)

    def forward(
        self, x: torch.Tensor, skips: list[torch.Tensor], hint: torch.Tensor | None = None
    ) -> torch.Tensor:
        for up, skip in zip(self.ups, skips, strict=True):
            x = up(x, skip, hint)
        return torch.tanh(self.to_rgb(x))


class Generator(nn.Module):
    """G(I_s, I_r): sketch and reference encoders, aggregation, residual blocks, decoder."""

    def __init__(self, preset: Preset) -> None:
        super().__init__()
        self.preset = preset
        dim = preset.feature_dim
        width = preset.res_channels or dim
        self.sketch_encoder = Encoder(1, preset.encoder_channels)
        self.reference_encoder = Encoder(3, preset.encoder_channels)
        self.aggregation = make_aggregation(preset.aggregation, dim)
        self.project = nn.Conv2d(dim, width, 1) if width != dim else nn.Identity()
        blocks = [ResidualBlock(width) for _ in range(preset.num_res_blocks)]
        self.res_blocks = nn.Sequential(*blocks)
        self.decoder = Decoder(width, preset)
        initialize_weights(self)

    @property
    def attention_scale(self) -> float:
        """The 1/sqrt(d_v) that scales query-key products (the triplet loss's S uses it too)."""
        return self.preset.feature_dim**-0.5

    def forward(
        self,
        sketch: torch.Tensor,
        reference: torch.Tensor | None = None,
        *,
        return_extras: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, SCFTExtras]:
        check_divisible(sketch, "sketch")
        if reference is None:  # no-reference mode (supplement A.5): a zero-filled reference
            reference = sketch.new_zeros(sketch.shape[0], 3, *sketch.shape[-2:])
        check_divisible(reference, "reference")
        # Inference folds the 1x1 projection into the attention's values (SCFT: `project`): the
        # same function, fewer multiply-adds. Training keeps the paper's order.
        fold = (
            not self.training
            and not return_extras
            and isinstance(self.aggregation, SCFT)
            and isinstance(self.project, nn.Conv2d)
        )
        folded = {"project": self.project} if fold else {}
        stride = self.preset.attention_stride
        sketch_features = self.sketch_encoder(sketch)  # 10 maps, 1/1 .. 1/16
        reference_features = self.reference_encoder(reference)
        v_s = stack_levels(sketch_features, stride)  # (B, d_v, H/s, W/s), s = the stride
        v_r = stack_levels(reference_features, stride)  # (B, d_v, Hr/s, Wr/s)
        hint = None
        if self.preset.color_hint:
            # each reference cell's s x s patch of pixels rides along with the attention
            patches = F.pixel_unshuffle(reference, stride).flatten(2).transpose(1, 2)
            c, extras = self.aggregation(v_s, v_r, return_extras, carried=patches, **folded)
            c, carried = c.split([c.shape[1] - patches.shape[-1], patches.shape[-1]], dim=1)
            hint = F.pixel_shuffle(carried, stride)  # (B, 3, H, W): the reference, warped
        else:
            c, extras = self.aggregation(v_s, v_r, return_extras, **folded)  # (B, d_v, H/s, W/s)
        x = self.res_blocks(c if fold else self.project(c))
        skips = [sketch_features[i] for i in SKIP_LAYERS]
        image = self.decoder(x, skips, hint)  # (B, 3, H, W)
        return (image, extras) if return_extras else image


class Discriminator(nn.Module):
    """Conditional 70x70 PatchGAN on concat(image, sketch); raw scores for the LSGAN objective."""

    def __init__(self, preset: Preset) -> None:
        super().__init__()
        c = preset.discriminator_channels

        def block(i: int, o: int, stride: int, norm: bool) -> list[nn.Module]:
            layers: list[nn.Module] = [nn.Conv2d(i, o, 4, stride=stride, padding=1, bias=not norm)]
            if norm:
                layers.append(nn.BatchNorm2d(o))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            return layers

        self.body = nn.Sequential(
            *block(4, c, 2, norm=False),
            *block(c, 2 * c, 2, norm=True),
            *block(2 * c, 4 * c, 2, norm=True),
            *block(4 * c, 8 * c, 1, norm=True),
            nn.Conv2d(8 * c, 1, 4, stride=1, padding=1),
        )
        initialize_weights(self)

    def forward(self, image: torch.Tensor, sketch: torch.Tensor) -> torch.Tensor:
        return self.body(torch.cat([image, sketch], dim=1))  # (B, 1, h, w)


def check_divisible(x: torch.Tensor, name: str) -> None:
    h, w = x.shape[-2:]
    if h % SIZE_MULTIPLE or w % SIZE_MULTIPLE:
        raise ValueError(f"{name} size {w}x{h} is not a multiple of {SIZE_MULTIPLE}")


WEIGHT_INITS = ("paper", "kaiming")


def initialize_weights(module: nn.Module, scheme: str = "paper") -> None:
    """Conv and linear weights, and BN scales N(1, 0.02), by `scheme`.

    "paper": N(0, 0.02) (supplement A.3). Through the ten unnormalised encoder layers it shrinks
    the features by about 5x a layer (measured: std 2e-2 after the first, 6e-7 after the tenth),
    so the attention logits start at zero and learn slowly. "kaiming": variance-preserving
    N(0, gain²/fan_in) for the LeakyReLU 0.2 convs (1/fan_in for the linear maps).
    """
    if scheme not in WEIGHT_INITS:
        raise ValueError(f"weight init must be one of {WEIGHT_INITS}, got {scheme!r}")
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            if scheme == "paper":
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, a=0.2, nonlinearity="leaky_relu")
            else:
                nn.init.kaiming_normal_(m.weight, nonlinearity="linear")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
