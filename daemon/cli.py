"""The `colord` command line: one click group whose commands live beside the code they drive.

Commands are imported only when run, so `colord --help` and `colord ping` stay fast and never
import torch.
"""

from __future__ import annotations

import importlib

import click

# command name -> "module:attribute" of a click command
COMMANDS: dict[str, str] = {
    "colorize": "colord.daemon.cli_engine:colorize_command",
    "models": "colord.daemon.cli_engine:models_command",
    "info": "colord.daemon.cli_engine:info_command",
    "ping": "colord.daemon.cli_serve:ping",
    "eval": "colord.daemon.eval_colorizer:eval_command",
    "ablate": "colord.training.cli_eval:ablate_command",
    "sketch": "colord.training.cli_sketch:sketch",
    "serve": "colord.daemon.cli_serve:serve",
    "train": "colord.training.cli:train_command",
    "plugin": "colord.daemon.cli_plugin:plugin",
    "data": "colord.training.cli_data:data",
}


class LazyGroup(click.Group):
    """A click group that imports each command's module on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        return getattr(importlib.import_module(module_name), attribute)


@click.group(cls=LazyGroup)
@click.version_option(package_name="colord")
def main() -> None:
    """colord: colour line art the way a reference picture is coloured."""
