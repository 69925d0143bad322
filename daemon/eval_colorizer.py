"""`colord eval --daemon`: the running daemon as a colorizer that training's evaluation measures.

Here rather than in training/, so that training never imports the daemon; the eval command is
assembled here with this colorizer and registered in the CLI's command table.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from colord.daemon.client import Client, ColordError
from colord.training.cli_eval import DaemonSource, make_eval_command


class DaemonColorizer:
    """The model of a running `colord serve`, asked one image at a time at the sketch's size."""

    def __init__(self, client: Client) -> None:
        self.client = client
        info = client.info()
        self.name = f"daemon: {info['model']} ({info['preset']}, {info['device']})"

    def __call__(
        self, sketches: Sequence[np.ndarray], references: Sequence[np.ndarray] | None
    ) -> list[np.ndarray]:
        outputs = []
        for i, sketch in enumerate(sketches):
            reply = self.client.colorize(
                sketch,
                None if references is None else references[i],
                working_size=max(sketch.shape),
                keep_lines=False,
            )
            outputs.append(np.ascontiguousarray(reply.image[..., :3]))
        return outputs


def load_daemon_colorizer(connection_file: Path | None = None) -> DaemonColorizer:

    return DaemonColorizer(Client.from_connection_file(connection_file))


eval_command = make_eval_command(DaemonSource(load_daemon_colorizer, (ColordError,)))
