"""The Qt bindings of the running Krita: PyQt5 in Krita 5, PyQt6 in Krita 6.

Krita has already imported its own bindings by the time a plug-in loads, so those win; importing the
other major version into the same process would crash it. Outside Krita, PyQt6 is tried first.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any


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


def as_qbytearray(data: Any) -> Any:
    """Pixels for a Qt call that takes a QByteArray (Krita's setPixelData), uncopied where the
    binding allows. PyQt5 copies bytes into a new QByteArray and takes no memoryview, but wraps
    memory as it is with `QByteArray.fromRawData` (16 MB not copied at 2048², in the GUI thread);
    PyQt6 has no fromRawData and converts any bytes-like itself. The caller keeps `data` alive
    while Qt reads it."""
    if isinstance(data, QtCore.QByteArray):
        return data
    wrap = getattr(QtCore.QByteArray, "fromRawData", None)
    return data if wrap is None else wrap(data)
