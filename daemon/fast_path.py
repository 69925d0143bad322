"""The generator's fast path on the CPU: the live generator on OpenVINO, else ONNX Runtime.

Measured on the shipped default model on two shared CPU cores (bench/bench_fast_path.py),
OpenVINO runs the forward 1.9-2.3x faster than eager fp32 at 256-512² and 3.1-3.7x at 1024² with
the same figures, and about 1.3x faster than ONNX Runtime, where channels_last, bf16 and
`torch.compile` gained less or failed parity (docs/cpu-fast-path.md). The first call converts
the live module (no frozen copy: its weights and architecture as they are then) for the first
installed backend that takes it: OpenVINO's PyTorch front end, or an in-memory ONNX graph for
ONNX Runtime, both with free batch and image sizes. The first call at each working shape runs
both it and eager fp32, and that shape keeps the backend only when their uint8 outputs agree
(`PARITY_WITHIN` of the values within `PARITY_TOLERANCE` of 255) and the backend was faster.
Otherwise, or when no backend is installed or none converts the model, the shape (or every
shape) runs eagerly, with a logged warning.

Why a naive `torch.onnx.export` of the generator came out wrong: the TorchScript exporter puts
the exported module in eval mode and afterwards restores the mode of the module it was given;
given a fresh wrapper (in training mode) around the generator, that "restore" switches every
BatchNorm of the live generator into training mode, so eager runs after the export normalise
with batch statistics and differ from the (correct) exported graph by about 1 on the [-1, 1]
scale (1.1 measured at 512²). Here every submodule's mode is put back as it was. The dynamo
exporter (torch's default) does not convert the generator at all: its SDPA translation takes
only 4-D q, k, v.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import sys
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from colord.model.pixels import from_signed

__all__ = [
    "PARITY_TOLERANCE",
    "PARITY_WITHIN",
    "FastPath",
    "Parity",
    "installed_backends",
    "parity",
]

log = logging.getLogger("colord.fast_path")

PARITY_TOLERANCE = 2  # of 255: the largest difference that counts as the same pixel value
PARITY_WITHIN = 0.999  # the share of output values that must be within PARITY_TOLERANCE
ONNX_OPSET = 17
# OpenVINO's compiled shapes of up to this many cells keep their working memory between runs
# (about 180 MB at 512²); larger ones give it back after each run (1.2 GB at 1024²).
KEEP_MEMORY_UP_TO = 512 * 512
OPENVINO_SHAPES_KEPT = 2  # compiled shapes kept, most recent first
OPENVINO_TELEMETRY = "openvino_telemetry"  # the package OpenVINO reports usage with


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


def parity(candidate: torch.Tensor, reference: torch.Tensor) -> Parity:
    """Compare two [-1, 1] outputs after rounding each to uint8 as the engine does."""
    rounded = [from_signed(image.float()).int() for image in (candidate, reference)]
    difference = (rounded[0] - rounded[1]).abs().flatten()
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


def _multi_head_attention(
    graph, query, key, value, mask=None, dropout=None, causal=None, scale=None, gqa=None
):  # the TorchScript exporter's signature for this op
    """`scaled_dot_product_attention(q, k, v)` on 3-D (B, N, d) tensors as ONNX Runtime's
    MultiHeadAttention with one head, whose default scale is SDPA's 1/sqrt(d)."""
    from torch.onnx import symbolic_helper as helper

    plain = (
        helper._is_none(mask)
        and helper._is_none(scale)
        and not helper._maybe_get_const(causal, "b")
    )
    if not plain or helper._get_tensor_rank(query) != 3:
        raise RuntimeError(
            "only unmasked, unscaled 3-D attention is exported as MultiHeadAttention"
        )
    output = graph.op("com.microsoft::MultiHeadAttention", query, key, value, num_heads_i=1)
    # (B, N, d_v): the exporter cannot infer a contrib operation's output type on its own
    sizes = [None, None, helper._get_tensor_dim_size(value, 2)]
    output.setType(value.type().with_sizes(sizes))
    return output


