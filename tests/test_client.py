"""A real `colord serve` process on 127.0.0.1 with the tiny model, driven by the Python client,
raw ZeroMQ sockets and the CLI: round trips, error codes, tokens, concurrency, overload and
shutdown."""

from __future__ import annotations

import importlib.metadata
import os
import signal
import stat
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq
from conftest import draw_line_art, draw_reference
from daemon_helpers import CLI, RunningDaemon, start_daemon

from colord.daemon import protocol
from colord.daemon.client import Client, DaemonNotRunning, DaemonTimeout, ErrorReply
from colord.daemon.connection import write_connection
from colord.daemon.engine import Engine
from colord.daemon.job import Job
from colord.plugins.wire.colord_protocol import (
    DEFAULT_MAX_SIDE,
    Connection,
    Limits,
    read_connection,
)

VERSION = importlib.metadata.version("colord")


@pytest.fixture(scope="module")
def daemon(tiny_checkpoint: Path) -> Iterator[RunningDaemon]:
    with start_daemon(tiny_checkpoint) as running:
        yield running


@pytest.fixture(scope="module")
def engine(tiny_checkpoint: Path) -> Engine:
    return Engine(tiny_checkpoint, device="cpu", warmup=False)


def dealer(daemon: RunningDaemon) -> zmq.Socket:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 60_000)
    sock.connect(daemon.endpoint)
    return sock


def colorize_body(request_id: int, token: str, size: int = 64) -> bytes:
    args, _, _ = protocol.colorize_request_args(Job(draw_line_art(size, size)))
    return protocol.encode_request(request_id, "colorize", token, args)


