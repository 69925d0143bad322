"""Drive the real Krita (full GUI under Xvfb) through a scenario, in a fresh profile.

`KritaRun` owns one scratch folder: a profile (HOME, XDG_* folders, TMPDIR) into which the colord
plug-in is installed by the real `colord plugin install krita` command and enabled, plus a small
driver plug-in (`krita/colord_e2e_driver`) that plays the scenario once the main window is up and
writes report.json. Krita and its X server each run in their own process group, killed whole when
the run ends or times out.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from colord.daemon.plugin_install import enable_in_kritarc

DRIVER = "colord_e2e_driver"
DRIVER_DIR = Path(__file__).with_name("krita")
KRITA_TIMEOUT_S = 300
SETTINGS_GROUP = "colord_krita"


def krita_problem() -> str | None:
    """Why the Krita GUI cannot be driven here (None when it can)."""
    missing = [tool for tool in ("krita", "Xvfb") if shutil.which(tool) is None]
    if missing:
        return f"not installed: {', '.join(missing)} (see tests/run.sh)"
    return None


def to_bgra(rgba: np.ndarray) -> np.ndarray:
    """RGBA8 (H, W, 4) to Krita's byte order for 8-bit RGBA, BGRA."""
    return np.ascontiguousarray(rgba[..., [2, 1, 0, 3]])