@contextlib.contextmanager
def _fused_attention() -> Iterator[None]:
    """Export attention as ONNX Runtime's fused MultiHeadAttention while in this block.

    The standard translation is MatMul-Softmax-MatMul, which holds the whole (N, M) score
    matrix (16,384 x 16,384 at 1024² for the default model); the fused one ran the default
    model's 1024² forward in 16-21 s against 24-27 s, alternately measured, same figures.
    """
    name = "aten::scaled_dot_product_attention"
    torch.onnx.register_custom_op_symbolic(name, _multi_head_attention, ONNX_OPSET)
    try:
        yield
    finally:
        torch.onnx.unregister_custom_op_symbolic(name, ONNX_OPSET)


@contextlib.contextmanager
def _tracing(model: nn.Module) -> Iterator[None]:
    """Where the live `model` may be traced for a backend: every submodule's mode kept, autograd
    off but not in inference mode (a trace records operations), the tracer's warnings quiet."""
    with (
        _modes_kept(model),
        torch.inference_mode(False),
        torch.no_grad(),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")  # tracer warnings on shape arithmetic, deprecations
        yield


def export_onnx(model: nn.Module, sketch: torch.Tensor, reference: torch.Tensor) -> bytes:
    """The live `model` in eval mode as an ONNX graph for ONNX Runtime, traced on these inputs,
    whose batch and image sizes are free."""
    buffer = io.BytesIO()
    pair = _Pair(model).eval()
    with _tracing(model), _fused_attention():
        torch.onnx.export(
            pair,
            (sketch.detach().clone(), reference.detach().clone()),
            buffer,
            dynamo=False,
            opset_version=ONNX_OPSET,
            input_names=["sketch", "reference"],
            output_names=["image"],
            dynamic_axes={
                "sketch": {0: "batch", 2: "height", 3: "width"},
                "reference": {0: "batch", 2: "reference_height", 3: "reference_width"},
                "image": {0: "batch", 2: "height", 3: "width"},
            },
            do_constant_folding=True,
            custom_opsets={"com.microsoft": 1},
        )
    return buffer.getvalue()


class _OnnxRuntime:
    """An ONNX Runtime session on the exported generator."""

    def __init__(self, model: nn.Module, sketch: torch.Tensor, reference: torch.Tensor) -> None:
        import onnxruntime  # optional (installed_backends): not a dependency of colord

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        # no memory arena: with one, a 512² forward left 448 MB held by the daemon between jobs
        # (more at larger sizes); without, it ran as fast (measured, default model)
        options.enable_cpu_mem_arena = False
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


def _openvino_without_telemetry() -> Any:
    """`openvino`, imported with its usage telemetry cut off.

    Importing openvino reports the import to a remote analytics service (from a forked process)
    and keeps a client id in the user's home folder, unless the user has opted out there; colord
    sends nothing off the machine. With the telemetry package unimportable, OpenVINO falls back
    to its own no-op stand-in."""
    sys.modules.setdefault(OPENVINO_TELEMETRY, None)  # None: importing it raises ImportError
    import openvino  # optional (installed_backends): not a dependency of colord

    return openvino


class _OpenVino:
    """OpenVINO on the live generator: converted once by OpenVINO's PyTorch front end (a trace;
    attention becomes its fused ScaledDotProductAttention) with free sizes, then compiled for
    the CPU in fp32 once per input shape. A fixed shape lets it plan memory (concatenations
    in place: 354 against 431 ms of operations at 512²) and costs about 0.1 s to compile."""

    def __init__(self, model: nn.Module, sketch: torch.Tensor, reference: torch.Tensor) -> None:
        self.openvino = _openvino_without_telemetry()
        from openvino.frontend import FrontEndManager
        from openvino.frontend.pytorch.ts_decoder import TorchScriptPythonDecoder

        frontend = FrontEndManager().load_by_framework("pytorch")
        with _tracing(model):
            decoder = TorchScriptPythonDecoder(
                _Pair(model).eval(),
                example_input=(sketch.detach().clone(), reference.detach().clone()),
            )
            loaded = frontend.load(decoder)
            for place, image in zip(loaded.get_inputs(), (sketch, reference), strict=True):
                free = self.openvino.PartialShape([-1, image.shape[1], -1, -1])
                loaded.set_partial_shape(place, free)
            self.converted = frontend.convert(loaded)
        self.core = self.openvino.Core()
        self.settings = {
            "INFERENCE_NUM_THREADS": torch.get_num_threads(),
            "PERFORMANCE_HINT": "LATENCY",
            # OpenVINO computes in bf16 where the CPU has it unless told otherwise; bf16 fails
            # the parity check (docs/cpu-fast-path.md)
            "INFERENCE_PRECISION_HINT": "f32",
            "CPU_DENORMALS_OPTIMIZATION": True,  # as the engine's eager path flushes denormals
            # the daemon shares the cores with the painting app: no thread tied to one
            "ENABLE_CPU_PINNING": False,
        }
        self.compiled: OrderedDict[tuple, tuple] = OrderedDict()  # shapes -> (model, request)

    def __call__(self, sketch: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        compiled, request = self._compiled_for(sketch, reference)
        request.infer([sketch.float().contiguous().numpy(), reference.float().contiguous().numpy()])
        output = torch.from_numpy(request.get_output_tensor(0).data.copy())
        if sketch.shape[-2] * sketch.shape[-1] > KEEP_MEMORY_UP_TO:
            # taking it again costs the next run little (30 ms, measured at 512²; re-compiling
            # instead: 130 ms)
            compiled.release_memory()
        return output

    def _compiled_for(self, sketch: torch.Tensor, reference: torch.Tensor) -> tuple:
        """The compiled model and its request for these input shapes; the most recent
        `OPENVINO_SHAPES_KEPT` shapes stay compiled."""
        shapes = (tuple(sketch.shape), tuple(reference.shape))
        compiled = self.compiled.pop(shapes, None)
        if compiled is None:
            ports = self.converted.inputs
            self.converted.reshape(
                {
                    port: self.openvino.PartialShape(list(shape))
                    for port, shape in zip(ports, shapes, strict=True)
                }
            )
            model = self.core.compile_model(self.converted, "CPU", self.settings)
            compiled = model, model.create_infer_request()
        self.compiled[shapes] = compiled  # the most recent last
        while len(self.compiled) > OPENVINO_SHAPES_KEPT:
            self.compiled.popitem(last=False)
        return compiled


def _subnormals_kept() -> bool:
    """Whether this thread computes subnormal floats (flushing to zero is off)."""
    return sys.float_info.min * sys.float_info.epsilon != 0.0


@contextlib.contextmanager
def _caller_arithmetic_kept() -> Iterator[None]:
    """ONNX Runtime flushes denormals on the calling thread too (building a session or running
    it) and leaves it so; the rest of the process (numpy users, hypothesis) expects IEEE
    arithmetic back, as the engine's own flushing gives it back."""
    ieee_before = _subnormals_kept()
    try:
        yield
    finally:
        if ieee_before and not _subnormals_kept():
            torch.set_flush_denormal(False)


Runner = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# The backends by preference, fastest first as measured (module docstring), each with the
# packages it needs (torch's ONNX exporter needs `onnx`), so that a missing one is skipped
# without building anything.
BACKENDS: dict[str, tuple[tuple[str, ...], Callable[..., Runner]]] = {
    "openvino": (("openvino",), _OpenVino),
    "onnxruntime": (("onnxruntime", "onnx"), _OnnxRuntime),
}


def installed_backends() -> list[str]:
    """The backends whose packages are installed here, fastest first."""
    return [
        name
        for name, (packages, _) in BACKENDS.items()
        if all(importlib.util.find_spec(package) is not None for package in packages)
    ]


class FastPath:
    """Runs `model(sketch, reference)` on the fastest backend that builds and matches eager.

    The backend is built on the first call (when it fails to build, the next installed one is
    tried); each new working shape (sketch and reference sizes) is checked on its first call
    against eager fp32, and that call returns what the shape runs on from then on. A shape whose
    check fails or whose backend run was not faster runs eagerly from then on, as does every
    shape when no backend is installed or none builds. Not thread-safe: the engine serialises
    forward passes.
    """

    def __init__(
        self, model: nn.Module, backend: str | None = None, *, must_beat_eager: bool = True
    ) -> None:
        """`backend`: a BACKENDS name, or None for the installed ones, fastest first (eager
        if none). `must_beat_eager`: keep the backend for a shape only if its first run beat
        eager's."""
        if backend is not None and backend not in BACKENDS:
            raise ValueError(f"unknown fast-path backend {backend!r}; choose from {list(BACKENDS)}")
        self.model = model
        self.untried = [backend] if backend else installed_backends()
        self.backend = self.untried[0] if self.untried else None
        self.failed: list[str] = []  # backends that failed to build
        self.must_beat_eager = must_beat_eager
        self.runner: Runner | None = None
        self.broken = False  # every backend failed to build: eager for good
        self.shapes: dict[tuple, bool] = {}  # working shape -> runs on the backend
        self.checks: dict[tuple, Parity] = {}
        if self.backend is None:
            needs = " / ".join(" and ".join(packages) for packages, _ in BACKENDS.values())
            log.warning(
                "fast path: no backend installed (it needs %s); the generator runs eagerly",
                needs,
            )

    def __call__(self, sketch: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) and (B, 3, Hr, Wr) CPU float tensors in [-1, 1] -> (B, 3, H, W)."""
        if self.backend is None or self.broken:
            return self.model(sketch, reference)
        key = (tuple(sketch.shape[-2:]), tuple(reference.shape[-2:]))
        with _caller_arithmetic_kept():
            if key not in self.shapes:
                return self._check(key, sketch, reference)
            if self.shapes[key] and self.runner is not None:
                return self.runner(sketch, reference)
        return self.model(sketch, reference)

    def state(self) -> str:
        """One line for `Engine.info`: the backend and what the shapes seen so far run on."""
        if self.backend is None:
            return "eager (no fast-path backend installed)"
        failed = f" ({', '.join(self.failed)} failed to build)" if self.failed else ""
        if self.broken:
            return f"eager{failed}"
        fast = sum(self.shapes.values())
        return f"{self.backend} for {fast} of {len(self.shapes)} working shapes, else eager{failed}"

    def _check(self, key: tuple, sketch: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """Run eager fp32 and the backend (built on first use) on a new shape, keep the backend
        for it if the outputs agree and the backend was faster. Returns the output of the path
        the shape keeps, so that an answer does not depend on being the first at its shape."""
        start = time.perf_counter()
        eager = self.model(sketch, reference)
        eager_s = time.perf_counter() - start
        shape = "x".join(str(n) for n in key[0])
        self.shapes[key] = False
        if self.runner is None and not self._build(sketch, reference):
            return eager
        try:
            start = time.perf_counter()
            output = self.runner(sketch, reference)
            fast_s = time.perf_counter() - start
        except Exception as error:  # e.g. memory at a large shape
            log.warning(
                "fast path: %s failed at %s (%s); running this shape eagerly",
                self.backend,
                shape,
                _first_line(error),
            )
            return eager
        if self.must_beat_eager and fast_s >= eager_s:
            # a backend's first run at a new shape also pays for that shape's set-up: time a
            # second run before calling it slower
            start = time.perf_counter()
            self.runner(sketch, reference)
            fast_s = min(fast_s, time.perf_counter() - start)
        check = parity(output, eager)
        self.checks[key] = check
        summary = (
            f"{self.backend} at {shape}: {fast_s * 1000:.0f} ms against eager fp32's "
            f"{eager_s * 1000:.0f} ms; parity {check}"
        )
        if not check.passed:
            log.warning("fast path: %s differs from eager; running this shape eagerly", summary)
        elif self.must_beat_eager and fast_s >= eager_s:
            log.warning("fast path: %s is not faster; running this shape eagerly", summary)
        else:
            self.shapes[key] = True
            log.info("fast path: %s", summary)
            return output
        return eager

    def _build(self, sketch: torch.Tensor, reference: torch.Tensor) -> bool:
        """Build the first untried backend that builds; False (eager for good) if none does."""
        while self.untried:
            self.backend = self.untried.pop(0)
            start = time.perf_counter()
            try:
                self.runner = BACKENDS[self.backend][1](self.model, sketch, reference)
            except Exception as error:  # exporters and runtimes fail in many ways
                self.failed.append(self.backend)
                log.warning(
                    "fast path: %s failed to build (%s); %s",
                    self.backend,
                    _first_line(error),
                    f"trying {self.untried[0]}" if self.untried else "running eagerly",
                )
                continue
            log.info("fast path: %s built in %.1f s", self.backend, time.perf_counter() - start)
            return True
        self.broken = True
        return False


def _first_line(error: Exception) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"
