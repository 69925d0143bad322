"""`colord serve` as a daemon from before flats: its `info` lists no features.

The plug-ins must grey the flats choice out, saying why, and refuse to ask for flats; both
real-host tests start one of these beside the current daemon.
"""

from __future__ import annotations

import sys
from pathlib import Path

import daemon_helpers
import pytest

WITHOUT_FEATURES = [
    sys.executable, "-c",
    "import colord.plugins.wire.colord_protocol as protocol; protocol.FEATURES = (); "
    "from colord.daemon.cli import main; main()",
]  # fmt: skip


def start_daemon_without_flats(model: Path) -> daemon_helpers.RunningDaemon:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(daemon_helpers, "CLI", WITHOUT_FEATURES)
        return daemon_helpers.start_daemon(model)
