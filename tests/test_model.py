"""The SCFT networks: shapes, attention, zero reference, presets, initialisation."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from colord.model import Discriminator, Generator, count_parameters, get_preset
from colord.model.networks import SCFT, initialize_weights

TINY = get_preset("tiny")


@pytest.fixture(scope="module")
def generator() -> Generator:
    torch.manual_seed(0)
    return Generator(TINY).eval()


@pytest.mark.parametrize(("height", "width"), [(16, 16), (64, 96), (112, 48), (256, 256)])
def test_output_matches_sketch_size_and_range(generator: Generator, height: int, width: int):
    sketch = torch.rand(2, 1, height, width) * 2 - 1
    reference = torch.rand(2, 3, height, width) * 2 - 1
    with torch.no_grad():
        out = generator(sketch, reference)
    assert out.shape == (2, 3, height, width)
    assert out.min() >= -1 and out.max() <= 1


def test_reference_of_another_size_is_attended(generator: Generator):
    sketch = torch.rand(1, 1, 64, 96) * 2 - 1
    reference = torch.rand(1, 3, 48, 160) * 2 - 1
    with torch.no_grad():
        out, extras = generator(sketch, reference, return_extras=True)
    assert out.shape == (1, 3, 64, 96)
    assert extras.sketch_grid == (4, 6)
    assert extras.reference_grid == (3, 10)
    assert extras.attention.shape == (1, 24, 30)


def test_sizes_not_divisible_by_16_are_refused(generator: Generator):
    with pytest.raises(ValueError, match="multiple of 16"):
        generator(torch.zeros(1, 1, 40, 64))
    with pytest.raises(ValueError, match="reference"):
        generator(torch.zeros(1, 1, 32, 32), torch.zeros(1, 3, 32, 40))


def test_attention_rows_sum_to_one_and_hooks_are_consistent(generator: Generator):
    torch.manual_seed(1)
    sketch = torch.rand(2, 1, 64, 64) * 2 - 1
    reference = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        out, extras = generator(sketch, reference, return_extras=True)
        plain = generator(sketch, reference)
    d = TINY.feature_dim
    assert extras.query.shape == (2, 16, d) and extras.key.shape == (2, 16, d)
    torch.testing.assert_close(extras.attention.sum(-1), torch.ones(2, 16))
    # The map is softmax(q k^T / sqrt(d_v)): scaled before the softmax.
    logits = extras.query @ extras.key.transpose(1, 2) / d**0.5
    torch.testing.assert_close(extras.attention, logits.softmax(-1))
    # Asking for the extras does not change the image.
    torch.testing.assert_close(out, plain)


def test_scft_context_is_the_attention_weighted_value():
    torch.manual_seed(2)
    scft = Generator(TINY).aggregation
    # Larger weights make a peaked attention, where scaling after the softmax would differ.
    for linear in (scft.query, scft.key, scft.value):
        torch.nn.init.normal_(linear.weight, 0, 1.0)
    v_s = torch.randn(1, TINY.feature_dim, 2, 3)
    v_r = torch.randn(1, TINY.feature_dim, 2, 2)
    with torch.no_grad():
        c, extras = scft(v_s, v_r, return_extras=True)
    flat_s = v_s.flatten(2).transpose(1, 2)
    flat_r = v_r.flatten(2).transpose(1, 2)
    expected = flat_s + extras.attention @ scft.value(flat_r)
    torch.testing.assert_close(c.flatten(2).transpose(1, 2), expected, rtol=1e-3, atol=1e-3)
    after_softmax = (extras.query @ extras.key.transpose(1, 2)).softmax(-1) / TINY.feature_dim**0.5
    assert not torch.allclose(extras.attention, after_softmax)


@pytest.mark.parametrize("dim", [8, 64])
def test_scft_matches_an_explicit_scaled_softmax_attention(dim: int):
    # Eqs. 2-4 written out from the weight matrices alone, in float64: c = v_s + softmax(q k^T /
    # sqrt(d)) v. Independent of the extras, so it guards the scale inside the fused attention
    # and the one in the returned attention map separately from the tests above.
    torch.manual_seed(dim)
    scft = SCFT(dim).double()
    for linear in (scft.query, scft.key, scft.value):
        torch.nn.init.normal_(linear.weight, 0, 1.0)  # peaked attention: the scale matters
    v_s = torch.randn(2, dim, 3, 4, dtype=torch.float64)
    v_r = torch.randn(2, dim, 2, 5, dtype=torch.float64)
    flat_s, flat_r = v_s.flatten(2).transpose(1, 2), v_r.flatten(2).transpose(1, 2)
    q = flat_s @ scft.query.weight.T
    k = flat_r @ scft.key.weight.T
    v = flat_r @ scft.value.weight.T
    attention = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(dim), dim=-1)
    expected = (flat_s + attention @ v).transpose(1, 2).reshape(2, dim, 3, 4)
    with torch.no_grad():
        plain, no_extras = scft(v_s, v_r, False)
        c, extras = scft(v_s, v_r, True)
    assert no_extras is None
    torch.testing.assert_close(plain, expected)
    torch.testing.assert_close(c, expected)
    torch.testing.assert_close(extras.attention, attention)
    unscaled = torch.softmax(q @ k.transpose(1, 2), dim=-1)
    assert not torch.allclose(unscaled, attention, atol=1e-3)  # the test bites


def test_zero_reference_mode_equals_an_explicit_zero_image(generator: Generator):
    sketch = torch.rand(1, 1, 32, 48) * 2 - 1
    with torch.no_grad():
        implicit = generator(sketch)
        explicit = generator(sketch, torch.zeros(1, 3, 32, 48))
    torch.testing.assert_close(implicit, explicit)


def test_the_reference_changes_the_output():
    # Batch statistics (train mode) undo the tiny activations of a freshly initialised network.
    torch.manual_seed(0)
    g = Generator(TINY).train()
    sketch = torch.rand(1, 1, 32, 32) * 2 - 1
    red = torch.tensor([1.0, -1, -1]).view(1, 3, 1, 1).expand(1, 3, 32, 32)
    blue = torch.tensor([-1.0, -1, 1]).view(1, 3, 1, 1).expand(1, 3, 32, 32)
    with torch.no_grad():
        assert (g(sketch, red) - g(sketch, blue)).abs().max() > 0.01


@pytest.mark.parametrize("aggregation", ["add", "adain"])
def test_ablation_aggregations_run(aggregation: str):
    g = Generator(dataclasses.replace(TINY, aggregation=aggregation)).eval()
    assert not hasattr(g.aggregation, "query")
    with torch.no_grad():
        out, extras = g(torch.zeros(1, 1, 32, 32), torch.zeros(1, 3, 64, 32), return_extras=True)
    assert out.shape == (1, 3, 32, 32)
    assert extras.attention is None


def test_discriminator_scores_patches():
    d = Discriminator(TINY)
    scores = d(torch.zeros(2, 3, 64, 64), torch.zeros(2, 1, 64, 64))
    assert scores.shape == (2, 1, 6, 6)


def test_preset_parameter_counts():
    paper = count_parameters(Generator(get_preset("paper")))
    default = count_parameters(Generator(get_preset("default")))
    assert 75e6 < paper < 85e6  # "~80 M parameters"
    assert default * 2 <= 25e6 - 1e5  # the shipped fp16 checkpoint stays under 25 MB
    assert count_parameters(Generator(TINY)) < 200_000
    assert get_preset("paper").feature_dim == 992


def test_paper_encoder_follows_table_5():
    g = Generator(get_preset("paper"))
    convs = [layer[0] for layer in g.sketch_encoder.layers]
    assert [c.out_channels for c in convs] == [16, 16, 32, 32, 64, 64, 128, 128, 256, 256]
    assert [c.stride[0] for c in convs] == [1, 1, 2, 1, 2, 1, 2, 1, 2, 1]
    assert convs[0].in_channels == 1
    assert g.reference_encoder.layers[0][0].in_channels == 3
    assert g.aggregation.query.weight.shape == (992, 992)


def test_weights_start_from_normal_0_02():
    torch.manual_seed(0)
    g = Generator(get_preset("default"))
    w = g.aggregation.query.weight
    assert abs(w.mean().item()) < 1e-3
    assert w.std().item() == pytest.approx(0.02, rel=0.02)


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        get_preset("huge")


def test_gradients_reach_both_encoders(generator: Generator):
    g = Generator(TINY)
    out = g(torch.rand(1, 1, 32, 32), torch.rand(1, 3, 32, 32))
    F.l1_loss(out, torch.zeros_like(out)).backward()
    assert g.sketch_encoder.layers[0][0].weight.grad.abs().sum() > 0
    assert g.reference_encoder.layers[0][0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "changes",
    [
        {"attention_stride": 8, "color_hint": True},
        {},
        {"res_channels": None},
        {"aggregation": "add"},
    ],
    ids=["colour-hint", "projection", "no-projection", "add"],
)
def test_inference_folds_the_projection_into_the_attention_without_changing_the_output(changes):
    torch.manual_seed(0)
    generator = Generator(dataclasses.replace(get_preset("tiny"), **changes))
    initialize_weights(generator, "kaiming")
    generator.eval()
    sketch = torch.where(torch.rand(2, 1, 64, 48) < 0.1, -1.0, 1.0)
    reference = torch.rand(2, 3, 32, 64) * 2 - 1
    calls = []
    generator.project.register_forward_hook(lambda *_: calls.append("project"))
    with torch.no_grad():
        paper_order, _ = generator(sketch, reference, return_extras=True)  # unfolded
        unfolded_calls = len(calls)
        folded = generator(sketch, reference)
    folds = isinstance(generator.project, torch.nn.Conv2d) and changes.get("aggregation") != "add"
    assert unfolded_calls == 1 and len(calls) == (1 if folds else 2)
    torch.testing.assert_close(folded, paper_order, rtol=0, atol=1e-5)
