"""A real daemon under the requests an attacker on the same machine could send: nothing costly
before the token, bounded memory, too_large before any pixel work, a stable code for every
wrong-typed field and no traceback in the log."""

from __future__ import annotations

import contextlib
import socket
import struct
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq
from daemon_helpers import RunningDaemon, raw_dealer, start_daemon

from colord.daemon import protocol
from colord.daemon.client import ErrorReply

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins" / "wire"))
import colord_protocol
import colord_wire

FLOOD_MESSAGES = 12  # bounded: each sender stops after this many messages
FLOOD_MB = 30
RSS_BOUND_MB = 400  # the daemon's RSS may grow at most this much during the flood


@pytest.fixture(scope="module")
def daemon(tiny_checkpoint: Path) -> Iterator[RunningDaemon]:
    with start_daemon(tiny_checkpoint, extra_args=["--max-side", "64"]) as running:
        yield running


@pytest.fixture
def sock(daemon: RunningDaemon) -> Iterator[zmq.Socket]:
    with raw_dealer(daemon.endpoint) as dealer:
        yield dealer


def exchange(sock: zmq.Socket, body: bytes) -> protocol.Reply:
    sock.send(body)
    return protocol.decode_reply(sock.recv())


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def flood_bodies(token: str) -> list[bytes]:
    """Large unauthenticated messages: a huge array of empty maps with no header at all, and a
    request with a wrong token whose args are that array."""
    empty_maps = b"\xdd" + (FLOOD_MB << 20).to_bytes(4, "big") + b"\x80" * (FLOOD_MB << 20)
    header = msgpack.packb({"v": 1, "id": 1, "op": "colorize", "token": "f" * len(token)})
    five_entries = b"\x85" + header[1:] + msgpack.packb("args")  # the fifth: args, the array
    return [empty_maps, five_entries + empty_maps]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_an_unauthenticated_flood_is_refused_while_pings_are_answered(
    tiny_checkpoint: Path,
) -> None:
    with start_daemon(tiny_checkpoint) as daemon:  # the default limits: 1 GiB messages
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, 60_000)
        sock.connect(daemon.endpoint)
        try:
            flood_while_pinging(daemon, sock)
        finally:
            sock.close()


