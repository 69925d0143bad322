"""`colord colorize`, `colord models`, `colord info`: end to end on real image files."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import draw_line_art, draw_reference
from PIL import Image

from colord.daemon import client as client_module
from colord.daemon import engine as engine_module
from colord.daemon.cli import main
from colord.daemon.flats import reference_palette


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    line_art = tmp_path / "line art.png"
    Image.fromarray(draw_line_art(96, 128), "RGBA").save(line_art)
    reference = tmp_path / "reference.jpg"
    Image.fromarray(draw_reference(60, 150)[..., :3], "RGB").save(reference, quality=95)
    garbage = tmp_path / "garbage.png"
    garbage.write_text("not an image")
    return {"line_art": line_art, "reference": reference, "garbage": garbage, "dir": tmp_path}


@pytest.fixture
def no_default_model(tmp_path, monkeypatch):
    """As when an installation lost the default model's file."""
    monkeypatch.setattr(engine_module, "DEFAULT_CHECKPOINT", tmp_path / "none.safetensors")


def run(*args: object) -> object:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in result.output
    return result


def test_colorize_end_to_end(files, tiny_checkpoint):
    out = files["dir"] / "colours.png"
    result = run(
        "colorize",
        files["line_art"],
        "--ref",
        files["reference"],
        "-o",
        out,
        "--model",
        tiny_checkpoint,
        "--size",
        64,
        "--device",
        "cpu",
    )
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and "working size 64)" in result.output
    written = Image.open(out)
    assert written.mode == "RGBA"
    assert written.size == (128, 96)
    pixels = np.asarray(written)
    assert (pixels[..., 3] == 255).all()
    line_pixels = draw_line_art(96, 128)[..., 3] == 255
    assert (pixels[line_pixels][:, :3] == 0).all()  # the lines are kept by default


def test_colorize_writes_the_flats_beside_the_colour_layer(files, tiny_checkpoint):
    out = files["dir"] / "colours.jpg"
    result = run(
        "colorize", files["line_art"], "--ref", files["reference"], "-o", out,
        "--model", tiny_checkpoint, "--size", 64, "--device", "cpu",
        "--flats", "--flats-gap", 2, "--flats-palette", "--flats-ground", "opaque",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    flats_file = files["dir"] / "colours-flats.png"
    assert f"wrote {out} and {flats_file}" in result.output and "flats " in result.output
    flats = np.asarray(Image.open(flats_file))
    assert flats.shape == (96, 128, 4) and (flats[..., 3] == 255).all()  # opaque ground
    reference = np.asarray(Image.open(files["reference"]))
    palette = {tuple(c) for c in reference_palette(reference).tolist()}
    assert {tuple(c) for c in flats[..., :3].reshape(-1, 3).tolist()} <= palette


def test_colorize_without_lines_to_jpeg(files, tiny_checkpoint):
    out = files["dir"] / "colours.jpg"
    result = run(
        "colorize",
        files["line_art"],
        "-o",
        out,
        "--model",
        tiny_checkpoint,
        "--size",
        32,
        "--no-keep-lines",
    )
    assert result.exit_code == 0, result.output
    assert Image.open(out).size == (128, 96)


def test_colorize_chooses_the_working_size_unless_told(files, tiny_checkpoint):
    out = files["dir"] / "auto.png"
    for size in ([], ["--size", "auto"], ["--size", "AUTO"]):
        result = run("colorize", files["line_art"], "-o", out, "--model", tiny_checkpoint, *size)
        assert result.exit_code == 0, result.output
        assert "working size " in result.output


def test_colorize_sixteen_bit_png(files, tiny_checkpoint):
    grey = np.full((50, 70), 65535, np.uint16)
    grey[25, :] = 0
    line_art = files["dir"] / "grey16.png"
    Image.fromarray(grey).save(line_art)
    assert Image.open(line_art).mode.startswith("I;16")
    out = files["dir"] / "out.png"
    result = run("colorize", line_art, "-o", out, "--model", tiny_checkpoint, "--size", 32)
    assert result.exit_code == 0, result.output
    pixels = np.asarray(Image.open(out))
    assert pixels.shape == (50, 70, 4)
    assert (pixels[25, :, :3] == 0).all()


def test_colorize_without_model_says_how(files, no_default_model):
    result = run("colorize", files["line_art"], "-o", files["dir"] / "out.png")
    assert result.exit_code != 0
    assert "default model that ships with colord is missing or damaged" in result.output
    assert "--model PATH" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ("colorize {dir}/missing.png -o {dir}/o.png --model {ckpt}", "missing.png: no such file"),
        ("colorize {garbage} -o {dir}/o.png --model {ckpt}", "not an image file"),
        ("colorize {line_art} --ref {garbage} -o {dir}/o.png --model {ckpt}", "reference"),
        ("colorize {line_art} -o {dir}/o.png --model {garbage}", "checkpoint"),
        ("colorize {line_art} -o {dir}/o.png --model {dir}/x.safetensors", "x.safetensors: no"),
        ("colorize {line_art} -o {dir}/o.xyz --model {ckpt} --size 32", "unknown image format"),
        ("colorize {line_art} -o {dir}/o.png --model {ckpt} --device abacus", "unknown device"),
        ("colorize {line_art} -o {dir}/o.png --model {ckpt} --size 100", "multiple of 16"),
        ("colorize {line_art} -o {dir}/o.png --model {ckpt} --size big", "neither auto nor"),
        ("colorize {line_art} -o {dir}/no/o.png --model {ckpt} --size 32", "cannot be written"),
        ("info --model {garbage}", "checkpoint"),
        ("colorize {line_art} -o {dir}/o.png --flats-gap 4", "'flats_gap' needs 'flats'"),
        ("colorize {line_art} -o {dir}/o.png --flats --flats-palette", "reference"),
        ("colorize {line_art} -o {dir}/o.png --flats --flats-gap 99", "0<=x<=32"),
        ("colorize {line_art} -o {dir}/o.png --flats --flats-ground white", "'white' is not"),
    ],
)
def test_user_errors_are_clean(files, tiny_checkpoint, args, message):
    values = {k: str(v) for k, v in files.items()} | {"ckpt": str(tiny_checkpoint)}
    result = run(*[a.format(**values) for a in args.split()])
    assert result.exit_code != 0
    assert message in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_models_lists_presets(no_default_model):
    result = run("models")
    assert result.exit_code == 0, result.output
    for name in ("paper", "default", "tiny"):
        assert name in result.output
    assert "80,0" in result.output  # the paper preset: ~80 M parameters
    assert "default model: unusable" in result.output and "missing" in result.output


