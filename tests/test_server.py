"""The server's logic on loopback with a fake engine: queueing, busy, batching, cancellation,
shutdown, envelopes and engine failures. (The real daemon process is tested in test_client.py.)"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
import zmq

from colord.daemon import protocol
from colord.daemon.client import Client, ErrorReply
from colord.daemon.job import ColorizeResult, Job
from colord.daemon.server import DaemonStartError, Server
from colord.plugins.wire.colord_protocol import Limits

TOKEN = "5" * 32
WAIT = 10.0


class FakeEngine:
    """Paints each job's line-art grey value into red; can be held to keep jobs in flight."""

    def __init__(self, device: str = "cpu"):
        self.device = device
        self.running = threading.Event()
        self.release = threading.Event()
        self.release.set()
        self.batches: list[list[int]] = []  # line-art widths of each batch

    def colorize_batch(self, jobs: list[Job]) -> list[ColorizeResult]:
        self.batches.append([job.line_art.shape[1] for job in jobs])
        self.running.set()
        assert self.release.wait(WAIT)
        results = []
        for job in jobs:
            if job.line_art.shape[1] == 13:
                raise ValueError("13 columns are not accepted")
            if job.line_art.shape[1] == 17:
                raise RuntimeError("the device fell over")
            image = np.zeros((*job.line_art.shape[:2], 4), np.uint8)
            image[..., 0] = job.line_art if job.line_art.ndim == 2 else job.line_art[..., 0]
            image[..., 3] = 255
            if job.flats is None:
                results.append(ColorizeResult(image, 16, {"forward": 1.5, "total": 2.5}))
                continue
            flats = np.zeros_like(image)
            flats[..., 2] = 50  # blue flats, each job's own
            flats[..., 3] = 255
            results.append(
                ColorizeResult(image, 16, {"forward": 1.5, "flats": 0.5, "total": 2.5}, flats)
            )
        return results

    def info(self) -> dict:
        return {"model": "fake.safetensors", "preset": "tiny", "device": self.device,
                "dtype": "float32", "working_size": 256}  # fmt: skip


class Harness:
    def __init__(self, engine: FakeEngine, queue_size: int = 4, **settings: float):
        """`settings`: the Server's idle_exit_s and request_budget_s."""
        self.engine = engine
        limits = Limits(queue_size=queue_size)
        self.server = Server("tcp://127.0.0.1:*", token=TOKEN, limits=limits, **settings)
        self.thread = threading.Thread(target=self.server.serve, args=(engine,))
        self.thread.start()
        self.sockets: list[zmq.Socket] = []

    def client(self) -> Client:
        return Client(self.server.endpoint, TOKEN, timeout=WAIT)

    def socket(self, kind: int = zmq.DEALER) -> zmq.Socket:
        sock = zmq.Context.instance().socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, int(WAIT * 1000))
        sock.connect(self.server.endpoint)
        self.sockets.append(sock)
        return sock

    def stop(self) -> None:
        self.engine.release.set()
        self.server.request_stop()
        self.thread.join(WAIT)
        assert not self.thread.is_alive()
        for sock in self.sockets:
            sock.close(linger=0)
        self.server.close()


@pytest.fixture
def harness() -> Iterator[Harness]:
    running = Harness(FakeEngine())
    yield running
    running.stop()


def colorize_body(request_id: int, width: int = 8, value: int = 9, **options) -> bytes:
    args, _, _ = protocol.colorize_request_args(
        Job(np.full((3, width), value, np.uint8), **options)
    )
    return protocol.encode_request(request_id, "colorize", TOKEN, args)


def receive(sock: zmq.Socket) -> protocol.Reply:
    return protocol.decode_reply(sock.recv_multipart()[-1])


def test_ping_info_and_colorize(harness: Harness) -> None:
    with harness.client() as client:
        assert client.ping() == {"pong": True, "version": client.ping()["version"]}
        info = client.info()
        assert info["protocol"] == 1 and info["preset"] == "tiny" and info["working_size"] == 256
        assert info["limits"]["queue_size"] == 4
        reply = client.colorize(np.full((5, 6), 77, np.uint8))
    assert reply.image.shape == (5, 6, 4)
    assert (reply.image[..., 0] == 77).all() and (reply.image[..., 3] == 255).all()
    assert set(reply.timings) == {"queue_ms", "engine_ms", "forward_ms", "total_ms"}
    assert reply.timings["engine_ms"] == 2.5  # the engine's own measures, carried through
    assert reply.timings["forward_ms"] == 1.5


