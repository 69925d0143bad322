"""Writing and removing the per-user connection file through which clients find the daemon.

The file's rules (where it lives, its fields, who may own and read it, a live pid) are the
protocol's, shared with the plug-ins: `colord_protocol.connection_file_path`, `read_connection`
and `Connection`. What only the daemon does is here: a fresh token, an atomic private write that
never follows a link, and removing the file only while it is still its own.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
import sys
from pathlib import Path

from colord.plugins.wire.colord_protocol import (
    FILE_MODE,
    FOLDER_MODE,
    ColordError,
    Connection,
    UnsafeConnectionFile,
    connection_file_path,
    read_connection,
)


def new_token() -> str:
    return secrets.token_hex(16)


def write_connection(info: Connection, path: Path | None = None) -> Path:
    """Write the file atomically with mode 0600: a fresh temporary file beside it (O_EXCL, never
    through a symlink), then a rename. The folder must be the user's own; one that others may
    write to is tightened first (a planted file or link there could redirect the token)."""
    path = path or connection_file_path()
    path.parent.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
    if sys.platform == "win32":  # no POSIX modes: the folder under %LOCALAPPDATA% is private
        _write_through(path.parent, path.name, info, None)
        return path
    try:
        folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as error:
        raise UnsafeConnectionFile(
            f"Cannot use the folder {path.parent} for the connection file: {error.strerror} "
            "(it must be a real folder, not a symbolic link)."
        ) from None
    try:
        status = os.fstat(folder)
        if status.st_uid != os.getuid():
            raise UnsafeConnectionFile(
                f"The folder {path.parent} belongs to another user (uid {status.st_uid}); "
                "the connection file must live in a folder of yours."
            )
        if status.st_mode & 0o022:
            os.fchmod(folder, stat.S_IMODE(status.st_mode) & ~0o022)
        _write_through(path.parent, path.name, info, folder)
    finally:
        os.close(folder)
    return path


def _write_through(parent: Path, name: str, info: Connection, folder: int | None) -> None:
    """Write `name` by a rename, relative to the folder's descriptor when there is one."""
    temporary = f".{name}.{secrets.token_hex(8)}.tmp"
    if folder is None:
        temporary, name = str(parent / temporary), str(parent / name)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    descriptor = os.open(temporary, flags, FILE_MODE, dir_fd=folder)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            if folder is not None:
                os.fchmod(file.fileno(), FILE_MODE)  # exactly 0600, whatever the umask
            json.dump(info._asdict(), file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, name, src_dir_fd=folder, dst_dir_fd=folder)
    except BaseException:
        os.unlink(temporary, dir_fd=folder)
        raise


def remove_connection(path: Path, token: str) -> bool:
    """Remove the file only if it is still ours (holds our token): never another daemon's file."""
    try:
        current = read_connection(path, check_pid=False)
    except ColordError:  # gone, unreadable or unsafe: not ours to remove
        return False
    if current.token != token:
        return False
    path.unlink(missing_ok=True)
    return True
