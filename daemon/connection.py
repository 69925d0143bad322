"""The per-user connection file through which clients find and authenticate to the daemon.

docs/protocol.md, "Connection file": JSON with endpoint, token, pid, version and protocol; mode
0600 in a folder of the user's own, written atomically when the daemon starts listening and removed
when it exits; readers refuse a symbolic link, another user's file and one that others may read.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import stat
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
    """Write the file atomically with mode 0600: a fresh temporary file beside it (O_EXCL, never
    through a symlink), then a rename. The folder must be the user's own; one that others may
    write to is tightened first (a planted file or link there could redirect the token)."""
    path = path or connection_file_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if sys.platform == "win32":  # no POSIX modes: the folder under %LOCALAPPDATA% is private
        _write_through(path.parent, path.name, info, None)
        return path
    try:
        folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as error:
        raise ConnectionFileError(
            f"Cannot use the folder {path.parent} for the connection file: {error.strerror} "
            "(it must be a real folder, not a symbolic link)."
        ) from None
    try:
        status = os.fstat(folder)
        if status.st_uid != os.getuid():
            raise ConnectionFileError(
                f"The folder {path.parent} belongs to another user (uid {status.st_uid}); "
                "the connection file must live in a folder of yours."
            )
        if status.st_mode & 0o022:
            os.fchmod(folder, stat.S_IMODE(status.st_mode) & ~0o022)
        _write_through(path.parent, path.name, info, folder)
    finally:
        os.close(folder)
    return path


def _write_through(parent: Path, name: str, info: ConnectionInfo, folder: int | None) -> None:
    """Write `name` by a rename, relative to the folder's descriptor when there is one."""
    temporary = f".{name}.{secrets.token_hex(8)}.tmp"
    if folder is None:
        temporary, name = str(parent / temporary), str(parent / name)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    descriptor = os.open(temporary, flags, 0o600, dir_fd=folder)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            if folder is not None:
                os.fchmod(file.fileno(), 0o600)  # exactly 0600, whatever the umask
            json.dump(asdict(info), file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, name, src_dir_fd=folder, dst_dir_fd=folder)
    except BaseException:
        os.unlink(temporary, dir_fd=folder)
        raise


def read_connection(path: Path | None = None, *, check_pid: bool = True) -> ConnectionInfo:
    """Read the connection file; raise ConnectionFileError if absent, invalid, stale or unsafe
    (a symbolic link, another user's file, or one that others may read)."""
    path = path or connection_file_path()
    try:
        fields = json.loads(read_private_file(path))
    except FileNotFoundError:
        raise ConnectionFileError(
            f"The colord daemon is not running (no connection file at {path}); "
            "start it with `colord serve`."
        ) from None
    except UnsafeFileError as error:
        raise ConnectionFileError(str(error)) from None
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


class UnsafeFileError(OSError):
    """The connection file is there but cannot be trusted."""


def read_private_file(path: Path) -> str:
    """The text of a file that is the user's own and private; never read through a symlink."""
    if sys.platform == "win32":
        return path.read_text(encoding="utf-8")
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise UnsafeFileError(
                f"The connection file {path} is a symbolic link; colord refuses to follow it. "
                "Remove it and restart `colord serve`."
            ) from None
        raise
    with os.fdopen(descriptor, encoding="utf-8") as file:
        status = os.fstat(file.fileno())
        if status.st_uid != os.getuid():
            raise UnsafeFileError(
                f"The connection file {path} belongs to another user (uid {status.st_uid}), "
                "who could have planted it; remove it and restart `colord serve`."
            )
        if status.st_mode & 0o077:
            raise UnsafeFileError(
                f"The connection file {path} is readable by other users (mode "
                f"{stat.S_IMODE(status.st_mode):04o}), so its token is no longer secret; "
                "restart `colord serve` to write a fresh one."
            )
        return file.read()


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
