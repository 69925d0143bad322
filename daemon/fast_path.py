"""The generator's fast path on the CPU: the live generator exported to ONNX Runtime, per shape.

Measured on the shipped default model on two shared CPU cores (bench/bench_fast_path.py), ONNX
Runtime runs the forward several times faster than eager fp32 with the same figures, where
channels_last, bf16 and `torch.compile` gained less (docs/fast_path.md). So, per working shape,
the first call exports the live module (no frozen copy: its weights and architecture as they are
now) to an in-memory ONNX graph with that shape fixed, opens an ONNX Runtime session on it, runs
both it and eager fp32 on that first input, and keeps the session only when the uint8 outputs
agree (`PARITY_WITHIN` of the pixels within `PARITY_TOLERANCE` of 255). Otherwise, or when
onnxruntime is not installed or the export fails, that shape runs eagerly, with a logged warning.

Why a naive `torch.onnx.export` of the generator came out wrong: the TorchScript exporter puts
the exported module in eval mode and afterwards restores the mode of the module it was given;
given a fresh wrapper (in training mode) around the generator, that "restore" switches every
BatchNorm of the live generator into training mode, so eager runs after the export normalise
with batch statistics and differ from the exported graph by up to 1.1-1.8 on the [-1, 1] scale.
Here every submodule's mode is put back as it was. The dynamo exporter (torch's default) does
not convert the generator at all: its SDPA translation takes only 4-D q, k, v.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

__all__ = ["PARITY_TOLERANCE", "PARITY_WITHIN", "FastPath", "Parity", "parity", "pick_backend"]

log = logging.getLogger("colord.fast_path")

PARITY_TOLERANCE = 2  # of 255: the largest difference that counts as the same pixel value
PARITY_WITHIN = 0.999  # the share of output values that must be within PARITY_TOLERANCE
ONNX_OPSET = 17


@dataclass(frozen=True)
class Parity:
    """How a backend's output compares to eager fp32 on the uint8 scale the engine returns."""

    max_difference: int  # of 255
    p999_difference: float  # the 99.9th percentile, of 255
    within: float  # share of values within PARITY_TOLERANCE

    @property
    def passed(self) -> bool:
        return self.within >= PARITY_WITHIN

    def __str__(self) -> str:
        return (
            f"max {self.max_difference}/255, 99.9th percentile {self.p999_difference:g}/255, "
            f"{self.within:.4%} within {PARITY_TOLERANCE}/255"
        )


def to_uint8(image: torch.Tensor) -> torch.Tensor:
    """A [-1, 1] image as the engine rounds it to 0..255."""
    return ((image.float() + 1.0) * 127.5).clamp(0, 255).round().to(torch.uint8)


def parity(candidate: torch.Tensor, reference: torch.Tensor) -> Parity:
    """Compare two [-1, 1] outputs after rounding each to uint8."""
    difference = (to_uint8(candidate).int() - to_uint8(reference).int()).abs().flatten()
    p999 = float(np.percentile(difference.numpy(), 99.9))
    within = float((difference <= PARITY_TOLERANCE).double().mean())
    return Parity(int(difference.max()), p999, within)


@contextlib.contextmanager
def _modes_kept(module: nn.Module) -> Iterator[None]:
    """Put every submodule's train/eval mode back afterwards (the exporter does not: above)."""
    modes = [(m, m.training) for m in module.modules()]
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


class _Pair(nn.Module):
    """`generator(sketch, reference)` as a two-input module with positional arguments only."""

    def __init__(self, generator: nn.Module) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, sketch: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        return self.generator(sketch, reference)


