"""What an unauthenticated peer on this machine can cost the daemon, and what encryption would cost
the plug-ins: the figures behind docs/protocol.md's limits and its "Remote use".

    python bench/bench_hardening.py                     # a random-init tiny model on the CPU

It starts its own `colord serve` on a free loopback port (default limits) and prints:
1. ping round trips (p50, p99, max) alone, then while other connections send large messages
   without the token (a 30 MB array of empty maps; a wrong-token request carrying it), each
   with its ratio to the baseline, and how long the daemon took to refuse each large message;
2. the daemon's RSS before, at its peak during that flood and after; then the same flood against
   a bare pyzmq ROUTER that answers without reading (the transport's floor on this machine);
3. the RSS that --pin-connections raw ZMTP connections pin by each sending --pin-mb MB of a
   frame that declares 1 GiB (allowed: the message limit is that large) and of one declaring
   more than the message limit (dropped by ZeroMQ);
4. decoding a valid 4096^2 RGBA8 request once authenticated (the one copy of its pixels);
5. a pure-Python Salsa20 (CURVE's cipher, what a standard-library client would have to run)
   in MB/s, and the seconds it would add to a 2048^2 RGBA8 round trip;
6. whether checking the token in the ZMTP handshake instead (the PLAIN mechanism, a ZAP handler
   refusing everyone) would bound what an unauthenticated peer pins: the RSS growth of this
   process while one raw connection sends --pin-mb MB of a HELLO command declared as 1 GiB.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import socket
import statistics
import struct
import sys
import tempfile
import threading
import time
from multiprocessing.queues import Queue
from pathlib import Path

import msgpack
import numpy as np
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_daemon import rss_mib, tiny_checkpoint
from daemon_helpers import RunningDaemon, start_daemon

from colord.daemon import protocol
from colord.plugins.wire import colord_protocol as wire

FLOOD_MB = 30


def dealer(endpoint: str) -> zmq.Socket:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 120_000)
    sock.connect(endpoint)
    return sock


def bare_router(endpoints: Queue) -> None:
    """The transport's floor: a pyzmq ROUTER in its own process that answers every message at
    once with a fixed ok reply, reading nothing."""
    router = zmq.Context().socket(zmq.ROUTER)
    endpoints.put(f"tcp://127.0.0.1:{router.bind_to_random_port('tcp://127.0.0.1')}")
    answer = protocol.encode_ok(0, {})
    while True:
        frames = router.recv_multipart(copy=False)
        router.send_multipart([frames[0].bytes, answer])


def ping_times(sock: zmq.Socket, token: str, count: int, keep_going=lambda: True) -> list[float]:
    """Milliseconds per ping round trip, `count` at most (fewer once keep_going() is false)."""
    times = []
    for index in range(count):
        if not keep_going():
            break
        started = time.perf_counter()
        sock.send(protocol.encode_request(index, "ping", token))
        reply = protocol.decode_reply(sock.recv())
        times.append((time.perf_counter() - started) * 1000)
        assert reply.ok, reply.error_message
    return times


def summary(times: list[float]) -> tuple[float, float, float]:
    return (
        statistics.median(times),
        float(np.percentile(times, 99)),
        max(times),
    )


def flood_bodies(token: str) -> list[bytes]:
    empty_maps = b"\xdd" + (FLOOD_MB << 20).to_bytes(4, "big") + b"\x80" * (FLOOD_MB << 20)
    header = msgpack.packb({"v": 1, "id": 1, "op": "colorize", "token": "f" * len(token)})
    return [empty_maps, b"\x85" + header[1:] + msgpack.packb("args") + empty_maps]


class RssSampler:
    """The daemon's peak RSS, sampled every 10 ms while running."""

    def __init__(self, pid: int):
        self.pid, self.peak, self._stop = pid, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, rss_mib(self.pid))

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak


