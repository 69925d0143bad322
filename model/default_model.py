"""The default model that ships inside the package: where its file lies and that it is intact.

`weights/default.safetensors` is an fp16 `default`-preset generator; `weights/default.sha256`
holds its SHA-256 in `sha256sum` form. A file that does not match its recorded hash (a damaged
install, a half-written edit) is refused with a `CheckpointError`, never loaded.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

import torch

from .checkpoint import CheckpointError, LoadedCheckpoint, load_checkpoint

WEIGHTS_FILE = "default.safetensors"
HASH_FILE = "default.sha256"
DEFAULT_MODEL_NAME = "colord-default"


def weights_dir() -> Path:
    """The `weights` folder of the installed `colord.model` package."""
    return Path(str(resources.files("colord.model") / "weights"))


def default_model_path() -> Path:
    """The shipped checkpoint's path (which may be missing in a broken install: see
    `verify_default_model`)."""
    return weights_dir() / WEIGHTS_FILE


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def recorded_sha256(hash_path: Path) -> str:
    """The hash in a `sha256sum`-style file: the first word of its first line."""
    try:
        words = hash_path.read_text().split()
    except OSError as error:
        problem = f"the hash file cannot be read ({error.strerror})"
        raise CheckpointError(hash_path, problem) from None
    if not words or len(words[0]) != 64:
        raise CheckpointError(hash_path, "the hash file holds no SHA-256")
    return words[0].lower()


def verify_default_model(path: Path | None = None) -> Path:
    """The shipped checkpoint's path (or `path`, whose hash file lies beside it), after checking
    that it exists and matches its recorded SHA-256."""
    path = default_model_path() if path is None else Path(path)
    if not path.is_file():
        raise CheckpointError(path, "the default model is missing from this installation")
    expected = recorded_sha256(path.with_name(HASH_FILE))
    actual = file_sha256(path)
    if actual != expected:
        raise CheckpointError(
            path,
            f"SHA-256 {actual} does not match the recorded {expected}: the default model is "
            "damaged; reinstall colord",
        )
    return path


def load_default_model(map_location: str | torch.device = "cpu") -> LoadedCheckpoint:
    """The shipped generator, verified, in eval mode."""
    return load_checkpoint(verify_default_model(), map_location=map_location)