def export_onnx(model: nn.Module, sketch: torch.Tensor, reference: torch.Tensor) -> bytes:
    """The live `model` in eval mode as an ONNX graph for these input shapes (batch included)."""
    buffer = io.BytesIO()
    pair = _Pair(model).eval()
    with (
        _modes_kept(model),
        torch.inference_mode(False),
        torch.no_grad(),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")  # tracer warnings on shape arithmetic, the deprecation
        torch.onnx.export(
            pair,
            (sketch.detach().clone(), reference.detach().clone()),
            buffer,
            dynamo=False,
            opset_version=ONNX_OPSET,
            input_names=["sketch", "reference"],
            output_names=["image"],
            do_constant_folding=True,
        )
    return buffer.getvalue()


class _OnnxRuntime:
    """One ONNX Runtime session for one input shape."""

    def __init__(self, model: nn.Module, sketch: torch.Tensor, reference: torch.Tensor) -> None:
        import onnxruntime  # optional (pick_backend): not a dependency of colord

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        # as the engine's eager path flushes denormals (they only slow the arithmetic)
        options.add_session_config_entry("session.set_denormal_as_zero", "1")
        self.session = onnxruntime.InferenceSession(
            export_onnx(model, sketch, reference), options, providers=["CPUExecutionProvider"]
        )

    def __call__(self, sketch: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        feeds = {
            "sketch": sketch.float().contiguous().numpy(),
            "reference": reference.float().contiguous().numpy(),
        }
        return torch.from_numpy(self.session.run(None, feeds)[0])


# The backends by preference, fastest first as measured (module docstring); each entry names the
# module it needs, so that a missing one is skipped without building anything.
BACKENDS = {"onnxruntime": ("onnxruntime", _OnnxRuntime)}


def pick_backend() -> str | None:
    """The fastest backend whose package is installed here, or None."""
    for name, (package, _) in BACKENDS.items():
        if importlib.util.find_spec(package) is not None:
            return name
    return None


class FastPath:
    """Runs `model(sketch, reference)` on the fastest backend that builds and matches eager.

    Backends are built per input shape on first use (one sample per call, so batch sizes cost
    no further builds) and checked for parity on that first input; a shape whose backend is
    missing, fails to build, fails the check or is not faster than eager runs eagerly from then
    on. Not thread-safe: the engine serialises forward passes.
    """

    def __init__(
        self, model: nn.Module, backend: str | None = None, *, must_beat_eager: bool = True
    ) -> None:
        """`backend`: a BACKENDS name, or None for the fastest installed one (eager if none).
        `must_beat_eager`: keep a shape's backend only if its first run beat eager's."""
        if backend is not None and backend not in BACKENDS:
            raise ValueError(f"unknown fast-path backend {backend!r}; choose from {list(BACKENDS)}")
        self.model = model
        self.backend = backend or pick_backend()
        self.must_beat_eager = must_beat_eager
        self.runners: dict[tuple, object | None] = {}  # shape -> runner, None = eager
        self.checks: dict[tuple, Parity] = {}
        if self.backend is None:
            log.warning(
                "fast path: none of %s is installed; the generator runs eagerly (install "
                "onnxruntime for a faster CPU path)",
                ", ".join(package for package, _ in BACKENDS.values()),
            )

    def __call__(self, sketch: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) and (B, 3, Hr, Wr) CPU float tensors in [-1, 1] -> (B, 3, H, W)."""
        outputs = []
        for index in range(sketch.shape[0]):
            one = sketch[index : index + 1], reference[index : index + 1]
            key = (tuple(one[0].shape), tuple(one[1].shape))
            if key not in self.runners:
                outputs.append(self._build(key, *one))
                continue
            runner = self.runners[key]
            outputs.append(self.model(*one) if runner is None else runner(*one))
        return torch.cat(outputs)

    def state(self) -> str:
        """One line for `Engine.info`: the backend and what each shape runs on."""
        if self.backend is None:
            return "eager (no fast-path backend installed)"
        fast = sum(runner is not None for runner in self.runners.values())
        return f"{self.backend} for {fast} of {len(self.runners)} working shapes, else eager"

    def _build(self, key: tuple, sketch: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """Build this shape's runner and keep it if it matches eager fp32 and beats its time;
        returns eager's output."""
        start = time.perf_counter()
        eager = self.model(sketch, reference)
        eager_s = time.perf_counter() - start
        self.runners[key] = None
        if self.backend is None:
            return eager
        shape = "x".join(str(n) for n in key[0][-2:])
        start = time.perf_counter()
        try:
            runner = BACKENDS[self.backend][1](self.model, sketch, reference)
            built = time.perf_counter()
            output = runner(sketch, reference)
            fast_s = time.perf_counter() - built
        except Exception as error:  # exporters and runtimes fail in many ways
            first_line = str(error).splitlines()[0] if str(error) else ""
            log.warning(
                "fast path: %s failed to build for %s (%s: %s); running this shape eagerly",
                self.backend,
                shape,
                type(error).__name__,
                first_line,
            )
            return eager
        check = parity(output, eager)
        self.checks[key] = check
        if not check.passed:
            log.warning(
                "fast path: %s differs from eager fp32 at %s (%s); running this shape eagerly",
                self.backend,
                shape,
                check,
            )
            return eager
        summary = (
            f"{self.backend} at {shape}: built in {built - start:.1f} s, first run "
            f"{fast_s * 1000:.0f} ms against eager fp32's {eager_s * 1000:.0f} ms; parity {check}"
        )
        # the backend's first run includes its own warm-up, so a backend that wins here wins
        if self.must_beat_eager and fast_s >= eager_s:
            log.warning("fast path: %s; not faster, running this shape eagerly", summary)
            return eager
        self.runners[key] = runner
        log.info("fast path: %s", summary)
        return eager
