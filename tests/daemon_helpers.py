"""Start a real `colord serve` process for a test, wait until it listens, stop it.

    with start_daemon(tiny_checkpoint) as daemon:
        with daemon.client() as client:
            client.ping()

Each daemon binds a free loopback port (tcp://127.0.0.1:*) and writes its own connection file in
a fresh temporary folder, so tests never meet a user's daemon or each other's.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zmq

from colord.daemon.client import Client
from colord.plugins.wire import colord_plugin_core
from colord.plugins.wire.colord_protocol import ColordError, read_connection

START_TIMEOUT = 120.0
CLI = [sys.executable, "-c", "from colord.daemon.cli import main; main()"]


@dataclass
class RunningDaemon:
    endpoint: str
    token: str
    connection_file: Path
    process: subprocess.Popen
    log_file: Path

    def client(self, timeout: float = 60.0) -> Client:
        return Client(self.endpoint, self.token, timeout=timeout)

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        """Send sig (if still running), wait, and return the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            message = f"the daemon did not stop within {timeout} s:\n{self.log()}"
            raise AssertionError(message) from None

    def __enter__(self) -> RunningDaemon:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process.poll() is None:
            self.stop()
        shutil.rmtree(self.log_file.parent, ignore_errors=True)


def serve_command(
    model_path: Path, connection_file: Path, extra_args: Sequence[str] = (), device: str = "cpu"
) -> list[str]:
    return [
        *CLI,
        "serve",
        "--model",
        str(model_path),
        "--device",
        device,
        "--bind",
        "tcp://127.0.0.1:*",
        "--connection-file",
        str(connection_file),
        *extra_args,
    ]


def start_daemon(
    model_path: Path,
    *,
    extra_args: Sequence[str] = (),
    device: str = "cpu",
    timeout: float = START_TIMEOUT,
) -> RunningDaemon:
    """Start `colord serve` on a free loopback port; return once its connection file is written."""
    folder = Path(tempfile.mkdtemp(prefix="colord-daemon-"))
    connection_file = folder / "daemon.json"
    log_file = folder / "daemon.log"
    env = {**os.environ, "COLORD_CONNECTION_FILE": str(connection_file)}
    with open(log_file, "wb") as log:
        process = subprocess.Popen(
            serve_command(model_path, connection_file, extra_args, device),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    deadline = time.monotonic() + timeout
    while True:
        try:
            info = read_connection(connection_file)
            break
        except ColordError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            if process.poll() is None:
                process.kill()
            process.wait()
            output = log_file.read_text(errors="replace")
            shutil.rmtree(folder, ignore_errors=True)
            raise RuntimeError(f"colord serve did not start (exit {process.returncode}):\n{output}")
        time.sleep(0.05)
    return RunningDaemon(info.endpoint, info.token, connection_file, process, log_file)


@contextmanager
def raw_dealer(endpoint: str) -> Iterator[zmq.Socket]:
    """A bare DEALER socket on the daemon, for sending hand-made frames."""
    dealer = zmq.Context.instance().socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.setsockopt(zmq.RCVTIMEO, 60_000)
    dealer.connect(endpoint)
    try:
        yield dealer
    finally:
        dealer.close()


def reference_as_sent(reference: np.ndarray, working_size: int | None, info: dict) -> np.ndarray:
    """An (H, W, 4) reference as the plug-ins send it to a daemon that answered `info`:
    subsampled by `colord_plugin_core.shrunk_reference` to what the working size can use."""
    height, width = reference.shape[:2]
    layer = colord_plugin_core.LayerPixels("", 0, 0, width, height, reference.tobytes())
    longest = working_size or colord_plugin_core.largest_working_size(info)
    sent = colord_plugin_core.shrunk_reference(layer, longest)
    return np.frombuffer(sent.data, np.uint8).reshape(sent.height, sent.width, 4)
