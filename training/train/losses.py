"""The objective of SCFT (paper §3.4, Eq. 10) behind one entry point, `SCFTLoss.accumulate`.

Phase "G": λ_tr L_tr + λ_rec L_rec + λ_adv L_adv + λ_perc L_perc + λ_style L_style, backpropagated
into the generator, plus colord's optional λ_corr L_corr (a dense form of L_tr, off in the paper's
configuration). Phase "D": the LSGAN discriminator loss on real and generated images, each
conditioned on the sketch. The loop calls the phases in order and steps the optimizers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from colord.training.samples.correspondence import (
    cell_centres,
    correspondence_to_grid,
    landing_at_cells,
)
from colord.training.train.backbones import FeatureBackbone
from colord.training.train.config import LossConfig

Batch = dict[str, torch.Tensor]


# ---- the loss terms ---------------------------------------------------------------------------


def reconstruction_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Eq. 6: L1 between G(I_s, I_r) and I_gt."""
    return F.l1_loss(output.float(), target.float())


def lsgan_generator_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """G wants every patch of its output scored as real (1)."""
    return (fake_scores.float() - 1).pow(2).mean()


def lsgan_discriminator_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """Eq. 7 in its least-squares form: real patches to 1, generated patches to 0."""
    return 0.5 * ((real_scores.float() - 1).pow(2).mean() + fake_scores.float().pow(2).mean())


