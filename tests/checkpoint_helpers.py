"""Editing a checkpoint file's colord config in place, for tests of damaged or changed files."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path


def rewrite_config(path: Path, change: Callable[[dict], object], out: Path | None = None) -> Path:
    """Apply `change` to the config stored in the safetensors header of `path`, tensors untouched;
    writes `out` (default: `path` itself) and returns it."""
    blob = path.read_bytes()
    (length,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + length])
    config = json.loads(header["__metadata__"]["colord"])
    change(config)
    header["__metadata__"]["colord"] = json.dumps(config)
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    out = path if out is None else out
    out.write_bytes(struct.pack("<Q", len(encoded)) + encoded + blob[8 + length :])
    return out
