"""The plug-ins' WireClient: against a real `colord serve` process for every op of protocol v1 and
its error cases, against a scripted pyzmq ROUTER for replies a correct daemon never sends, plus
reading the daemon's connection file and the standard-library-only promise in both bundle
layouts. (The connection-file rules themselves are tested once, in test_connection.py.)"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq
from daemon_helpers import RunningDaemon, start_daemon

from colord.daemon import connection as daemon_connection

ROOT = Path(__file__).resolve().parents[1]
WIRE_DIR = ROOT / "plugins" / "wire"
sys.path.insert(0, str(WIRE_DIR))
import colord_protocol  # noqa: E402
import colord_wire  # noqa: E402

Reply = bytes | tuple[bytes, ...]  # one frame, or the frames of one message
Handler = Callable[[dict], list[Reply]]


def wire_image(pixels: np.ndarray) -> colord_wire.Image:
    height, width, _ = pixels.shape
    return colord_wire.Image(width, height, "RGBA8", pixels.tobytes())


def pixels_of(image: colord_wire.Image) -> np.ndarray:
    return np.frombuffer(image.data, np.uint8).reshape(image.height, image.width, 4)


# --- against a real daemon --------------------------------------------------------------------


@pytest.fixture(scope="module")
def daemon(tiny_checkpoint: Path) -> Iterator[RunningDaemon]:
    with start_daemon(tiny_checkpoint) as running:
        yield running


@pytest.fixture
def client(daemon: RunningDaemon) -> Iterator[colord_wire.WireClient]:
    with colord_wire.WireClient.from_connection_file(daemon.connection_file, timeout=60) as wire:
        yield wire


def test_ping_answers_with_the_daemon_version(client: colord_wire.WireClient) -> None:
    assert client.ping() == {"pong": True, "version": "0.1.0"}


def test_info_describes_the_daemon(client: colord_wire.WireClient) -> None:
    info = client.info()
    assert info["protocol"] == 1
    assert info["preset"] == "tiny"
    assert info["device"] == "cpu"
    assert info["working_size"] == "auto"
    assert set(info["limits"]) == {
        "max_side",
        "max_message_bytes",
        "max_working_size",
        "queue_size",
    }


def test_colorize_returns_what_the_daemon_computes(
    daemon: RunningDaemon,
    client: colord_wire.WireClient,
    line_art_rgba: np.ndarray,
    reference_rgba: np.ndarray,
) -> None:
    image, timings = client.colorize(
        wire_image(line_art_rgba), wire_image(reference_rgba), working_size=64
    )
    assert image[:3] == (line_art_rgba.shape[1], line_art_rgba.shape[0], "RGBA8")
    assert set(timings) == {"queue_ms", "engine_ms", "forward_ms", "total_ms"}
    assert 0 < timings["forward_ms"] <= timings["engine_ms"]  # the model's share of the engine
    with daemon.client() as python_client:  # the daemon's own pyzmq + msgpack client
        expected = python_client.colorize(line_art_rgba, reference_rgba, working_size=64).image
    np.testing.assert_array_equal(pixels_of(image), expected)


def test_the_client_says_where_a_requests_time_went(
    client: colord_wire.WireClient, line_art_rgba: np.ndarray, reference_rgba: np.ndarray
) -> None:
    """`exchange_ms`: packing, sending, the reply (the daemon's time in it) and unpacking."""
    started = time.perf_counter()
    _, timings = client.colorize(
        wire_image(line_art_rgba), wire_image(reference_rgba), working_size=64
    )
    elapsed_ms = (time.perf_counter() - started) * 1000.0
    spent = client.exchange_ms
    assert set(spent) == {"encode", "send", "reply", "decode"}
    assert all(ms >= 0.0 for ms in spent.values())
    # the daemon works while the client sends and waits: it may take the request in before the
    # client's thread, preempted, returns from sending it
    assert spent["send"] + spent["reply"] >= timings["total_ms"]
    assert sum(spent.values()) <= elapsed_ms
    client.ping()  # the last request's, not a sum
    assert client.exchange_ms["reply"] < spent["reply"]


def test_result_format_bgra_swaps_red_and_blue(
    client: colord_wire.WireClient, line_art_rgba: np.ndarray, reference_rgba: np.ndarray
) -> None:
    line_art, reference = wire_image(line_art_rgba), wire_image(reference_rgba)
    rgba, _ = client.colorize(line_art, reference, working_size=64)
    bgra, _ = client.colorize(line_art, reference, working_size=64, result_format="BGRA8")
    assert bgra.format == "BGRA8"
    np.testing.assert_array_equal(pixels_of(bgra), pixels_of(rgba)[..., [2, 1, 0, 3]])


def test_no_reference_mode_and_options(
    client: colord_wire.WireClient, line_art_rgba: np.ndarray
) -> None:
    kept, _ = client.colorize(wire_image(line_art_rgba), None, working_size=32)
    plain, _ = client.colorize(wire_image(line_art_rgba), None, working_size=32, keep_lines=False)
    assert len(kept.data) == len(plain.data) == line_art_rgba.size
    assert kept.data != plain.data  # keep_lines reached the engine


def test_a_2048_square_rgba_canvas_round_trips(client: colord_wire.WireClient) -> None:
    line_art = np.zeros((2048, 2048, 4), np.uint8)
    line_art[::64, :, 3] = 255  # a grid of black strokes on transparent paper
    line_art[:, ::64, 3] = 255
    reference = np.full((256, 256, 4), (200, 120, 40, 255), np.uint8)
    image, timings = client.colorize(wire_image(line_art), wire_image(reference), working_size=256)
    assert (image.width, image.height, len(image.data)) == (2048, 2048, 2048 * 2048 * 4)
    result = pixels_of(image)
    assert (result[::64, :, :3] < 128).all()  # the strokes stay dark over the colour
    assert timings["engine_ms"] <= timings["total_ms"]


def test_replies_come_into_the_reply_buffer_reused_by_each_request(
    client: colord_wire.WireClient,
) -> None:
    line_art = np.zeros((256, 256, 4), np.uint8)  # a reply large enough to be worth it
    line_art[::32, :, 3] = 255
    expected, _ = client.colorize(wire_image(line_art), None, working_size=64)
    client.reply_buffer = buffer = bytearray()
    first, _ = client.colorize(wire_image(line_art), None, working_size=64)
    assert first.data == expected.data and first.data.obj is buffer
    size = len(buffer)
    second, _ = client.colorize(wire_image(line_art), None, working_size=64)
    assert second.data == expected.data and second.data.obj is buffer and len(buffer) == size


def test_wrong_token_is_unauthorized(daemon: RunningDaemon) -> None:
    with (
        colord_wire.WireClient(daemon.endpoint, "0" * 32, timeout=30) as wire,
        pytest.raises(colord_protocol.ErrorReply) as caught,
    ):
        wire.ping()
    assert caught.value.code == "unauthorized"
    assert "colord serve" in colord_wire.user_message(caught.value)


@pytest.mark.parametrize(
    ("image", "code"),
    [
        (colord_wire.Image(8, 8, "RGBA8", bytes(8 * 8 * 4 - 1)), "bad_image"),  # a byte short
        (colord_wire.Image(8, 8, "CMYK8", bytes(8 * 8 * 4)), "bad_image"),
        (colord_wire.Image(0, 8, "GRAY8", b""), "bad_image"),
        (colord_wire.Image(16385, 1, "GRAY8", bytes(16385)), "too_large"),
    ],
)
def test_bad_images_get_their_error_code(
    client: colord_wire.WireClient, image: colord_wire.Image, code: str
) -> None:
    with pytest.raises(colord_protocol.ErrorReply) as caught:
        client.colorize(image)
    assert caught.value.code == code
    assert client.ping()["pong"] is True  # the daemon keeps serving, the connection too


def test_a_bad_option_is_bad_request_before_anything_is_sent(line_art_rgba: np.ndarray) -> None:
    sent: list[dict] = []
    with (
        scripted_daemon(lambda request: sent.append(request) or []) as endpoint,
        colord_wire.WireClient(endpoint, "t", timeout=5) as wire,
    ):
        for options in ({"result_format": "PNG"}, {"working_size": 100}, {"keep_lines": 1}):
            with pytest.raises(colord_protocol.ProtocolError) as caught:
                wire.colorize(wire_image(line_art_rgba), **options)
            assert caught.value.code == "bad_request"
    assert sent == []


def test_a_stopped_daemon_times_out_then_answers_again(daemon: RunningDaemon) -> None:
    with colord_wire.WireClient.from_connection_file(daemon.connection_file, timeout=30) as wire:
        wire.ping()
        daemon.process.send_signal(signal.SIGSTOP)
        try:
            with pytest.raises(colord_protocol.DaemonTimeout) as caught:
                wire.ping(timeout=0.5)
        finally:
            daemon.process.send_signal(signal.SIGCONT)
        assert "0.5 seconds" in colord_wire.user_message(caught.value)
        assert wire.ping()["pong"] is True  # a fresh connection after the timeout


@pytest.mark.slow
def test_a_killed_daemon_is_a_lost_connection_then_not_running(tiny_checkpoint: Path) -> None:
    with start_daemon(tiny_checkpoint) as doomed:
        wire = colord_wire.WireClient.from_connection_file(doomed.connection_file, timeout=30)
        assert wire.ping()["pong"] is True
        doomed.process.kill()
        doomed.process.wait()
        with pytest.raises(colord_protocol.ConnectionLost):
            wire.info()
        with pytest.raises(colord_wire.DaemonNotRunning, match="nothing listens"):
            wire.ping()  # reconnecting finds nobody
        with pytest.raises(colord_wire.DaemonNotRunning, match="has exited") as stale:
            colord_wire.read_connection(doomed.connection_file)  # left behind by the kill
        assert "colord serve" in colord_wire.user_message(stale.value)


# --- against a scripted ROUTER: replies a correct daemon never sends --------------------------


@contextmanager
def scripted_daemon(handler: Handler) -> Iterator[str]:
    """A pyzmq ROUTER on loopback answering each request with the replies `handler` returns."""
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            if router.poll(50):
                routing_id, body = router.recv_multipart()
                for answer in handler(msgpack.unpackb(body)):
                    frames = list(answer) if isinstance(answer, tuple) else [answer]
                    router.send_multipart([routing_id, *frames])

    server = threading.Thread(target=serve)
    server.start()
    try:
        yield f"tcp://127.0.0.1:{port}"
    finally:
        stop.set()
        server.join()
        context.destroy(linger=0)


def reply(request: dict, **fields: object) -> bytes:
    return msgpack.packb({"v": 1, "id": request["id"], **fields})


def test_requests_carry_version_token_and_fresh_ids() -> None:
    seen: list[dict] = []

    def handler(request: dict) -> list[Reply]:
        seen.append(request)
        return [reply(request, ok=True, result={})]

    with scripted_daemon(handler) as endpoint, colord_wire.WireClient(endpoint, "t0k") as wire:
        wire.ping()
        wire.info()
    assert [(r["v"], r["op"], r["token"]) for r in seen] == [(1, "ping", "t0k"), (1, "info", "t0k")]
    assert seen[0]["id"] != seen[1]["id"]


def test_late_replies_to_other_ids_are_skipped() -> None:
    def handler(request: dict) -> list[Reply]:
        stale = msgpack.packb({"v": 1, "id": -7, "ok": True, "result": {"stale": True}})
        return [stale, reply(request, ok=True, result={"fresh": True})]

    with scripted_daemon(handler) as endpoint, colord_wire.WireClient(endpoint, "t") as wire:
        assert wire.ping() == {"fresh": True}


def test_a_reply_after_an_empty_delimiter_frame_is_read() -> None:
    def handler(request: dict) -> list[Reply]:
        return [(b"", reply(request, ok=True, result={"after": "delimiter"}))]

    with scripted_daemon(handler) as endpoint, colord_wire.WireClient(endpoint, "t") as wire:
        assert wire.ping() == {"after": "delimiter"}


def test_error_replies_become_daemon_errors_with_a_readable_message() -> None:
    def handler(request: dict) -> list[Reply]:
        error = {"code": "busy", "message": "The colorize queue is full."}
        return [reply(request, ok=False, error=error)]

    with (
        scripted_daemon(handler) as endpoint,
        colord_wire.WireClient(endpoint, "t") as wire,
        pytest.raises(colord_protocol.ErrorReply) as caught,
    ):
        wire.ping()
    assert (caught.value.code, caught.value.message) == ("busy", "The colorize queue is full.")
    assert colord_wire.user_message(caught.value) == (
        "colord could not do that: The colorize queue is full. Try again in a moment."
    )


@pytest.mark.parametrize(
    "answer",
    [
        lambda request: msgpack.packb({"v": 2, "id": request["id"], "ok": True, "result": {}}),
        lambda request: reply(
            request, ok=False, error={"code": "version", "message": "This daemon speaks v2."}
        ),
    ],
)
def test_a_protocol_version_mismatch_says_what_to_do(answer: Callable[[dict], bytes]) -> None:
    with (
        scripted_daemon(lambda request: [answer(request)]) as endpoint,
        colord_wire.WireClient(endpoint, "t") as wire,
        pytest.raises(colord_wire.ColordError) as caught,
    ):
        wire.ping()
    assert caught.value.code == "version"
    message = colord_wire.user_message(caught.value)
    assert "protocol version 1" in message and "colord plugin install" in message


def test_an_unreadable_reply_is_a_protocol_error() -> None:
    with (
        scripted_daemon(lambda request: [b"\xc1 not msgpack"]) as endpoint,
        colord_wire.WireClient(endpoint, "t") as wire,
        pytest.raises(colord_wire.ColordError, match="could not read the daemon's reply") as caught,
    ):
        wire.ping()
    assert caught.value.code == "protocol"


def test_a_result_image_that_does_not_add_up_is_refused() -> None:
    def handler(request: dict) -> list[Reply]:
        image = {"width": 4, "height": 4, "format": "RGBA8", "data": bytes(10)}
        return [reply(request, ok=True, result={"image": image, "timings": {}})]

    with (
        scripted_daemon(handler) as endpoint,
        colord_wire.WireClient(endpoint, "t") as wire,
        pytest.raises(colord_wire.ColordError, match="needs 64 bytes of data; got 10"),
    ):
        wire.colorize(colord_wire.Image(4, 4, "RGBA8", bytes(64)))


def test_a_daemon_that_never_answers_times_out() -> None:
    with (
        scripted_daemon(lambda request: []) as endpoint,
        colord_wire.WireClient(endpoint, "t", timeout=0.3) as wire,
        pytest.raises(colord_protocol.DaemonTimeout, match=r"0\.3 seconds"),
    ):
        wire.ping()


def test_nothing_listening_is_daemon_not_running() -> None:
    with (
        socket_port_without_listener() as port,
        colord_wire.WireClient(f"tcp://127.0.0.1:{port}", "t", timeout=5) as wire,
        pytest.raises(colord_wire.DaemonNotRunning) as caught,
    ):
        wire.ping()
    assert "Start it with `colord serve`" in colord_wire.user_message(caught.value)


@contextmanager
def socket_port_without_listener() -> Iterator[int]:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))  # bound but not listening: connections are refused
    try:
        yield probe.getsockname()[1]
    finally:
        probe.close()


@pytest.mark.parametrize(
    "endpoint", ["ipc:///run/colord.sock", "tcp://127.0.0.1", "tcp://:5547", "tcp://host:99999"]
)
def test_endpoints_other_than_tcp_host_port_are_refused(endpoint: str) -> None:
    with pytest.raises(colord_wire.ColordError, match="tcp://host:port") as caught:
        colord_wire.WireClient(endpoint, "t")
    assert caught.value.code == "bad_endpoint"


def test_ipv6_endpoints_are_understood() -> None:
    assert colord_wire._parse_endpoint("tcp://[::1]:5547") == ("::1", 5547)


# --- the connection file ---------------------------------------------------------------------


def test_a_file_written_by_the_daemon_code_reads_back(tmp_path: Path) -> None:
    info = colord_protocol.Connection("tcp://127.0.0.1:6000", "ab" * 16, os.getpid(), "0.1.0")
    path = daemon_connection.write_connection(info, tmp_path / "daemon.json")
    assert colord_wire.read_connection(path) == (
        "tcp://127.0.0.1:6000", "ab" * 16, os.getpid(), "0.1.0", 1,
    )  # fmt: skip


def test_a_connection_file_of_another_protocol_is_a_version_error(tmp_path: Path) -> None:
    info = colord_protocol.Connection("tcp://127.0.0.1:6000", "t", os.getpid(), "9.0", 2)
    path = daemon_connection.write_connection(info, tmp_path / "daemon.json")
    with pytest.raises(colord_wire.ColordError, match="protocol version 2") as caught:
        colord_wire.WireClient.from_connection_file(path)
    assert caught.value.code == "version"