def send_flood(endpoint: str, bodies: list[bytes], messages: int, results: Queue) -> None:
    """In its own process (its own GIL and ZeroMQ I/O thread): send, await each refusal."""
    context = zmq.Context()
    attacker = context.socket(zmq.DEALER)
    attacker.setsockopt(zmq.LINGER, 0)
    attacker.connect(endpoint)
    for index in range(messages):
        started = time.perf_counter()
        attacker.send(bodies[index % len(bodies)], copy=False)
        reply = protocol.decode_reply(attacker.recv())
        results.put((str(reply.error_code), (time.perf_counter() - started) * 1000))
    attacker.close()
    context.term()


def flood(
    name: str, endpoint: str, pid: int, token: str, pings: int, messages: int, senders: int
) -> None:
    """Pings alone, then during the flood, against `endpoint` (served by process `pid`)."""
    sock = dealer(endpoint)
    baseline = summary(ping_times(sock, token, pings))
    print(f"{name}:")
    print(f"  ping alone: p50 {baseline[0]:.2f} ms, p99 {baseline[1]:.2f} ms, "
          f"max {baseline[2]:.2f} ms")  # fmt: skip
    bodies = flood_bodies(token)
    results: Queue = multiprocessing.get_context("fork").Queue()
    processes = [
        multiprocessing.get_context("fork").Process(
            target=send_flood, args=(endpoint, bodies, messages, results)
        )
        for _ in range(senders)
    ]
    before = rss_mib(pid)
    sampler = RssSampler(pid)
    for process in processes:
        process.start()
    during = ping_times(sock, token, 100_000, lambda: any(p.is_alive() for p in processes))
    refusals = [results.get(timeout=120) for _ in range(senders * messages)]
    for process in processes:
        process.join()
    peak = sampler.stop()
    sock.close()
    flooded = summary(during)
    ratios = [f / b for f, b in zip(flooded, baseline, strict=True)]
    print(f"  ping during the flood ({len(during)} pings; {senders} processes x {messages} "
          f"messages of {FLOOD_MB} MB without the token): "
          f"p50 {flooded[0]:.2f} ms (x{ratios[0]:.2f}), "
          f"p99 {flooded[1]:.2f} ms (x{ratios[1]:.2f}), max {flooded[2]:.2f} ms "
          f"(x{ratios[2]:.2f}; {flooded[2] - baseline[2]:+.1f} ms)")  # fmt: skip
    codes = sorted({code for code, _ in refusals})
    refusal_ms = [ms for _, ms in refusals]
    print(f"  each large message refused ({', '.join(codes)}) in p50 "
          f"{statistics.median(refusal_ms):.1f} ms, max {max(refusal_ms):.1f} ms "
          "(sending included)")  # fmt: skip
    after = rss_mib(pid)
    print(f"  RSS before {before:.0f} MiB, peak during the flood {peak:.0f} MiB "
          f"(+{peak - before:.0f} MiB, x{peak / before:.2f}), after {after:.0f} MiB")  # fmt: skip


def zmtp_greeted(endpoint: str, mechanism: bytes) -> socket.socket:
    """A raw TCP connection that has exchanged ZMTP 3.0 greetings naming `mechanism`."""
    host, port = endpoint.removeprefix("tcp://").rsplit(":", 1)
    conn = socket.create_connection((host, int(port)))
    conn.sendall(b"\xff" + bytes(8) + b"\x7f\x03\x00" + mechanism.ljust(20, b"\0") + bytes(32))
    received = b""
    while len(received) < 64:
        received += conn.recv(64 - len(received))
    return conn


def zmtp_connection(endpoint: str) -> socket.socket:
    """A raw ZMTP 3.0 NULL connection that has done its handshake as a DEALER."""
    conn = zmtp_greeted(endpoint, b"NULL")
    body = b"\x05READY" + b"\x0bSocket-Type" + struct.pack(">I", 6) + b"DEALER"
    conn.sendall(bytes([0x04, len(body)]) + body)
    return conn


