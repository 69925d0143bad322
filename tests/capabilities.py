"""Optional capabilities that tests skip without, unless the run requires them.

tests/run.sh installs everything and sets the COLORD_REQUIRE_* variables, so there a missing
capability fails the run instead of silently shrinking it to the tests that still run.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

HOSTS = "COLORD_REQUIRE_HOSTS"  # Krita and the GIMP 3 chroot (and Krita's Python, PyQt5)
# the train and cpu extras: EfficientNet-Lite0, cairo, OpenVINO, ONNX Runtime
EXTRAS = "COLORD_REQUIRE_EXTRAS"


def missing(problem: str, requirement: str) -> NoReturn:
    """Skip the test for a missing capability, or fail it when `requirement` is set to 1."""
    if os.environ.get(requirement) == "1":
        pytest.fail(f"{problem} ({requirement}=1: this run requires it)")
    pytest.skip(problem, allow_module_level=True)