# --- messages and the standard-library promise ------------------------------------------------


def test_user_message_is_one_sentence_for_any_exception() -> None:
    assert colord_wire.user_message(colord_protocol.ConnectionLost("Lost it.")) == "Lost it."
    unexpected = colord_wire.user_message(KeyError("width"))
    assert unexpected == "colord failed unexpectedly (KeyError: 'width')."
    internal = colord_protocol.ErrorReply("internal", "Something broke.")
    assert colord_wire.user_message(internal).endswith("The daemon's log has the details.")


def bare_python(code: str) -> str:
    """Run `code` in a Python as bare as a painting app's: -I (no user site, no PYTHON*
    variables) and -S (no site-packages at all: no zmq, msgpack or numpy); return its output."""
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, env={}
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_module_imports_in_a_bare_python_as_gimp_bundles_it() -> None:
    code = (
        f"import sys; sys.path.insert(0, {str(WIRE_DIR)!r}); import colord_wire; "
        "assert not {'zmq', 'msgpack', 'numpy'} & set(sys.modules); "
        "print(colord_wire.unpackb(colord_wire.packb({'ok': [1, b'x']})))"
    )
    assert bare_python(code) == "{'ok': [1, b'x']}"


def test_the_module_imports_inside_a_package_as_krita_bundles_it(tmp_path: Path) -> None:
    package = tmp_path / "some_plugin"
    package.mkdir()
    (package / "__init__.py").write_text("from . import colord_wire\n")
    for module in WIRE_DIR.glob("*.py"):
        (package / module.name).write_bytes(module.read_bytes())
    code = (
        f"import sys; sys.path.insert(0, {str(tmp_path)!r}); import some_plugin; "
        "assert 'colord_protocol' not in sys.modules; "
        "from some_plugin import colord_protocol, colord_wire; "
        "assert colord_wire.ColordError is colord_protocol.ColordError; print('ok')"
    )
    assert bare_python(code) == "ok"
