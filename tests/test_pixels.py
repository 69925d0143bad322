"""colord.model.pixels: the model's pixel facts, shared by training, evaluation and the daemon."""

import subprocess
import sys

import numpy as np
import torch

from colord.model.pixels import from_signed, on_white, to_signed


def test_on_white_is_the_rounded_alpha_blend_over_paper():
    rgba = np.random.default_rng(0).integers(0, 256, (64, 64, 4), dtype=np.uint8)
    alpha = rgba[..., 3:].astype(np.float64) / 255
    expected = np.rint(rgba[..., :3] * alpha + 255 * (1 - alpha)).astype(np.uint8)
    np.testing.assert_array_equal(on_white(rgba[..., :3], rgba[..., 3]), expected)
    np.testing.assert_array_equal(on_white(rgba[..., 0], rgba[..., 3]), expected[..., 0])


def test_signed_range_round_trips_every_level_in_numpy_and_torch():
    levels = np.arange(256, dtype=np.uint8)
    signed = to_signed(levels)
    assert signed.dtype == np.float32 and signed[0] == -1 and signed[-1] == 1
    np.testing.assert_array_equal(from_signed(signed), levels)
    tensor = torch.from_numpy(levels)
    assert torch.equal(from_signed(to_signed(tensor)), tensor)
    assert from_signed(torch.tensor([-3.0, 3.0])).tolist() == [0, 255]


def test_the_pixel_facts_import_without_torch():
    code = "import sys, colord.model as m; m.SIZE_MULTIPLE; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr
