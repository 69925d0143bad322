"""The SCFT loss terms, the triplet loss as the paper states it, and the two training phases."""

from __future__ import annotations

import math

import pytest
import torch
from train_helpers import eager_cpu_loss, single_thread

from colord.model import Discriminator, Generator, get_preset
from colord.training.samples.correspondence import correspondence_to_grid
from colord.training.train.losses import (
    gram_matrix,
    lsgan_discriminator_loss,
    lsgan_generator_loss,
    perceptual_loss,
    sample_far_negatives,
    style_loss,
    triplet_loss,
)

pytestmark = pytest.mark.usefixtures(single_thread.__name__)

MARGIN = 12.0


def one_hot_keys(count: int, dim: int) -> torch.Tensor:
    return torch.eye(count, dim).unsqueeze(0)  # (1, M, d): key j is the j-th unit vector


def test_triplet_loss_is_zero_when_positives_beat_negatives_by_the_margin() -> None:
    d, scale = 16, 0.25
    key = one_hot_keys(8, d)
    positive = torch.tensor([[0, 3, 5]])
    negative = torch.tensor([[4, 7, 1]])
    # S(q, k+) = 50 * scale = 12.5 and S(q, k-) = 0: the gap exceeds the margin of 12
    query = 50.0 * key[:, positive[0]]
    loss = triplet_loss(query, key, positive, negative, scale=scale, margin=MARGIN)
    assert loss.item() == 0.0


def test_triplet_loss_is_positive_and_exact_when_the_margin_is_not_met() -> None:
    d, scale = 16, 0.25
    key = one_hot_keys(8, d)
    positive = torch.tensor([[0, 3]])
    negative = torch.tensor([[4, 7]])
    # anchor 0: S+ = 40 * 0.25 = 10, S- = 0 -> 12 - 10 = 2; anchor 1: S+ = 0, S- = 8 -> 20
    query = torch.stack([40.0 * key[0, 0], 32.0 * key[0, 7]]).unsqueeze(0)
    loss = triplet_loss(query, key, positive, negative, scale=scale, margin=MARGIN)
    assert loss.item() == pytest.approx((2.0 + 20.0) / 2)


def test_triplet_loss_skips_anchors_without_a_positive_or_negative() -> None:
    key = one_hot_keys(8, 16)
    query = torch.zeros(1, 3, 16)
    positive = torch.tensor([[-1, 2, 2]])
    negative = torch.tensor([[5, -1, 5]])
    loss = triplet_loss(query, key, positive, negative, scale=1.0, margin=MARGIN)
    assert loss.item() == pytest.approx(MARGIN)  # only the third anchor counts
    nothing = triplet_loss(query, key, -torch.ones(1, 3, dtype=torch.long), negative, scale=1.0,
                           margin=MARGIN)  # fmt: skip
    assert nothing.item() == 0.0