def pin(daemon: RunningDaemon, connections: int, megabytes: int, declared: int) -> float:
    """RSS growth (MiB) while `connections` each send `megabytes` of a frame of `declared` bytes."""
    before = rss_mib(daemon.process.pid)
    chunk = bytes(1 << 20)
    conns = []
    for _ in range(connections):
        conn = zmtp_connection(daemon.endpoint)
        try:
            conn.sendall(b"\x02" + struct.pack(">Q", declared))
            for _ in range(megabytes):
                conn.sendall(chunk)
        except OSError:
            pass  # the daemon dropped the connection
        conns.append(conn)
    time.sleep(1.0)  # let the daemon's I/O thread read what is buffered
    grown = rss_mib(daemon.process.pid) - before
    for conn in conns:
        conn.close()
    time.sleep(1.0)
    return grown


def plain_handshake_hold(megabytes: int) -> None:
    """RSS this process gains while a peer sends part of a huge PLAIN HELLO to a ROUTER whose
    ZAP handler would refuse it: what checking the token at the handshake would bound."""
    context = zmq.Context()
    zap = context.socket(zmq.REP)
    zap.bind("inproc://zeromq.zap.01")
    done = threading.Event()

    def refuse_everyone() -> None:
        while not done.is_set():  # the handler's socket is its thread's alone: it closes it
            if zap.poll(100):
                version, request_id, *_ = zap.recv_multipart()
                zap.send_multipart([version, request_id, b"400", b"refused", b"", b""])
        zap.close(linger=0)

    handler = threading.Thread(target=refuse_everyone)
    handler.start()
    router = context.socket(zmq.ROUTER)
    router.plain_server = True
    router.zap_domain = b"colord"
    router.setsockopt(zmq.MAXMSGSIZE, wire.Limits().max_message_bytes)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    before = rss_mib(os.getpid())
    conn = zmtp_greeted(f"tcp://127.0.0.1:{port}", b"PLAIN")
    sent = 0
    with contextlib.suppress(OSError):  # the ROUTER dropped the connection
        conn.sendall(b"\x06" + struct.pack(">Q", 1 << 30) + b"\x05HELLO")
        while sent < megabytes:
            conn.sendall(bytes(1 << 20))
            sent += 1
    time.sleep(1.0)
    grown = rss_mib(os.getpid()) - before
    conn.close()
    done.set()
    handler.join()
    router.close(linger=0)
    context.term()
    print(f"PLAIN handshake, token checked by ZAP: {sent} MB of an unfinished HELLO declared as "
          f"1 GiB raised this process's RSS by {grown:.0f} MiB")  # fmt: skip


def decode_cost(side: int) -> None:
    token = "a" * 32
    image = protocol.WireImage(side, side, "RGBA8", bytes(side * side * 4))
    args = wire.colorize_args(image.to_message(), None, {})
    body = protocol.encode_request(1, "colorize", token, args)
    limits = wire.Limits()
    started = time.perf_counter()
    protocol.decode_request(body, token=token, limits=limits)
    decoded_ms = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    with contextlib.suppress(wire.ProtocolError):
        protocol.decode_request(body, token="b" * 32, limits=limits)
    refused_ms = (time.perf_counter() - started) * 1000
    print(f"a {side}^2 RGBA8 request ({len(body) >> 20} MiB): decoded in {decoded_ms:.1f} ms "
          f"with the token, refused in {refused_ms:.3f} ms without it "
          f"(x{decoded_ms / refused_ms:.0f})")  # fmt: skip


def _rotl(value: int, bits: int) -> int:
    value &= 0xFFFFFFFF
    return ((value << bits) | (value >> (32 - bits))) & 0xFFFFFFFF