def alpha_bounds(rgba: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x, y, width, height) of the pixels that are not fully transparent black."""
    ys, xs = np.nonzero(rgba.any(axis=2))
    if len(xs) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)


@dataclass
class KritaResult:
    returncode: int | None  # None: killed after the timeout
    output: str
    report: dict | None


class _XServer:
    """Xvfb on a display number it picks itself (-displayfd), in its own process group."""

    def __init__(self, log_path: Path) -> None:
        read_end, write_end = os.pipe()
        self._log = open(log_path, "wb")  # noqa: SIM115  (open while Xvfb runs)
        self.process = subprocess.Popen(
            ["Xvfb", "-displayfd", str(write_end), "-screen", "0", "1280x1024x24",
             "-nolisten", "tcp", "-noreset"],
            pass_fds=(write_end,), stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        os.close(write_end)
        with os.fdopen(read_end) as pipe:
            number = pipe.readline().strip()
        if not number:
            self.stop()
            raise RuntimeError(f"Xvfb did not start:\n{log_path.read_text(errors='replace')}")
        self.display = f":{number}"

    def stop(self) -> None:
        _kill_group(self.process)
        self._log.close()


def _kill_group(process: subprocess.Popen) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    process.wait()


class KritaRun:
    def __init__(self, root: Path | None = None) -> None:
        self.root = (
            Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="colord-krita-"))
        )
        self.profile = self.root / "profile"
        self.data = self.root / "data"  # pixel files, dumps, the plug-in log, report.json
        self.data.mkdir(parents=True, exist_ok=True)
        self.dirs = {
            "HOME": self.profile / "home",
            "XDG_CONFIG_HOME": self.profile / "config",
            "XDG_DATA_HOME": self.profile / "share",
            "XDG_CACHE_HOME": self.profile / "cache",
            "XDG_RUNTIME_DIR": self.profile / "runtime",
            "TMPDIR": self.profile / "tmp",
        }
        for folder in self.dirs.values():
            folder.mkdir(parents=True, exist_ok=True)
        self.dirs["XDG_RUNTIME_DIR"].chmod(0o700)
        self.kritarc = self.dirs["XDG_CONFIG_HOME"] / "kritarc"
        self.plugin_log = self.data / "plugin-log.jsonl"
        self.steps: list[dict] = []

    # -- set-up ---------------------------------------------------------------------------------

    def install_plugin(self) -> subprocess.CompletedProcess:
        """Install and enable colord's plug-in with the real `colord plugin install krita`."""
        command = [
            sys.executable, "-c", "from colord.daemon.cli import main; main()",
            "plugin", "install", "krita",
            "--dest", str(self.dirs["XDG_DATA_HOME"] / "krita"),
            "--kritarc", str(self.kritarc),
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"colord plugin install failed:\n{result.stdout}{result.stderr}")
        return result

    def install_driver(self) -> None:
        pykrita = self.dirs["XDG_DATA_HOME"] / "krita" / "pykrita"
        shutil.copytree(DRIVER_DIR / DRIVER, pykrita / DRIVER, dirs_exist_ok=True)
        shutil.copy(DRIVER_DIR / f"{DRIVER}.desktop", pykrita / f"{DRIVER}.desktop")
        text = self.kritarc.read_text() if self.kritarc.exists() else ""
        self.kritarc.write_text(enable_in_kritarc(text, DRIVER))

    def canvas_without_opengl(self) -> None:
        """Draw the canvas with Qt's raster painter instead of OpenGL: under Xvfb, OpenGL is
        Mesa's llvmpipe, which renders on the CPU cores the daemon computes on."""
        display = self.dirs["XDG_CONFIG_HOME"] / "kritadisplayrc"
        display.write_text("[General]\nOpenGLRenderer=none\n")

    def set_plugin_settings(self, settings: dict[str, str]) -> None:
        """Store colord's own settings in kritarc, as its docker would."""
        lines = [f"[{SETTINGS_GROUP}]", *(f"{key}={value}" for key, value in settings.items())]
        text = self.kritarc.read_text() if self.kritarc.exists() else ""
        self.kritarc.write_text(text.rstrip("\n") + "\n\n" + "\n".join(lines) + "\n")

    def add_pixels(self, name: str, pixels: np.ndarray) -> dict:
        """Store a layer's raw bytes (BGRA8 or 16-bit) for the driver; returns its size fields."""
        file_name = f"{name}.raw"
        (self.data / file_name).write_bytes(np.ascontiguousarray(pixels).tobytes())
        return {"file": file_name, "width": pixels.shape[1], "height": pixels.shape[0]}

    # -- the run ------------------------------------------------------------------------------

    def environment(self) -> dict[str, str]:
        """A clean environment: Krita's own Python must find neither the venv nor its packages."""
        env = {key: str(path) for key, path in self.dirs.items()}
        env.update(
            PATH="/usr/local/bin:/usr/bin:/bin",
            LANG="C.UTF-8",
            COLORD_E2E_SCENARIO=str(self.data / "scenario.json"),
            COLORD_KRITA_LOG=str(self.plugin_log),
            COLORD_CONNECTION_FILE=str(self.data / "no-daemon.json"),
        )
        return env

    def run(self, timeout: float = KRITA_TIMEOUT_S) -> KritaResult:
        scenario = {"output": str(self.data), "steps": self.steps}
        (self.data / "scenario.json").write_text(json.dumps(scenario, indent=1))
        report_path = self.data / "report.json"
        x_server = _XServer(self.root / "xvfb.log")
        log_path = self.root / "krita.log"
        try:
            with open(log_path, "wb") as log:
                krita = subprocess.Popen(
                    ["krita", "--nosplash"],
                    env={**self.environment(), "DISPLAY": x_server.display},
                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                )  # fmt: skip
                returncode = self._wait(krita, report_path, timeout)
        finally:
            x_server.stop()
        report = json.loads(report_path.read_text()) if report_path.exists() else None
        return KritaResult(returncode, log_path.read_text(errors="replace"), report)

    def _wait(self, krita: subprocess.Popen, report_path: Path, timeout: float) -> int | None:
        """Wait for Krita to quit; once the report is written, give it a few seconds at most."""
        deadline = time.monotonic() + timeout
        while krita.poll() is None and time.monotonic() < deadline:
            if report_path.exists():
                deadline = min(deadline, time.monotonic() + 10)
            time.sleep(0.1)
        returncode = krita.poll()
        _kill_group(krita)
        return returncode

    def read_dump(self, entry: dict, shape: tuple[int, ...], dtype: str = "uint8") -> np.ndarray:
        return np.frombuffer((self.data / entry["file"]).read_bytes(), dtype).reshape(shape)

    def plugin_events(self) -> list[dict]:
        if not self.plugin_log.exists():
            return []
        return [json.loads(line) for line in self.plugin_log.read_text().splitlines() if line]

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