def perceptual_loss(fake: list[torch.Tensor], real: list[torch.Tensor]) -> torch.Tensor:
    """Eq. 8: L1 between backbone feature maps, summed over the five levels."""
    return sum(F.l1_loss(f.float(), r.float()) for f, r in zip(fake, real, strict=True))


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, C) channel covariances, normalised by C*H*W."""
    b, c, h, w = features.shape
    flat = features.float().reshape(b, c, h * w)
    return flat @ flat.transpose(1, 2) / (c * h * w)


def style_loss(fake: list[torch.Tensor], real: list[torch.Tensor]) -> torch.Tensor:
    """Eq. 9: L1 between Gram matrices, summed over the five levels."""
    return sum(F.l1_loss(gram_matrix(f), gram_matrix(r)) for f, r in zip(fake, real, strict=True))


def sample_far_negatives(
    positive: torch.Tensor, grid_hw: tuple[int, int], min_distance: float
) -> torch.Tensor:
    """For each positive grid index (B, N), a uniformly random index more than `min_distance` grid
    cells away from it (Euclidean). -1 where the positive is -1 or no such position exists."""
    h, w = grid_hw
    rows = torch.arange(h * w, device=positive.device) // w
    cols = torch.arange(h * w, device=positive.device) % w
    safe = positive.clamp(min=0)
    dy = rows[safe].unsqueeze(-1) - rows  # (B, N, M)
    dx = cols[safe].unsqueeze(-1) - cols
    far = (dy * dy + dx * dx).float() > min_distance**2
    # argmax of uniform noise over the allowed set is a uniform draw from it
    noise = torch.rand(far.shape, device=positive.device).masked_fill(~far, -1.0)
    negative = noise.argmax(dim=-1)
    return torch.where((positive >= 0) & far.any(dim=-1), negative, -1)


def triplet_loss(
    query: torch.Tensor,
    key: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor,
    *,
    scale: float,
    margin: float,
) -> torch.Tensor:
    """Eq. 5, the similarity-based triplet loss, averaged over anchors with a positive and negative.

    query (B, N, d): anchors, one per sketch grid position. key (B, M, d): reference positions.
    positive, negative (B, N) long: the key index for each anchor, -1 to skip the anchor.
    S(q, k) = q·k * scale, the scaled dot product of the attention (scale = 1/sqrt(d_v)).
    """
    valid = (positive >= 0) & (negative >= 0)  # (B, N)
    if not valid.any():
        return query.sum() * 0.0  # keeps the graph (and DDP's gradient hooks) intact
    q = query.float()
    k = key.float()

    def similarity(index: torch.Tensor) -> torch.Tensor:
        picked = torch.gather(k, 1, index.clamp(min=0).unsqueeze(-1).expand(-1, -1, k.shape[-1]))
        return (q * picked).sum(-1) * scale  # (B, N)

    per_anchor = F.relu(-similarity(positive) + similarity(negative) + margin)
    return per_anchor[valid].mean()


def correspondence_loss(
    query: torch.Tensor,
    key: torch.Tensor,
    landing: torch.Tensor,
    key_centres: torch.Tensor,
    *,
    scale: float,
    sigma: float,
) -> torch.Tensor:
    """Cross-entropy of the attention towards the true correspondence, averaged over anchors.

    The dense form of the paper's triplet loss: where L_tr compares the true key with one random
    far key per anchor, this pushes every anchor's whole attention row towards the true position.
    The target is soft: a Gaussian of `sigma` pixels around the position the anchor's content lands
    on (so neighbouring cells share it by distance, and the loss knows sub-cell positions).

    query (B, N, d), key (B, M, d); landing (B, N, 2) reference pixel positions, NaN to skip the
    anchor; key_centres (M, 2) pixel centres of the key cells; scale as in the attention.
    """
    valid = ~torch.isnan(landing).any(dim=-1)  # (B, N)
    if not valid.any():
        return query.sum() * 0.0  # keeps the graph (and DDP's gradient hooks) intact
    logits = (query.float() @ key.float().transpose(1, 2)) * scale  # (B, N, M)
    distance2 = (landing.unsqueeze(2) - key_centres.to(landing.device)).pow(2).sum(-1)
    target = torch.softmax(-distance2.nan_to_num(0.0) / (2 * sigma * sigma), dim=-1)
    per_anchor = -(target * torch.log_softmax(logits, dim=-1)).sum(-1)
    return per_anchor[valid].mean()


# ---- the one entry point for the loop ---------------------------------------------------------


@dataclass
class PhaseResult:
    stats: dict[str, torch.Tensor]  # detached scalars, named as logged
    fake: torch.Tensor | None = None  # phase G's output, for phase D and the image grids


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Let gradients flow through `module` without accumulating into its parameters."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(module.parameters(), flags, strict=True):
            p.requires_grad_(flag)


class SCFTLoss:
    """Computes and backpropagates one phase of the SCFT objective.

    `generator` and `discriminator` may be DistributedDataParallel wrappers; `discriminator_module`
    is the plain discriminator, used inside phase G so its gradients skip DDP's synchronisation.
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        discriminator_module: nn.Module,
        backbone: FeatureBackbone,
        weights: LossConfig,
        *,
        attention_scale: float,
        autocast: Callable[[], contextlib.AbstractContextManager],
    ) -> None:
        self.generator = generator
        self.discriminator = discriminator
        self.discriminator_module = discriminator_module
        self.backbone = backbone
        self.weights = weights
        self.attention_scale = attention_scale
        self.autocast = autocast

    def accumulate(self, phase: str, batch: Batch, fake: torch.Tensor | None = None) -> PhaseResult:
        if phase == "G":
            return self._generator_phase(batch)
        if phase == "D":
            if fake is None:
                raise ValueError("phase D needs the generator's output from phase G")
            return self._discriminator_phase(batch, fake)
        raise ValueError(f"unknown phase {phase!r}")

    def _generator_phase(self, batch: Batch) -> PhaseResult:
        w = self.weights
        sketch, target = batch["sketch"], batch["target"]
        with self.autocast():
            # q, k and the attention map cost an extra (B, N, M)
            want_extras = bool(w.triplet or w.correspondence)
            output = self.generator(sketch, batch["reference"], return_extras=want_extras)
            fake, extras = output if want_extras else (output, None)
            terms = {"rec": reconstruction_loss(fake, target)}
            if w.adv:
                with frozen(self.discriminator_module):
                    terms["adv"] = lsgan_generator_loss(self.discriminator_module(fake, sketch))
            if w.perc or w.style:
                fake_features = self.backbone(fake)
                with torch.no_grad():
                    real_features = self.backbone(target)
                terms["perc"] = perceptual_loss(fake_features, real_features)
                terms["style"] = style_loss(fake_features, real_features)
            if w.triplet:
                terms["triplet"] = self._triplet(batch, extras)
            if w.correspondence:
                terms["correspondence"] = self._correspondence(batch, extras)
        total = sum(getattr(w, name) * value for name, value in terms.items())
        total.backward()
        stats = {f"G/{name}": value.detach() for name, value in terms.items()}
        stats["G/total"] = total.detach()
        return PhaseResult(stats, fake.detach())

    def _triplet(self, batch: Batch, extras) -> torch.Tensor:
        image_hw = tuple(batch["correspondence"].shape[1:3])
        positive = correspondence_to_grid(batch["correspondence"], extras.reference_grid, image_hw)
        positive = positive.to(extras.query.device)
        positive = torch.where(batch["has_reference"].view(-1, 1).to(positive.device), positive, -1)
        negative = sample_far_negatives(
            positive, extras.reference_grid, self.weights.negative_min_distance
        )
        return triplet_loss(
            extras.query,
            extras.key,
            positive,
            negative,
            scale=self.attention_scale,
            margin=self.weights.triplet_margin,
        )

    def _correspondence(self, batch: Batch, extras) -> torch.Tensor:
        image_hw = tuple(batch["correspondence"].shape[1:3])
        landing = landing_at_cells(batch["correspondence"], extras.sketch_grid, image_hw)
        landing = landing.to(extras.query.device)
        dropped = ~batch["has_reference"].view(-1, 1, 1).to(landing.device)
        landing = landing.masked_fill(dropped, float("nan"))
        stride = image_hw[1] / extras.reference_grid[1]
        return correspondence_loss(
            extras.query,
            extras.key,
            landing,
            torch.from_numpy(cell_centres(extras.reference_grid, image_hw)).float(),
            scale=self.attention_scale,
            sigma=self.weights.correspondence_sigma * stride,
        )

    def _discriminator_phase(self, batch: Batch, fake: torch.Tensor) -> PhaseResult:
        sketch, target = batch["sketch"], batch["target"]
        with self.autocast():
            # one forward over real and fake together: one DDP synchronisation per step
            scores = self.discriminator(
                torch.cat([target, fake.detach()]), torch.cat([sketch, sketch])
            )
            real_scores, fake_scores = scores.chunk(2)
            loss = lsgan_discriminator_loss(real_scores, fake_scores)
        loss.backward()
        return PhaseResult(
            {
                "D/loss": loss.detach(),
                "D/real": real_scores.detach().float().mean(),
                "D/fake": fake_scores.detach().float().mean(),
            }
        )
