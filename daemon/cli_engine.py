"""`colord colorize`, `colord models` and `colord info`: the engine from the command line.

Every user error (a missing or unreadable file, a corrupt checkpoint, no model, a bad device)
ends as a one-line click error with a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import click
import numpy as np

from colord.daemon.flats import DEFAULT_GAP, PAGE_SIDE
from colord.plugins.wire.colord_protocol import (
    GROUNDS,
    MAX_FLATS_GAP,
    WORKING_SIZE_MULTIPLE,
    ColordError,
    ProtocolError,
    colorize_options,
)

# Pillow modes read as they are; every other mode is converted to the one given here.
_KEEP_MODES = {"L", "LA", "RGB", "RGBA", "I;16", "I;16L", "I;16B", "I;16N"}
_CONVERT = {"1": "L", "P": "RGBA", "PA": "RGBA", "La": "LA", "RGBa": "RGBA", "RGBX": "RGB"}
_NO_ALPHA_FORMATS = {"JPEG", "BMP", "PPM", "EPS", "PCX"}


def read_image(path: Path, what: str) -> np.ndarray:
    """An image file as (H, W) or (H, W, C) uint8/uint16, EXIF orientation applied."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            image = ImageOps.exif_transpose(opened)
            image.load()
    except FileNotFoundError:
        raise click.ClickException(f"{what} {path}: no such file") from None
    except UnidentifiedImageError:
        raise click.ClickException(f"{what} {path}: not an image file Pillow can read") from None
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise click.ClickException(f"{what} {path}: cannot be read ({error})") from None
    mode = image.mode
    if mode == "I":  # 16-bit grey PNGs may arrive as 32-bit integers
        array = np.asarray(image)
        if array.min() < 0 or array.max() > 65535:
            raise click.ClickException(f"{what} {path}: 32-bit integer images are not supported")
        return array.astype(np.uint16)
    if mode not in _KEEP_MODES:
        image = image.convert(_CONVERT.get(mode, "RGB"))
    array = np.asarray(image)
    if array.dtype != np.uint16 and array.dtype != np.uint8:
        array = array.astype(np.uint16)  # the I;16 variants, big-endian included
    return np.ascontiguousarray(array)


def write_image(path: Path, rgba: np.ndarray) -> None:
    """Write (H, W, 4) uint8; formats without alpha get RGB (the layer is opaque anyway)."""
    from PIL import Image

    extension = path.suffix.lower()
    image_format = Image.registered_extensions().get(extension)
    if image_format is None:
        raise click.ClickException(
            f"output {path}: unknown image format {extension or '(no extension)'}; "
            "use .png, .jpg, .tif, .webp, ..."
        )
    image = Image.fromarray(rgba, "RGBA")
    if image_format in _NO_ALPHA_FORMATS:
        image = image.convert("RGB")
    try:
        image.save(path, format=image_format)
    except (OSError, ValueError, KeyError) as error:
        raise click.ClickException(f"output {path}: cannot be written ({error})") from None


def _setup_logging() -> None:
    logging.basicConfig(level=logging.WARNING, format="colord: %(levelname)s: %(message)s")


def _load_engine(model: Path | None, device: str, working_size: int | None, warmup: bool):
    """An Engine, or a click error saying what is wrong."""
    from colord.model import CheckpointError

    from .engine import Engine, EngineError, default_checkpoint

    try:
        return Engine(
            model or default_checkpoint(), device=device, working_size=working_size, warmup=warmup
        )
    except (CheckpointError, EngineError) as error:
        raise click.ClickException(str(error)) from None


class WorkingSize(click.ParamType):
    """`auto` (None: the engine chooses per canvas) or a working size the protocol accepts (a
    multiple of 16; the engine refuses one above its largest canvas)."""

    name = "auto|N"

    def convert(self, value, param, ctx) -> int | None:
        if value is None or isinstance(value, int):
            size = value
        elif value.strip().lower() == "auto":
            return None
        else:
            try:
                size = int(value)
            except ValueError:
                self.fail(f"{value!r} is neither auto nor a number", param, ctx)
        try:
            colorize_options({"working_size": size}, reference=False)
        except ProtocolError:
            multiple = WORKING_SIZE_MULTIPLE
            self.fail(f"must be auto or a multiple of {multiple} from {multiple}", param, ctx)
        return size


WORKING_SIZE = WorkingSize()


