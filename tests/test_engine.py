"""The inference engine on what artists really have, with the `tiny` model and a fake generator."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from capabilities import EXTRAS, missing
from conftest import draw_line_art, draw_reference
from torch import nn

from colord.daemon import devices, fast_path, flats, ground, imaging
from colord.daemon import engine as engine_module
from colord.daemon.devices import DeviceError, pick_device
from colord.daemon.engine import Engine, InputError, Job, NoModelError
from colord.model import CheckpointError, Generator, get_preset, save_checkpoint
from colord.model.line_scale import AUTOMATIC_SIZE_CAP, LINE_WIDTH_KEY
from colord.plugins.wire import colord_paper

SIZE = 64  # working size for the tiny model: fast, and small canvases still get shrunk


@pytest.fixture(scope="module")
def engine(tiny_checkpoint: Path) -> Engine:
    return Engine(tiny_checkpoint, device="cpu", working_size=SIZE, warmup=False)


def assert_layer(image: np.ndarray, height: int, width: int) -> None:
    assert image.shape == (height, width, 4)
    assert image.dtype == np.uint8
    assert (image[..., 3] == 255).all()


def black_lines_on_white(height: int, width: int, *, colour=(0, 0, 0), thickness=2) -> np.ndarray:
    image = np.full((height, width, 3), 255, np.uint8)
    cv2.circle(image, (width // 2, height // 2), min(height, width) // 3, colour, thickness)
    cv2.line(image, (0, height // 4), (width - 1, height // 4), colour, thickness)
    return image


# -- inputs artists have -----------------------------------------------------------------------


def test_transparent_line_art_with_reference(engine):
    line_art = draw_line_art(96, 128)  # black anti-aliased strokes on a transparent layer
    result = engine.colorize(line_art, draw_reference(80, 112))
    assert_layer(result.image, 96, 128)
    assert set(result.timings) == {"prepare", "forward", "finish", "total"}


def test_soft_antialiased_grey_lines(engine):
    line_art = np.full((90, 120, 3), 255, np.uint8)
    cv2.circle(line_art, (60, 45), 30, (150, 150, 150), 1, cv2.LINE_AA)
    assert_layer(engine.colorize(line_art).image, 90, 120)


def test_coloured_lines(engine):
    line_art = black_lines_on_white(70, 100, colour=(220, 0, 0))  # full-strength red ink
    result = engine.colorize(line_art, draw_reference())
    assert_layer(result.image, 70, 100)
    on_line = np.all(line_art == (220, 0, 0), axis=2)
    assert np.array_equal(result.image[on_line][:, :3], line_art[on_line])  # red ink kept
    assert engine.prepare(Job(line_art)).sketch.any()  # and seen as lines by the model


def test_sixteen_bit_equals_eight_bit(engine):
    line_art = draw_line_art(64, 80)
    reference = draw_reference(50, 60)
    eight = engine.colorize(line_art, reference).image
    sixteen = engine.colorize(
        line_art.astype(np.uint16) * 257, reference.astype(np.uint16) * 257
    ).image
    assert np.array_equal(eight, sixteen)


@pytest.mark.parametrize(("height", "width"), [(333, 517), (517, 333), (17, 23), (1, 1), (48, 64)])
def test_odd_sizes(engine, height, width):
    line_art = black_lines_on_white(height, width, thickness=1)
    assert_layer(engine.colorize(line_art, draw_reference()).image, height, width)


def test_grey_inputs(engine):
    line_art = cv2.cvtColor(black_lines_on_white(60, 90), cv2.COLOR_RGB2GRAY)
    reference = cv2.cvtColor(draw_reference()[..., :3], cv2.COLOR_RGB2GRAY)
    assert line_art.ndim == 2
    assert_layer(engine.colorize(line_art, reference).image, 60, 90)
    assert_layer(engine.colorize(line_art[..., None], reference[..., None]).image, 60, 90)


def test_reference_of_another_size_and_aspect(engine):
    line_art = black_lines_on_white(100, 60)  # portrait
    for shape in [(30, 200, 3), (400, 50, 4), (1, 1, 3)]:  # wide, tall, a single pixel
        reference = np.full(shape, 120, np.uint8)
        assert_layer(engine.colorize(line_art, reference).image, 100, 60)


def test_no_reference(engine):
    assert_layer(engine.colorize(black_lines_on_white(50, 50)).image, 50, 50)


def test_working_size_per_job(engine):
    line_art = black_lines_on_white(200, 300)
    small = engine.colorize(line_art, working_size=32)
    large = engine.colorize(line_art, working_size=128)
    assert_layer(small.image, 200, 300)
    assert_layer(large.image, 200, 300)
    assert engine.prepare(Job(line_art, working_size=32)).sketch.shape == (32, 32)
    assert engine.prepare(Job(line_art, working_size=128)).sketch.shape == (96, 128)


# -- automatic working size --------------------------------------------------------------------


def test_automatic_working_size_by_default(tiny_checkpoint, caplog):
    engine = Engine(tiny_checkpoint, device="cpu", warmup=False)
    assert engine.info()["working_size"] == "auto"
    assert engine.info()["max_working_size"] == engine_module.DEFAULT_MAX_WORKING_SIZE
    assert engine.training_line_width == engine_module.FALLBACK_TRAINING_LINE_WIDTH
    drawing = black_lines_on_white(240, 320, thickness=8)
    with caplog.at_level(logging.INFO, logger="colord.engine"):
        result = engine.colorize(drawing)
    assert result.working_size == engine.automatic_working_size(
        engine.prepare(Job(drawing, working_size=16)).lines
    )
    assert 64 <= result.working_size < 320  # strokes thicker than training's: shrunk
    assert f"automatic working size {result.working_size} for a 320x240 canvas" in caplog.text
    assert_layer(result.image, 240, 320)
    assert max(engine.prepare(Job(drawing)).sketch.shape) == result.working_size
    # the same drawing four times larger, strokes included, runs at about the same size
    larger = cv2.resize(drawing, None, fx=4, fy=4, interpolation=cv2.INTER_NEAREST)
    assert abs(engine.prepare(Job(larger)).working_size - result.working_size) <= 32
    assert engine.colorize(drawing, working_size=128).working_size == 128


def test_the_automatic_cap_can_be_set(tiny_checkpoint):
    drawing = black_lines_on_white(240, 320, thickness=2)  # thin: wants the canvas's own size
    uncapped = Engine(tiny_checkpoint, device="cpu", warmup=False)
    capped = Engine(tiny_checkpoint, device="cpu", warmup=False, max_working_size=96)
    assert uncapped.prepare(Job(drawing)).working_size == 320
    assert capped.prepare(Job(drawing)).working_size == 96
    assert capped.info()["max_working_size"] == 96
    # past the automatic cap, thin strokes get the cap, not the canvas's size, on any device
    page = black_lines_on_white(1200, 1600, thickness=2)
    roomy = Engine(tiny_checkpoint, device="cpu", warmup=False, max_working_size=2048)
    assert roomy.prepare(Job(page)).working_size == AUTOMATIC_SIZE_CAP < 1600
    assert roomy.prepare(Job(page, working_size=1600)).working_size == 1600
    with pytest.raises(InputError, match="multiple of 16"):
        Engine(tiny_checkpoint, device="cpu", warmup=False, max_working_size=100)


def test_automatic_working_size_follows_the_checkpoint(tmp_path):
    torch.manual_seed(0)
    generator = Generator(get_preset("tiny"))
    line_art = black_lines_on_white(240, 320, thickness=6)
    sizes = {}
    for width in (2.0, 6.0):
        path = save_checkpoint(tmp_path / f"{width}.safetensors", generator,
                               metadata={LINE_WIDTH_KEY: width})  # fmt: skip
        engine = Engine(path, device="cpu", warmup=False)
        assert engine.training_line_width == width
        sizes[width] = engine.prepare(Job(line_art)).working_size
    assert sizes[2.0] < sizes[6.0]  # thinner training strokes: shrink the canvas further


def test_fixed_engine_working_size_turns_automatic_off(tiny_checkpoint):
    engine = Engine(tiny_checkpoint, device="cpu", working_size=96, warmup=False)
    assert engine.info()["working_size"] == 96
    assert engine.colorize(black_lines_on_white(240, 320)).working_size == 96


# -- lines -------------------------------------------------------------------------------------


def test_lines_kept_on_top(engine):
    line_art = black_lines_on_white(80, 120)
    on_line = np.all(line_art == 0, axis=2)
    kept = engine.colorize(line_art, draw_reference(), keep_lines=True).image
    assert (kept[on_line][:, :3] == 0).all()  # line pixels dark in the output
    bare = engine.colorize(line_art, draw_reference(), keep_lines=False).image
    assert (bare[on_line][:, :3] > 0).any()  # without them, colours run under the lines
    assert np.array_equal(kept[~on_line], bare[~on_line])  # white paper changes nothing


class HalvesGenerator(nn.Module):
    """A fake generator: the reference resized onto the sketch, lines painted black, as a trained
    model draws them. Pure logic, for checking what happens around the model."""

    def forward(self, sketch: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
        colours = F.interpolate(reference, size=sketch.shape[-2:], mode="nearest")
        return torch.where(sketch < 0, torch.full_like(colours, -1.0), colours)


RED = (220, 40, 40)
BLUE = (40, 60, 220)


@pytest.mark.parametrize("keep_lines", [True, False])
def test_colour_does_not_bleed_across_a_line(keep_lines):
    # two regions of different reference colour, separated by a vertical line, on an odd canvas
    height, width = 333, 517
    line_art = np.full((height, width, 3), 255, np.uint8)
    line_art[:, 257:260] = 0
    reference = np.empty((height, width, 3), np.uint8)
    reference[:, : width // 2 + 1] = RED
    reference[:, width // 2 + 1 :] = BLUE
    engine = Engine(HalvesGenerator(), device="cpu", working_size=128, warmup=False)
    image = engine.colorize(line_art, reference, keep_lines=keep_lines).image
    assert_layer(image, height, width)
    assert (image[:, :257, :3] == RED).all()
    assert (image[:, 260:, :3] == BLUE).all()
    if keep_lines:
        assert (image[:, 257:260, :3] == 0).all()


@pytest.mark.parametrize("keep_lines", [True, False])
def test_flats_come_from_the_plain_colours_at_canvas_size(keep_lines):
    # the HalvesGenerator paints two solid halves; a closed ring in each half, lines drawn 3 px
    height, width = 333, 517
    line_art = np.full((height, width, 3), 255, np.uint8)
    line_art[:, 257:260] = 0
    cv2.circle(line_art, (120, 160), 60, (0, 0, 0), 3)
    cv2.circle(line_art, (400, 160), 60, (0, 0, 0), 3)
    reference = np.empty((height, width, 3), np.uint8)
    reference[:, : width // 2 + 1] = RED
    reference[:, width // 2 + 1 :] = BLUE
    engine = Engine(HalvesGenerator(), device="cpu", working_size=128, warmup=False)
    options = {"flats": "with_colour", "flats_gap": 2, "flats_ground": "opaque"}
    result = engine.colorize(line_art, reference, keep_lines=keep_lines, **options)
    plain = engine.colorize(line_art, reference, keep_lines=False).image
    page = flats.FlatsOptions.for_canvas(width, transparent_ground=False)  # unset: scaled
    lines = imaging.read_line_art(line_art)[2]
    expected = flats.flats_layer(lines, plain, reference, replace(page, gap=2))
    np.testing.assert_array_equal(result.flats, expected)  # lines drawn over the colour or not
    assert_layer(result.flats, height, width)
    colours = {tuple(c) for c in result.flats.reshape(-1, 4)[:, :3].tolist()}
    assert colours == {RED, BLUE}  # one exact colour per region, the lines filled under
    assert set(result.timings) == {"prepare", "forward", "finish", "flats", "total"}
    parts = sum(v for k, v in result.timings.items() if k != "total")
    assert result.timings["total"] == pytest.approx(parts)


def test_flats_settings_left_out_are_the_page_defaults_scaled_to_the_canvas():
    job = Job(np.zeros((4, 4), np.uint8), flats="only")
    assert engine_module._flats_options(job, 256) == flats.FlatsOptions.for_canvas(256)
    assert engine_module._flats_options(job, 2048) == flats.FlatsOptions()  # made for a page
    job = Job(job.line_art, flats="only", flats_gap=0, flats_palette=True, flats_ground="opaque")
    assert engine_module._flats_options(job, 256) == flats.FlatsOptions(
        0, flats.FlatsOptions.for_canvas(256).min_area, True, False
    )


def test_flats_ground_is_transparent_by_default(engine):
    line_art = black_lines_on_white(96, 128, thickness=3)
    result = engine.colorize(line_art, draw_reference(80, 112), flats="only")
    alpha = result.flats[..., 3]
    assert alpha[-1, 0] == 0 and alpha[48, 64] == 255  # the paper around, the disc inside
    assert set(np.unique(alpha)) == {0, 255}
    assert engine.colorize(line_art).flats is None


def test_flats_read_the_line_art_once_and_flats_alone_draw_no_lines(engine, monkeypatch):
    calls = {"read_line_art": 0, "draw_lines": 0}
    for name in calls:
        original = getattr(imaging, name)

        def counted(*args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(imaging, name, counted)
    line_art = black_lines_on_white(96, 128, thickness=3)
    engine.colorize(line_art, flats="with_colour")
    assert calls == {"read_line_art": 1, "draw_lines": 1}  # the flats use the engine's mask
    engine.colorize(line_art, flats="only")  # the colour layer is not sent: no lines on it
    assert calls == {"read_line_art": 2, "draw_lines": 1}


def test_a_transparent_ground_clears_the_paper_around_the_figure(engine):
    # a ring with a 3 px gap (closed, as the plug-ins close it) and a dot far outside it
    line_art = np.full((120, 160, 3), 255, np.uint8)
    cv2.circle(line_art, (80, 60), 40, (0, 0, 0), 3)
    line_art[58:61, 118:123] = 255  # the gap, through the ring's right side
    line_art[5:8, 5:8] = 0
    opaque = engine.colorize(line_art, working_size=64)
    clear = engine.colorize(line_art, working_size=64, ground="transparent")
    alpha = clear.image[..., 3]
    assert alpha[60, 80] == 255 and alpha[60, 115] == 255  # inside the ring, by the gap
    assert alpha[0, 0] == 0 and alpha[110, 150] == 0 and alpha[60, 130] == 0  # around it
    lines = imaging.read_line_art(line_art)[2].astype(bool)
    assert (alpha[lines] == 255).all()  # the lines, the dot's too, stay
    np.testing.assert_array_equal(clear.image[..., :3], opaque.image[..., :3])  # colours kept
    assert (opaque.image[..., 3] == 255).all()  # absent or "opaque": as before
    same = engine.colorize(line_art, working_size=64, ground="opaque").image
    np.testing.assert_array_equal(same, opaque.image)


def test_the_ground_is_the_plugins_outside(engine):
    """The daemon's outside is the plug-ins' own (`colord_paper.find_outside`) on the same
    line art: ink where both read ink, the same gaps closed, the same reach from the border."""
    line_art = draw_line_art(96, 128)  # anti-aliased strokes on a transparent layer
    line_art[..., 3] = np.where(line_art[..., 3] >= 128, 255, 0)  # one reading of ink for both
    daemon = ground.outside_drawing(imaging.read_line_art(line_art)[2])
    height, width = line_art.shape[:2]
    plugin = colord_paper.find_outside(line_art.tobytes(), width, height)
    keep = np.frombuffer(plugin.keep.to_bytes(height * width, "little"), np.uint8)
    np.testing.assert_array_equal(daemon, keep.reshape(height, width) == 0)
    assert 0 < daemon.sum() < daemon.size


# -- bad inputs, no model ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line_art", "message"),
    [
        (np.zeros((8, 8, 3), np.float32), "uint8 or uint16"),
        (np.zeros((8, 8, 5), np.uint8), "5 channels"),
        (np.zeros((0, 8, 4), np.uint8), "empty"),
        (np.zeros((16385, 2), np.uint8), "at most 16384"),
    ],
)
def test_bad_line_art_raises_input_error(engine, line_art, message):
    with pytest.raises(InputError, match=message):
        engine.colorize(line_art)


def test_bad_reference_and_working_size(engine):
    line_art = black_lines_on_white(20, 20)
    with pytest.raises(InputError, match="reference"):
        engine.colorize(line_art, np.zeros((4, 4, 3), np.int32))
    with pytest.raises(InputError, match=r"working.size"):
        engine.colorize(line_art, working_size=50)
    with pytest.raises(InputError, match=r"'flats_palette'.*reference"):
        engine.colorize(line_art, flats="only", flats_palette=True)
    assert issubclass(InputError, ValueError)  # the daemon maps ValueError to a bad-image reply


def test_no_model(tmp_path, monkeypatch):
    monkeypatch.setattr(engine_module, "DEFAULT_CHECKPOINT", tmp_path / "none.safetensors")
    engine = Engine(device="cpu")
    assert not engine.has_model
    with pytest.raises(NoModelError, match="--model"):
        engine.colorize(black_lines_on_white(20, 20))
    with pytest.raises(NoModelError):
        engine.colorize_batch([])
    info = engine.info()
    assert info["loaded"] is False
    assert info["model"] is None
    with pytest.raises(NoModelError, match="missing or damaged"):
        engine_module.default_checkpoint()


def test_corrupt_checkpoint(tmp_path):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(CheckpointError, match=r"broken\.safetensors"):
        Engine(broken, device="cpu")
    with pytest.raises(CheckpointError, match="no such file"):
        Engine(tmp_path / "missing.safetensors", device="cpu")


# -- batching, loading, devices ----------------------------------------------------------------


def test_colorize_batch_equals_colorize_per_job(engine):
    jobs = [
        Job(black_lines_on_white(64, 64), draw_reference(80, 112)),
        Job(draw_line_art(96, 128), draw_reference(80, 112)),
        Job(black_lines_on_white(64, 64), draw_reference(80, 112), keep_lines=False),
        Job(black_lines_on_white(40, 90)),
        Job(black_lines_on_white(64, 64)),
        Job(draw_line_art(96, 128), draw_reference(40, 300), working_size=32),
    ]
    batched = engine.colorize_batch(jobs)
    assert len(batched) == len(jobs)
    for job, result in zip(jobs, batched, strict=True):
        alone = engine.colorize(
            job.line_art, job.reference, working_size=job.working_size, keep_lines=job.keep_lines
        )
        assert result.image.shape == alone.image.shape
        difference = np.abs(result.image.astype(int) - alone.image.astype(int))
        assert difference.max() <= 2  # batched convolutions may round differently
        assert (difference > 0).mean() < 0.01


def test_warm_up_and_info(tiny_checkpoint):
    engine = Engine(tiny_checkpoint, device="cpu", working_size=32, warmup=True, fast=False)
    info = engine.info()
    assert info["model"] == str(tiny_checkpoint)
    assert info["preset"] == "tiny"
    assert info["parameters"] > 0
    assert info["device"] == "cpu"
    assert info["dtype"] == "float32"
    assert info["working_size"] == 32
    assert info["fast_path"] == "off"
    assert info["metadata"] == {"purpose": "tests"}


def test_fast_path_falls_back_to_eager(tiny_checkpoint, monkeypatch, caplog):
    monkeypatch.setitem(engine_module.FAST_PATHS, "cpu", "compile")  # CUDA's, tested on the CPU

    def broken_compile(model, **options):
        assert options == {"mode": "reduce-overhead", "dynamic": False}

        def run(*args):
            raise RuntimeError("inductor exploded\nlong details")

        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    reference_engine = Engine(tiny_checkpoint, device="cpu", working_size=SIZE, warmup=False)
    with caplog.at_level(logging.WARNING, logger="colord.engine"):
        engine = Engine(tiny_checkpoint, device="cpu", working_size=SIZE, fast=True)
    assert "running eagerly" in caplog.text
    assert "inductor exploded" in caplog.text
    assert engine.info()["fast_path"] == "failed, eager"
    line_art = draw_line_art()
    assert np.array_equal(
        engine.colorize(line_art).image, reference_engine.colorize(line_art).image
    )


def machine_with(monkeypatch: pytest.MonkeyPatch, *, cuda: int, mps: bool) -> None:
    """Pretend this machine has `cuda` CUDA GPUs and MPS or not (no GPU needed to test the
    choice)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: cuda)
    monkeypatch.setattr(devices, "mps_available", lambda: mps)


