"""`colord plugin install|pack krita|gimp`: put the plug-ins where the painting apps find them."""

from __future__ import annotations

import shlex
from pathlib import Path

import click

from colord.daemon.plugin_install import HOSTS, PluginInstallError, daemon_command, install, pack

_NEXT_STEP = {
    "krita": "Restart Krita; the action is Tools › Scripts › Colorize with Reference…",
    "gimp": "Restart GIMP; the command is Layer › Colorize with Reference…",
}


@click.group("plugin")
def plugin() -> None:
    """Install the Krita or GIMP 3 plug-in, or pack it as a zip."""


@plugin.command("install")
@click.argument("host", type=click.Choice(HOSTS))
@click.option(
    "--dest",
    type=click.Path(file_okay=False, path_type=Path),
    help="Krita's data folder or GIMP 3's config folder (default: the per-user one of this OS).",
)
@click.option(
    "--kritarc",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Krita only: the settings file that enables the plug-in (default: this OS's kritarc).",
)
@click.option(
    "--force",
    is_flag=True,
    help="Overwrite plug-in files that were changed since colord installed them.",
)
def install_command(host: str, dest: Path | None, kritarc: Path | None, force: bool) -> None:
    """Copy the HOST plug-in (with its wire client) into the app's plug-in folder and enable it."""
    try:
        report = install(host, dest, kritarc=kritarc, force=force)
    except PluginInstallError as error:
        raise click.ClickException(str(error)) from error
    click.echo(
        f"Installed the {host} plug-in into {report.destination} ({len(report.files)} files)."
    )
    for path in report.overwritten:
        click.echo(f"Overwrote {path}, which had been changed (--force).")
    for path in report.removed:
        click.echo(f"Removed {path}, left by an earlier colord install.")
    if report.kritarc is not None:
        click.echo(f"Enabled it in {report.kritarc}.")
    if report.disabled_in is not None:
        click.echo(
            f"Left it disabled, as {report.disabled_in} says: enable it in Krita under "
            "Settings › Configure Krita › Python Plugin Manager."
        )
    command = " ".join(shlex.quote(part) for part in daemon_command())
    click.echo(f"When no daemon is running, the plug-in starts one with: {command}")
    click.echo(_NEXT_STEP[host])


@plugin.command("pack")
@click.argument("host", type=click.Choice(HOSTS))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the zip (default: colord_<host>.zip in the current folder).",
)
def pack_command(host: str, output: Path | None) -> None:
    """Write the HOST plug-in as a zip (Krita: Tools › Scripts › Import Python Plugin from File).

    A packed plug-in cannot start the daemon (the zip may go to another machine): run
    `colord serve` where it is used."""
    target = output if output is not None else Path(f"colord_{host}.zip")
    try:
        written = pack(host, target)
    except PluginInstallError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"Wrote {written}.")
