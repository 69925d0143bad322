"""Benchmark the daemon on loopback: latency, transport overhead against a bare pyzmq echo,
throughput under concurrent clients, and memory growth.

    python bench/bench_daemon.py                       # a random-init tiny model on the CPU
    python bench/bench_daemon.py --model M.safetensors --device cuda

It starts its own `colord serve` on a free loopback port and prints:
1. colorize round trip for each --sizes canvas (RGBA8 line art, 256² RGB reference), next to the
   engine time the daemon reports; the transport overhead is the round trip minus that;
2. a bare pyzmq DEALER/ROUTER echo (in its own process, like the daemon) that receives a message
   as long as the encoded request and answers one as long as the encoded reply, and the ratio
   overhead / echo (the bar: <= 1.5 at 2048²);
3. throughput and p50/p99 latency with --clients concurrent clients;
4. the daemon's RSS after the first 100 requests and after --rss-requests (bar: within 10 %).
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from daemon_helpers import RunningDaemon, start_daemon

from colord.daemon import protocol
from colord.daemon.job import Job


def line_art(size: int) -> np.ndarray:
    """Black strokes on a transparent RGBA canvas: a few circles and lines at any size."""
    alpha = np.zeros((size, size), np.uint8)
    rng = np.random.default_rng(size)
    thickness = max(1, size // 256)
    for _ in range(24):
        centre = tuple(int(v) for v in rng.integers(0, size, 2))
        cv2.circle(alpha, centre, int(rng.integers(size // 20, size // 4)), 255, thickness)
        end = tuple(int(v) for v in rng.integers(0, size, 2))
        cv2.line(alpha, centre, end, 255, thickness)
    image = np.zeros((size, size, 4), np.uint8)
    image[..., 3] = alpha
    return image


def reference(size: int = 256) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size]
    return np.stack([x % 256, y % 256, (x + y) % 256], axis=2).astype(np.uint8)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


# -- 1 + 2: latency, overhead and the bare echo ----------------------------------------------


def echo_server(endpoint_queue: multiprocessing.Queue, reply_size: int) -> None:
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    endpoint_queue.put(f"tcp://127.0.0.1:{port}")
    reply = bytes(reply_size)
    while True:
        identity, message = router.recv_multipart(copy=False)
        if len(message) == 0:
            break
        router.send_multipart([identity, reply], copy=False)
    router.close()
    context.term()


class BareEcho:
    """A bare pyzmq ROUTER in another process (like the daemon) that answers every message of the
    request's length with one of the reply's length; `round_trip()` times one exchange."""

    def __init__(self, request_size: int, reply_size: int):
        endpoints: multiprocessing.Queue = multiprocessing.Queue()
        self.server = multiprocessing.Process(target=echo_server, args=(endpoints, reply_size))
        self.server.start()
        self.dealer = zmq.Context.instance().socket(zmq.DEALER)
        self.dealer.connect(endpoints.get(timeout=30))
        self.request = bytes(request_size)

    def round_trip(self) -> float:
        started = time.perf_counter()
        self.dealer.send(self.request, copy=False)
        self.dealer.recv(copy=False)
        return (time.perf_counter() - started) * 1000.0

    def close(self) -> None:
        self.dealer.send(b"")
        self.server.join(30)
        self.dealer.close(linger=0)


def latency(daemon: RunningDaemon, size: int, repeats: int) -> None:
    """Daemon round trips and bare echoes alternate, so a busy machine slows both alike."""
    drawing, picture = line_art(size), reference()
    args, _, _ = protocol.colorize_request_args(Job(drawing, picture))
    request_size = len(protocol.encode_request(1, "colorize", daemon.token, args))
    result = protocol.array_to_image(np.zeros((size, size, 4), np.uint8))
    reply_size = len(protocol.encode_ok(1, {"timings": {}, "image": result.to_message()}))
    echo = BareEcho(request_size, reply_size)
    round_trips, engine, totals, echoes = [], [], [], []
    with daemon.client(timeout=600) as client:
        for index in range(repeats + 2):
            started = time.perf_counter()
            reply = client.colorize(drawing, picture)
            round_trip = (time.perf_counter() - started) * 1000.0
            echo_ms = echo.round_trip()
            if index >= 2:  # the first two warm up both paths
                round_trips.append(round_trip)
                engine.append(reply.timings["engine_ms"])
                totals.append(reply.timings["total_ms"])
                echoes.append(echo_ms)
    echo.close()
    overheads = [trip - inside for trip, inside in zip(round_trips, engine, strict=True)]
    ratio = statistics.median(overheads) / statistics.median(echoes)
    print(f"\n{size}² RGBA ({request_size / 2**20:.1f} MiB request, {reply_size / 2**20:.1f} MiB "
          f"reply), median of {repeats}:")  # fmt: skip
    print(f"  round trip {statistics.median(round_trips):9.2f} ms   "
          f"engine {statistics.median(engine):9.2f} ms   daemon total "
          f"{statistics.median(totals):9.2f} ms")  # fmt: skip
    print(f"  transport overhead {statistics.median(overheads):7.2f} ms   bare pyzmq echo "
          f"{statistics.median(echoes):7.2f} ms   ratio {ratio:.2f}x")  # fmt: skip
    fastest_overhead, fastest_echo = min(overheads), min(echoes)
    print(f"  fastest of {repeats} (least disturbed by other load): overhead "
          f"{fastest_overhead:7.2f} ms   echo {fastest_echo:7.2f} ms   "
          f"ratio {fastest_overhead / fastest_echo:.2f}x")  # fmt: skip


# -- 3: throughput ----------------------------------------------------------------------------


def throughput(daemon: RunningDaemon, clients: int, per_client: int, size: int) -> None:
    drawing, picture = line_art(size), reference(64)
    latencies: list[float] = []
    errors: list[str] = []

    def run() -> None:
        try:
            with daemon.client(timeout=600) as client:
                for _ in range(per_client):
                    started = time.perf_counter()
                    client.colorize(drawing, picture)
                    latencies.append((time.perf_counter() - started) * 1000.0)
        except Exception as error:
            errors.append(repr(error))

    threads = [threading.Thread(target=run) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    print(f"{clients} concurrent clients x {per_client} requests of {size}²: "
          f"{len(latencies) / elapsed:.1f} requests/s, p50 {percentile(latencies, 50):.1f} ms, "
          f"p99 {percentile(latencies, 99):.1f} ms, errors {len(errors)}")  # fmt: skip
    for error in errors[:3]:
        print("  ", error)


# -- 4: memory --------------------------------------------------------------------------------


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def memory(daemon: RunningDaemon, total: int, size: int) -> None:
    drawing, picture = line_art(size), reference(64)
    with daemon.client(timeout=600) as client:
        for index in range(total):
            client.colorize(drawing, picture)
            if index + 1 == 100:
                after_100 = rss_mib(daemon.process.pid)
    after_all = rss_mib(daemon.process.pid)
    growth = (after_all - after_100) / after_100 * 100
    print(f"daemon RSS after 100 requests {after_100:.1f} MiB, after {total} "
          f"{after_all:.1f} MiB ({growth:+.1f} %)")  # fmt: skip


def tiny_checkpoint(folder: Path) -> Path:
    import torch

    from colord.model import Generator, get_preset, save_checkpoint

    torch.manual_seed(0)
    return save_checkpoint(folder / "tiny.safetensors", Generator(get_preset("tiny")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="checkpoint; default: a random-init tiny one")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 2048])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--per-client", type=int, default=25)
    parser.add_argument("--load-size", type=int, default=128, help="canvas side under load")
    parser.add_argument("--rss-requests", type=int, default=1000)
    parser.add_argument("--rss-size", type=int, default=64)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        model = options.model or tiny_checkpoint(Path(folder))
        extra = ["--queue-size", str(max(8, options.clients))]
        with start_daemon(model, extra_args=extra, device=options.device) as daemon:
            with daemon.client() as client:
                info = client.info()
            print(f"daemon {info['version']}: {info['preset']} model on {info['device']} "
                  f"({info['dtype']}), working size {info['working_size']}")  # fmt: skip
            for size in options.sizes:
                latency(daemon, size, options.repeats)
            throughput(daemon, options.clients, options.per_client, options.load_size)
            memory(daemon, options.rss_requests, options.rss_size)
            daemon.stop()


if __name__ == "__main__":
    main()
