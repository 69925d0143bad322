"""`colord eval` and `colord ablate`: flags to options, then one call into training/."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import click

from colord.training.evaluation import metrics
from colord.training.evaluation.evaluate import DEFAULT_METRICS, Colorizer, EvalOptions
from colord.training.evaluation.flats_report import FlatsColorizer
from colord.training.evaluation.spair import SPAIR_SPLITS


def _metric_list(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in value.split(",") if name.strip())
    unknown = [name for name in names if not metrics.is_valid_metric(name)]
    if unknown:
        raise click.BadParameter(
            f"unknown metric(s) {', '.join(unknown)}; known: {', '.join(metrics.list_metrics())}"
        )
    return names


@contextlib.contextmanager
def user_errors(*more: type[Exception]) -> Iterator[None]:
    """Bad input, a broken checkpoint, missing backbone weights (or one of `more`, e.g. an absent
    daemon): one line naming the problem instead of a traceback."""
    from colord.model import CheckpointError
    from colord.training.train.backbones import BackboneError

    try:
        yield
    except (ValueError, CheckpointError, BackboneError, FileNotFoundError, *more) as error:
        raise click.ClickException(str(error)) from None


@dataclass(frozen=True)
class DaemonSupply:
    """What the daemon side lends `colord eval`, so that training/ never imports the daemon: the
    running daemon's colorizer (`--daemon`) and the colorizers of the flats (`--flats`), which
    only the daemon's engine makes."""

    load: Callable[[Path | None], Colorizer]  # connection file (None: the per-user one)
    load_engine_flats: Callable[[Path, str], FlatsColorizer]  # checkpoint, torch device
    load_daemon_flats: Callable[[Path | None], FlatsColorizer]  # connection file, as `load`
    errors: tuple[type[Exception], ...]  # what they raise when the daemon is absent or fails


metrics_option = click.option(
    "--metrics",
    "metric_names",
    default=",".join(DEFAULT_METRICS),
    show_default=True,
    callback=_metric_list,
    help="Comma-separated metrics to compute.",
)
inception_option = click.option(
    "--inception-weights",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="torchvision InceptionV3 state dict for the real FID; without it (and without the file "
    "in torch's hub cache) FID runs on EfficientNet-Lite0 features and says so in its name.",
)