def flood_while_pinging(daemon: RunningDaemon, sock: zmq.Socket) -> None:
    bodies = flood_bodies(daemon.token)
    before = rss_mb(daemon.process.pid)
    codes: list[str] = []

    def flood() -> None:
        attacker = zmq.Context.instance().socket(zmq.DEALER)
        attacker.setsockopt(zmq.LINGER, 0)
        attacker.setsockopt(zmq.RCVTIMEO, 60_000)
        attacker.connect(daemon.endpoint)
        try:
            for count in range(FLOOD_MESSAGES):
                reply = exchange(attacker, bodies[count % len(bodies)])
                codes.append(str(reply.error_code))
        finally:
            attacker.close()

    sender = threading.Thread(target=flood)
    sender.start()
    pings = 0
    while sender.is_alive() and pings < 1000:
        reply = exchange(sock, protocol.encode_request(pings, "ping", daemon.token))
        assert (reply.id, reply.ok) == (pings, True)
        pings += 1
    sender.join(120)
    peak = rss_mb(daemon.process.pid)
    assert codes == ["malformed", "unauthorized"] * (FLOOD_MESSAGES // 2)
    assert pings > 0
    assert peak - before < RSS_BOUND_MB, (before, peak)
    assert "Traceback" not in daemon.log()


def test_working_size_above_the_device_cap_is_too_large(
    daemon: RunningDaemon, sock: zmq.Socket
) -> None:
    info = exchange(sock, protocol.encode_request("i", "info", daemon.token)).result
    assert info is not None
    cap = info["limits"]["max_working_size"]
    assert cap == 64  # the CPU cap (1024) is above --max-side, so max_side caps it
    line_art = protocol.array_to_image(np.full((8, 8), 255, np.uint8))
    args = colord_protocol.colorize_args(line_art.to_message(), None, {"working_size": cap + 16})
    reply = exchange(sock, protocol.encode_request(5, "colorize", daemon.token, args))
    assert (reply.id, reply.ok, reply.error_code) == (5, False, "too_large")
    assert "leave it automatic" in str(reply.error_message)


def test_an_oversize_canvas_fails_at_once_in_both_clients(daemon: RunningDaemon) -> None:
    wide = np.full((1, 65, 4), 255, np.uint8)
    with daemon.client() as client, pytest.raises(ErrorReply) as caught:
        client.colorize(wide)
    assert caught.value.code == "too_large" and "--max-side" in caught.value.message
    with (
        colord_wire.WireClient(daemon.endpoint, daemon.token, timeout=60) as wire,
        pytest.raises(colord_protocol.ErrorReply) as wire_caught,
    ):
        wire.colorize(colord_wire.Image(65, 1, "RGBA8", wide.tobytes()))
    assert wire_caught.value.code == "too_large"
    assert "at most 64 px a side" in colord_wire.user_message(wire_caught.value)


def test_the_daemon_itself_answers_an_oversize_side_too_large(
    daemon: RunningDaemon, sock: zmq.Socket
) -> None:
    line_art = protocol.WireImage(65, 1, "GRAY8", bytes(65))
    args = colord_protocol.colorize_args(line_art.to_message(), None, {})
    body = protocol.encode_request(6, "colorize", daemon.token, args)
    reply = exchange(sock, body)
    assert (reply.id, reply.error_code) == (6, "too_large")


@pytest.mark.parametrize("field", ["format", "result_format"])
@pytest.mark.parametrize("value", [["RGBA8"], {"RGBA8": 1}, b"RGBA8"], ids=["list", "map", "bin"])
def test_a_wrong_typed_format_gets_its_code_and_no_traceback(
    daemon: RunningDaemon, sock: zmq.Socket, field: str, value: object
) -> None:
    line_art = {"width": 1, "height": 1, "format": "GRAY8", "data": b"\0"}
    options: dict = {}
    if field == "format":
        line_art["format"] = value
    else:
        options["result_format"] = value
    message = {"v": 1, "id": 9, "op": "colorize", "token": daemon.token}
    message["args"] = {"line_art": line_art, "options": options}
    reply = exchange(sock, msgpack.packb(message))
    expected = "bad_image" if field == "format" else "bad_request"
    assert (reply.id, reply.ok, reply.error_code) == (9, False, expected)
    log = daemon.log()
    assert "Traceback" not in log and " ERROR " not in log


def partial_frame(endpoint: str, declared: int, sent: int) -> socket.socket:
    """A raw ZMTP connection (NULL, as a DEALER) that sends `sent` bytes of a frame of `declared`
    bytes and then keeps it unfinished."""
    host, port = endpoint.removeprefix("tcp://").rsplit(":", 1)
    conn = socket.create_connection((host, int(port)))
    conn.sendall(b"\xff" + bytes(8) + b"\x7f\x03\x00" + b"NULL".ljust(20, b"\0") + bytes(32))
    received = b""
    while len(received) < 64:
        received += conn.recv(64 - len(received))
    ready = b"\x05READY" + b"\x0bSocket-Type" + struct.pack(">I", 6) + b"DEALER"
    with contextlib.suppress(OSError):  # the daemon drops a frame above its message limit
        conn.sendall(bytes([0x04, len(ready)]) + ready)
        conn.sendall(b"\x02" + struct.pack(">Q", declared) + bytes(sent))
    return conn


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_unfinished_messages_hold_at_most_the_message_limit_per_connection(
    tiny_checkpoint: Path,
) -> None:
    """The stated total bound (docs/protocol.md, Transport): max_message_bytes per open
    connection; a frame declared above it is dropped unread."""
    with start_daemon(tiny_checkpoint, extra_args=["--max-side", "512"]) as daemon:
        with daemon.client() as client:
            limit = client.info()["limits"]["max_message_bytes"]
        before = rss_mb(daemon.process.pid)
        connections = 6
        held = [partial_frame(daemon.endpoint, limit, limit - 1) for _ in range(connections)]
        dropped = [partial_frame(daemon.endpoint, limit + 1, limit - 1) for _ in range(4)]
        try:
            with daemon.client() as client:
                assert client.ping()["pong"]  # the daemon has read what they sent
                grown = rss_mb(daemon.process.pid) - before
        finally:
            for conn in held + dropped:
                conn.close()
        bound = connections * limit / (1 << 20)
        assert grown <= bound + 48, (grown, bound)  # 48 MiB for the rest of the process
        assert grown >= bound / 2  # the connections did hold their frames: the test measures