def test_info_local(tiny_checkpoint, no_default_model):
    result = run("info", "--model", tiny_checkpoint, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "preset: tiny" in result.output
    assert "device: cpu" in result.output
    assert "dtype: float32" in result.output
    assert "parameters: " in result.output
    assert "working_size: auto" in result.output
    bare = run("info")  # the default model's file is missing here
    assert bare.exit_code != 0
    assert "missing or damaged" in bare.output and "--model PATH" in bare.output


class FakeClient:
    """Stands in for the daemon's client: answers like a daemon would."""

    calls: ClassVar[list] = []

    @classmethod
    def from_connection_file(cls, path=None):
        return cls()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        pass

    def close(self):
        pass

    def colorize(self, line_art, reference, *, working_size=None, keep_lines=True, **flats):
        FakeClient.calls.append((line_art.shape, reference, working_size, keep_lines))
        image = np.full((*line_art.shape[:2], 4), 255, np.uint8)
        return client_module.ColorizeReply(image, {"engine_ms": 1.0, "total_ms": 2.0})

    def info(self):
        return {"model": "/models/x.safetensors", "preset": "default", "device": "cuda:0"}


def test_colorize_through_the_daemon(files, monkeypatch):
    monkeypatch.setattr(client_module, "Client", FakeClient)
    FakeClient.calls = []
    out = files["dir"] / "daemon.png"
    result = run(
        "colorize", files["line_art"], "-o", out, "--daemon", "--size", 256, "--no-keep-lines"
    )
    assert result.exit_code == 0, result.output
    assert FakeClient.calls == [((96, 128, 4), None, 256, False)]
    assert Image.open(out).size == (128, 96)
    info = run("info", "--daemon")
    assert info.exit_code == 0
    assert "preset: default" in info.output


def test_daemon_not_running(files, monkeypatch):
    def not_running(path=None):
        raise client_module.DaemonNotRunning("The colord daemon is not running.")

    monkeypatch.setattr(client_module.Client, "from_connection_file", not_running)
    result = run("colorize", files["line_art"], "-o", files["dir"] / "o.png", "--daemon")
    assert result.exit_code != 0
    assert "daemon is not running" in result.output
    assert run("info", "--daemon").exit_code != 0