def make_eval_command(daemon: DaemonSupply) -> click.Command:
    """`colord eval`, its `--daemon` served by `daemon`."""

    @click.command("eval")
    @click.option(
        "--model",
        "model_paths",
        multiple=True,
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="Generator checkpoint (.safetensors) to evaluate; repeat it to compare several "
        "(the first is the one the others are compared with).",
    )
    @click.option(
        "--daemon",
        "use_daemon",
        is_flag=True,
        help="Evaluate the model of the running `colord serve` (after any --model).",
    )
    @click.option(
        "--connection-file",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="With --daemon: the daemon's connection file; default: the per-user location.",
    )
    @click.option(
        "--images",
        type=click.Path(exists=True, file_okay=False, path_type=Path),
        default=None,
        help="Held-out folder of colour images (searched recursively): self and cross reference.",
    )
    @click.option(
        "--line-art",
        type=click.Path(exists=True, file_okay=False, path_type=Path),
        default=None,
        help="Drawn line art for the held-out images (same relative path and stem); XDoG "
        "where absent.",
    )
    @click.option(
        "--spair",
        type=click.Path(exists=True, file_okay=False, path_type=Path),
        default=None,
        help="SPair-71k folder: adds SC-PSNR on its annotated keypoint pairs (paper Table 2).",
    )
    @click.option(
        "--spair-split", type=click.Choice(SPAIR_SPLITS), default="test", show_default=True
    )
    @click.option(
        "--spair-category",
        "spair_categories",
        multiple=True,
        help="Only this SPair-71k category (repeatable; the paper uses cat, dog and car).",
    )
    @click.option(
        "--out",
        type=click.Path(file_okay=False, path_type=Path),
        default=Path("eval"),
        show_default=True,
        help="Folder for eval.md, eval.json and contact_sheet.png.",
    )
    @click.option(
        "--probes",
        "run_probes",
        is_flag=True,
        help="Also colour the synthetic probes (flat shapes, the reference the same drawing "
        "warped) and report per region whether it took its own colour.",
    )
    @click.option(
        "--flats",
        "run_flats",
        is_flag=True,
        help="Evaluate the flats instead, on the --images that have --line-art: region colour "
        "accuracy, PSNR off the lines and one colour per region of the flats, the plain output "
        "they are made from and the mean-colour baseline (flats.md, flats.json, "
        "flats_contact_sheet.png).",
    )
    @click.option("--size", default=256, show_default=True, help="Evaluation resolution (÷16).")
    @click.option("--limit", default=0, show_default=True, help="Use at most N images (0 = all).")
    @click.option("--seed", default=0, show_default=True)
    @metrics_option
    @click.option(
        "--keypoints",
        default=64,
        show_default=True,
        help="SC-PSNR keypoint pairs per self-reference example.",
    )
    @click.option("--patch-size", default=11, show_default=True, help="SC-PSNR patch side (odd).")
    @click.option(
        "--contact-rows",
        default=6,
        show_default=True,
        help="Examples per setting on the contact sheet.",
    )
    @inception_option
    @click.option("--device", default="cpu", show_default=True, help="Torch device for the model.")
    def eval_command(
        model_paths: tuple[Path, ...],
        use_daemon: bool,
        connection_file: Path | None,
        images: Path | None,
        line_art: Path | None,
        spair: Path | None,
        spair_split: str,
        spair_categories: tuple[str, ...],
        run_probes: bool,
        run_flats: bool,
        out: Path,
        size: int,
        limit: int,
        seed: int,
        metric_names: tuple[str, ...],
        keypoints: int,
        patch_size: int,
        contact_rows: int,
        inception_weights: Path | None,
        device: str,
    ) -> None:
        """Measure a model on held-out images in the paper's self- and cross-reference settings,
        next to simple baselines; writes a markdown table, a JSON file and a contact sheet.
        Several models: each in a folder of its own under --out, and compare.md / compare.json
        beside them with 95 % bootstrap intervals."""
        from colord.training.evaluation import compare, evaluate

        if not model_paths and not use_daemon:
            raise click.UsageError("give --model PATH (one or more), --daemon, or both")
        if run_flats and (images is None or line_art is None or spair or run_probes):
            raise click.UsageError("--flats takes --images DIR and --line-art DIR, and no others")
        if images is None and spair is None and not run_probes:
            raise click.UsageError("give --images DIR, --spair DIR, --probes, or several")
        options = evaluate.EvalOptions(
            images=images,
            out=out,
            size=size,
            limit=limit,
            seed=seed,
            metrics=metric_names,
            keypoints=keypoints,
            patch_size=patch_size,
            contact_rows=contact_rows,
            inception_weights=inception_weights,
            device=device,
            line_art=line_art,
            spair=spair,
            spair_split=spair_split,
            spair_categories=spair_categories or None,
            probes=run_probes,
        )
        with user_errors(*daemon.errors):
            labelled = list(zip(compare.file_labels(model_paths), model_paths, strict=True))
            if run_flats:
                _evaluate_flats(daemon, labelled, use_daemon, connection_file, options)
                return
            models = [
                (
                    label,
                    partial(evaluate.load_checkpoint_colorizer, path, device=device, label=label),
                )
                for label, path in labelled
            ]
            if use_daemon:
                models.append(("daemon", partial(daemon.load, connection_file)))
            if len(models) == 1:
                report = evaluate.evaluate(models[0][1](), options)
                click.echo(report.markdown)
                written = list(report.paths.values())
            else:
                reports, comparison = compare.evaluate_and_compare(models, options)
                click.echo(comparison.markdown)
                written = [path for r in reports for path in r.paths.values()]
                written += comparison.paths.values()
        for path in written:
            click.echo(f"wrote {path}")

    return eval_command


