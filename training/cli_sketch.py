"""`colord sketch`: extract line art from a colour picture with XDoG, as the training data does."""

from __future__ import annotations

import inspect
from pathlib import Path

import click
from PIL import Image

from colord.training.samples.dataset import ImageReadError, load_rgb
from colord.training.samples.sketch import xdog

XDOG_DEFAULTS = {name: p.default for name, p in inspect.signature(xdog).parameters.items()}


@click.command("sketch")
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Where to write the line art (black lines on white; the suffix picks the format).",
)
@click.option(
    "--blur-sigma",
    default=XDOG_DEFAULTS["blur_sigma"],
    show_default=True,
    help="Pre-blur, in pixels.",
)
@click.option(
    "--sigma",
    default=XDOG_DEFAULTS["sigma"],
    show_default=True,
    help="Line scale: larger, thicker lines.",
)
@click.option(
    "--tau",
    default=XDOG_DEFAULTS["tau"],
    show_default=True,
    help="Edge sensitivity: closer to 1, more edges.",
)
def sketch(image: Path, output: Path, blur_sigma: float, sigma: float, tau: float) -> None:
    """Extract line art from the colour picture IMAGE with XDoG."""
    try:
        picture = load_rgb(image)
    except ImageReadError as error:
        raise click.ClickException(str(error)) from None
    lines = xdog(picture, blur_sigma=blur_sigma, sigma=sigma, tau=tau)
    try:
        Image.fromarray(lines).save(output)
    except (OSError, ValueError) as error:
        raise click.ClickException(f"cannot write {output}: {error}") from None
    click.echo(f"wrote {output} ({lines.shape[1]}x{lines.shape[0]})")
