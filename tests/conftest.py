"""Fixtures shared across the suite: a tiny checkpoint and small, real-looking layers."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hypothesis import settings

from colord.model import Generator, get_preset, save_checkpoint

# Every run, CI's too, explores fresh examples: a new random seed each run within the budget each
# test sets, so CI finds new failures instead of replaying old passes. A failure prints the blob
# that reproduces it, and the example database (.hypothesis/, worth keeping between CI runs)
# replays it first next time. (Hypothesis's own CI profile derandomizes and drops the database.)
# No deadlines: the machines running the suite are shared.
_DEFAULT = settings.get_profile("default")
settings.register_profile("ci", _DEFAULT, derandomize=False, deadline=None, print_blob=True)
settings.register_profile("dev", _DEFAULT, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved, randomly initialised `tiny` generator (deterministic weights)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("models") / "tiny.safetensors"
    return save_checkpoint(path, Generator(get_preset("tiny")), metadata={"purpose": "tests"})


def draw_line_art(height: int = 96, width: int = 128) -> np.ndarray:
    """Black anti-aliased strokes on a transparent RGBA layer: a face-like outline."""
    alpha = np.zeros((height, width), np.uint8)
    cy, cx = height // 2, width // 2
    cv2.circle(alpha, (cx, cy), min(height, width) // 3, 255, 2, cv2.LINE_AA)
    cv2.circle(alpha, (cx - width // 8, cy - height // 10), 4, 255, 1, cv2.LINE_AA)
    cv2.circle(alpha, (cx + width // 8, cy - height // 10), 4, 255, 1, cv2.LINE_AA)
    cv2.ellipse(
        alpha, (cx, cy + height // 8), (width // 8, height // 16), 0, 0, 180, 255, 2, cv2.LINE_AA
    )
    rgba = np.zeros((height, width, 4), np.uint8)
    rgba[..., 3] = alpha
    return rgba


def draw_reference(height: int = 80, width: int = 112) -> np.ndarray:
    """An opaque coloured picture: a skin-coloured disc with dark eyes on a blue background."""
    image = np.empty((height, width, 3), np.uint8)
    image[:] = (70, 120, 220)
    cy, cx = height // 2, width // 2
    cv2.circle(image, (cx, cy), min(height, width) // 3, (250, 205, 170), -1, cv2.LINE_AA)
    cv2.circle(image, (cx - width // 8, cy - height // 10), 4, (40, 30, 30), -1)
    cv2.circle(image, (cx + width // 8, cy - height // 10), 4, (40, 30, 30), -1)
    alpha = np.full((height, width, 1), 255, np.uint8)
    return np.concatenate([image, alpha], axis=2)


@pytest.fixture
def line_art_rgba() -> np.ndarray:
    return draw_line_art()


@pytest.fixture
def reference_rgba() -> np.ndarray:
    return draw_reference()
