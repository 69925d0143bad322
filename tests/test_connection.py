"""The connection file: where it lives, its mode, atomic writes, staleness, and safe removal."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from colord.daemon import connection
from colord.daemon.connection import ConnectionFileError, ConnectionInfo


def info(token: str = "a" * 32, pid: int | None = None) -> ConnectionInfo:
    return ConnectionInfo("tcp://127.0.0.1:5547", token, pid or os.getpid(), "0.1.0")


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_environment_variable_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("COLORD_CONNECTION_FILE", str(tmp_path / "x.json"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    assert connection.connection_file_path() == tmp_path / "x.json"


@pytest.mark.parametrize(
    ("platform", "environment", "expected"),
    [
        ("linux", {"XDG_RUNTIME_DIR": "/run/user/1000"}, "/run/user/1000/colord/daemon.json"),
        ("linux", {}, "HOME/.local/state/colord/daemon.json"),
        ("freebsd14", {}, "HOME/.local/state/colord/daemon.json"),
        ("darwin", {"XDG_RUNTIME_DIR": "/x"},
         "HOME/Library/Application Support/colord/daemon.json"),
        ("win32", {"LOCALAPPDATA": "C:/Users/a/AppData/Local"},
         "C:/Users/a/AppData/Local/colord/daemon.json"),
    ],
)  # fmt: skip
def test_per_os_location(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, platform: str, environment: dict, expected: str
) -> None:
    for name in ("COLORD_CONNECTION_FILE", "XDG_RUNTIME_DIR", "LOCALAPPDATA"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(sys, "platform", platform)
    assert connection.connection_file_path() == Path(expected.replace("HOME", str(tmp_path)))


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
    assert connection.read_connection(path) == info()
    assert [entry.name for entry in path.parent.iterdir()] == ["daemon.json"]  # no temp left


def test_rewriting_a_world_readable_file_makes_it_private(tmp_path: Path) -> None:
    path = tmp_path / "daemon.json"
    path.write_text("{}")
    path.chmod(0o644)
    connection.write_connection(info(), path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_missing_file_says_the_daemon_is_not_running(tmp_path: Path) -> None:
    with pytest.raises(ConnectionFileError, match="not running"):
        connection.read_connection(tmp_path / "absent.json")


def test_stale_file_of_a_dead_process_counts_as_not_running(tmp_path: Path) -> None:
    path = connection.write_connection(info(pid=dead_pid()), tmp_path / "daemon.json")
    with pytest.raises(ConnectionFileError, match="stale"):
        connection.read_connection(path)
    assert connection.read_connection(path, check_pid=False).token == "a" * 32


@pytest.mark.parametrize("text", ["not json", "[]", '{"endpoint": 1}', '{"token": "x"}'])
def test_invalid_file_is_reported(tmp_path: Path, text: str) -> None:
    path = tmp_path / "daemon.json"
    path.write_text(text)
    with pytest.raises(ConnectionFileError, match=r"daemon\.json"):
        connection.read_connection(path)


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
