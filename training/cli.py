"""`colord train`: turn flags into one training config, check it, then run `train(cfg)`.

With `--nproc N` (N > 1) the command re-runs itself under torchrun, one process per device.
With `--init` and neither `--config` nor `--preset`, the fine-tune recipe (`finetune`) is used.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import click

from colord.training.train.config import ConfigError, TrainConfig, load_config

FINETUNE_PRESET = "finetune"  # training/configs/finetune.toml: the recipe for --init


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
    minutes: float | None = None,
    steps: int | None = None,
) -> TrainConfig:
    """The config file (or preset; the fine-tune recipe with `init`), then the flags, then `--set`
    overrides, validated."""
    if init and not config_file and not preset:
        preset = FINETUNE_PRESET
    flags = {
        "data.images": data,
        "data.lineart": lineart,
        "run.out": out,
        "model.init": init,
        "loss.vgg_weights": vgg_weights,
        "model.aggregation": aggregation,
        "run.max_minutes": minutes,
        "run.max_steps": steps,
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
    type=click.Choice(["paper", "quick", FINETUNE_PRESET]),
    help="A shipped training config (default: paper; finetune with --init).",
)
@click.option("--out", metavar="RUN_DIR", help="Run folder for logs, images and checkpoints.")
@click.option(
    "--init",
    metavar="CKPT",
    help="Fine-tune from this generator checkpoint (its architecture; the finetune recipe).",
)
@click.option(
    "--minutes",
    type=click.FloatRange(min=0, min_open=True),
    help="Stop after this much training time, with a checkpoint (run.max_minutes).",
)
@click.option(
    "--steps",
    type=click.IntRange(min=1),
    help="Stop after this many steps in all, with a checkpoint (run.max_steps).",
)
@click.option("--resume", is_flag=True, help="Continue the run in RUN_DIR from its last state.")
@click.option(
    "--accept-changed-data",
    is_flag=True,
    help="With --resume: train on the data as it is now, though files changed (reported).",
)
@click.option(
    "--extend",
    is_flag=True,
    help="With --resume: allow a longer or shorter schedule (optim.*_epochs), reported.",
)
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
    init: str | None,
    minutes: float | None,
    steps: int | None,
    resume: bool,
    accept_changed_data: bool,
    extend: bool,
    vgg_weights: str | None,
    no_triplet: bool,
    aggregation: str | None,
    nproc: int,
    dry_run: bool,
    overrides: tuple[str, ...],
) -> None:
    """Train the SCFT colouriser on a folder of colour images.

    Ctrl-C (SIGINT) or SIGTERM stops after the current step with a checkpoint; --resume goes on.
    """
    if config_file and preset:
        raise click.UsageError("give --config or --preset, not both")
    if (accept_changed_data or extend) and not resume:
        raise click.UsageError("--accept-changed-data and --extend go with --resume")
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
            minutes=minutes,
            steps=steps,
        )
    except ConfigError as error:
        raise click.ClickException(str(error)) from None
    if dry_run:
        click.echo(json.dumps(cfg.to_dict(), indent=2))
        click.echo("dry run: nothing trained", err=True)
        return
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        warn_about_cpu_processes(nproc, cfg)
        sys.exit(run_under_torchrun(nproc, cfg_args(click.get_current_context())))
    _run(cfg, resume, accept_changed_data=accept_changed_data, extend=extend)


def warn_about_cpu_processes(nproc: int, cfg: TrainConfig) -> None:
    """Several processes on the CPU split the same cores: no faster than one (measured on 2
    cores: 9.1 img/s with --nproc 2, 9.4 with one process)."""
    import torch

    if cfg.run.device == "cpu" or (cfg.run.device == "auto" and not torch.cuda.is_available()):
        click.echo(
            f"warning: no GPU here: --nproc {nproc} runs {nproc} processes on the same CPU cores, "
            "which will not train faster than one process (leave --nproc out)",
            err=True,
        )


def _run(cfg: TrainConfig, resume: bool, *, accept_changed_data: bool, extend: bool) -> None:
    from colord.model import CheckpointError
    from colord.training.train.backbones import BackboneError
    from colord.training.train.loop import CheckpointWriteError, ResumeOptions, train

    is_main = os.environ.get("RANK", "0") == "0"
    logging.basicConfig(
        level=logging.INFO if is_main else logging.WARNING,
        format="%(asctime)s %(levelname)s %(message)s",
    )
    options = ResumeOptions(accept_changed_data=accept_changed_data, extend=extend)
    try:
        result = train(cfg, resume=resume, options=options)
    except (
        ConfigError,
        BackboneError,
        CheckpointError,
        CheckpointWriteError,
        FileNotFoundError,
    ) as error:
        raise click.ClickException(str(error)) from None
    except KeyboardInterrupt:
        click.echo("interrupted: nothing saved since the last checkpoint", err=True)
        sys.exit(130)
    if is_main:
        click.echo(
            f"trained {result.step} steps; model: {result.run_dir / 'generator.safetensors'}"
        )
    if result.stopped_by is not None:
        if is_main:
            click.echo("stopped early: continue with the same command and --resume", err=True)
        sys.exit(128 + result.stopped_by)


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