@click.command("colorize")
@click.argument("line_art", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--ref",
    "reference",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Reference picture whose colours to follow (any size). Without it: no-reference mode.",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the colour layer (PNG keeps alpha; format from the extension).",
)
@click.option(
    "--model",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Checkpoint (.safetensors) to run; default: the model that ships with colord.",
)
@click.option(
    "--size",
    "working_size",
    type=WORKING_SIZE,
    default="auto",
    show_default=True,
    help="Long side at which the model runs: auto (strokes as thick as the model's training "
    "sketches, capped by the device) or a multiple of 16.",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps.")
@click.option(
    "--keep-lines/--no-keep-lines",
    default=True,
    show_default=True,
    help="Lay the original lines over the colours.",
)
@click.option(
    "--flats",
    is_flag=True,
    help="Also write the flats (every closed region of the line art one solid colour, under the "
    "lines too) to OUTPUT's name with -flats.png (coloured.png: coloured-flats.png).",
)
@click.option(
    "--flats-gap",
    type=click.IntRange(0, MAX_FLATS_GAP),
    default=None,
    help="With --flats: gaps in the lines up to this many pixels count as closed "
    f"[default: {DEFAULT_GAP} on a {PAGE_SIDE} px page, scaled with the canvas].",
)
@click.option(
    "--flats-palette",
    is_flag=True,
    help="With --flats: each region takes the nearest of the reference's dominant colours.",
)
@click.option(
    "--flats-ground",
    type=click.Choice(GROUNDS),
    default=None,
    help="With --flats: the paper around the figure transparent or filled [default: transparent].",
)
@click.option(
    "--ground",
    type=click.Choice(GROUNDS),
    default=None,
    help="The colour layer's paper around the figure (reached from the border without crossing "
    "a line) transparent or kept [default: opaque].",
)
@click.option(
    "--daemon", is_flag=True, help="Send the request to the running `colord serve` instead."
)
def colorize_command(
    line_art: Path,
    reference: Path | None,
    output: Path,
    model: Path | None,
    working_size: int | None,
    device: str,
    keep_lines: bool,
    flats: bool,
    flats_gap: int | None,
    flats_palette: bool,
    flats_ground: str | None,
    ground: str | None,
    daemon: bool,
) -> None:
    """Colour LINE_ART after a reference picture and write the colour layer to OUTPUT."""
    _setup_logging()
    options = {
        "keep_lines": keep_lines,
        "flats": "with_colour" if flats else None,
        "flats_gap": flats_gap,
        "flats_palette": flats_palette or None,
        "flats_ground": flats_ground,
        "ground": ground,
    }
    try:
        colorize_options(options, reference=reference is not None)
    except ProtocolError as error:  # a flats setting without --flats, say (protocol names)
        raise click.UsageError(error.message) from None
    line_array = read_image(line_art, "line art")
    reference_array = None if reference is None else read_image(reference, "reference")
    start = time.perf_counter()
    if daemon:
        if model is not None or device != "auto":
            raise click.UsageError("--model and --device belong to `colord serve` with --daemon")
        result = _colorize_on_daemon(line_array, reference_array, working_size, options)
    else:
        from .engine import EngineError

        engine = _load_engine(model, device, working_size, warmup=False)
        try:
            result = engine.colorize(line_array, reference_array, **options)
        except EngineError as error:
            raise click.ClickException(str(error)) from None
    write_image(output, result.image)
    written = [output]
    if result.flats is not None:
        written.append(flats_path(output))
        write_image(written[-1], result.flats)
    height, width = result.image.shape[:2]
    elapsed = (time.perf_counter() - start) * 1000
    parts = ", ".join(f"{k} {v:.0f} ms" for k, v in result.timings.items() if k != "total")
    size = "" if daemon else f", working size {result.working_size}"
    names = " and ".join(str(path) for path in written)
    click.echo(f"wrote {names} ({width}x{height}{size}) in {elapsed:.0f} ms ({parts})")


def flats_path(output: Path) -> Path:
    """Where `colord colorize --flats` writes the flats: beside OUTPUT, always PNG (exact
    colours and a transparent ground)."""
    return output.with_name(f"{output.stem}-flats.png")


def _colorize_on_daemon(line_art, reference, working_size, options):
    from .client import Client

    try:
        with Client.from_connection_file(None) as client:
            return client.colorize(line_art, reference, working_size=working_size, **options)
    except ColordError as error:
        raise click.ClickException(f"daemon: {error}") from None


@click.command("models")
def models_command() -> None:
    """List the model presets and the default model's status."""
    import torch

    from colord.model import PRESETS, Generator, count_parameters

    from .engine import NoModelError, default_checkpoint

    click.echo(f"{'preset':<10} {'parameters':>12} {'fp16 checkpoint':>16}")
    for name, preset in PRESETS.items():
        with torch.device("meta"):  # shapes only: no memory, no init cost
            generator = Generator(preset)
        click.echo(
            f"{name:<10} {count_parameters(generator):>12,} {_fp16_megabytes(generator):>13.1f} MB"
        )
    try:
        click.echo(f"\ndefault model: {default_checkpoint()} (SHA-256 verified)")
    except NoModelError as error:
        click.echo(f"\ndefault model: unusable: {error}")


def _fp16_megabytes(generator) -> float:
    """Tensor bytes of the generator's state saved with float16 weights (header excluded)."""
    total = 0
    for tensor in generator.state_dict().values():
        total += tensor.numel() * (2 if tensor.is_floating_point() else tensor.element_size())
    return total / 1e6


@click.command("info")
@click.option("--model", type=click.Path(dir_okay=False, path_type=Path), help="Checkpoint.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps.")
@click.option("--daemon", is_flag=True, help="Ask the running `colord serve` instead.")
def info_command(model: Path | None, device: str, daemon: bool) -> None:
    """Show the model file, preset, parameters, device and dtype."""
    _setup_logging()
    if daemon:
        from .client import Client

        try:
            with Client.from_connection_file(None) as client:
                info = client.info()
        except ColordError as error:
            raise click.ClickException(f"daemon: {error}") from None
    else:
        info = _load_engine(model, device, None, warmup=False).info()
    for key, value in info.items():
        if isinstance(value, int) and not isinstance(value, bool) and key == "parameters":
            value = f"{value:,}"
        click.echo(f"{key}: {value}")