def test_info_lists_the_features_and_flats_come_back_as_their_own_image(harness: Harness) -> None:
    with harness.client() as client:
        assert client.info()["features"] == ["flats", "ground"]
        both = client.colorize(np.full((5, 6), 77, np.uint8), flats="with_colour")
        alone = client.colorize(np.full((5, 6), 77, np.uint8), flats="only")
    assert (both.image[..., 0] == 77).all() and (both.flats[..., 2] == 50).all()
    assert both.timings["flats_ms"] == 0.5 and both.timings["engine_ms"] == 2.5
    assert alone.image is None and alone.flats.shape == (5, 6, 4)
    sock = harness.socket()
    sock.send(colorize_body(1, flats="only", result_format="BGRA8"))
    result = receive(sock).result
    assert set(result) == {"timings", "flats"}  # no colour layer travels
    assert result["flats"]["format"] == "BGRA8"
    assert bytes(result["flats"]["data"][:4]) == bytes([50, 0, 0, 255])


def test_result_format_bgra(harness: Harness) -> None:
    sock = harness.socket()
    sock.send(colorize_body(1, value=200, result_format="BGRA8"))
    image = receive(sock).result["image"]
    assert image["format"] == "BGRA8"
    assert bytes(image["data"][:4]) == bytes([0, 0, 200, 255])


def test_req_peer_gets_its_delimiter_back(harness: Harness) -> None:
    sock = harness.socket(zmq.REQ)
    sock.send(protocol.encode_request("r", "ping", TOKEN))
    reply = receive(sock)
    assert (reply.id, reply.ok) == ("r", True)


def test_extra_frames_are_malformed(harness: Harness) -> None:
    sock = harness.socket()
    sock.send_multipart([protocol.encode_request(1, "ping", TOKEN), b"extra"])
    reply = receive(sock)
    assert (reply.ok, reply.error_code, reply.id) == (False, "malformed", None)


def test_engine_errors_become_error_replies_and_serving_goes_on(harness: Harness) -> None:
    with harness.client() as client:
        with pytest.raises(ErrorReply) as rejected:
            client.colorize(np.zeros((2, 13), np.uint8))
        assert rejected.value.code == "bad_image" and "13 columns" in rejected.value.message
        with pytest.raises(ErrorReply) as failed:
            client.colorize(np.zeros((2, 17), np.uint8))
        assert failed.value.code == "internal"
        assert client.ping()["pong"] is True


def test_full_queue_answers_busy_and_keeps_accepted_work() -> None:
    running = Harness(FakeEngine(), queue_size=1)
    try:
        running.engine.release.clear()
        sock = running.socket()
        sock.send(colorize_body(1))
        assert running.engine.running.wait(WAIT)  # job 1 runs, the queue is empty
        sock.send(colorize_body(2))  # waits in the queue
        sock.send(colorize_body(3))  # finds the queue full
        busy = receive(sock)
        assert (busy.id, busy.error_code) == (3, "busy")
        sock.send(protocol.encode_request(4, "ping", TOKEN))  # ping is answered even now
        assert receive(sock).id == 4
        running.engine.release.set()
        assert sorted(receive(sock).id for _ in range(2)) == [1, 2]
    finally:
        running.stop()


def test_work_of_a_client_that_left_is_dropped() -> None:
    running = Harness(FakeEngine(), queue_size=4)
    try:
        running.engine.release.clear()
        staying = running.socket()
        staying.send(colorize_body(1, width=8))
        assert running.engine.running.wait(WAIT)
        leaving = running.socket()
        leaving.send(colorize_body(2, width=9))
        staying.send(colorize_body(3, width=10))
        queue = running.server._queue._jobs
        deadline = time.monotonic() + WAIT
        while len(queue) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        leaving.close(linger=0)
        left_behind = next(job for job in queue if job.request_id == 2)  # 3 may come first
        while not left_behind.cancelled and time.monotonic() < deadline:
            time.sleep(0.01)
        assert left_behind.cancelled  # seen through the monitor, before the worker got to it
        running.engine.release.set()
        assert sorted(receive(staying).id for _ in range(2)) == [1, 3]
        assert running.engine.batches == [[8], [10]]  # job 2 never reached the engine
    finally:
        running.stop()


