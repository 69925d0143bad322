"""Start `colord serve` from the painting app and wait until it is ready.

`colord plugin install` writes LAUNCH_FILE beside this module: the command that starts the colord
it was installed from (an absolute Python executable and its arguments). `Startup` runs it detached,
so the daemon outlives the app's request (and, with `--idle-exit`, frees its memory when unused),
and the plug-in polls it until the daemon's connection file names a live process. Standard library
only; shipped into both plug-in bundles.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__:  # inside a plug-in's package (Krita) or colord.plugins.wire
    from . import colord_protocol as protocol
    from .colord_plugin_core import PluginError
else:  # beside a plug-in's main script (GIMP), or on sys.path
    import colord_protocol as protocol
    from colord_plugin_core import PluginError

LAUNCH_FILE = "colord_launch.json"
START_TIMEOUT_S = 180.0  # a cold start loads PyTorch and the model; slow disks take a while
LOG_NAME = "daemon.log"  # beside the connection file
# Variables of the app's own Python that would make another Python load the app's modules.
_APP_PYTHON_VARIABLES = ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "PYTHONEXECUTABLE")


def launch_command(path: Path | None = None) -> list[str] | None:
    """The recorded command that starts the daemon, or None when none was recorded."""
    path = Path(__file__).with_name(LAUNCH_FILE) if path is None else path
    try:
        command = json.loads(path.read_text(encoding="utf-8")).get("command")
    except (OSError, ValueError, AttributeError):
        return None
    if (
        not isinstance(command, list)
        or not command
        or not all(isinstance(part, str) for part in command)
    ):
        return None
    return command


def log_path() -> Path:
    return protocol.connection_file_path().parent / LOG_NAME


def _spawn(command: list[str], log: Path) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    environment = {k: v for k, v in os.environ.items() if k not in _APP_PYTHON_VARIABLES}
    options: dict[str, Any] = {}
    if sys.platform == "win32":
        options["creationflags"] = (
            subprocess.DETACHED_PROCESS | subprocess.CREATE_NEW_PROCESS_GROUP  # type: ignore[attr-defined]
        )
    else:
        options["start_new_session"] = True  # not killed with the app, nor by its Ctrl-C
    with open(log, "ab") as output:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=environment,
            close_fds=True,
            **options,
        )


class Startup:
    """One start of the daemon: `poll()` until it returns the daemon's connection."""

    def __init__(
        self,
        command: list[str],
        *,
        read: Callable[[], protocol.Connection] = protocol.read_connection,
        timeout: float = START_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._clock = clock
        self._deadline = clock() + timeout
        self._started = clock()
        self.log = log_path()
        try:
            self.process = _spawn(command, self.log)
        except OSError as error:
            raise PluginError(
                f"The colord daemon is not running and could not be started ({error}): start "
                "`colord serve` yourself, or run `colord plugin install` again from the colord "
                "you use."
            ) from None

    @property
    def seconds(self) -> float:
        return self._clock() - self._started

    def poll(self) -> protocol.Connection | None:
        """The daemon's connection once it is up; None while it starts; PluginError if it fails."""
        try:
            return self._read()
        except protocol.DaemonNotRunning:
            pass
        code = self.process.poll()
        if code is not None:
            raise PluginError(
                f"The colord daemon stopped while starting (exit code {code}); {self.log} says why."
            )
        if self._clock() > self._deadline:
            raise PluginError(
                f"The colord daemon did not become ready in {self.seconds:.0f} s; {self.log} "
                "says what it is doing."
            )
        return None

    def progress(self) -> str:
        return f"Starting the colord daemon… {self.seconds:.0f} s"
