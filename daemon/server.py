"""The daemon: a ZeroMQ ROUTER served by one socket thread, one worker thread runs the engine.

A request reads as a straight line: frames -> `protocol.decode_request` (token checked in constant
time) -> handler table -> reply. `colorize` work is queued (bounded: a full queue answers `busy`)
for the worker, which runs the engine and hands the encoded reply back through a queue plus an
inproc PAIR wake-up, because only the socket thread may touch the ROUTER socket.
"""

from __future__ import annotations

import collections
import ctypes
import importlib.metadata
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import zmq
from zmq.utils.monitor import recv_monitor_message

from colord.daemon import protocol
from colord.daemon.connection import (
    ConnectionFileError,
    ConnectionInfo,
    connection_file_path,
    new_token,
    read_connection,
    remove_connection,
    write_connection,
)
from colord.daemon.protocol import ColorizeArgs, Limits, ProtocolError, Request

log = logging.getLogger("colord.daemon")

DAEMON_VERSION = importlib.metadata.version("colord")
DEFAULT_ENDPOINT = "tcp://127.0.0.1:5547"
MAX_BATCH = 8  # queued jobs handed to Engine.colorize_batch at once on an accelerator
RECEIVE_HWM = 4  # a DEALER client keeps a few requests in flight; more only hold memory
POLL_INTERVAL_MS = 100  # how often the socket thread looks at the stop flag
LINGER_MS = 2000  # how long closing the socket may wait to flush the last replies


@dataclass(frozen=True)
class EngineJob:
    """One colorize job as the engine takes it."""

    line_art: np.ndarray
    reference: np.ndarray | None = None
    working_size: int | None = None
    keep_lines: bool = True


class EngineLike(Protocol):
    """What the server needs of an engine (EngineAdapter presents colord's Engine this way)."""

    def colorize_batch(self, jobs: list[EngineJob]) -> list[np.ndarray]:
        """(H, W, 4) uint8 RGBA per job; a batch of one must equal colouring that job alone."""
        ...

    def describe(self) -> dict[str, Any]:
        """model, preset, device, dtype, working_size; optionally max_working_size."""
        ...


class EngineAdapter:
    """colord.daemon.engine.Engine presented as the server's EngineLike."""

    def __init__(self, engine: Any):
        self.engine = engine

    def colorize_batch(self, jobs: list[EngineJob]) -> list[np.ndarray]:
        from colord.daemon.engine import Job

        results = self.engine.colorize_batch(
            [Job(job.line_art, job.reference, job.working_size, job.keep_lines) for job in jobs]
        )
        return [result.image for result in results]

    def describe(self) -> dict[str, Any]:
        info = self.engine.info()
        return {key: info.get(key) or "" for key in ("model", "preset", "device", "dtype")} | {
            "working_size": info.get("working_size", 0),
            "max_working_size": info.get("max_working_size"),
        }


class DaemonStartError(Exception):
    """The daemon cannot start (endpoint in use, another daemon owns the connection file, ...)."""


@dataclass(eq=False)
class Job:
    """One accepted colorize request on its way through the queue and the worker."""

    envelope: list[bytes]  # the ROUTER identity, plus the empty delimiter for REQ peers
    request_id: int | str
    args: ColorizeArgs
    received_at: float
    peer: tuple[int, int] | None = None  # (socket fd, connection generation)
    cancelled: bool = False  # set by the socket thread when the client's connection closed


@dataclass
class Outgoing:
    """A reply for the socket thread to send; body None: the job was dropped, only forget it."""

    envelope: list[bytes]
    body: bytes | memoryview | None
    job: Job


class QueueFull(Exception):
    pass


class JobQueue:
    """A bounded FIFO of jobs; `close` lets the worker finish what is queued and then stop."""

    def __init__(self, size: int):
        self.size = size
        self._jobs: collections.deque[Job] = collections.deque()
        self._condition = threading.Condition()
        self._closed = False

    def put(self, job: Job) -> None:
        with self._condition:
            if len(self._jobs) >= self.size:
                raise QueueFull
            self._jobs.append(job)
            self._condition.notify()

    def take(self, max_jobs: int) -> list[Job]:
        """Wait for jobs; return up to max_jobs of them, or [] once closed and empty."""
        with self._condition:
            while not self._jobs and not self._closed:
                self._condition.wait()
            count = min(max_jobs, len(self._jobs))
            return [self._jobs.popleft() for _ in range(count)]

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify_all()