def _evaluate_flats(
    daemon: DaemonSupply,
    labelled: list[tuple[str, Path]],
    use_daemon: bool,
    connection_file: Path | None,
    options: EvalOptions,
) -> None:
    """`colord eval --flats`: each model's flats report, in --out, or for several models in a
    folder each under it."""
    from colord.training.evaluation import flats_report

    loaders = [
        (label, partial(daemon.load_engine_flats, path, options.device)) for label, path in labelled
    ]
    if use_daemon:
        loaders.append(("daemon", partial(daemon.load_daemon_flats, connection_file)))
    for label, load in loaders:
        folder = options.out if len(loaders) == 1 else options.out / label
        report = flats_report.evaluate(load(), replace(options, out=folder))
        click.echo(report.markdown)
        for path in report.paths.values():
            click.echo(f"wrote {path}")


@click.command("ablate")
@click.option(
    "--data",
    "images_dir",
    type=click.Path(exists=True, file_okay=False),
    required=True,
    help="Training images (every row trains on them).",
)
@click.option(
    "--held-out",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    required=True,
    help="Held-out images every row is evaluated on.",
)
@click.option(
    "--line-art",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Drawn line art paired with the held-out images (same stems); else XDoG sketches.",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Training config file (TOML); default: the `quick` preset.",
)
@click.option("--preset", default=None, help="Training preset (paper, quick) instead of --config.")
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="SECTION.KEY=VALUE",
    help="Config override applied to every row (repeatable).",
)
@click.option(
    "--steps", type=click.IntRange(min=1), default=None, help="Training steps per row: the budget."
)
@click.option(
    "--minutes",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Training wall time per row instead of --steps: an equal CPU-time budget.",
)
@click.option(
    "--tables",
    default="losses,aggregation",
    show_default=True,
    help="Which ablations: losses (Table 3), aggregation (Table 4), correspondence (colord's "
    "levers, on top of the given config).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("runs/ablation"),
    show_default=True,
)
@click.option("--size", default=256, show_default=True, help="Evaluation resolution (÷16).")
@click.option("--limit", default=0, show_default=True, help="Evaluate on at most N images.")
@metrics_option
@inception_option
@click.option("--device", default="cpu", show_default=True, help="Torch device for evaluation.")
def ablate_command(
    images_dir: str,
    held_out: Path,
    line_art: Path | None,
    config_path: str | None,
    preset: str | None,
    overrides: tuple[str, ...],
    steps: int | None,
    minutes: float | None,
    tables: str,
    out: Path,
    size: int,
    limit: int,
    metric_names: tuple[str, ...],
    inception_weights: Path | None,
    device: str,
) -> None:
    """Train and evaluate the rows of the paper's Tables 3 and 4 (or colord's levers) on a given
    budget."""
    if (steps is None) == (minutes is None):
        raise click.UsageError("give the budget as --steps or --minutes (one of them)")
    from colord.training.evaluation.ablation import AblationOptions, ablation_markdown, run_ablation
    from colord.training.train.config import load_config

    with user_errors():
        base = load_config(
            config_path,
            preset=None if config_path else (preset or "quick"),
            overrides=[f"data.images={images_dir}", *overrides],
        )
        summary = run_ablation(
            AblationOptions(
                base=base,
                held_out=held_out,
                out=out,
                steps=steps or 0,
                minutes=minutes or 0.0,
                tables=tuple(name.strip() for name in tables.split(",") if name.strip()),
                eval=EvalOptions(
                    images=held_out,
                    line_art=line_art,
                    out=out,
                    size=size,
                    limit=limit,
                    metrics=metric_names,
                    inception_weights=inception_weights,
                    device=device,
                ),
            )
        )
    click.echo(ablation_markdown(summary))
    click.echo(f"wrote {out / 'ablation.md'} and {out / 'ablation.json'}")
