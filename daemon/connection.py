"""The per-user connection file through which clients find and authenticate to the daemon.

docs/protocol.md, "Connection file": JSON with endpoint, token, pid, version and protocol; mode
0600, written atomically when the daemon starts listening and removed when it exits.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from colord.daemon.protocol import PROTOCOL_VERSION

ENV_VARIABLE = "COLORD_CONNECTION_FILE"
FILE_NAME = "daemon.json"


class ConnectionFileError(Exception):
    """The connection file is missing, unreadable or stale: no daemon can be reached through it."""


@dataclass(frozen=True)
class ConnectionInfo:
    endpoint: str
    token: str
    pid: int
    version: str
    protocol: int = PROTOCOL_VERSION


def new_token() -> str:
    return secrets.token_hex(16)


def connection_file_path() -> Path:
    """Where the connection file lives on this OS (see docs/protocol.md)."""
    override = os.environ.get(ENV_VARIABLE)
    if override:
        return Path(override)
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "colord" / FILE_NAME
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "colord" / FILE_NAME
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    if runtime_dir:
        return Path(runtime_dir) / "colord" / FILE_NAME
    return Path.home() / ".local" / "state" / "colord" / FILE_NAME


def write_connection(info: ConnectionInfo, path: Path | None = None) -> Path:
    """Write the file atomically with mode 0600 (a temporary file beside it, then a rename)."""
    path = path or connection_file_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            json.dump(asdict(info), file)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o600)  # in case the file already existed with wider permissions
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def read_connection(path: Path | None = None, *, check_pid: bool = True) -> ConnectionInfo:
    """Read the connection file; raise ConnectionFileError if absent, invalid or stale."""
    path = path or connection_file_path()
    try:
        fields = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConnectionFileError(
            f"The colord daemon is not running (no connection file at {path}); "
            "start it with `colord serve`."
        ) from None
    except (OSError, ValueError) as error:
        raise ConnectionFileError(f"Cannot read the connection file {path}: {error}.") from None
    try:
        info = ConnectionInfo(
            endpoint=_typed(fields, "endpoint", str),
            token=_typed(fields, "token", str),
            pid=_typed(fields, "pid", int),
            version=_typed(fields, "version", str),
            protocol=_typed(fields, "protocol", int),
        )
    except (KeyError, TypeError) as error:
        raise ConnectionFileError(f"The connection file {path} is invalid: {error}.") from None
    if check_pid and not pid_alive(info.pid):
        raise ConnectionFileError(
            f"The colord daemon is not running (its process {info.pid} has gone; the connection "
            f"file {path} is stale); start it with `colord serve`."
        )
    return info


def _typed(fields: object, key: str, kind: type) -> object:
    if not isinstance(fields, dict):
        raise TypeError("not a JSON object")
    value = fields[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise TypeError(f"{key!r} must be a {kind.__name__}")
    return value


def remove_connection(path: Path, token: str) -> bool:
    """Remove the file only if it is still ours (holds our token): never another daemon's file."""
    try:
        current = read_connection(path, check_pid=False)
    except ConnectionFileError:
        return False
    if current.token != token:
        return False
    path.unlink(missing_ok=True)
    return True


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if sys.platform == "win32":
        return _windows_pid_alive(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by someone else
    return True


def _windows_pid_alive(pid: int) -> bool:
    import ctypes

    query_limited_information, still_active = 0x1000, 259
    kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
    handle = kernel32.OpenProcess(query_limited_information, False, pid)
    if not handle:
        return False
    try:
        exit_code = ctypes.c_ulong()
        kernel32.GetExitCodeProcess(handle, ctypes.byref(exit_code))
        return exit_code.value == still_active
    finally:
        kernel32.CloseHandle(handle)