def _salsa20_block(state: list[int]) -> bytes:
    """One 64-byte Salsa20/20 keystream block (the core XSalsa20 and CURVE build on)."""
    x = list(state)

    def quarter(a: int, b: int, c: int, d: int) -> None:
        x[b] ^= _rotl(x[a] + x[d], 7)
        x[c] ^= _rotl(x[b] + x[a], 9)
        x[d] ^= _rotl(x[c] + x[b], 13)
        x[a] ^= _rotl(x[d] + x[c], 18)

    for _ in range(10):
        for indices in ((0, 4, 8, 12), (5, 9, 13, 1), (10, 14, 2, 6), (15, 3, 7, 11)):
            quarter(*indices)
        for indices in ((0, 1, 2, 3), (5, 6, 7, 4), (10, 11, 8, 9), (15, 12, 13, 14)):
            quarter(*indices)
    return struct.pack("<16I", *((a + b) & 0xFFFFFFFF for a, b in zip(x, state, strict=True)))


def cipher_rate(megabytes: float) -> None:
    """MB/s of a pure-Python Salsa20 keystream XORed into data (Poly1305 would add to it)."""
    data = bytes(int(megabytes * (1 << 20)))
    state = list(range(16))
    started = time.perf_counter()
    out = bytearray(len(data))
    for offset in range(0, len(data), 64):
        state[8] = offset
        block = _salsa20_block(state)
        chunk = data[offset : offset + 64]
        out[offset : offset + len(chunk)] = (
            int.from_bytes(chunk, "little") ^ int.from_bytes(block[: len(chunk)], "little")
        ).to_bytes(len(chunk), "little")
    rate = megabytes / (time.perf_counter() - started)
    canvas_mb = 2 * 2048 * 2048 * 4 / (1 << 20)  # request and reply
    print(f"pure-Python Salsa20: {rate:.2f} MB/s; a 2048^2 RGBA8 round trip ({canvas_mb:.0f} MB "
          f"both ways) would spend {canvas_mb / rate:.0f} s in the cipher alone")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pings", type=int, default=300, help="baseline pings")
    parser.add_argument("--messages", type=int, default=10, help="large messages per sender")
    parser.add_argument("--senders", type=int, default=2)
    parser.add_argument("--pin-connections", type=int, default=4)
    parser.add_argument("--pin-mb", type=int, default=100)
    parser.add_argument("--decode-side", type=int, default=4096)
    parser.add_argument("--cipher-mb", type=float, default=0.25)
    options = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as folder,
        start_daemon(tiny_checkpoint(Path(folder))) as daemon,
    ):
        limit = wire.Limits().max_message_bytes
        print(f"daemon limits: max side {wire.DEFAULT_MAX_SIDE}, message {limit} bytes")
        flood(
            "the daemon", daemon.endpoint, daemon.process.pid, daemon.token,
            options.pings, options.messages, options.senders,
        )  # fmt: skip
        for declared, label in ((1 << 30, "1 GiB"), (limit + 1, "the limit + 1 byte")):
            grown = pin(daemon, options.pin_connections, options.pin_mb, declared)
            print(f"{options.pin_connections} raw connections each sending {options.pin_mb} MB "
                  f"of a frame declared as {label}: RSS +{grown:.0f} MiB")  # fmt: skip
        with dealer(daemon.endpoint) as sock:
            assert ping_times(sock, daemon.token, 1), "the daemon stopped answering"
        daemon.stop()
    endpoints: Queue = multiprocessing.get_context("fork").Queue()
    floor = multiprocessing.get_context("fork").Process(target=bare_router, args=(endpoints,))
    floor.start()
    try:
        assert floor.pid is not None
        flood(
            "a bare pyzmq ROUTER (the transport's floor)", endpoints.get(timeout=30), floor.pid,
            "f" * 32, options.pings, options.messages, options.senders,
        )  # fmt: skip
    finally:
        floor.kill()
        floor.join()
    decode_cost(options.decode_side)
    cipher_rate(options.cipher_mb)
    plain_handshake_hold(options.pin_mb)


if __name__ == "__main__":
    main()