@pytest.mark.parametrize(
    ("cuda", "mps", "expected"),
    [(1, True, "cuda"), (2, False, "cuda"), (0, True, "mps"), (0, False, "cpu")],
)
def test_auto_device_is_cuda_then_mps_then_cpu(monkeypatch, cuda, mps, expected):
    machine_with(monkeypatch, cuda=cuda, mps=mps)
    for name in (None, "auto", " Auto ", ""):
        assert pick_device(name) == torch.device(expected)
    assert pick_device("cpu") == torch.device("cpu")


def test_named_devices_are_checked_against_the_machine(monkeypatch):
    machine_with(monkeypatch, cuda=2, mps=False)
    assert pick_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(DeviceError, match="only 2 CUDA GPU"):
        pick_device("cuda:2")
    with pytest.raises(DeviceError, match="MPS is not usable"):
        pick_device("mps")
    machine_with(monkeypatch, cuda=0, mps=True)
    assert pick_device("mps") == torch.device("mps")
    with pytest.raises(DeviceError, match="no CUDA GPU"):
        pick_device("cuda")


def test_cuda_runs_bf16_with_the_fast_path_and_the_cpu_float32_without(monkeypatch):
    machine_with(monkeypatch, cuda=1, mps=False)
    on_cuda = Engine(None)  # no model: nothing is moved to the (pretended) GPU
    assert on_cuda.device == torch.device("cuda")
    assert (on_cuda.dtype, on_cuda.fast) == (torch.bfloat16, True)
    monkeypatch.setattr(torch, "autocast", lambda device, dtype: ("autocast", device, dtype))
    assert on_cuda._autocast() == ("autocast", "cuda", torch.bfloat16)
    on_cpu = Engine(None, device="cpu")
    assert (on_cpu.dtype, on_cpu.fast) == (torch.float32, True)  # the export fast path
    assert isinstance(on_cpu._autocast(), contextlib.nullcontext)


