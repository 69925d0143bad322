"""`colord serve` (run the daemon) and `colord ping` (check that one answers)."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import click

from colord.daemon.cli_engine import WORKING_SIZE
from colord.daemon.server import (
    DEFAULT_ENDPOINT,
    DaemonStartError,
    EngineLike,
    ServeConfig,
    require_local_endpoint,
    run_daemon,
)
from colord.plugins.wire.colord_protocol import (
    DEFAULT_MAX_SIDE,
    DEFAULT_QUEUE_SIZE,
    DEFAULT_TIMEOUT,
    WORKING_SIZE_MULTIPLE,
    ColordError,
    Limits,
)


def open_engine(
    model_path: Path | None,
    *,
    device: str | None,
    working_size: int | None,
    max_working_size: int | None = None,
    fast: bool | None = None,
) -> EngineLike:
    """Load the model onto the device (without a path: the default model that ships with colord).

    torch is imported only here, after the endpoint and the connection file are claimed, so a
    daemon that cannot start says so at once. Raises DaemonStartError with the engine's sentence.
    """
    from colord.daemon import engine
    from colord.model import CheckpointError

    try:
        path = model_path or engine.default_checkpoint()
        return engine.Engine(
            path,
            device=device,
            working_size=working_size,
            max_working_size=max_working_size,
            fast=fast,
        )
    except (engine.EngineError, CheckpointError) as error:
        raise DaemonStartError(str(error)) from None


@click.command()
@click.option(
    "--model",
    "model_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Checkpoint (.safetensors) to serve; default: the built-in model.",
)
@click.option("--device", default=None, help="cuda, cuda:1, mps or cpu; default: the best one.")
@click.option(
    "--bind",
    "endpoint",
    default=DEFAULT_ENDPOINT,
    show_default=True,
    help="ZeroMQ endpoint to listen on, loopback or ipc:// only; tcp://127.0.0.1:* picks a "
    "free port.",
)
@click.option(
    "--connection-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the connection file; default: the per-user location.",
)
@click.option(
    "--queue-size",
    type=click.IntRange(min=1),
    default=DEFAULT_QUEUE_SIZE,
    show_default=True,
    help="Colorize requests that may wait before the daemon answers busy.",
)
@click.option(
    "--size",
    "--working-size",
    "working_size",
    type=WORKING_SIZE,
    default="auto",
    show_default=True,
    help="Long side the model works at when a request names none: auto (chosen per canvas "
    "from its stroke width) or a multiple of 16.",
)
@click.option(
    "--max-working-size",
    type=click.IntRange(min=WORKING_SIZE_MULTIPLE),
    default=None,
    help="Largest working size, automatic or requested (a multiple of 16) [default: 2048 on "
    "CUDA, 1024 elsewhere].",
)
@click.option(
    "--eager",
    is_flag=True,
    help="Run the generator in plain PyTorch, without the fast path (OpenVINO or ONNX Runtime "
    "on the CPU, compiled on CUDA).",
)
@click.option(
    "--max-side",
    type=click.IntRange(min=WORKING_SIZE_MULTIPLE),
    default=DEFAULT_MAX_SIDE,
    show_default=True,
    help="Longest image side accepted; the largest message accepted follows from it.",
)
@click.option(
    "--idle-exit",
    "idle_exit_minutes",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="MINUTES",
    help="Exit (removing the connection file) after this many minutes without a request; "
    "default: never. The plug-ins start the daemon with it.",
)
@click.option(
    "--request-budget",
    "request_budget",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_TIMEOUT,
    show_default=True,
    metavar="SECONDS",
    help="A colorize request still waiting for the model after this long is answered busy "
    "instead of run (the clients wait this long by default).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log every request and every refusal.")
def serve(
    model_path: Path | None,
    device: str | None,
    endpoint: str,
    connection_file: Path | None,
    queue_size: int,
    working_size: int | None,
    max_working_size: int | None,
    eager: bool,
    max_side: int,
    idle_exit_minutes: float | None,
    request_budget: float,
    verbose: bool,
) -> None:
    """Run the colorization daemon that the painting-app plug-ins talk to."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s colord %(levelname)s %(message)s",
    )
    try:
        require_local_endpoint(endpoint)  # the server checks too; here it is a usage error
    except DaemonStartError as error:
        raise click.UsageError(str(error)) from None

    def load() -> EngineLike:
        return open_engine(
            model_path,
            device=device,
            working_size=working_size,
            max_working_size=max_working_size,
            fast=False if eager else None,
        )

    # The daemon mostly waits for requests: OpenMP threads spinning after each forward pass
    # would take the CPU from the transport (and from the painting app). Set before torch loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    config = ServeConfig(
        endpoint=endpoint,
        limits=Limits(max_side=max_side, queue_size=queue_size),
        connection_file=connection_file,
        idle_exit_s=None if idle_exit_minutes is None else idle_exit_minutes * 60.0,
        request_budget_s=request_budget,
    )
    try:
        run_daemon(config, load, on_ready=lambda ready: click.echo(ready, err=True))
    except DaemonStartError as error:
        raise click.ClickException(str(error)) from None


@click.command()
@click.option(
    "--connection-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The daemon's connection file; default: the per-user location.",
)
@click.option("--timeout", type=float, default=5.0, show_default=True, help="Seconds to wait.")
def ping(connection_file: Path | None, timeout: float) -> None:
    """Check that the daemon answers; print the round trip and its version."""
    from colord.daemon.client import Client

    try:
        with Client.from_connection_file(connection_file, timeout=timeout) as client:
            started = time.perf_counter()
            result = client.ping()
            round_trip_ms = (time.perf_counter() - started) * 1000.0
    except ColordError as error:
        raise click.ClickException(error.message) from None
    click.echo(
        f"colord daemon {result.get('version', '?')} at {client.endpoint}: "
        f"round trip {round_trip_ms:.2f} ms"
    )