def run_cli(
    *args: str, env: dict | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def test_ping_info_and_colorize_round_trips(daemon: RunningDaemon, engine: Engine) -> None:
    line_art, reference = draw_line_art(), draw_reference()
    with daemon.client() as client:
        assert client.ping() == {"pong": True, "version": VERSION}
        info = client.info()
        assert (info["version"], info["protocol"], info["preset"]) == (VERSION, 1, "tiny")
        assert (info["device"], info["dtype"], info["working_size"]) == ("cpu", "float32", "auto")
        assert info["limits"] == {
            "max_side": DEFAULT_MAX_SIDE,
            "max_message_bytes": Limits().max_message_bytes,
            "max_working_size": 1024,  # the engine's cap on CPU
            "queue_size": 8,
        }
        with_reference = client.colorize(line_art, reference)
        without_reference = client.colorize(line_art[..., 3], working_size=64, keep_lines=False)
    assert with_reference.image.shape == (96, 128, 4) and with_reference.image.dtype == np.uint8
    assert with_reference.timings["engine_ms"] > 0
    assert with_reference.timings["total_ms"] >= with_reference.timings["engine_ms"]
    expected = engine.colorize(line_art, reference).image
    np.testing.assert_array_equal(with_reference.image, expected)
    expected = engine.colorize(line_art[..., 3], working_size=64, keep_lines=False).image
    np.testing.assert_array_equal(without_reference.image, expected)


def test_sixteen_bit_line_art_matches_the_engine(daemon: RunningDaemon, engine: Engine) -> None:
    line_art = draw_line_art(48, 64).astype(np.uint16) * 257
    with daemon.client() as client:
        reply = client.colorize(line_art, draw_reference(32, 32))
    np.testing.assert_array_equal(
        reply.image, engine.colorize(line_art, draw_reference(32, 32)).image
    )


def test_connection_file_is_private_and_names_this_daemon(daemon: RunningDaemon) -> None:
    assert stat.S_IMODE(daemon.connection_file.stat().st_mode) == 0o600
    info = read_connection(daemon.connection_file)
    assert (info.pid, info.version, info.protocol) == (daemon.process.pid, VERSION, 1)
    assert len(info.token) == 32 and info.endpoint.startswith("tcp://127.0.0.1:")
    with Client.from_connection_file(daemon.connection_file, timeout=30) as client:
        assert client.ping()["pong"]


def wire_error_cases(token: str) -> dict[str, tuple[list[bytes], str]]:
    def packed(**overrides) -> bytes:
        message = {"v": 1, "id": 5, "op": "ping", "token": token}
        message.update(overrides)
        return msgpack.packb(message)

    def colorize(line_art=None, **options) -> bytes:
        line_art = line_art or {"width": 2, "height": 1, "format": "GRAY8", "data": b"ab"}
        return packed(op="colorize", args={"line_art": line_art, "options": options})

    return {
        "not msgpack": ([b"\xc1\x00"], "malformed"),
        "not a map": ([msgpack.packb("ping")], "malformed"),
        "two frames": ([packed(), packed()], "malformed"),
        "no version": ([msgpack.packb({"id": 5})], "version"),
        "version 2": ([packed(v=2)], "version"),
        "bad id": ([packed(id=[1])], "bad_request"),
        "no token": ([msgpack.packb({"v": 1, "id": 5, "op": "ping"})], "unauthorized"),
        "wrong token": ([packed(token="0" * 32)], "unauthorized"),
        "unknown op": ([packed(op="shutdown")], "unknown_op"),
        "no args": ([packed(op="colorize")], "bad_request"),
        "bad option": ([colorize(keep_lines="yes")], "bad_request"),
        "odd working size": ([colorize(working_size=100)], "bad_request"),
        "unknown format": (
            [colorize({"width": 1, "height": 1, "format": "X", "data": b""})],
            "bad_image",
        ),
        "short data": (
            [colorize({"width": 2, "height": 2, "format": "GRAY8", "data": b"ab"})],
            "bad_image",
        ),
        "too large": (
            [colorize({"width": 16385, "height": 1, "format": "GRAY8", "data": b""})],
            "too_large",
        ),
    }


def test_every_error_case_gets_its_code_and_the_daemon_keeps_serving(
    daemon: RunningDaemon,
) -> None:
    sock = dealer(daemon)
    try:
        for name, (frames, code) in wire_error_cases(daemon.token).items():
            sock.send_multipart(frames)
            reply = protocol.decode_reply(sock.recv())
            assert (reply.ok, reply.error_code) == (False, code), name
            assert reply.error_message, name
            readable_id = code not in ("malformed", "version") and name != "bad id"
            assert reply.id == (5 if readable_id else None), name
        sock.send(protocol.encode_request(6, "ping", daemon.token))
        assert protocol.decode_reply(sock.recv()).result["pong"] is True
    finally:
        sock.close()


def test_a_wrong_token_is_refused_for_every_op(daemon: RunningDaemon) -> None:
    with Client(daemon.endpoint, "f" * 32, timeout=30) as client:
        for call in (client.ping, client.info, lambda: client.colorize(draw_line_art(16, 16))):
            with pytest.raises(ErrorReply) as refused:
                call()
            assert refused.value.code == "unauthorized"
    with (
        Client(daemon.endpoint, daemon.token[:-1] + "x", timeout=30) as client,
        pytest.raises(ErrorReply, match="token"),
    ):
        client.ping()


def test_client_says_when_no_daemon_runs(tmp_path: Path) -> None:
    with pytest.raises(DaemonNotRunning, match="not running"):
        Client.from_connection_file(tmp_path / "absent.json")
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = Connection("tcp://127.0.0.1:9", "a" * 32, dead.pid, VERSION)
    path = write_connection(stale, tmp_path / "stale.json")
    with pytest.raises(DaemonNotRunning) as not_running:
        Client.from_connection_file(path)
    assert not_running.value.code == "not_running"
    with Client("tcp://127.0.0.1:9", "a" * 32, timeout=0.2) as client, pytest.raises(DaemonTimeout):
        client.ping()


def test_ping_command(daemon: RunningDaemon, tmp_path: Path) -> None:
    answered = run_cli("ping", "--connection-file", str(daemon.connection_file))
    assert answered.returncode == 0, answered.stderr
    assert f"colord daemon {VERSION}" in answered.stdout and "round trip" in answered.stdout
    missing = run_cli("ping", env={"COLORD_CONNECTION_FILE": str(tmp_path / "none.json")})
    assert missing.returncode != 0
    assert "not running" in missing.stderr


def test_a_remote_bind_is_refused_with_the_ssh_advice() -> None:
    refused = run_cli("serve", "--bind", "tcp://0.0.0.0:*")
    assert refused.returncode == 2 and "ssh -N -L 5547:127.0.0.1:5547" in refused.stderr
    no_flag = run_cli("serve", "--bind", "tcp://0.0.0.0:*", "--allow-remote")
    assert no_flag.returncode == 2 and "--allow-remote" in no_flag.stderr


def test_serve_needs_a_usable_model(tmp_path: Path) -> None:
    connection_file = tmp_path / "c.json"
    result = run_cli(
        "serve", "--bind", "tcp://127.0.0.1:*", "--connection-file",
        str(connection_file), "--model", str(tmp_path / "missing.safetensors"),
    )  # fmt: skip
    assert result.returncode != 0 and "missing.safetensors" in result.stderr
    assert not connection_file.exists()


def test_a_second_daemon_on_the_same_endpoint_fails_and_leaves_the_first_alone(
    daemon: RunningDaemon, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    before = daemon.connection_file.read_text()
    for connection_file, message in (
        (tmp_path / "other.json", "already in use"),
        (daemon.connection_file, "Another colord daemon"),
    ):
        second = run_cli(
            "serve", "--model", str(tiny_checkpoint), "--device", "cpu", "--bind",
            daemon.endpoint, "--connection-file", str(connection_file),
        )  # fmt: skip
        assert second.returncode != 0
        assert message in second.stderr
    assert daemon.connection_file.read_text() == before
    assert not (tmp_path / "other.json").exists()
    with daemon.client() as client:
        assert client.ping()["pong"]


@pytest.mark.slow
def test_eight_concurrent_clients_get_their_own_pixels(
    daemon: RunningDaemon, engine: Engine
) -> None:
    inputs = [
        (draw_line_art(32, 48), None),
        (draw_line_art(48, 32), draw_reference(32, 32)),
        (draw_line_art(32, 32)[..., 3], draw_reference(16, 48)),
        (255 - draw_line_art(16, 32)[..., 3], None),
    ]
    expected = [engine.colorize(line_art, reference).image for line_art, reference in inputs]
    failures: list[str] = []

    def client_run(index: int) -> None:
        try:
            with daemon.client() as client:
                for number in range(50):
                    choice = (index + number) % len(inputs)
                    reply = client.colorize(*inputs[choice])
                    if not np.array_equal(reply.image, expected[choice]):
                        failures.append(f"client {index} request {number}: wrong pixels")
        except Exception as error:
            failures.append(f"client {index}: {error!r}")

    threads = [threading.Thread(target=client_run, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


@pytest.mark.slow
def test_replies_are_matched_by_id_on_one_socket(daemon: RunningDaemon) -> None:
    sock = dealer(daemon)
    try:
        sizes = {request_id: 16 + 16 * (request_id % 3) for request_id in range(8)}
        for request_id, size in sizes.items():
            sock.send(colorize_body(request_id, daemon.token, size))
        for _ in sizes:
            reply = protocol.decode_reply(sock.recv())
            assert reply.ok, reply.error_message
            assert reply.result["image"]["width"] == sizes[reply.id]
    finally:
        sock.close()


@pytest.mark.slow
def test_busy_under_overload_then_clean_exit_on_sigint(tiny_checkpoint: Path) -> None:
    limits = ["--queue-size", "1", "--max-side", "256"]  # 1 MiB and 64 KiB messages
    with start_daemon(tiny_checkpoint, extra_args=limits) as daemon:
        oversized = dealer(daemon)  # ZeroMQ drops a peer whose message exceeds MAXMSGSIZE
        oversized.send(bytes(2 << 20))
        assert oversized.poll(1000) == 0
        oversized.close()
        with daemon.client() as client:
            assert client.info()["limits"]["max_message_bytes"] == (1 << 20) + (1 << 16)
        sock = dealer(daemon)
        try:
            burst = 8
            for request_id in range(burst):
                sock.send(colorize_body(request_id, daemon.token, size=128))
            replies = [protocol.decode_reply(sock.recv()) for _ in range(burst)]
        finally:
            sock.close()
        codes = [reply.error_code if not reply.ok else "ok" for reply in replies]
        assert sorted(reply.id for reply in replies) == list(range(burst))
        assert "busy" in codes and "ok" in codes and set(codes) <= {"ok", "busy"}
        assert daemon.stop(signal.SIGINT) == 0
        assert not daemon.connection_file.exists()


def test_idle_exit_stops_the_daemon_cleanly(tiny_checkpoint: Path) -> None:
    with start_daemon(tiny_checkpoint, extra_args=["--idle-exit", "0.05", "-v"]) as daemon:
        assert daemon.process.wait(timeout=60) == 0  # three seconds without a request
        assert not daemon.connection_file.exists()
        assert "no request for 3 s: stopping" in daemon.log()


@pytest.mark.slow
def test_sigterm_answers_requests_in_flight_and_exits_cleanly(tiny_checkpoint: Path) -> None:
    with start_daemon(tiny_checkpoint) as daemon:
        sock = dealer(daemon)
        try:
            for request_id in range(3):
                sock.send(colorize_body(request_id, daemon.token, size=512))
            sock.send(protocol.encode_request("p", "ping", daemon.token))
            first = protocol.decode_reply(sock.recv())  # the ping: all three are received
            assert first.id == "p"
            daemon.process.send_signal(signal.SIGTERM)
            replies = [protocol.decode_reply(sock.recv()) for _ in range(3)]
        finally:
            sock.close()
        assert sorted(reply.id for reply in replies) == [0, 1, 2]
        assert all(reply.ok for reply in replies)
        # The one SIGTERM is enough: wait for the exit without signalling again.
        assert daemon.process.wait(timeout=60) == 0
        assert not daemon.connection_file.exists()


def test_serve_caps_working_sizes_and_runs_eagerly_when_told(tiny_checkpoint: Path) -> None:
    args = ["--max-working-size", "64", "--eager"]
    with start_daemon(tiny_checkpoint, extra_args=args) as daemon, daemon.client() as client:
        info = client.info()
        assert info["limits"]["max_working_size"] == 64
        assert info["fast_path"] == "off"
        thin_lines = draw_line_art(256, 256)  # thin strokes: automatic sizing wants the most
        reply = client.colorize(thin_lines)
        assert reply.image.shape == (256, 256, 4)
        with pytest.raises(ErrorReply, match="64"):
            client.colorize(thin_lines, working_size=128)
