"""The CPU fast path against eager fp32, shipped default model, same run (issue 14).

    python bench/bench_fast_path.py                      # 256, 512, 1024
    python bench/bench_fast_path.py --sizes 512 --repeats 5
    python bench/bench_fast_path.py --backend onnxruntime   # one backend, not the first installed

For each working size: a real drawing (an OpenMoji line art from tests/data, scaled to the size)
and its reference, prepared as the engine prepares them. A fresh fast path's first call (eager
fp32, converting the model, compiling it and the backend's first run, which the parity check
compares) is timed as "first call"; then eager fp32 and the fast path are timed alternately
(A, B, A, B) so that both see the same load on a shared machine: their medians, eager / fast, and
the parity figures of the fast path's output against eager's on the uint8 scale. Denormals are
flushed, as the engine does on the CPU.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch

from colord.daemon.engine import Engine, Job
from colord.daemon.fast_path import BACKENDS, PARITY_TOLERANCE, PARITY_WITHIN, FastPath, parity
from colord.model.default_model import load_default_model

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "openmoji"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="256,512,1024", help="comma-separated working sizes")
    parser.add_argument("--repeats", type=int, default=3, help="timed (eager, fast) pairs per size")
    parser.add_argument("--line-art", type=Path, default=DATA / "1F600-line.png")
    parser.add_argument("--reference", type=Path, default=DATA / "1F381-color.png")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--backend", choices=list(BACKENDS), default=None, help="default: the first installed"
    )
    args = parser.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",") if s]
    return args


def read_rgba(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise SystemExit(f"cannot read {path}")
    code = cv2.COLOR_BGRA2RGBA if image.shape[-1] == 4 else cv2.COLOR_BGR2RGB
    return cv2.cvtColor(image, code)


def model_inputs(
    line_art: np.ndarray, reference: np.ndarray, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The engine's sketch and reference tensors for the line art scaled to size x size."""
    canvas = cv2.resize(line_art, (size, size), interpolation=cv2.INTER_LINEAR)
    prepared = Engine(None, device="cpu", working_size=size).prepare(Job(canvas, reference))
    sketch = 1.0 - 2.0 * torch.from_numpy(prepared.sketch)[None, None]
    reference_tensor = torch.from_numpy(prepared.reference)[None].permute(0, 3, 1, 2) * 2.0 - 1.0
    return sketch.contiguous(), reference_tensor.contiguous()


def timed_ms(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return (time.perf_counter() - start) * 1000


def bench_size(
    generator: torch.nn.Module,
    sketch: torch.Tensor,
    reference: torch.Tensor,
    repeats: int,
    backend: str | None,
) -> str:
    path = FastPath(generator, backend)
    with torch.inference_mode():
        start = time.perf_counter()
        path(sketch, reference)  # builds and checks
        build_s = time.perf_counter() - start
        fast_output = path(sketch, reference)
        eager_output = generator(sketch, reference)
        eager_ms, fast_ms = [], []
        for _ in range(repeats):  # alternate, so both see the same machine state
            eager_ms.append(timed_ms(lambda: generator(sketch, reference)))
            fast_ms.append(timed_ms(lambda: path(sketch, reference)))
    check = parity(fast_output, eager_output)
    eager, fast = statistics.median(eager_ms), statistics.median(fast_ms)
    size = sketch.shape[-1]
    return (
        f"{size:>5} {eager:9.0f} ms {fast:9.0f} ms {eager / fast:7.2f}x {build_s:8.1f} s  "
        f"{check.max_difference:>3}/255 {check.p999_difference:>5g}/255 {check.within:9.4%}   "
        f"{path.state()}"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    loaded = load_default_model()
    generator = loaded.generator.eval().float()
    line_art, reference = read_rgba(args.line_art), read_rgba(args.reference)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} torch threads; default model "
        f"({loaded.preset.name} preset), batch 1; medians of {args.repeats} alternating pairs; "
        f"parity: {PARITY_WITHIN:.1%} of output values within {PARITY_TOLERANCE}/255 of eager"
    )
    print(
        f"{'size':>5} {'fp32 eager':>12} {'fast path':>12} {'eager/fast':>8} {'first call':>10}  "
        f"{'max':>7} {'p99.9':>9} {'within':>9}   backend"
    )
    for size in args.sizes:
        sketch, reference_tensor = model_inputs(line_art, reference, size)
        line = bench_size(generator, sketch, reference_tensor, args.repeats, args.backend)
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
