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
import ipaddress
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
from urllib.parse import urlsplit

import zmq
from zmq.utils.monitor import recv_monitor_message

from colord.daemon import protocol
from colord.daemon.connection import new_token, remove_connection, write_connection
from colord.daemon.job import ColorizeResult, Job
from colord.daemon.protocol import ColorizeArgs, Request
from colord.plugins.wire.colord_protocol import (
    BAD_IMAGE,
    BUSY,
    FEATURES,
    INTERNAL,
    MALFORMED,
    PROTOCOL_VERSION,
    SHUTTING_DOWN,
    ColordError,
    Connection,
    Limits,
    ProtocolError,
    connection_file_path,
    read_connection,
)

log = logging.getLogger("colord.daemon")

DAEMON_VERSION = importlib.metadata.version("colord")
DEFAULT_ENDPOINT = "tcp://127.0.0.1:5547"
MAX_BATCH = 8  # queued jobs handed to Engine.colorize_batch at once on an accelerator
RECEIVE_HWM = 4  # a DEALER client keeps a few requests in flight; more only hold memory
POLL_INTERVAL_MS = 100  # how often the socket thread looks at the stop flag
LINGER_MS = 2000  # how long closing the socket may wait to flush the last replies


class EngineLike(Protocol):
    """What the server needs of an engine (colord.daemon.engine.Engine is one)."""

    def colorize_batch(self, jobs: list[Job]) -> list[ColorizeResult]:
        """One result per job, its timings["total"] and ["forward"] (the model's share) in ms;
        a batch of one must equal colouring that job alone."""
        ...

    def info(self) -> dict[str, Any]:
        """model, preset, device, dtype, working_size; optionally max_working_size."""
        ...


class DaemonStartError(Exception):
    """The daemon cannot start (endpoint in use, another daemon owns the connection file, ...)."""


def is_local_endpoint(endpoint: str) -> bool:
    """True for tcp:// on a loopback address and for ipc:// (a local socket file)."""
    if endpoint.startswith("ipc://"):
        return True
    if not endpoint.startswith("tcp://"):
        return False
    host = urlsplit(endpoint).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "*", an interface name or a host name


def require_local_endpoint(endpoint: str) -> None:
    """Raise DaemonStartError unless the endpoint is on this machine only: the token and the
    pixels travel unencrypted (docs/protocol.md, Remote use)."""
    if not is_local_endpoint(endpoint):
        raise DaemonStartError(
            f"{endpoint} is not a loopback address. The daemon serves this machine only (its "
            "token and pixels travel unencrypted); to use it from another machine, forward its "
            "port over SSH: ssh -N -L 5547:127.0.0.1:5547 HOST (docs/protocol.md, Remote use)."
        )


@dataclass(eq=False)
class Accepted:
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
    job: Accepted


class QueueFull(Exception):
    pass


