"""`colord train`: turn flags into one training config, check it, then run `train(cfg)`.

With `--nproc N` (N > 1) the command re-runs itself under torchrun, one process per device.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import click

from .config import ConfigError, TrainConfig, load_config


def build_config(
    *,
    data: str | None,
    lineart: str | None,
    config_file: str | None,
    preset: str | None,
    out: str | None,
    init: str | None,
    vgg_weights: str | None,
    no_triplet: bool,
    aggregation: str | None,
    overrides: tuple[str, ...],
) -> TrainConfig:
    """The config file (or preset), then the flags, then `--set` overrides, validated."""
    flags = {
        "data.images": data,
        "data.lineart": lineart,
        "run.out": out,
        "model.init": init,
        "loss.vgg_weights": vgg_weights,
        "model.aggregation": aggregation,
    }
    values = {name: value for name, value in flags.items() if value is not None}
    if no_triplet or (aggregation is not None and aggregation != "scft"):
        values["loss.triplet"] = 0.0  # the triplet loss only exists for SCFT's attention
    return load_config(config_file, preset=preset, values=values, overrides=overrides)


@click.command("train")
@click.option("--data", metavar="DIR", help="Folder of colour images (or a .csv/.jsonl manifest).")
@click.option("--lineart", metavar="DIR", help="Folder of drawn line art paired by file stem.")
@click.option(
    "--config", "config_file", type=click.Path(dir_okay=False), help="A TOML training config."
)
@click.option(
    "--preset",
    type=click.Choice(["paper", "quick"]),
    help="A shipped training config (default: paper).",
)
@click.option("--out", metavar="RUN_DIR", help="Run folder for logs, images and checkpoints.")
@click.option("--resume", is_flag=True, help="Continue the run in RUN_DIR from its last state.")
@click.option("--init", metavar="CKPT", help="Fine-tune from this generator checkpoint.")
@click.option("--vgg-weights", metavar="PATH", help="torchvision's ImageNet VGG19 weights file.")
@click.option("--no-triplet", is_flag=True, help="Train without the triplet loss (Table 3).")
@click.option(
    "--aggregation",
    type=click.Choice(["scft", "add", "adain"]),
    help="How reference features join the sketch's (Table 4 ablation).",
)
@click.option("--nproc", type=click.IntRange(min=1), default=1, help="Processes (GPUs) to use.")
@click.option("--dry-run", is_flag=True, help="Print the resolved config and train nothing.")
@click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override one config value."
)
def train_command(
    data: str | None,
    lineart: str | None,
    config_file: str | None,
    preset: str | None,
    out: str | None,
    resume: bool,
    init: str | None,
    vgg_weights: str | None,
    no_triplet: bool,
    aggregation: str | None,
    nproc: int,
    dry_run: bool,
    overrides: tuple[str, ...],
) -> None:
    """Train the SCFT colouriser on a folder of colour images."""
    if config_file and preset:
        raise click.UsageError("give --config or --preset, not both")
    try:
        cfg = build_config(
            data=data,
            lineart=lineart,
            config_file=config_file,
            preset=preset,
            out=out,
            init=init,
            vgg_weights=vgg_weights,
            no_triplet=no_triplet,
            aggregation=aggregation,
            overrides=overrides,
        )
    except ConfigError as error:
        raise click.ClickException(str(error)) from None
    if dry_run:
        click.echo(json.dumps(cfg.to_dict(), indent=2))
        click.echo("dry run: nothing trained", err=True)
        return
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        sys.exit(run_under_torchrun(nproc, cfg_args(click.get_current_context())))
    _run(cfg, resume)


def _run(cfg: TrainConfig, resume: bool) -> None:
    from colord.model import CheckpointError

    from .backbones import BackboneError
    from .loop import train

    is_main = os.environ.get("RANK", "0") == "0"
    logging.basicConfig(
        level=logging.INFO if is_main else logging.WARNING,
        format="%(asctime)s %(levelname)s %(message)s",
    )
    try:
        result = train(cfg, resume=resume)
    except (ConfigError, BackboneError, CheckpointError, FileNotFoundError) as error:
        raise click.ClickException(str(error)) from None
    if is_main:
        click.echo(
            f"trained {result.step} steps; model: {result.run_dir / 'generator.safetensors'}"
        )


def cfg_args(ctx: click.Context) -> list[str]:
    """This command's arguments again, without --nproc, for the processes torchrun starts."""
    args: list[str] = []
    for param in ctx.command.params:
        value = ctx.params[param.name]
        flag = param.opts[0]
        if param.name == "nproc" or value in (None, False, ()):
            continue
        if value is True:
            args.append(flag)
        elif isinstance(value, tuple):
            for item in value:
                args += [flag, item]
        else:
            args += [flag, str(value)]
    return args


def run_under_torchrun(nproc: int, args: list[str]) -> int:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "colord.training",
        *args,
    ]
    return subprocess.call(command)