def test_the_cpu_engine_runs_the_fast_path_when_installed(tiny_checkpoint):
    """By default a CPU engine runs the fastest installed backend (the cpu extra) on its model:
    each working shape's first forward is checked against eager, later ones run the backend,
    and the colours match an eager engine's within the parity check's 2/255."""
    for package in fast_path.BACKENDS["openvino"][0]:
        if importlib.util.find_spec(package) is None:
            missing(f"{package} is not installed (pip install -e '.[cpu]')", EXTRAS)
    fast = Engine(tiny_checkpoint, device="cpu", working_size=SIZE, warmup=False)
    eager = Engine(tiny_checkpoint, device="cpu", working_size=SIZE, warmup=False, fast=False)
    line_art, reference = draw_line_art(), draw_reference()
    expected = eager.colorize(line_art, reference).image.astype(int)
    # the check (it answers with the backend's output, as it keeps it), then the backend alone
    images = [fast.colorize(line_art, reference).image.astype(int) for _ in range(2)]
    for image in images:
        assert np.abs(image - expected).max() <= 2
    np.testing.assert_array_equal(images[0], images[1])  # the same answer to the same request
    assert fast.info()["fast_path"].startswith("openvino for 1 of 1 working shapes")
    assert eager.info()["fast_path"] == "off"