def test_negatives_lie_far_from_their_positive_and_cover_the_far_cells() -> None:
    torch.manual_seed(0)
    grid = (6, 7)
    positive = torch.tensor([[0, 20, 41, -1]]).repeat(200, 1)
    negative = sample_far_negatives(positive, grid, min_distance=2.0)
    assert (negative[:, 3] == -1).all()
    for column in range(3):
        p = int(positive[0, column])
        rows, cols = negative[:, column] // 7, negative[:, column] % 7
        distance = ((rows - p // 7) ** 2 + (cols - p % 7) ** 2).float().sqrt()
        assert (distance > 2.0).all()
        far_cells = sum(math.hypot(r - p // 7, c - p % 7) > 2.0 for r in range(6) for c in range(7))
        assert len(negative[:, column].unique()) > far_cells // 2  # random, not one fixed cell


def test_no_negative_where_every_cell_is_near() -> None:
    negative = sample_far_negatives(torch.tensor([[0, 3]]), (2, 2), min_distance=2.0)
    assert (negative == -1).all()


def test_triplet_gradient_reaches_the_query_and_key_projections() -> None:
    torch.manual_seed(0)
    generator = Generator(get_preset("tiny"))
    sketch = torch.rand(2, 1, 64, 64) * 2 - 1
    reference = torch.rand(2, 3, 64, 64) * 2 - 1
    _, extras = generator(sketch, reference, return_extras=True)
    # identity correspondence: every sketch pixel lands on the same reference pixel
    ys, xs = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    correspondence = torch.stack([xs, ys], dim=-1).expand(2, 64, 64, 2)
    positive = correspondence_to_grid(correspondence, extras.reference_grid, (64, 64))
    assert positive[0].tolist() == list(range(16))
    negative = sample_far_negatives(positive, extras.reference_grid, 2.0)
    loss = triplet_loss(
        extras.query,
        extras.key,
        positive,
        negative,
        scale=generator.attention_scale,
        margin=MARGIN,
    )
    loss.backward()
    for projection in (generator.aggregation.query, generator.aggregation.key):
        assert projection.weight.grad is not None
        assert projection.weight.grad.abs().sum() > 0
    assert generator.aggregation.value.weight.grad is None  # W_v plays no part in S


def test_lsgan_losses() -> None:
    ones, zeros = torch.ones(2, 1, 4, 4), torch.zeros(2, 1, 4, 4)
    assert lsgan_generator_loss(ones).item() == 0.0
    assert lsgan_generator_loss(zeros).item() == 1.0
    assert lsgan_discriminator_loss(ones, zeros).item() == 0.0
    assert lsgan_discriminator_loss(zeros, ones).item() == 1.0


def test_gram_matrix_and_feature_losses() -> None:
    features = torch.randn(2, 3, 4, 5)
    gram = gram_matrix(features)
    assert gram.shape == (2, 3, 3)
    assert torch.allclose(gram, gram.transpose(1, 2))
    flat = features.reshape(2, 3, 20)
    assert torch.allclose(gram[0, 1, 2], (flat[0, 1] * flat[0, 2]).sum() / 60)
    same = [features, features * 2]
    assert perceptual_loss(same, same).item() == 0.0
    assert style_loss(same, same).item() == 0.0
    moved = [features + 1, features * 2]
    assert perceptual_loss(moved, same).item() == pytest.approx(1.0)


def make_batch(size: int = 64) -> dict[str, torch.Tensor]:
    ys, xs = torch.meshgrid(torch.arange(float(size)), torch.arange(float(size)), indexing="ij")
    return {
        "sketch": torch.sign(torch.randn(2, 1, size, size)),
        "reference": torch.rand(2, 3, size, size) * 2 - 1,
        "target": torch.rand(2, 3, size, size) * 2 - 1,
        "correspondence": torch.stack([xs, ys], dim=-1).expand(2, size, size, 2).clone(),
        "has_reference": torch.tensor([True, False]),
    }


def test_phases_update_only_their_own_network() -> None:
    torch.manual_seed(0)
    generator = Generator(get_preset("tiny"))
    discriminator = Discriminator(get_preset("tiny"))
    loss = eager_cpu_loss(generator, discriminator)
    batch = make_batch()
    g_result = loss.accumulate("G", batch)
    assert set(g_result.stats) == {
        "G/rec", "G/adv", "G/perc", "G/style", "G/triplet", "G/total"
    }  # fmt: skip
    assert all(p.grad is not None for p in generator.parameters())
    assert all(p.grad is None for p in discriminator.parameters())
    assert all(p.requires_grad for p in discriminator.parameters())  # unfrozen again
    generator.zero_grad(set_to_none=True)
    d_result = loss.accumulate("D", batch, fake=g_result.fake)
    assert all(p.grad is None for p in generator.parameters())
    assert all(p.grad is not None for p in discriminator.parameters())
    assert d_result.stats["D/loss"].item() > 0
    with pytest.raises(ValueError, match="phase D needs"):
        loss.accumulate("D", batch)


def test_the_generator_phase_passes_the_margin_and_the_attention_scale() -> None:
    # SCFTLoss's triplet term on real attention features equals triplet_loss with the paper's
    # margin (12) and the attention's 1/sqrt(d_v); a margin or a scale of 1 gives another value
    torch.manual_seed(0)
    generator = Generator(get_preset("tiny"))
    loss = eager_cpu_loss(generator, Discriminator(get_preset("tiny")))
    assert loss.weights.triplet_margin == MARGIN
    for projection in (generator.aggregation.query, generator.aggregation.key):
        torch.nn.init.normal_(projection.weight, 0, 1.0)  # similarities the scale changes
    batch = make_batch()
    batch["has_reference"] = torch.tensor([True, True])
    with torch.no_grad():
        _, extras = generator(batch["sketch"], batch["reference"], return_extras=True)
        torch.manual_seed(1)  # the same far negatives for both
        value = loss._triplet(batch, extras)
        positive = correspondence_to_grid(batch["correspondence"], extras.reference_grid, (64, 64))
        torch.manual_seed(1)
        negative = sample_far_negatives(
            positive, extras.reference_grid, loss.weights.negative_min_distance
        )

        def expected(scale: float, margin: float) -> torch.Tensor:
            return triplet_loss(
                extras.query, extras.key, positive, negative, scale=scale, margin=margin
            )

        paper = expected(1 / math.sqrt(extras.query.shape[-1]), MARGIN)
        torch.testing.assert_close(value, paper)
        for wrong in (expected(1.0, MARGIN), expected(generator.attention_scale, 1.0)):
            assert not torch.isclose(wrong, paper)
