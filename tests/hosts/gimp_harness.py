"""Drive the real GIMP 3 in its Debian trixie chroot: a fresh profile, the plug-in, a batch job.

`GimpRun` owns one scratch folder inside the chroot (profile, pixels, job, observations). Cases are
plain dicts (see `gimp_batch.py`, which runs inside GIMP and executes them); `add_pixels` stores a
numpy RGBA8 layer for them, `run` starts `gimp-console-3.0` once for all cases, and `observations`
reads back what GIMP recorded.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from colord.daemon.plugin_install import install

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "tests" / "hosts" / "build_gimp_chroot.sh"
BATCH_SCRIPT = Path(__file__).with_name("gimp_batch.py")
DIALOG_HOOK = Path(__file__).with_name("gimp_accept_dialog.py")
DEFAULT_CHROOT = Path("/var/cache/colord/gimp-chroot")
READY_MARKER = ".colord-gimp-chroot-ready"
GIMP_TIMEOUT_S = 300


def chroot_dir() -> Path:
    return Path(os.environ.get("COLORD_GIMP_CHROOT", DEFAULT_CHROOT))


def chroot_problem(root: Path) -> str | None:
    """Why GIMP cannot be driven here (None when it can)."""
    if not (root / READY_MARKER).is_file():
        return f"no GIMP chroot at {root} (build it with {BUILD_SCRIPT.relative_to(REPO)})"
    if os.geteuid() != 0:
        return "entering the GIMP chroot needs root"
    return None


def chroot_python(root: Path, code: str) -> subprocess.CompletedProcess:
    """Run `code` with the chroot's own python3 (the interpreter GIMP's plug-ins use)."""
    return subprocess.run(
        ["chroot", str(root), "env", "-i", "PATH=/usr/bin:/bin", "python3", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
    )


@contextmanager
def virtual_display() -> Iterator[str]:
    """An Xvfb server for the length of the block; yields its display name (":N").

    The chroot shares the host's network namespace, so its X clients reach Xvfb's abstract socket.
    """
    read_end, write_end = os.pipe()
    server = subprocess.Popen(
        [
            "Xvfb",
            "-displayfd",
            str(write_end),
            "-screen",
            "0",
            "1280x1024x24",
            "-nolisten",
            "tcp",
            "-noreset",
        ],
        pass_fds=(write_end,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    os.close(write_end)
    try:
        with os.fdopen(read_end) as announced:
            number = announced.readline().strip()
        if not number:
            raise RuntimeError("Xvfb did not start")
        yield f":{number}"
    finally:
        server.terminate()
        server.wait(timeout=30)


@dataclass
class GimpResult:
    returncode: int
    output: str


class GimpRun:
    """One scratch folder inside the chroot and one batch run of GIMP over it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.work = Path(tempfile.mkdtemp(prefix="colord-gimp-", dir=root / "tmp"))
        self.work.chmod(0o755)
        for name in ("home", "config", "cache", "data", "runtime", "tmp", "pixels", "out"):
            (self.work / name).mkdir()
        (self.work / "runtime").chmod(0o700)
        gimp_config = install("gimp", self.work / "config" / "GIMP" / "3.0").destination
        self.plugin_dir = gimp_config / "plug-ins" / "colord_gimp"
        self.batch_script = Path(shutil.copy2(BATCH_SCRIPT, self.work / BATCH_SCRIPT.name))
        self.connection_file = self.work / "runtime" / "daemon.json"
        self.cases: list[dict] = []

    def inside(self, path: Path) -> str:
        """`path` as GIMP sees it from inside the chroot."""
        return "/" + str(path.relative_to(self.root))

    def add_pixels(self, name: str, rgba: np.ndarray) -> dict:
        """Store an (H, W, 4) uint8 layer; returns the layer entry fields for a case."""
        if rgba.dtype != np.uint8 or rgba.ndim != 3 or rgba.shape[2] != 4:
            raise ValueError(
                f"layer {name!r}: expected (H, W, 4) uint8, got {rgba.shape} {rgba.dtype}"
            )
        file_name = f"{name}.rgba"
        (self.work / "pixels" / file_name).write_bytes(np.ascontiguousarray(rgba).tobytes())
        height, width = rgba.shape[:2]
        return {"pixels": file_name, "width": width, "height": height}

    def run(self, timeout: float = GIMP_TIMEOUT_S, display: str | None = None) -> GimpResult:
        """Run GIMP once over all cases, in a fresh profile and with only this run's environment.

        With `display` (an X display such as ":3"), plug-ins may open dialogs there, and the colord
        plug-in's procedure dialog is recorded and accepted by `gimp_accept_dialog.py`.
        """
        job = self.work / "job.json"
        job.write_text(
            json.dumps(
                {
                    "pixel_dir": self.inside(self.work / "pixels"),
                    "out_dir": self.inside(self.work / "out"),
                    "plugin_dir": self.inside(self.plugin_dir),
                    "cases": self.cases,
                }
            )
        )
        env = {
            "PATH": "/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "HOME": self.inside(self.work / "home"),
            "XDG_CONFIG_HOME": self.inside(self.work / "config"),
            "XDG_CACHE_HOME": self.inside(self.work / "cache"),
            "XDG_DATA_HOME": self.inside(self.work / "data"),
            "XDG_RUNTIME_DIR": self.inside(self.work / "runtime"),
            "TMPDIR": self.inside(self.work / "tmp"),
            "COLORD_CONNECTION_FILE": self.inside(self.connection_file),
            "COLORD_GIMP_JOB": self.inside(job),
        }
        if display is not None:
            hook = self.work / "pyhook"
            hook.mkdir(exist_ok=True)
            shutil.copy2(DIALOG_HOOK, hook / "sitecustomize.py")
            env |= {
                "DISPLAY": display,
                "PYTHONPATH": self.inside(hook),
                "COLORD_GIMP_DIALOG_RECORD": self.inside(self.work / "out" / "dialogs.jsonl"),
                "COLORD_GIMP_DIALOG_SHOT": self.inside(self.work / "out" / "dialog.png"),
            }
        batch = f"exec(open({self.inside(self.batch_script)!r}).read())"
        command = [
            "chroot",
            str(self.root),
            "env",
            "-i",
            *(f"{key}={value}" for key, value in env.items()),
            "gimp-console-3.0",
            "--no-interface",
            "--no-data",
            "--no-fonts",
            "--batch-interpreter=python-fu-eval",
            "--batch",
            batch,
            "--quit",
        ]
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            output, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate()
            raise RuntimeError(f"GIMP did not finish within {timeout} s:\n{output}") from None
        return GimpResult(process.returncode, output)

    def observations(self, case_name: str) -> dict:
        return json.loads((self.work / "out" / case_name / "observations.json").read_text())

    def procedure(self) -> dict:
        """The procedure's registration as GIMP reports it (menu, image types, arguments)."""
        return json.loads((self.work / "out" / "procedure.json").read_text())

    def dialog_records(self) -> list[dict]:
        """What each procedure dialog showed in a run with a display, in order."""
        path = self.work / "out" / "dialogs.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line]

    def layer_pixels(self, case_name: str, record: dict) -> np.ndarray:
        data = (self.work / "out" / case_name / record["pixels"]).read_bytes()
        return np.frombuffer(data, np.uint8).reshape(record["height"], record["width"], 4)

    def completed(self) -> bool:
        return (self.work / "out" / "done").is_file()

    def remove(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)