def test_unknown_and_absent_devices_are_refused(monkeypatch):
    with pytest.raises(DeviceError, match="unknown device"):
        pick_device("abacus")
    with pytest.raises(DeviceError, match="unsupported device"):
        pick_device("xla")
    machine_with(monkeypatch, cuda=0, mps=False)
    with pytest.raises(DeviceError, match="no CUDA GPU"):
        Engine(device="cuda")


def test_fast_path_runs_one_sample_per_call(tiny_checkpoint, monkeypatch):
    monkeypatch.setitem(engine_module.FAST_PATHS, "cpu", "compile")  # CUDA's, tested on the CPU
    batch_sizes = []

    def recording_compile(model, **options):
        def run(sketch, reference):
            batch_sizes.append(sketch.shape[0])
            return model(sketch, reference)

        return run

    monkeypatch.setattr(torch, "compile", recording_compile)
    eager = Engine(tiny_checkpoint, device="cpu", working_size=SIZE, warmup=False, fast=False)
    fast = Engine(tiny_checkpoint, device="cpu", working_size=SIZE, warmup=False, fast=True)
    jobs = [Job(draw_line_art(), draw_reference()) for _ in range(3)]
    for a, b in zip(fast.colorize_batch(jobs), eager.colorize_batch(jobs), strict=True):
        assert np.abs(a.image.astype(int) - b.image.astype(int)).max() <= 2
    assert batch_sizes == [1, 1, 1]
    assert fast.info()["fast_path"] == "torch.compile reduce-overhead"
