"""The inference engine: line art (+ an optional reference) as numpy arrays in, a colour layer out.

The engine owns the generator and the device and never sees ZeroMQ: the daemon's server, the CLI
and the benchmark all call `Engine.colorize` / `Engine.colorize_batch`. One job reads:

    check -> flatten on white -> line mask -> working sketch + reference (imaging.py)
          -> generator forward at the working size (batched with same-shaped jobs)
          -> crop -> upsample under the canvas's lines -> [flats from that] -> lines on top
          -> [paper around the figure cleared] -> RGBA

When the job asks for flats, `flats.flats_layer` makes them at canvas size from the upsampled
colours and the job's line mask before the lines go over them, timed as the engine's `flats`;
with flats alone the colour layer is not finished (the reply leaves it out). With `ground`
"transparent", `ground.clear_outside` clears the colour layer's paper around the figure.

Device: CUDA, then MPS, then the CPU unless one is named. On CUDA the weights are bfloat16 and the
forward runs under `inference_mode` and bf16 autocast; the CUDA fast path compiles the generator
with `torch.compile(mode="reduce-overhead", dynamic=False)` (CUDA graphs; one compile per working
shape, since dynamic shapes crashed inductor, see DESIGN.md) and falls back to eager, with a
logged warning, if compiling fails; compiled, a batch runs one sample per call, so that batch
sizes cost no further compiles. The CPU fast path is `fast_path.FastPath`: OpenVINO (or ONNX
Runtime) on a conversion of the loaded generator when the cpu extra is installed, each working
shape checked against eager fp32 on its first forward, eager otherwise. Loading runs one warm-up
forward at the working size.

Working size: a fixed one when the engine or the job names one; otherwise automatic, per job:
the size at which the line art's strokes are as thick as the model's training sketches' strokes
(`colord.model.line_scale`), at most `line_scale.AUTOMATIC_SIZE_CAP` and what the device affords
(`MAX_WORKING_SIZE`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import colord.model
from colord.model.default_model import default_model_path, verify_default_model
from colord.model.line_scale import AUTOMATIC_SIZE_CAP, LINE_WIDTH_KEY, automatic_working_size
from colord.plugins.wire.colord_protocol import ProtocolError, colorize_options

from . import flats, ground, imaging
from .devices import DeviceError, describe, pick_device
from .fast_path import FastPath
from .imaging import EngineError, InputError
from .job import ColorizeResult, Job

__all__ = [
    "ColorizeResult",
    "DeviceError",
    "Engine",
    "EngineError",
    "InputError",
    "Job",
    "NoModelError",
    "default_checkpoint",
]

log = logging.getLogger("colord.engine")

# The shipped default checkpoint (colord.model.default_model owns its place and its hash).
DEFAULT_CHECKPOINT = default_model_path()

# The training sketches' median stroke width for checkpoints that do not record LINE_WIDTH_KEY
# (the shipped v1 model): measured with `bench/bench_scale.py --training-line-width
# data/openmoji/train.jsonl` on the OpenMoji part of its training data, 3,708 drawings at 256 px
# made into 128 px training sketches as its training did (70-100 % crops, shrunk, binarized):
# median 5.00 px, quartiles 4.24 and 5.00 px.
FALLBACK_TRAINING_LINE_WIDTH = 5.0

# The largest working size, automatic or requested, per device type (others:
# DEFAULT_MAX_WORKING_SIZE). On two busy CPU cores the default preset's forward took 8.4 s at
# 1024 px (3.7 s at 512 px), and 2048 px holds four times the pixels; on a CUDA GPU the
# paper-sized generator runs 1024 px in under 8 ms (DESIGN.md), so 2048 px stays well under a
# second and attention memory is linear.
MAX_WORKING_SIZE = {"cuda": 2048}
DEFAULT_MAX_WORKING_SIZE = 1024
WARMUP_SIZE = 256  # the warm-up forward's size in automatic mode (a typical chosen size)
# The fast path each device runs when `fast` is on: "compile" (torch.compile, CUDA graphs) or
# "export" (fast_path.FastPath: OpenVINO or ONNX Runtime on a conversion, checked per shape).
# Others compile.
FAST_PATHS = {"cuda": "compile", "cpu": "export"}
# Compiled, every new working shape costs a compile of seconds: automatic sizes then step by 64.
FAST_PATH_MULTIPLE = 64

NO_MODEL_MESSAGE = (
    "no model loaded: the default model that ships with colord is missing or damaged. Reinstall "
    "colord, or pass a checkpoint written by `colord train` (a .safetensors file) with --model PATH"
)


class NoModelError(EngineError):
    """Colorizing was asked of an engine that has no model."""

    def __init__(self, message: str = NO_MODEL_MESSAGE) -> None:
        super().__init__(message)


def default_checkpoint() -> Path:
    """The shipped default checkpoint, checked against its recorded SHA-256.

    Raises NoModelError, naming the problem, when the package file is missing or damaged.
    """
    try:
        return verify_default_model(DEFAULT_CHECKPOINT)
    except colord.model.CheckpointError as error:
        raise NoModelError(f"{NO_MODEL_MESSAGE} ({error})") from None


@contextlib.contextmanager
def _denormals_flushed():
    """Flush denormal floats to zero on this thread for a while, then restore the mode.

    Denormals (tiny activations, e.g. of freshly initialised layers) slow CPU arithmetic up to
    50x, and flushing them changes no visible output; but the mode is per thread and other code
    in the process (hypothesis, numpy users) expects IEEE behaviour, so it is put back.
    """
    smallest, epsilon = sys.float_info.min, sys.float_info.epsilon
    already = smallest * epsilon == 0.0  # a subnormal result vanishes when flushing is on
    if already or not torch.set_flush_denormal(True):
        yield
        return
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def _training_line_width(metadata: dict) -> float:
    """The checkpoint's recorded training stroke width, or the shipped model's measured one."""
    recorded = metadata.get(LINE_WIDTH_KEY)
    if recorded is None:
        return FALLBACK_TRAINING_LINE_WIDTH
    if isinstance(recorded, (int, float)) and not isinstance(recorded, bool) and recorded > 1:
        return float(recorded)
    log.warning(
        "ignoring the checkpoint's %s %r (not a width above one pixel); using %.2f px",
        LINE_WIDTH_KEY,
        recorded,
        FALLBACK_TRAINING_LINE_WIDTH,
    )
    return FALLBACK_TRAINING_LINE_WIDTH


@dataclass
class _Prepared:
    """A job after the CPU-side preparation, waiting for its forward pass."""

    job: Job
    working_size: int
    geometry: imaging.Geometry
    flat: np.ndarray  # the line art flattened on white, (H, W) or (H, W, 3) uint8
    darkest: np.ndarray  # (H, W) uint8, its darkest channel
    lines: np.ndarray  # (H, W) uint8 line mask
    sketch: np.ndarray  # (h, w) float32, 1 on lines
    widened: int  # working pixels the sketch's strokes were widened by
    reference: np.ndarray | None  # (hr, wr, 3) float32 in [0, 1]
    prepare_ms: float

    @property
    def batch_key(self) -> tuple:
        reference_shape = None if self.reference is None else self.reference.shape
        return self.sketch.shape, reference_shape


def _flats_options(job: Job, long_side: int) -> flats.FlatsOptions:
    """The job's flats settings; those it leaves out (None) take the defaults scaled to the
    canvas (`FlatsOptions.for_canvas`: made for a 2048 px page)."""
    choices = {"snap_to_palette": bool(job.flats_palette)}
    if job.flats_ground is not None:
        choices["transparent_ground"] = job.flats_ground == "transparent"
    options = flats.FlatsOptions.for_canvas(long_side, **choices)
    return options if job.flats_gap is None else replace(options, gap=job.flats_gap)


class Engine:
    """Owns one generator on one device; thread-safe (forward passes are serialised)."""

    def __init__(
        self,
        model: str | os.PathLike | nn.Module | None = None,
        *,
        device: str | torch.device | None = None,
        working_size: int | None = None,
        fast: bool | None = None,
        max_working_size: int | None = None,
        warmup: bool = True,
    ) -> None:
        """`model`: a checkpoint path, a generator-like module (`module(sketch, reference)`), or
        None (no model: colorize raises NoModelError). `working_size`: None = automatic. `fast`:
        the fast path (compiled on CUDA, OpenVINO on the CPU when installed); None = on CUDA
        and the CPU. `max_working_size`: the largest working size, automatic or requested; None =
        the device's (`MAX_WORKING_SIZE`). Raises CheckpointError, DeviceError or InputError."""
        self.device = pick_device(device)
        self.working_size = (
            None if working_size is None else imaging.check_working_size(working_size)
        )
        self.max_working_size = (
            MAX_WORKING_SIZE.get(self.device.type, DEFAULT_MAX_WORKING_SIZE)
            if max_working_size is None
            else imaging.check_working_size(max_working_size)
        )
        self.model_path: Path | None = None
        self.preset = None
        self.checkpoint_dtype: str | None = None
        self.metadata: dict = {}
        self.dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self.fast = self.device.type in FAST_PATHS if fast is None else bool(fast)
        self._fast_failed = False
        self._compiled: nn.Module | None = None
        self._lock = threading.Lock()

        module: nn.Module | None
        if model is None:
            module = None
        elif isinstance(model, nn.Module):
            module = model
            self.preset = getattr(model, "preset", None)
        else:
            loaded = colord.model.load_checkpoint(model)
            module = loaded.generator
            self.model_path = loaded.path
            self.preset = loaded.preset
            self.checkpoint_dtype = loaded.dtype
            self.metadata = dict(loaded.metadata)
        self.training_line_width = _training_line_width(self.metadata)
        self.model = None if module is None else module.eval().to(self.device, self.dtype)
        self._cpu_fast_path = (
            FastPath(self.model)
            if self.model is not None and self.fast and FAST_PATHS.get(self.device.type) == "export"
            else None
        )
        if self.model is not None and warmup:
            self.warm_up()

    # -- public ------------------------------------------------------------------------------

    @property
    def has_model(self) -> bool:
        return self.model is not None

    def colorize(
        self, line_art: np.ndarray, reference: np.ndarray | None = None, **options: Any
    ) -> ColorizeResult:
        """Colour `line_art` after `reference`: (H, W, 4) uint8 RGBA of the line art's size.
        `options`: the Job's (working_size, keep_lines, ...)."""
        return self.colorize_batch([Job(line_art, reference, **options)])[0]

    def colorize_batch(self, jobs: Sequence[Job]) -> list[ColorizeResult]:
        """Colour several jobs; jobs of the same working shapes share one forward pass.

        Every job is checked before any forward runs, so one bad job raises InputError for the
        batch; callers that want per-job errors check jobs with `prepare` first.
        """
        if self.model is None:
            raise NoModelError()
        prepared = [self.prepare(job) for job in jobs]
        groups: dict[tuple, list[int]] = {}
        for index, item in enumerate(prepared):
            groups.setdefault(item.batch_key, []).append(index)
        results: list[ColorizeResult | None] = [None] * len(prepared)
        for indices in groups.values():
            start = time.perf_counter()
            colours = self._forward_numpy(
                np.stack([prepared[i].sketch for i in indices]),
                None
                if prepared[indices[0]].reference is None
                else np.stack([prepared[i].reference for i in indices]),
            )
            forward_ms = (time.perf_counter() - start) * 1000
            for row, index in enumerate(indices):
                results[index] = self._finish(prepared[index], colours[row], forward_ms)
        return results  # type: ignore[return-value]

    def prepare(self, job: Job) -> _Prepared:
        """Check and pre-process one job on the CPU (raises InputError)."""
        start = time.perf_counter()
        try:  # the daemon's decoder checked them already; callers in process have not
            colorize_options(job.options(), reference=job.reference is not None)
        except ProtocolError as error:
            raise InputError(error.message) from None
        line_art = imaging.check_image(job.line_art, "line art")
        reference = None
        if job.reference is not None:
            reference = imaging.check_image(job.reference, "reference")
        working_size = self.working_size if job.working_size is None else job.working_size
        if working_size is not None:
            working_size = imaging.check_working_size(working_size)
        flat, darkest, lines = imaging.read_line_art(line_art)
        if working_size is None:
            working_size = self.automatic_working_size(lines)
        geometry = imaging.plan_geometry(line_art.shape[0], line_art.shape[1], working_size)
        sketch, widened = imaging.working_sketch(lines, geometry)
        if reference is not None:
            reference = imaging.working_reference(reference, geometry.long_side)
        prepare_ms = (time.perf_counter() - start) * 1000
        return _Prepared(
            job,
            working_size,
            geometry,
            flat,
            darkest,
            lines,
            sketch,
            widened,
            reference,
            prepare_ms,
        )

    def automatic_working_size(self, lines: np.ndarray) -> int:
        """The working size for a canvas's (H, W) line mask in automatic mode (logged)."""
        compiled = self.fast and self._cpu_fast_path is None
        multiple = FAST_PATH_MULTIPLE if compiled else colord.model.SIZE_MULTIPLE
        size = automatic_working_size(
            lines,
            self.training_line_width,
            multiple=multiple,
            maximum=min(self.max_working_size, AUTOMATIC_SIZE_CAP),
        )
        height, width = lines.shape
        log.info("automatic working size %d for a %dx%d canvas", size, width, height)
        return size

    def forward(self, sketch: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
        """The bare generator on model tensors: sketch (B, 1, H, W) in [-1, 1] (lines -1),
        reference (B, 3, Hr, Wr) in [-1, 1] or None; returns (B, 3, H, W) float32 in [-1, 1] on
        the engine's device. Used by `colorize` and by the benchmark."""
        if self.model is None:
            raise NoModelError()
        sketch = sketch.to(self.device, self.dtype)
        if reference is None:  # the generator's no-reference mode, built here so that one
            # compiled graph serves both modes
            reference = sketch.new_zeros(sketch.shape[0], 3, *sketch.shape[-2:])
        reference = reference.to(self.device, self.dtype)
        flush = _denormals_flushed() if self.device.type == "cpu" else contextlib.nullcontext()
        with self._lock, flush, torch.inference_mode(), self._autocast():
            return self._run(sketch, reference).float()

    def warm_up(self, size: int | None = None) -> float:
        """One forward at `size` x `size` (default: the working size, or WARMUP_SIZE in
        automatic mode); returns milliseconds."""
        size = size or self.working_size or WARMUP_SIZE
        start = time.perf_counter()
        sketch = torch.ones(1, 1, size, size)
        self.forward(sketch, torch.zeros(1, 3, size, size))
        self._synchronize()
        elapsed = (time.perf_counter() - start) * 1000
        log.info("warm-up at %dx%d on %s: %.0f ms", size, size, self.device, elapsed)
        return elapsed

    def info(self) -> dict:
        """What runs here: model file, preset, parameters, device, dtype, working size ("auto" or
        a number) and the cap of automatic sizes."""
        parameters = None
        if self.model is not None:
            parameters = sum(p.numel() for p in self.model.parameters())
        return {
            "model": None if self.model_path is None else str(self.model_path),
            "loaded": self.model is not None,
            "preset": None if self.preset is None else self.preset.name,
            "parameters": parameters,
            "checkpoint_dtype": self.checkpoint_dtype,
            "device": describe(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "fast_path": self._fast_path_state(),
            "working_size": "auto" if self.working_size is None else self.working_size,
            "max_working_size": self.max_working_size,
            "metadata": self.metadata,
        }

    # -- internals ---------------------------------------------------------------------------

    def _finish(self, item: _Prepared, colours: np.ndarray, forward_ms: float) -> ColorizeResult:
        start = time.perf_counter()
        job = item.job
        colours = imaging.crop_colours(colours, item.geometry)
        image = imaging.upsample_colours(colours, item.lines, item.widened)
        flats_layer, flats_ms = None, 0.0
        if job.flats is not None:  # from the colours before the lines go over them
            flats_start = time.perf_counter()
            options = _flats_options(job, max(item.lines.shape))
            flats_layer = flats.flats_layer(item.lines, image, job.reference, options)
            flats_ms = (time.perf_counter() - flats_start) * 1000
        if job.flats != "only":  # with flats alone, the colour layer is not sent
            if job.keep_lines:
                image = imaging.draw_lines(image, item.flat, item.darkest)
            if job.ground == "transparent":
                ground.clear_outside(image, item.lines)
        finish_ms = (time.perf_counter() - start) * 1000 - flats_ms
        timings = {"prepare": item.prepare_ms, "forward": forward_ms, "finish": finish_ms}
        if flats_layer is not None:
            timings["flats"] = flats_ms
        timings["total"] = sum(timings.values())
        return ColorizeResult(image, item.working_size, timings, flats_layer)

    def _forward_numpy(self, sketches: np.ndarray, references: np.ndarray | None) -> np.ndarray:
        """(B, h, w) float sketches (1 = line) and (B, hr, wr, 3) [0, 1] references ->
        (B, h, w, 3) uint8 colours."""
        sketch = 1.0 - 2.0 * torch.from_numpy(sketches)[:, None]  # lines -1, paper +1
        reference = None
        if references is not None:
            reference = torch.from_numpy(references).permute(0, 3, 1, 2) * 2.0 - 1.0
        output = self.forward(sketch, reference)
        with torch.inference_mode():
            output = colord.model.from_signed(output)
            return output.permute(0, 2, 3, 1).cpu().numpy()

    def _run(self, sketch: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        if self._cpu_fast_path is not None:
            return self._cpu_fast_path(sketch, reference)
        if self.fast and not self._fast_failed:
            try:
                compiled = self._compiled_model()
                # one sample per call: each batch size would be another compile (seconds), and
                # a compiled batch-1 forward is launch-free; clone, as CUDA graph outputs are
                # overwritten by the next replay
                outputs = []
                for index in range(sketch.shape[0]):
                    self._mark_step()
                    one = compiled(sketch[index : index + 1], reference[index : index + 1])
                    outputs.append(one.clone())
                return torch.cat(outputs)
            except Exception as error:  # inductor and CUDA graphs fail in many ways
                self._fast_failed = True
                log.warning(
                    "compiled fast path failed (%s: %s); running eagerly from now on",
                    type(error).__name__,
                    str(error).splitlines()[0] if str(error) else "",
                )
        return self.model(sketch, reference)

    def _compiled_model(self) -> nn.Module:
        if self._compiled is None:
            config = torch._dynamo.config
            for name in ("recompile_limit", "cache_size_limit"):  # renamed in torch 2.6
                if hasattr(config, name):
                    setattr(config, name, max(getattr(config, name), 64))
            self._compiled = torch.compile(self.model, mode="reduce-overhead", dynamic=False)
        return self._compiled

    def _mark_step(self) -> None:
        """Tell CUDA graph trees a new inference step begins (its outputs may be reused)."""
        mark_step = getattr(torch.compiler, "cudagraph_mark_step_begin", None)
        if mark_step is not None and self.device.type == "cuda":
            mark_step()

    def _autocast(self):
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _fast_path_state(self) -> str:
        if not self.fast:
            return "off"
        if self._cpu_fast_path is not None:
            return self._cpu_fast_path.state()
        return "failed, eager" if self._fast_failed else "torch.compile reduce-overhead"
