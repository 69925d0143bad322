"""The Qt bindings of the running Krita: PyQt5 in Krita 5, PyQt6 in Krita 6.

Krita has already imported its own bindings by the time a plug-in loads, so those win; importing the
other major version into the same process would crash it. Outside Krita, PyQt6 is tried first.
"""

from __future__ import annotations

import importlib
import sys


def _binding_name() -> str:
    for name in ("PyQt6", "PyQt5"):
        if f"{name}.QtCore" in sys.modules:
            return name
    for name in ("PyQt6", "PyQt5"):
        try:
            importlib.import_module(f"{name}.QtCore")
        except ImportError:
            continue
        return name
    raise ImportError("colord needs PyQt6 or PyQt5, the Qt bindings that Krita ships.")


_BINDING = _binding_name()
QtCore = importlib.import_module(f"{_BINDING}.QtCore")
QtWidgets = importlib.import_module(f"{_BINDING}.QtWidgets")
QtGui = importlib.import_module(f"{_BINDING}.QtGui")
