"""colord's levers for learning correspondence on a small budget: the finer attention grid, the
colour hint, the dense correspondence loss, the reference motion, the weight init and the
wall-clock budget. Each is a config switch that leaves the paper's configuration unchanged."""

from __future__ import annotations

import dataclasses
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from train_helpers import single_thread, tiny_config, write_art_folder

from colord.model import Generator, get_preset, load_checkpoint
from colord.model.line_scale import LINE_WIDTH_KEY
from colord.model.networks import SCFT, initialize_weights, stack_levels
from colord.training.evaluation.ablation import TABLES, variant_config
from colord.training.samples.augment import (
    ReferenceMotion,
    random_thin_plate_spline,
    warp_with_spline,
)
from colord.training.samples.correspondence import (
    cell_centres,
    correspondence_to_grid,
    landing_at_cells,
)
from colord.training.train.config import ConfigError, load_config
from colord.training.train.loop import train
from colord.training.train.losses import correspondence_loss

pytestmark = pytest.mark.usefixtures(single_thread.__name__)


def tiny(**fields) -> Generator:
    return Generator(dataclasses.replace(get_preset("tiny"), **fields)).eval()


# ---- the finer grid and the colour hint ---------------------------------------------------------


@pytest.mark.parametrize("stride", [16, 8])
@pytest.mark.parametrize("color_hint", [False, True])
def test_generator_runs_at_either_grid_with_or_without_the_hint(
    stride: int, color_hint: bool
) -> None:
    generator = tiny(attention_stride=stride, color_hint=color_hint)
    sketch = torch.rand(2, 1, 64, 96) * 2 - 1
    reference = torch.rand(2, 3, 48, 32) * 2 - 1  # another size and aspect
    with torch.no_grad():
        output, extras = generator(sketch, reference, return_extras=True)
        no_reference = generator(sketch)
    assert output.shape == no_reference.shape == (2, 3, 64, 96)
    assert extras.sketch_grid == (64 // stride, 96 // stride)
    assert extras.reference_grid == (48 // stride, 32 // stride)
    assert extras.attention.shape == (2, 64 * 96 // stride**2, 48 * 32 // stride**2)


def test_stack_levels_at_stride_8_pools_fine_levels_and_repeats_coarse_ones() -> None:
    fine = torch.arange(16.0).reshape(1, 1, 4, 4)  # 1/2 of an 8 px image
    coarse = torch.tensor([[[[5.0]]]])  # 1/16 of a 16 px image would be 1x1: here 1/8 of 8 px
    stacked = stack_levels([torch.zeros(1, 1, 8, 8), fine, coarse], stride=8)
    assert stacked.shape == (1, 3, 1, 1)
    assert stacked[0, 1, 0, 0] == fine.mean()
    assert stacked[0, 2, 0, 0] == 5.0
    two = stack_levels([torch.zeros(1, 1, 16, 16), torch.ones(1, 1, 1, 1) * 3], stride=8)
    assert two.shape == (1, 2, 2, 2) and torch.all(two[0, 1] == 3)  # repeated (nearest)


def test_scft_carries_extra_values_with_the_same_attention_weights() -> None:
    torch.manual_seed(0)
    scft = SCFT(8)
    v_s, v_r = torch.randn(2, 8, 3, 3), torch.randn(2, 8, 2, 5)
    carried = torch.randn(2, 10, 4)
    with torch.no_grad():
        plain, _ = scft(v_s, v_r, False)
        both, extras = scft(v_s, v_r, True, carried=carried)
    assert both.shape == (2, 8 + 4, 3, 3)
    torch.testing.assert_close(both[:, :8], plain)
    expected = extras.attention @ carried  # (B, N, 4): the attention's own weighted sums
    torch.testing.assert_close(both[:, 8:].flatten(2).transpose(1, 2), expected)


def test_the_hint_is_the_reference_moved_by_the_attention(monkeypatch: pytest.MonkeyPatch) -> None:
    """With an attention that maps every sketch cell to the reference cell to its right, the
    hint the decoder receives is the reference shifted left by one cell."""
    generator = tiny(attention_stride=16, color_hint=True)
    captured = {}
    generator.decoder.register_forward_pre_hook(lambda m, args: captured.update(hint=args[2]))
    grid_w = 4
    shift = torch.zeros(grid_w * grid_w, grid_w * grid_w)
    for i in range(grid_w * grid_w):
        shift[i, i + 1 if (i + 1) % grid_w else i] = 1.0

    def shifted_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return shift @ v

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", shifted_attention)
    reference = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        generator(torch.zeros(1, 1, 64, 64), reference)
    hint = captured["hint"]
    torch.testing.assert_close(hint[..., :48], reference[..., 16:])  # one 16 px cell to the left
    torch.testing.assert_close(hint[..., 48:], reference[..., 48:])  # the last column stays


# ---- the dense correspondence loss --------------------------------------------------------------


def test_correspondence_loss_prefers_the_true_cell_and_skips_unknown_anchors() -> None:
    grid = (4, 4)
    centres = torch.from_numpy(cell_centres(grid, (64, 64))).float()  # 16 px cells
    landing = centres.clone().unsqueeze(0)  # each anchor's content lands on its own cell
    landing[0, 3] = float("nan")  # one anchor leaves the frame
    key = torch.eye(16, 16).unsqueeze(0) * 10
    right = correspondence_loss(key, key, landing, centres, scale=1.0, sigma=8.0)
    wrong = correspondence_loss(key.roll(1, dims=1), key, landing, centres, scale=1.0, sigma=8.0)
    assert torch.isfinite(right) and right < wrong
    everything_unknown = torch.full_like(landing, float("nan"))
    zero = correspondence_loss(key, key, everything_unknown, centres, scale=1.0, sigma=8.0)
    assert zero.item() == 0.0


def test_correspondence_loss_target_is_soft_over_neighbours_by_distance() -> None:
    """Its minimum over logits is the Gaussian target's entropy, reached when the attention
    equals the target, not a one-hot: a position between two cells wants both equally."""
    centres = torch.from_numpy(cell_centres((1, 2), (16, 32))).float()  # centres 16 px apart
    landing = centres.mean(0).view(1, 1, 2)  # exactly between them
    query = torch.zeros(1, 1, 2)
    even = correspondence_loss(query, torch.eye(2)[None], landing, centres, scale=1.0, sigma=4.0)
    assert even.item() == pytest.approx(math.log(2), abs=1e-6)


def test_correspondence_loss_reaches_the_query_and_key_maps() -> None:
    torch.manual_seed(0)
    generator = tiny(attention_stride=8)
    sketch, reference = torch.rand(1, 1, 32, 32) * 2 - 1, torch.rand(1, 3, 32, 32) * 2 - 1
    _, extras = generator(sketch, reference, return_extras=True)
    centres = torch.from_numpy(cell_centres(extras.reference_grid, (32, 32))).float()
    landing = centres.unsqueeze(0)
    loss = correspondence_loss(
        extras.query, extras.key, landing, centres, scale=generator.attention_scale, sigma=4.0
    )
    loss.backward()
    for linear in (generator.aggregation.query, generator.aggregation.key):
        assert linear.weight.grad is not None and linear.weight.grad.abs().sum() > 0


def test_landing_at_cells_agrees_with_the_cell_indices() -> None:
    rng = np.random.default_rng(1)
    image = np.zeros((64, 96, 3), np.uint8)
    _, correspondence = warp_with_spline(image, random_thin_plate_spline(rng))
    correspondence = torch.from_numpy(correspondence)[None]
    landing = landing_at_cells(correspondence, (4, 6), (64, 96))
    cells = correspondence_to_grid(correspondence, (4, 6), (64, 96))
    known = cells[0] >= 0
    cols = torch.floor((landing[0, known, 0] + 0.5) / 16)
    rows = torch.floor((landing[0, known, 1] + 0.5) / 16)
    assert torch.equal((rows * 6 + cols).long(), cells[0, known])


# ---- reference motion ---------------------------------------------------------------------------


def test_no_motion_is_the_papers_warp_draw_for_draw() -> None:
    plain = random_thin_plate_spline(np.random.default_rng(3))
    still = random_thin_plate_spline(np.random.default_rng(3), motion=ReferenceMotion())
    np.testing.assert_array_equal(plain.weights, still.weights)
    np.testing.assert_array_equal(plain.affine, still.affine)


def test_motion_moves_the_content_and_the_correspondence_follows_it() -> None:
    rng = np.random.default_rng(0)
    image = np.zeros((96, 96, 3), np.uint8)
    image[..., 0] = np.arange(96)[None, :] * 2  # colour encodes x
    image[..., 1] = np.arange(96)[:, None] * 2  # and y
    motion = ReferenceMotion(shift=0.2, zoom=0.2, rotation=10.0)
    shifts = []
    for _ in range(5):
        spline = random_thin_plate_spline(rng, max_displacement=0.05, motion=motion)
        warped, landing = warp_with_spline(image, spline)
        known = ~np.isnan(landing[..., 0])
        ys, xs = np.nonzero(known)
        lx = np.clip(np.rint(landing[ys, xs, 0]).astype(int), 0, 95)
        ly = np.clip(np.rint(landing[ys, xs, 1]).astype(int), 0, 95)
        # the colour found where the correspondence points is the sketch pixel's own colour
        error = np.abs(warped[ly, lx, :2].astype(int) - image[ys, xs, :2].astype(int))
        assert np.median(error) <= 2
        shifts.append(np.median(np.abs(landing[ys, xs, 0] - xs)))
    assert max(shifts) > 5  # the paper's warp alone moves content by a few pixels


# ---- init, config and budget --------------------------------------------------------------------


def test_variance_preserving_init_keeps_the_deep_features_alive() -> None:
    torch.manual_seed(0)
    sketch = torch.rand(1, 1, 64, 64) * 2 - 1
    paper = Generator(get_preset("default"))
    kaiming = Generator(get_preset("default"))
    initialize_weights(kaiming, "kaiming")
    with torch.no_grad():
        deepest_paper = paper.sketch_encoder(sketch)[-1].std().item()
        deepest_kaiming = kaiming.sketch_encoder(sketch)[-1].std().item()
    assert deepest_paper < 1e-4  # N(0, 0.02) shrinks the signal about 5x a layer
    assert 0.1 < deepest_kaiming < 10
    with pytest.raises(ValueError, match="weight init"):
        initialize_weights(kaiming, "xavier")


def test_the_paper_config_keeps_every_lever_off() -> None:
    cfg = load_config(preset="paper")
    assert cfg.loss.correspondence == 0
    assert cfg.model.attention_stride == 16 and not cfg.model.color_hint
    assert cfg.model.weight_init == "paper"
    assert cfg.data.reference_shift == cfg.data.reference_zoom == cfg.data.reference_rotation == 0
    assert cfg.data.min_crop_fraction == 0.7 and cfg.data.warp_max_displacement == 0.15


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.attention_stride=4", "attention_stride"),
        ("loss.correspondence=-1", "loss.correspondence"),
        ("loss.correspondence_sigma=0", "correspondence_sigma"),
        ("model.weight_init=xavier", "weight_init"),
        ("data.reference_shift=-0.1", "reference_shift"),
        ("run.max_minutes=-1", "max_minutes"),
    ],
)
def test_bad_lever_values_are_clean_errors(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=[override])


def test_color_hint_needs_scft() -> None:
    with pytest.raises(ConfigError, match="color_hint"):
        load_config(overrides=["model.color_hint=true", "model.aggregation=add", "loss.triplet=0"])


def test_a_run_with_every_lever_trains_and_its_checkpoint_rebuilds_the_network(
    tmp_path: Path,
) -> None:
    art = write_art_folder(tmp_path / "art", count=4)
    cfg = tiny_config(
        art,
        tmp_path / "run",
        model__attention_stride=8,
        model__color_hint=True,
        model__weight_init="kaiming",
        loss__correspondence=1.0,
        data__reference_shift=0.1,
        data__reference_zoom=0.2,
        data__reference_rotation=5.0,
        run__max_steps=2,
    )
    result = train(cfg)
    assert result.step == 2
    loaded = load_checkpoint(tmp_path / "run" / "generator.safetensors")
    assert loaded.preset.attention_stride == 8 and loaded.preset.color_hint
    # the training sketches' stroke width, for the engine's automatic working size
    assert 1 <= loaded.metadata[LINE_WIDTH_KEY] <= 8
    logged = (tmp_path / "run" / "metrics.jsonl").read_text()
    assert "G/correspondence" in logged


def test_the_wall_clock_budget_stops_the_run_with_a_checkpoint(tmp_path: Path) -> None:
    art = write_art_folder(tmp_path / "art", count=4)
    cfg = tiny_config(art, tmp_path / "run", run__max_minutes=1e-6)  # spent after one step
    result = train(cfg)
    assert result.step == 1
    assert (tmp_path / "run" / "resume.pt").is_file()
    assert (tmp_path / "run" / "generator.safetensors").is_file()


def test_the_correspondence_ablation_adds_one_lever_per_row(tmp_path: Path) -> None:
    rows = TABLES["correspondence"]
    assert rows[0].overrides == ()  # the base recipe, as given
    for before, after in itertools.pairwise(rows):
        assert set(before.overrides) < set(after.overrides)
    base = load_config("training/configs/default-model-v1.toml")
    configs = [variant_config(base, row, tmp_path, steps=0, minutes=5.0) for row in rows]
    assert all(cfg.run.max_minutes == 5.0 for cfg in configs)
    last = configs[-1]
    assert last.model.color_hint and last.model.attention_stride == 8
    assert last.loss.correspondence > 0 and last.model.weight_init == "kaiming"
    shipped = load_config("training/configs/default-model.toml")
    for section in ("model", "loss"):  # the last row trains the shipped recipe's network and loss
        assert getattr(last, section) == getattr(shipped, section)
