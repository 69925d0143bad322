"""The CPU fast path: parity with eager fp32, and eager whenever the backend is missing, breaks
or disagrees. Small generators of the default model's architecture (colour hint, stride 8)."""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from capabilities import EXTRAS, missing
from torch import nn

from colord.daemon import fast_path
from colord.daemon.fast_path import (
    PARITY_WITHIN,
    FastPath,
    export_onnx,
    installed_backends,
    parity,
)
from colord.model import Generator, get_preset
from colord.model.networks import initialize_weights

SIZE = 64


def small_generator(seed: int = 0) -> Generator:
    """The `tiny` preset with the default preset's attention stride and colour hint, with
    variance-preserving weights and non-trivial BatchNorm statistics (so that BN's mode shows)."""
    torch.manual_seed(seed)
    preset = dataclasses.replace(get_preset("tiny"), attention_stride=8, color_hint=True)
    generator = Generator(preset)
    initialize_weights(generator, "kaiming")
    for module in generator.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return generator.eval()


BACKEND_NAMES = list(fast_path.BACKENDS)


def requires(backend: str) -> None:
    """Skip unless the optional packages of `backend` (the cpu extra) are installed; a run that
    requires the extras fails instead."""
    for package in fast_path.BACKENDS[backend][0]:
        if importlib.util.find_spec(package) is None:
            missing(f"{package} is not installed (pip install -e '.[cpu]')", EXTRAS)


