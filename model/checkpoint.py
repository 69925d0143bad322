"""Checkpoint files: one `.safetensors` file per generator.

The safetensors header's metadata holds, under the key "colord", a JSON config: the format version,
every preset field, the weights' dtype, a sha256 of the tensor bytes (safetensors checks lengths,
not contents) and a free-form training metadata dict. `load_checkpoint` rebuilds the generator from
the file alone and turns every way a file can be wrong into one `CheckpointError`.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from .networks import Generator
from .presets import Preset

FORMAT_VERSION = 1
METADATA_KEY = "colord"
MAX_HEADER_BYTES = 100 * 1024 * 1024


class CheckpointError(Exception):
    """A checkpoint file is missing, unreadable, corrupt or does not fit its own config."""

    def __init__(self, path: str | Path, problem: str) -> None:
        super().__init__(f"checkpoint {path}: {problem}")
        self.path = Path(path)
        self.problem = problem


@dataclass
class LoadedCheckpoint:
    generator: Generator
    preset: Preset
    metadata: dict = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    dtype: str = "float32"
    path: Path | None = None


def save_checkpoint(
    path: str | Path,
    generator: Generator,
    *,
    metadata: dict | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write the generator's weights (floats cast to `dtype` if given) and config, atomically."""
    path = Path(path)
    tensors = {}
    for name, tensor in generator.state_dict().items():
        tensor = tensor.detach().to("cpu")
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        tensors[name] = tensor.contiguous()
    stored_dtype = str(dtype or next(generator.parameters()).dtype).removeprefix("torch.")
    config = {
        "format_version": FORMAT_VERSION,
        "preset": generator.preset.to_dict(),
        "dtype": stored_dtype,
        "weights_sha256": _digest(tensors),
        "metadata": metadata or {},
    }
    blob = save_tensors(tensors, metadata={METADATA_KEY: json.dumps(config)})
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(blob)
    os.replace(partial, path)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> LoadedCheckpoint:
    """Rebuild the generator a checkpoint describes, in eval mode, with float32 parameters."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "no such file")
    try:
        blob = path.read_bytes()
    except OSError as error:
        raise CheckpointError(path, f"cannot be read ({error.strerror})") from error
    config = _upgrade(path, _read_config(path, blob))
    try:
        preset = Preset.from_dict(config["preset"])
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(path, f"invalid preset in its config ({error})") from error
    try:
        tensors = load_tensors(blob)
    except Exception as error:  # safetensors raises its own error types for damaged payloads
        raise CheckpointError(path, f"tensor data is corrupt or truncated ({error})") from error
    if config.get("weights_sha256") != _digest(tensors):
        raise CheckpointError(path, "tensor data does not match its checksum (file is corrupt)")
    with torch.device("meta"):  # the expected shapes and dtypes, without allocating anything
        expected = Generator(preset).state_dict()
    _check_tensors(path, expected, tensors)
    generator = Generator(preset)
    generator.load_state_dict(tensors)
    generator.to(map_location).eval()
    return LoadedCheckpoint(
        generator=generator,
        preset=preset,
        metadata=config.get("metadata", {}),
        format_version=config["format_version"],
        dtype=config.get("dtype", "float32"),
        path=path,
    )


def _read_config(path: Path, blob: bytes) -> dict:
    """Parse the safetensors header by hand, so a damaged file gets a precise message."""
    if len(blob) < 8:
        raise CheckpointError(path, f"truncated: {len(blob)} bytes is too short for a header")
    (header_length,) = struct.unpack("<Q", blob[:8])
    if header_length > MAX_HEADER_BYTES or 8 + header_length > len(blob):
        raise CheckpointError(path, "not a safetensors file, or truncated inside its header")
    try:
        header = json.loads(blob[8 : 8 + header_length])
        config = json.loads(header["__metadata__"][METADATA_KEY])
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise CheckpointError(path, f"has no colord config in its header ({error})") from error
    if not isinstance(config, dict) or not isinstance(config.get("format_version"), int):
        raise CheckpointError(path, "its colord config has no format version")
    return config


def _upgrade(path: Path, config: dict) -> dict:
    """Bring a config of an older format up to FORMAT_VERSION (version 1 is the first)."""
    version = config["format_version"]
    if version != FORMAT_VERSION:
        raise CheckpointError(
            path,
            f"unknown format version {version} (this colord reads version {FORMAT_VERSION}; "
            "a newer colord may have written it)",
        )
    return config


def _check_tensors(
    path: Path, expected: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor]
) -> None:
    """The tensors must be exactly the preset's (names, shapes, float or not) and finite."""
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    common = set(expected) & set(tensors)
    wrong = sorted(
        f"{name} {tuple(tensors[name].shape)} != {tuple(expected[name].shape)}"
        for name in common
        if tensors[name].shape != expected[name].shape
    )
    wrong_kind = sorted(
        f"{name} {tensors[name].dtype}"
        for name in common
        if tensors[name].is_floating_point() != expected[name].is_floating_point()
    )
    problems = []
    if missing:
        problems.append(f"missing tensors {_first(missing)}")
    if unexpected:
        problems.append(f"unexpected tensors {_first(unexpected)}")
    if wrong:
        problems.append(f"shape mismatch {_first(wrong)}")
    if wrong_kind:
        problems.append(f"wrong dtype {_first(wrong_kind)}")
    if problems:
        raise CheckpointError(path, "weights do not fit its preset: " + "; ".join(problems))
    non_finite = sorted(
        name
        for name, tensor in tensors.items()
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
    )
    if non_finite:
        raise CheckpointError(
            path, f"weights hold NaN or infinite values ({_first(non_finite)}): a broken training"
        )


def _first(items: list[str], limit: int = 3) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    sha = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name]
        sha.update(name.encode())
        sha.update(str(tensor.dtype).encode())
        sha.update(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return sha.hexdigest()