@pytest.mark.parametrize(("device", "batched"), [("cuda:0", True), ("cpu", False)])
def test_queued_jobs_are_batched_only_off_cpu(device: str, batched: bool) -> None:
    running = Harness(FakeEngine(device), queue_size=8)
    try:
        running.engine.release.clear()
        sock = running.socket()
        sock.send(colorize_body(0, width=4))
        assert running.engine.running.wait(WAIT)
        for request_id in range(1, 5):
            sock.send(colorize_body(request_id, width=4, value=request_id))
        deadline = time.monotonic() + WAIT
        while len(running.server._queue._jobs) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        running.engine.release.set()
        replies = {reply.id: reply for reply in (receive(sock) for _ in range(5))}
        for request_id in range(1, 5):  # each reply holds its own request's pixels
            assert replies[request_id].result["image"]["data"][0] == request_id
        sizes = [len(batch) for batch in running.engine.batches]
        assert sizes == ([1, 4] if batched else [1, 1, 1, 1, 1])
    finally:
        running.stop()


def test_stop_finishes_work_in_flight_and_refuses_new_work() -> None:
    running = Harness(FakeEngine())
    running.engine.release.clear()
    sock = running.socket()
    sock.send(colorize_body(1))
    assert running.engine.running.wait(WAIT)
    running.server.request_stop()
    deadline = time.monotonic() + WAIT
    while not running.server._stopping and time.monotonic() < deadline:
        time.sleep(0.01)
    sock.send(colorize_body(2))
    refused = receive(sock)
    assert (refused.id, refused.error_code) == (2, "shutting_down")
    sock.send(protocol.encode_request(3, "ping", TOKEN))
    assert receive(sock).ok
    running.engine.release.set()
    finished = receive(sock)
    assert (finished.id, finished.ok) == (1, True)
    running.stop()


class RecordingEngine(FakeEngine):
    """Keeps the job records it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.jobs: list[Job] = []

    def colorize_batch(self, jobs: list[Job]) -> list[ColorizeResult]:
        self.jobs += jobs
        return super().colorize_batch(jobs)


def test_every_option_reaches_the_engine_in_the_job_record() -> None:
    running = Harness(RecordingEngine())
    try:
        options = {"working_size": 32, "keep_lines": False, "result_format": "BGRA8"}
        options |= {"flats": "with_colour", "flats_gap": 2, "flats_ground": "opaque"}
        options["ground"] = "transparent"
        sock = running.socket()
        sock.send(colorize_body(1, **options))
        assert receive(sock).ok
        (job,) = running.engine.jobs
        assert job.options() == {**options, "flats_palette": None}
        assert job.line_art.shape == (3, 8) and job.reference is None
    finally:
        running.stop()


@pytest.mark.parametrize("endpoint", ["tcp://0.0.0.0:*", "tcp://*:5547", "tcp://192.0.2.1:5547"])
def test_the_server_binds_only_on_this_machine(endpoint: str) -> None:
    with pytest.raises(DaemonStartError, match="ssh -N -L"):
        Server(endpoint, token=TOKEN, limits=Limits())


def test_an_idle_server_stops_by_itself_but_never_with_work_in_flight() -> None:
    running = Harness(FakeEngine(), idle_exit_s=0.05)
    try:
        running.engine.release.clear()
        sock = running.socket()
        sock.send(colorize_body(1))
        assert running.engine.running.wait(WAIT)
        running.thread.join(0.5)  # ten idle periods pass while the engine holds the job
        assert running.thread.is_alive() and not running.server._stopping
        running.engine.release.set()
        assert receive(sock).id == 1  # answered, then idle: it stops by itself
        running.thread.join(WAIT)
        assert not running.thread.is_alive()
    finally:
        running.stop()


def test_a_request_past_its_budget_is_answered_busy_unrun() -> None:
    running = Harness(FakeEngine(), request_budget_s=0.5)
    try:
        running.engine.release.clear()
        sock = running.socket()
        sock.send(colorize_body(1, width=8))
        assert running.engine.running.wait(WAIT)
        sock.send(colorize_body(2, width=9))  # waits behind job 1, past its budget
        sock.send(protocol.encode_request("p", "ping", TOKEN))
        assert receive(sock).id == "p"  # job 2 is in the queue by now
        running.thread.join(1.0)  # two budgets pass while job 1 holds the engine
        running.engine.release.set()
        replies = {reply.id: reply for reply in (receive(sock) for _ in range(2))}
        assert replies[1].ok
        assert (replies[2].ok, replies[2].error_code) == (False, "busy")
        assert "budget" in replies[2].error_message
        assert running.engine.batches == [[8]]  # job 2 never reached the engine
    finally:
        running.stop()


def test_a_taken_endpoint_fails_clearly(harness: Harness) -> None:
    with pytest.raises(DaemonStartError, match="already in use"):
        Server(harness.server.endpoint, token=TOKEN, limits=Limits())
    with harness.client() as client:  # the first server is unharmed
        assert client.ping()["pong"]