def inputs(batch: int = 1, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    sketch = torch.where(torch.rand(batch, 1, SIZE, SIZE, generator=generator) < 0.1, -1.0, 1.0)
    reference = torch.rand(batch, 3, SIZE, SIZE, generator=generator) * 2 - 1
    return sketch, reference


def eager(model: nn.Module, sketch: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(sketch, reference)


class TracedDifferently(nn.Module):
    """A generator-like module whose traced graph is not its eager function (as the exporter's
    BatchNorm bug once made the generator's): every backend is built from a trace."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, sketch: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        offset = 0.5 if torch.jit.is_tracing() else 0.0
        return torch.tanh(self.conv(reference) * sketch + offset)


class Unexportable(nn.Module):
    """A generator-like module with an operation that has no ONNX translation."""

    def forward(self, sketch: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        _, singular, _ = torch.linalg.svd(reference)
        return torch.tanh(reference + singular.mean())


def test_parity_counts_values_within_two_of_255() -> None:
    reference = torch.full((1, 3, 100, 100), 100 / 127.5 - 1)  # 30,000 values at 100 of 255
    shifted = reference.clone().flatten()
    shifted[:20] += 3 / 127.5  # 20 values 3/255 off: 99.93 % within, passes
    check = parity(shifted.view_as(reference), reference)
    assert check.max_difference == 3 and check.passed
    shifted[:40] += 3 / 127.5  # 40 values off, 6/255: 99.87 % within, fails
    check = parity(shifted.view_as(reference), reference)
    assert check.max_difference == 6 and check.within < PARITY_WITHIN and not check.passed


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_the_backend_matches_eager_and_leaves_the_generator_in_eval_mode(backend: str) -> None:
    requires(backend)
    generator = small_generator()
    sketch, reference = inputs()
    before = eager(generator, sketch, reference)
    path = FastPath(generator, backend, must_beat_eager=False)
    with torch.inference_mode():
        first = path(sketch, reference)  # builds, checks and returns the backend's output
        second = path(sketch, reference)  # runs the backend alone
    key = ((SIZE, SIZE), (SIZE, SIZE))
    assert path.shapes[key], path.state()
    assert path.checks[key].passed and path.checks[key].max_difference <= 2
    assert parity(first, before).passed
    # the same answer whether or not a call was the first at its shape
    torch.testing.assert_close(second, first, rtol=0, atol=0)
    # the naive export's bug: it switched the live generator's BatchNorms to training mode
    assert not any(module.training for module in generator.modules())
    torch.testing.assert_close(eager(generator, sketch, reference), before, rtol=0, atol=0)


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_the_backend_leaves_the_callers_float_arithmetic_ieee(backend: str) -> None:
    """The backends flush denormals on the calling thread; numpy users after them must still
    see subnormal numbers (hypothesis refuses to run otherwise)."""
    requires(backend)
    path = FastPath(small_generator(), backend, must_beat_eager=False)
    sketch, reference = inputs()
    with torch.inference_mode():
        for _ in range(2):  # the check, then the backend alone
            path(sketch, reference)
    assert path.shapes[((SIZE, SIZE), (SIZE, SIZE))], path.state()
    assert sys.float_info.min * sys.float_info.epsilon > 0.0


def test_attention_is_exported_as_one_fused_operation() -> None:
    requires("onnxruntime")
    graph = export_onnx(small_generator(), *inputs())
    assert b"MultiHeadAttention" in graph and b"Softmax" not in graph


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_one_build_serves_every_shape_and_batch_each_shape_checked(backend: str) -> None:
    requires(backend)
    generator = small_generator()
    path = FastPath(generator, backend, must_beat_eager=False)
    sketch, reference = inputs(batch=3)
    wide = torch.ones(1, 1, 48, 96), reference[:1, :, :32, :]
    with torch.inference_mode():
        path(sketch[:1], reference[:1])
        runner = path.runner
        batch = path(sketch, reference)
        path(*wide)
        wide_output = path(*wide)
    assert path.runner is runner and set(path.checks) == {
        ((64, 64), (64, 64)),
        ((48, 96), (32, 64)),
    }
    assert path.state() == f"{backend} for 2 of 2 working shapes, else eager"
    assert parity(batch, eager(generator, sketch, reference)).passed
    assert parity(wide_output, eager(generator, *wide)).passed


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_the_backend_follows_the_live_generator(backend: str) -> None:
    requires(backend)
    generator = small_generator()
    sketch, reference = inputs()
    with torch.no_grad():
        generator.decoder.to_rgb.bias.add_(0.5)  # e.g. another checkpoint's weights loaded
    path = FastPath(generator, backend, must_beat_eager=False)
    with torch.inference_mode():
        path(sketch, reference)
        output = path(sketch, reference)
    assert parity(output, eager(generator, sketch, reference)).passed
    assert not parity(output, eager(small_generator(), sketch, reference)).passed


def test_a_missing_backend_runs_eagerly_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    runner = fast_path.BACKENDS["onnxruntime"][1]
    absent = {"absentrt": (("colord_test_no_such_package", "torch"), runner)}
    monkeypatch.setattr(fast_path, "BACKENDS", absent)
    assert installed_backends() == []
    generator = small_generator()
    sketch, reference = inputs()
    with caplog.at_level(logging.WARNING, logger="colord.fast_path"):
        path = FastPath(generator)
        with torch.inference_mode():
            outputs = [path(sketch, reference) for _ in range(2)]
    assert "colord_test_no_such_package" in caplog.text and "eagerly" in caplog.text
    assert path.state() == "eager (no fast-path backend installed)"
    for output in outputs:
        torch.testing.assert_close(output, eager(generator, sketch, reference), rtol=0, atol=0)


def test_the_fastest_installed_backend_is_picked(monkeypatch: pytest.MonkeyPatch) -> None:
    requires("openvino")
    requires("onnxruntime")
    assert installed_backends()[0] == "openvino"
    assert FastPath(small_generator()).backend == "openvino"
    absent = (("colord_test_no_such_package",), fast_path._OpenVino)
    monkeypatch.setitem(fast_path.BACKENDS, "openvino", absent)  # first in order still
    assert installed_backends()[0] == "onnxruntime"


def test_a_backend_that_fails_to_build_hands_over_to_the_next_installed_one(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    requires("onnxruntime")

    def refuse(model: nn.Module, sketch: torch.Tensor, reference: torch.Tensor) -> None:
        raise RuntimeError("converter refused the generator")

    monkeypatch.setitem(fast_path.BACKENDS, "openvino", (("torch",), refuse))
    generator = small_generator()
    sketch, reference = inputs()
    with caplog.at_level(logging.WARNING, logger="colord.fast_path"):
        path = FastPath(generator, must_beat_eager=False)
        with torch.inference_mode():
            path(sketch, reference)
            output = path(sketch, reference)
    assert "openvino failed to build (RuntimeError: converter refused" in caplog.text
    assert "trying onnxruntime" in caplog.text
    expected = "onnxruntime for 1 of 1 working shapes, else eager (openvino failed to build)"
    assert path.state() == expected
    assert parity(output, eager(generator, sketch, reference)).passed


@pytest.mark.parametrize(
    "backend", [*BACKEND_NAMES, None], ids=[*BACKEND_NAMES, "every-installed-one"]
)
def test_when_no_backend_builds_the_generator_runs_eagerly(
    caplog: pytest.LogCaptureFixture, backend: str | None
) -> None:
    tried = [backend] if backend else BACKEND_NAMES
    for name in tried:
        requires(name)
    model = Unexportable()
    sketch, reference = inputs()
    with caplog.at_level(logging.WARNING, logger="colord.fast_path"):
        path = FastPath(model, backend, must_beat_eager=False)
        with torch.inference_mode():
            outputs = [path(sketch, reference) for _ in range(2)]
    assert all(f"{name} failed to build" in caplog.text for name in tried)
    assert path.broken and path.state() == f"eager ({', '.join(tried)} failed to build)"
    for output in outputs:
        torch.testing.assert_close(output, eager(model, sketch, reference), rtol=0, atol=0)


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_a_backend_that_fails_parity_falls_back_to_eager(
    caplog: pytest.LogCaptureFixture, backend: str
) -> None:
    requires(backend)
    model = TracedDifferently()
    sketch, reference = inputs()
    with caplog.at_level(logging.WARNING, logger="colord.fast_path"):
        path = FastPath(model, backend, must_beat_eager=False)
        with torch.inference_mode():
            first = path(sketch, reference)
            # eager from then on: the module's own function, not the traced one
            output = path(sketch, reference)
    assert f"{backend} at 64x64" in caplog.text and "differs from eager" in caplog.text
    key = ((SIZE, SIZE), (SIZE, SIZE))
    assert not path.shapes[key] and not path.checks[key].passed
    for answer in (first, output):
        torch.testing.assert_close(answer, eager(model, sketch, reference), rtol=0, atol=0)


def test_openvino_keeps_the_two_most_recent_shapes_compiled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each input shape is compiled on its own and the two most recent stay compiled; a shape
    beyond KEEP_MEMORY_UP_TO gives its working memory back after each run and still computes
    the same figures on the next."""
    requires("openvino")
    monkeypatch.setattr(fast_path, "KEEP_MEMORY_UP_TO", 48 * 48)
    generator = small_generator()
    path = FastPath(generator, "openvino", must_beat_eager=False)
    sketch, reference = inputs()
    shapes = [(32, 32), (48, 32), (64, 64), (32, 48), (64, 64)]
    with torch.inference_mode():
        for height, width in shapes:
            crop = sketch[..., :height, :width], reference
            path(*crop)  # the check
            for _ in range(2):
                assert parity(path(*crop), eager(generator, *crop)).passed
    assert [key[0][-2:] for key in path.runner.compiled] == [(32, 48), (64, 64)]


OPENVINO_IN_A_FRESH_PROCESS = """
import torch
from colord.daemon.fast_path import FastPath
from colord.model import Generator, get_preset
path = FastPath(Generator(get_preset("tiny")).eval(), "openvino", must_beat_eager=False)
with torch.inference_mode():
    for _ in range(2):
        path(torch.ones(1, 1, 64, 64), torch.zeros(1, 3, 64, 64))
print(path.state())
"""


def test_openvino_reports_nothing_off_the_machine(tmp_path: Path) -> None:
    """Importing openvino reports usage to a remote service and keeps a client id in the home
    folder unless the user opted out there (or a CI variable is set): the backend, built and
    run in a fresh process outside CI, leaves the home folder untouched."""
    requires("openvino")
    outside_ci = {k: v for k, v in os.environ.items() if k not in {"CI", "TF_BUILD", "JENKINS_URL"}}
    result = subprocess.run(
        [sys.executable, "-c", OPENVINO_IN_A_FRESH_PROCESS],
        env=outside_ci | {"HOME": str(tmp_path), "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "openvino for 1 of 1 working shapes, else eager"
    assert list(tmp_path.iterdir()) == []


class ScriptedRunner:
    """A backend whose runs return eager's output and take the given times, in order (the
    first run at a shape pays the shape's set-up)."""

    def __init__(self, model: nn.Module, seconds: list[float]) -> None:
        self.model, self.seconds, self.runs = model, seconds, 0

    def __call__(self, sketch: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        import time

        time.sleep(self.seconds[min(self.runs, len(self.seconds) - 1)])
        self.runs += 1
        return self.model(sketch, reference)


class SlowEager(nn.Module):
    """The small generator, taking `seconds` longer per forward."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.generator, self.seconds = small_generator(), seconds

    def forward(self, sketch: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        import time

        time.sleep(self.seconds)
        return self.generator(sketch, reference)


@pytest.mark.parametrize(
    ("backend_seconds", "kept"),
    [([0.6, 0.0], True), ([0.6, 0.6], False)],
    ids=["slow-first-run-then-fast", "slower-twice"],
)
def test_a_shape_keeps_the_backend_only_if_it_beats_eager(
    monkeypatch: pytest.MonkeyPatch, backend_seconds: list[float], kept: bool
) -> None:
    runners: list[ScriptedRunner] = []

    def build(model: nn.Module, sketch: torch.Tensor, reference: torch.Tensor) -> ScriptedRunner:
        runners.append(ScriptedRunner(model.generator, backend_seconds))  # without the delay
        return runners[-1]

    monkeypatch.setattr(fast_path, "BACKENDS", {"scripted": (("torch",), build)})
    model = SlowEager(0.3)
    sketch, reference = inputs()
    path = FastPath(model, "scripted")
    with torch.inference_mode():
        path(sketch, reference)
        runs = runners[0].runs
        path(sketch, reference)
    assert path.shapes[((SIZE, SIZE), (SIZE, SIZE))] is kept
    assert runners[0].runs == runs + (1 if kept else 0)