class JobQueue:
    """A bounded FIFO of jobs; `close` lets the worker finish what is queued and then stop."""

    def __init__(self, size: int):
        self.size = size
        self._jobs: collections.deque[Accepted] = collections.deque()
        self._condition = threading.Condition()
        self._closed = False

    def put(self, job: Accepted) -> None:
        with self._condition:
            if len(self._jobs) >= self.size:
                raise QueueFull
            self._jobs.append(job)
            self._condition.notify()

    def take(self, max_jobs: int) -> list[Accepted]:
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
        self._jobs: collections.defaultdict[tuple[int, int], set[Accepted]] = (
            collections.defaultdict(set)
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

    def track(self, job: Accepted) -> None:
        if job.peer is not None:
            self._jobs[job.peer].add(job)

    def forget(self, job: Accepted) -> None:
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
        idle_exit_s: float | None = None,
        request_budget_s: float | None = None,
        context: zmq.Context | None = None,
    ):
        """`idle_exit_s`: stop by itself after this long without a request and with no work
        left. `request_budget_s`: a colorize request that has waited this long when its turn
        comes is answered `busy` unrun (its client has most likely given up). None: never."""
        require_local_endpoint(endpoint)
        self.token = token
        self.limits = limits
        self.idle_exit_s = idle_exit_s
        self.request_budget_s = request_budget_s
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
        self._last_request = time.monotonic()
        self._in_flight = 0  # colorize requests accepted and not yet answered or dropped
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
        described = engine.info()
        cap = described.get("max_working_size")
        if isinstance(cap, int) and cap > 0:
            self.limits = replace(self.limits, max_working_size=min(cap, self.limits.max_side))
        # Batching helps an accelerator; on CPU it only changes the float summation order.
        on_cpu = str(described.get("device") or "cpu").startswith("cpu")
        self._max_batch = 1 if on_cpu else MAX_BATCH
        worker = threading.Thread(target=self._work, name="colord-engine", daemon=True)
        worker.start()
        poller = zmq.Poller()
        poller.register(self._router, zmq.POLLIN)
        poller.register(self._wake_receiver, zmq.POLLIN)
        poller.register(self._peers.monitor, zmq.POLLIN)
        log.info("serving on %s", self.endpoint)
        self._last_request = time.monotonic()
        while worker.is_alive() or self._outgoing:
            if self._idle_too_long():
                log.info("no request for %g s: stopping", self.idle_exit_s)
                self.request_stop()
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

    def _idle_too_long(self) -> bool:
        return (
            self.idle_exit_s is not None
            and self._in_flight == 0
            and time.monotonic() - self._last_request >= self.idle_exit_s
        )

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
                self._reply_error(_envelope_of(frames), None, INTERNAL, "Internal error.")

    def _handle_frames(self, frames: list[zmq.Frame]) -> None:
        envelope = _envelope_of(frames)
        if len(frames) != len(envelope) + 1:
            self._reply_error(
                envelope,
                None,
                MALFORMED,
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
        self._last_request = time.monotonic()
        self._handlers[request.op](request, envelope, frames[0])

    def _handle_ping(self, request: Request, envelope: list[bytes], frame: zmq.Frame) -> None:
        self._reply_ok(envelope, request.id, {"pong": True, "version": DAEMON_VERSION})

    def _handle_info(self, request: Request, envelope: list[bytes], frame: zmq.Frame) -> None:
        assert self._engine is not None
        described = self._engine.info()
        result = {
            "version": DAEMON_VERSION,
            "protocol": PROTOCOL_VERSION,
            **{
                key: described.get(key) or ""
                for key in ("model", "preset", "device", "dtype", "fast_path")
            },
            "working_size": described.get("working_size", 0),
            "limits": self.limits.to_message(),
            "features": list(FEATURES),
        }
        self._reply_ok(envelope, request.id, result)

    def _handle_colorize(self, request: Request, envelope: list[bytes], frame: zmq.Frame) -> None:
        if self._stopping:
            self._reply_error(
                envelope,
                request.id,
                SHUTTING_DOWN,
                "The daemon is shutting down and accepts no new work.",
            )
            return
        assert request.args is not None
        job = Accepted(
            envelope, request.id, request.args, time.perf_counter(), self._peers.peer_of(frame)
        )
        try:
            self._queue.put(job)
        except QueueFull:
            self._reply_error(
                envelope,
                request.id,
                BUSY,
                f"The daemon is busy ({self._queue.size} requests already wait); retry shortly.",
            )
            return
        self._in_flight += 1
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
            self._in_flight -= 1
            self._peers.forget(outgoing.job)
            if outgoing.body is not None:
                self._send(outgoing.envelope, outgoing.body)

    # -- the worker thread ---------------------------------------------------------------------

    def _work(self) -> None:
        while accepted := self._queue.take(self._max_batch):
            live = []
            for item in accepted:
                if item.cancelled:
                    log.info("skipped request %r: its client has gone", item.request_id)
                    self._outgoing.append(Outgoing(item.envelope, None, item))
                elif (refusal := self._over_budget(item)) is not None:
                    self._outgoing.append(Outgoing(item.envelope, refusal, item))
                else:
                    live.append(item)
            if live:
                started = time.perf_counter()
                for item, outcome in zip(live, self._run(live), strict=True):
                    body = self._encode_reply(item, outcome, started)
                    self._outgoing.append(Outgoing(item.envelope, body, item))
            self._wake_sender.send(b"")

    def _over_budget(self, item: Accepted) -> bytes | memoryview | None:
        """The `busy` reply for a request that waited past the budget before its work began."""
        waited = time.perf_counter() - item.received_at
        if self.request_budget_s is None or waited < self.request_budget_s:
            return None
        log.info("skipped request %r: it waited %.1f s", item.request_id, waited)
        return protocol.encode_error(
            item.request_id,
            BUSY,
            f"The request waited {waited:.0f} s for the model, more than this daemon's budget "
            f"of {self.request_budget_s:g} s, and was not run; retry when the daemon is less busy.",
        )

    def _run(self, items: list[Accepted]) -> list[ColorizeResult | Exception]:
        """Each request's result, or the exception that failed it. A batch that fails is run
        again one request at a time, to find which failed."""
        assert self._engine is not None
        try:
            return self._engine.colorize_batch([item.args.to_job() for item in items])
        except Exception as error:
            if len(items) == 1:
                return [error]
            return [outcome for item in items for outcome in self._run([item])]

    def _encode_reply(
        self, item: Accepted, outcome: ColorizeResult | Exception, started: float
    ) -> bytes | memoryview:
        if isinstance(outcome, Exception):
            return _error_reply(item.request_id, outcome)
        image_format = item.args.options["result_format"]
        result: dict[str, Any] = {"timings": _timings(item, outcome, started)}  # pixels last
        if item.args.options["flats"] != "only":
            result["image"] = protocol.array_to_image(outcome.image, image_format).to_message()
        if outcome.flats is not None:
            result["flats"] = protocol.array_to_image(outcome.flats, image_format).to_message()
        return protocol.encode_ok(item.request_id, result, into=self._reply_buffers.take())


def _timings(item: Accepted, result: ColorizeResult, started: float) -> dict[str, float]:
    """The reply's timings (ms): waiting in the queue, in the engine (its own measure), the
    model's forward within it, and from arrival to the reply; with flats, the engine's time on
    them (part of engine_ms)."""
    timings = {
        "queue_ms": (started - item.received_at) * 1000.0,
        "engine_ms": result.timings["total"],
        "forward_ms": result.timings["forward"],
        "total_ms": (time.perf_counter() - item.received_at) * 1000.0,
    }
    if "flats" in result.timings:
        timings["flats_ms"] = result.timings["flats"]
    return timings


def _error_reply(request_id: int | str, error: Exception) -> bytes | memoryview:
    if isinstance(error, ValueError):  # the engine's InputError is a ValueError
        return protocol.encode_error(request_id, BAD_IMAGE, str(error))
    log.error("the engine failed on request %r", request_id, exc_info=error)
    return protocol.encode_error(
        request_id, INTERNAL, f"The engine failed: {type(error).__name__}: {error}"
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
    idle_exit_s: float | None = None  # stop after this long without requests; None: never
    request_budget_s: float | None = None  # longest wait before a request's work; None: any


def run_daemon(
    config: ServeConfig,
    load_engine: Callable[[], EngineLike],
    *,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Bind, load the engine, write the connection file, serve until SIGINT/SIGTERM (or until
    idle for `config.idle_exit_s`), clean up.

    Raises DaemonStartError (and whatever load_engine raises) when it cannot start; it then leaves
    any existing connection file alone.
    """
    path = config.connection_file or connection_file_path()
    _refuse_if_owned(path)
    _keep_large_buffers_on_the_heap()
    token = new_token()
    server = Server(
        config.endpoint,
        token=token,
        limits=config.limits,
        idle_exit_s=config.idle_exit_s,
        request_budget_s=config.request_budget_s,
    )
    try:
        engine = load_engine()
        info = Connection(server.endpoint, token, os.getpid(), DAEMON_VERSION)
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
    except ColordError:
        return  # absent, stale or unsafe: ours to replace
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