class ReplyBuffers:
    """Buffers of large replies, reused once ZeroMQ has sent them (see protocol.encode).

    The worker takes a free buffer to encode into; the socket thread hands it back with the
    tracker of its send. Only the last few are kept.
    """

    def __init__(self, keep: int = 4):
        self._lock = threading.Lock()
        self._sent: collections.deque[tuple[bytearray, zmq.MessageTracker]] = collections.deque(
            maxlen=keep
        )

    def take(self) -> bytearray | None:
        with self._lock:
            for index, (buffer, tracker) in enumerate(self._sent):
                if tracker.done:
                    del self._sent[index]
                    return buffer
        return None

    def sent(self, buffer: bytearray, tracker: zmq.MessageTracker) -> None:
        with self._lock:
            self._sent.append((buffer, tracker))


class PeerTracker:
    """Maps requests to the TCP/IPC connection they came on, so a closed connection cancels them.

    libzmq does not tell a ROUTER which identity disconnected, but its monitor reports the socket
    fd of every accepted and closed connection, and each received message carries its source fd
    (ZMQ_SRCFD). A generation count per fd tells apart two connections that reused one fd. The
    monitor is drained before every received message; a request that still overtakes its
    connection's accept is re-filed when the accept arrives.
    """

    def __init__(self, router: zmq.Socket):
        self._router = router
        self.monitor = router.get_monitor_socket(zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED)
        self._generation: collections.defaultdict[int, int] = collections.defaultdict(int)
        self._jobs: collections.defaultdict[tuple[int, int], set[Job]] = collections.defaultdict(
            set
        )

    def drain(self) -> None:
        while self.monitor.poll(0):
            event = recv_monitor_message(self.monitor)
            fd = event["value"]
            if event["event"] == zmq.EVENT_ACCEPTED:
                # A request can overtake its connection's accept event (the monitor is a separate
                # pipe), and was then filed under the fd's previous generation. That connection's
                # disconnect came before this accept and took its own jobs, so whatever is still
                # filed there belongs to the new connection.
                early = self._jobs.pop((fd, self._generation[fd]), set())
                self._generation[fd] += 1
                for job in early:
                    job.peer = (fd, self._generation[fd])
                    self.track(job)
            elif event["event"] == zmq.EVENT_DISCONNECTED:
                for job in self._jobs.pop((fd, self._generation[fd]), ()):
                    job.cancelled = True

    def peer_of(self, frame: zmq.Frame) -> tuple[int, int] | None:
        try:
            fd = frame.get(zmq.SRCFD)
        except zmq.ZMQError:
            return None
        return None if fd < 0 else (fd, self._generation[fd])

    def track(self, job: Job) -> None:
        if job.peer is not None:
            self._jobs[job.peer].add(job)

    def forget(self, job: Job) -> None:
        if job.peer is not None:
            jobs = self._jobs.get(job.peer)
            if jobs is not None:
                jobs.discard(job)
                if not jobs:
                    del self._jobs[job.peer]

    def close(self) -> None:
        # Stop the events first: libzmq's I/O thread can block on a monitor nobody reads.
        self._router.disable_monitor()
        self.monitor.close(linger=0)


