"""The connection file: where it lives, its mode, atomic writes, staleness, safe removal, and
what it refuses: symbolic links, other users' files and folders, files others may read. The
rules are colord_protocol's (read by the daemon and the plug-ins alike); writing is the daemon's."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from colord.daemon import connection
from colord.plugins.wire import colord_protocol as rules
from colord.plugins.wire.colord_protocol import Connection, DaemonNotRunning, UnsafeConnectionFile


def info(token: str = "a" * 32, pid: int | None = None) -> Connection:
    return Connection("tcp://127.0.0.1:5547", token, pid or os.getpid(), "0.1.0")


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_environment_variable_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("COLORD_CONNECTION_FILE", str(tmp_path / "x.json"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    assert rules.connection_file_path() == tmp_path / "x.json"


@pytest.mark.parametrize(
    ("platform", "environ", "expected"),
    [
        ("linux", {"XDG_RUNTIME_DIR": "/run/user/1000"}, "/run/user/1000/colord/daemon.json"),
        ("linux", {}, "/home/ada/.local/state/colord/daemon.json"),
        ("freebsd14", {"XDG_RUNTIME_DIR": ""}, "/home/ada/.local/state/colord/daemon.json"),
        ("darwin", {"XDG_RUNTIME_DIR": "/x"},
         "/home/ada/Library/Application Support/colord/daemon.json"),
        ("win32", {"LOCALAPPDATA": "C:/Users/a/AppData/Local"},
         "C:/Users/a/AppData/Local/colord/daemon.json"),
        ("win32", {}, "/home/ada/AppData/Local/colord/daemon.json"),
        ("darwin", {"COLORD_CONNECTION_FILE": "/tmp/x.json"}, "/tmp/x.json"),
    ],
)  # fmt: skip
def test_per_os_location(platform: str, environ: dict, expected: str) -> None:
    home = Path("/home/ada")
    assert rules.connection_file_path(platform, environ, home) == Path(expected)


def test_the_daemon_writes_where_readers_look(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("COLORD_CONNECTION_FILE", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    monkeypatch.setattr(sys, "platform", "linux")
    written = connection.write_connection(info())
    assert written == tmp_path / "colord" / "daemon.json"
    assert rules.read_connection() == info()


def test_written_file_is_owner_only_and_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "colord" / "daemon.json"
    connection.write_connection(info(), path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert json.loads(path.read_text()) == {
        "endpoint": "tcp://127.0.0.1:5547",
        "token": "a" * 32,
        "pid": os.getpid(),
        "version": "0.1.0",
        "protocol": 1,
    }
    assert rules.read_connection(path) == info()
    assert [entry.name for entry in path.parent.iterdir()] == ["daemon.json"]  # no temp left


def test_rewriting_a_world_readable_file_makes_it_private(tmp_path: Path) -> None:
    path = tmp_path / "daemon.json"
    path.write_text("{}")
    path.chmod(0o644)
    connection.write_connection(info(), path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_missing_file_says_the_daemon_is_not_running(tmp_path: Path) -> None:
    with pytest.raises(DaemonNotRunning, match="not running") as caught:
        rules.read_connection(tmp_path / "absent.json")
    assert caught.value.message.endswith("Start it with `colord serve`, then try again.")


def test_stale_file_of_a_dead_process_counts_as_not_running(tmp_path: Path) -> None:
    path = connection.write_connection(info(pid=dead_pid()), tmp_path / "daemon.json")
    with pytest.raises(DaemonNotRunning, match="which has exited"):
        rules.read_connection(path)
    assert rules.read_connection(path, check_pid=False).token == "a" * 32


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("not json", "unreadable"),
        ("[]", "invalid"),
        ('{"endpoint": 1}', "invalid"),
        ('{"endpoint": "tcp://127.0.0.1:1", "token": "t", "pid": "12", "version": "0.1.0", '
         '"protocol": 1}', "'pid' should be a int"),
        ('{"endpoint": "tcp://127.0.0.1:1", "token": "t", "pid": 0, "version": "0.1.0", '
         '"protocol": 1}', "names process 0"),
    ],
)  # fmt: skip
def test_invalid_file_is_reported(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "daemon.json"
    path.write_text(text)
    path.chmod(0o600)
    with pytest.raises(DaemonNotRunning, match=match) as caught:
        rules.read_connection(path)
    assert "daemon.json" in caught.value.message and caught.value.code == "not_running"


def test_a_live_process_of_another_user_counts_as_alive() -> None:
    assert rules.pid_alive(os.getpid())
    assert rules.pid_alive(1)  # init: another user's on POSIX, "access denied" means alive
    assert not rules.pid_alive(dead_pid())
    assert not rules.pid_alive(0) and not rules.pid_alive(-5)


def test_removal_only_touches_our_own_file(tmp_path: Path) -> None:
    path = connection.write_connection(info(token="b" * 32), tmp_path / "daemon.json")
    assert not connection.remove_connection(path, "a" * 32)
    assert path.exists()
    assert connection.remove_connection(path, "b" * 32)
    assert not path.exists()
    assert not connection.remove_connection(path, "b" * 32)


def test_tokens_are_fresh_32_hex_chars() -> None:
    tokens = {connection.new_token() for _ in range(10)}
    assert len(tokens) == 10
    assert all(len(token) == 32 and int(token, 16) >= 0 for token in tokens)


posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX owners and modes")


@posix_only
def test_a_symlink_planted_at_the_file_is_replaced_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep")
    path = tmp_path / "daemon.json"
    path.symlink_to(victim)
    connection.write_connection(info(), path)
    assert not path.is_symlink() and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert victim.read_text() == "keep"
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["daemon.json", "victim"]


@posix_only
def test_a_folder_others_may_write_is_tightened(tmp_path: Path) -> None:
    folder = tmp_path / "shared"
    folder.mkdir()
    folder.chmod(0o777)
    connection.write_connection(info(), folder / "daemon.json")
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755


@posix_only
def test_a_symlinked_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(UnsafeConnectionFile, match="symbolic link"):
        connection.write_connection(info(), tmp_path / "link" / "daemon.json")
    assert not (tmp_path / "real" / "daemon.json").exists()


@posix_only
def test_a_folder_of_another_user_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uid = os.getuid()
    monkeypatch.setattr(os, "getuid", lambda: uid + 1)
    with pytest.raises(UnsafeConnectionFile, match="belongs to another user"):
        connection.write_connection(info(), tmp_path / "daemon.json")
    assert not (tmp_path / "daemon.json").exists()


@posix_only
def test_readers_refuse_a_symlink_another_users_file_and_a_readable_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = connection.write_connection(info(), tmp_path / "daemon.json")
    link = tmp_path / "link.json"
    link.symlink_to(path)
    with pytest.raises(UnsafeConnectionFile, match="symbolic link") as caught:
        rules.read_connection(link)
    assert caught.value.code == "unsafe_connection_file"
    path.chmod(0o644)
    with pytest.raises(UnsafeConnectionFile, match=r"readable by other users \(mode 0644\)"):
        rules.read_connection(path)
    path.chmod(0o600)
    uid = os.getuid()
    monkeypatch.setattr(os, "getuid", lambda: uid + 1)
    with pytest.raises(UnsafeConnectionFile, match="belongs to another user"):
        rules.read_connection(path)