class Server:
    """Binds the ROUTER on construction (so a taken endpoint fails at once); `serve` runs it."""

    def __init__(
        self,
        endpoint: str,
        *,
        token: str,
        limits: Limits,
        context: zmq.Context | None = None,
    ):
        self.token = token
        self.limits = limits
        self._context = context or zmq.Context.instance()
        self._router = self._context.socket(zmq.ROUTER)
        self._router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self._router.setsockopt(zmq.MAXMSGSIZE, limits.max_message_bytes)
        # Messages that wait per peer; a peer sending more is slowed down by TCP, not buffered.
        self._router.setsockopt(zmq.RCVHWM, RECEIVE_HWM)
        self._router.setsockopt(zmq.LINGER, LINGER_MS)
        self._peers = PeerTracker(self._router)
        try:
            self._router.bind(endpoint)
        except zmq.ZMQError as error:
            self.close()
            if error.errno == zmq.EADDRINUSE:
                raise DaemonStartError(
                    f"Cannot listen on {endpoint}: the address is already in use "
                    "(another colord daemon, or another program, is listening there)."
                ) from None
            raise DaemonStartError(f"Cannot listen on {endpoint}: {error}.") from None
        self.endpoint: str = self._router.getsockopt_string(zmq.LAST_ENDPOINT)
        wake_address = f"inproc://colord-wake-{id(self)}"
        self._wake_receiver = self._context.socket(zmq.PAIR)
        self._wake_receiver.bind(wake_address)
        self._wake_sender = self._context.socket(zmq.PAIR)  # used by the worker thread only
        self._wake_sender.connect(wake_address)
        self._outgoing: collections.deque[Outgoing] = collections.deque()
        self._reply_buffers = ReplyBuffers()
        self._queue = JobQueue(limits.queue_size)
        self._stop_requested = threading.Event()
        self._stopping = False
        self._engine: EngineLike | None = None
        self._max_batch = 1
        self._handlers: dict[str, Callable[[Request, list[bytes], zmq.Frame], None]] = {
            "ping": self._handle_ping,
            "info": self._handle_info,
            "colorize": self._handle_colorize,
        }

    # -- lifecycle -----------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Thread- and signal-safe: stop accepting work, finish what was accepted, then return."""
        self._stop_requested.set()

    def serve(self, engine: EngineLike) -> None:
        """Serve until request_stop(); every accepted request is answered before returning."""
        self._engine = engine
        cap = engine.describe().get("max_working_size")
        if isinstance(cap, int) and cap > 0:
            self.limits = replace(self.limits, max_working_size=min(cap, self.limits.max_side))
        # Batching helps an accelerator; on CPU it only changes the float summation order.
        on_cpu = str(engine.describe().get("device", "cpu")).startswith("cpu")
        self._max_batch = 1 if on_cpu else MAX_BATCH
        worker = threading.Thread(target=self._work, name="colord-engine", daemon=True)
        worker.start()
        poller = zmq.Poller()
        poller.register(self._router, zmq.POLLIN)
        poller.register(self._wake_receiver, zmq.POLLIN)
        poller.register(self._peers.monitor, zmq.POLLIN)
        log.info("serving on %s", self.endpoint)
        while worker.is_alive() or self._outgoing:
            if self._stop_requested.is_set() and not self._stopping:
                log.info("stopping: finishing the requests in flight")
                self._stopping = True
                self._queue.close()
            events = dict(poller.poll(POLL_INTERVAL_MS))
            if self._peers.monitor in events:
                self._peers.drain()
            if self._wake_receiver in events:
                while self._wake_receiver.poll(0):
                    self._wake_receiver.recv()
            self._send_outgoing()
            if self._router in events:
                self._receive_all()
        worker.join()
        log.info("stopped")

    def close(self) -> None:
        """Close the sockets (idempotent); waits up to LINGER_MS for unsent replies."""
        if self._router.closed:
            return
        for name in ("_wake_sender", "_wake_receiver"):
            sock = getattr(self, name, None)
            if sock is not None:
                sock.close(linger=0)
        self._peers.close()
        self._router.close()

    # -- the socket thread ---------------------------------------------------------------------

    def _receive_all(self) -> None:
        while True:
            self._peers.drain()
            try:
                frames = self._router.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            try:
                self._handle_frames(frames)
            except Exception:  # the daemon never dies of one request
                log.exception("unexpected failure while handling a request")
                self._reply_error(_envelope_of(frames), None, protocol.INTERNAL, "Internal error.")

    def _handle_frames(self, frames: list[zmq.Frame]) -> None:
        envelope = _envelope_of(frames)
        if len(frames) != len(envelope) + 1:
            self._reply_error(
                envelope,
                None,
                protocol.MALFORMED,
                "A request must be exactly one frame (after the empty delimiter of a REQ socket).",
            )
            return
        try:
            request = protocol.decode_request(
                frames[-1].buffer, token=self.token, limits=self.limits
            )
        except ProtocolError as error:
            log.info("rejected a request: %s (%s)", error.code, error.message)
            self._reply_error(envelope, error.request_id, error.code, error.message)
            return
        log.info("request %r: %s", request.id, request.op)
        self._handlers[request.op](request, envelope, frames[0])

    def _handle_ping(self, request: Request, envelope: list[bytes], frame: zmq.Frame) -> None:
        self._reply_ok(envelope, request.id, {"pong": True, "version": DAEMON_VERSION})

    def _handle_info(self, request: Request, envelope: list[bytes], frame: zmq.Frame) -> None:
        assert self._engine is not None
        described = self._engine.describe()
        result = {
            "version": DAEMON_VERSION,
            "protocol": protocol.PROTOCOL_VERSION,
            "model": described.get("model", ""),
            "preset": described.get("preset", ""),
            "device": described.get("device", ""),
            "dtype": described.get("dtype", ""),
            "working_size": described.get("working_size", 0),
            "limits": self.limits.to_message(),
        }
        self._reply_ok(envelope, request.id, result)

    def _handle_colorize(self, request: Request, envelope: list[bytes], frame: zmq.Frame) -> None:
        if self._stopping:
            self._reply_error(
                envelope,
                request.id,
                protocol.SHUTTING_DOWN,
                "The daemon is shutting down and accepts no new work.",
            )
            return
        assert request.args is not None
        job = Job(
            envelope, request.id, request.args, time.perf_counter(), self._peers.peer_of(frame)
        )
        try:
            self._queue.put(job)
        except QueueFull:
            self._reply_error(
                envelope,
                request.id,
                protocol.BUSY,
                f"The daemon is busy ({self._queue.size} requests already wait); retry shortly.",
            )
            return
        self._peers.track(job)

    def _reply_ok(self, envelope: list[bytes], request_id: int | str, result: dict) -> None:
        self._send(envelope, protocol.encode_ok(request_id, result))

    def _reply_error(
        self, envelope: list[bytes], request_id: int | str | None, code: str, message: str
    ) -> None:
        self._send(envelope, protocol.encode_error(request_id, code, message))

    def _send(self, envelope: list[bytes], body: bytes | memoryview) -> None:
        try:
            if isinstance(body, memoryview):  # a large reply in a reusable buffer
                tracker = self._router.send_multipart(
                    [*envelope, body], zmq.NOBLOCK, copy=False, track=True
                )
                self._reply_buffers.sent(body.obj, tracker)
            else:
                self._router.send_multipart([*envelope, body], zmq.NOBLOCK, copy=False)
        except zmq.ZMQError as error:  # EHOSTUNREACH: the client has gone; EAGAIN: it reads no more
            log.info("dropped a reply to a client that is gone or not reading (%s)", error)

    def _send_outgoing(self) -> None:
        while self._outgoing:
            outgoing = self._outgoing.popleft()
            self._peers.forget(outgoing.job)
            if outgoing.body is not None:
                self._send(outgoing.envelope, outgoing.body)

    # -- the worker thread ---------------------------------------------------------------------

    def _work(self) -> None:
        while jobs := self._queue.take(self._max_batch):
            live = [job for job in jobs if not job.cancelled]
            for job in jobs:
                if job.cancelled:
                    log.info("skipped request %r: its client has gone", job.request_id)
                    self._outgoing.append(Outgoing(job.envelope, None, job))
            if live:
                for job, body in zip(live, self._run_jobs(live), strict=True):
                    self._outgoing.append(Outgoing(job.envelope, body, job))
            self._wake_sender.send(b"")

    def _run_jobs(self, jobs: list[Job]) -> list[bytes | memoryview]:
        """Run the engine; return each job's encoded reply (errors become error replies)."""
        assert self._engine is not None
        started = time.perf_counter()
        try:
            images = [protocol.image_to_array(job.args.line_art) for job in jobs]
            references = [
                None if job.args.reference is None else protocol.image_to_array(job.args.reference)
                for job in jobs
            ]
            engine_started = time.perf_counter()
            results = self._engine.colorize_batch(
                [
                    EngineJob(image, reference, job.args.working_size, job.args.keep_lines)
                    for job, image, reference in zip(jobs, images, references, strict=True)
                ]
            )
            engine_ms = (time.perf_counter() - engine_started) * 1000.0
        except Exception as error:
            if len(jobs) > 1:  # find which job failed: run each alone
                return [body for job in jobs for body in self._run_jobs([job])]
            return [_error_reply(jobs[0], error)]
        replies = []
        for job, result in zip(jobs, results, strict=True):
            image = protocol.array_to_image(result, job.args.result_format)
            timings = {
                "queue_ms": (started - job.received_at) * 1000.0,
                "engine_ms": engine_ms,
                "total_ms": (time.perf_counter() - job.received_at) * 1000.0,
            }
            result = {"timings": timings, "image": image.to_message()}  # pixels last: one copy
            reply = protocol.encode_ok(job.request_id, result, into=self._reply_buffers.take())
            replies.append(reply)
        return replies


def _error_reply(job: Job, error: Exception) -> bytes:
    if isinstance(error, ValueError):  # the engine's InputError is a ValueError
        return protocol.encode_error(job.request_id, protocol.BAD_IMAGE, str(error))
    log.error("the engine failed on request %r", job.request_id, exc_info=error)
    return protocol.encode_error(
        job.request_id, protocol.INTERNAL, f"The engine failed: {type(error).__name__}: {error}"
    )


def _envelope_of(frames: list[zmq.Frame]) -> list[bytes]:
    """The routing part of a message: the identity, plus the empty delimiter a REQ peer sends."""
    if len(frames) >= 3 and len(frames[1].buffer) == 0:
        return [frames[0].bytes, b""]
    return [frames[0].bytes]


# -- running a daemon ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ServeConfig:
    endpoint: str = DEFAULT_ENDPOINT
    limits: Limits = field(default_factory=Limits)
    connection_file: Path | None = None


def run_daemon(
    config: ServeConfig,
    load_engine: Callable[[], EngineLike],
    *,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Bind, load the engine, write the connection file, serve until SIGINT/SIGTERM, clean up.

    Raises DaemonStartError (and whatever load_engine raises) when it cannot start; it then leaves
    any existing connection file alone.
    """
    path = config.connection_file or connection_file_path()
    _refuse_if_owned(path)
    _keep_large_buffers_on_the_heap()
    token = new_token()
    server = Server(config.endpoint, token=token, limits=config.limits)
    try:
        engine = load_engine()
        info = ConnectionInfo(server.endpoint, token, os.getpid(), DAEMON_VERSION)
        write_connection(info, path)
        if on_ready is not None:
            on_ready(
                f"colord daemon {DAEMON_VERSION} listening on {server.endpoint} "
                f"(pid {os.getpid()}, connection file {path})"
            )
        # Signals stay handled until the socket is closed: a second SIGTERM while the last
        # replies flush must not kill the daemon halfway.
        with _stop_on_signals(server):
            try:
                server.serve(engine)
            finally:
                remove_connection(path, token)
                server.close()
    finally:
        server.close()


def _keep_large_buffers_on_the_heap() -> None:
    """Let glibc reuse freed image-sized buffers instead of returning each one to the OS.

    By default glibc maps every buffer of a few MiB afresh and unmaps it when freed, so each
    request's messages and arrays fault in new zeroed pages: 5-20 ms per 16 MiB on a busy machine,
    more than copying it. A 32 MiB mmap threshold (glibc's maximum) and a high trim threshold keep
    them on the heap. Other C libraries are left alone.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_mmap_threshold, 32 << 20)
    mallopt(m_trim_threshold, 256 << 20)


def _refuse_if_owned(path: Path) -> None:
    try:
        other = read_connection(path)
    except ConnectionFileError:
        return  # absent or stale: ours to take
    if other.pid != os.getpid():
        raise DaemonStartError(
            f"Another colord daemon (pid {other.pid}) is running on {other.endpoint} and owns "
            f"the connection file {path}; stop it first or pass --connection-file."
        )


@contextmanager
def _stop_on_signals(server: Server) -> Iterator[None]:
    def stop(signum: int, frame: object) -> None:
        log.info("received %s", signal.Signals(signum).name)
        server.request_stop()

    previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
