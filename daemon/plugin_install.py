"""Install the Krita and GIMP 3 plug-ins into a user profile, or pack them as a zip.

Each host gets a bundle: its plug-in files (shipped as data in `colord.plugins`) plus a copy of
every shared module in `plugins/wire/` (the wire client and what it and the plug-ins share).
The bundle knows two layouts, one for installing (paths relative to the host's data or config
folder) and one for the zip (what Krita's "Import Python Plugin from File…" expects:
the `.desktop` and `.action` files at the top beside the package folder).
"""

from __future__ import annotations

import configparser
import hashlib
import json
import os
import secrets
import stat
import sys
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

HOSTS = ("krita", "gimp")
KRITA_PLUGIN = "colord_krita"
GIMP_PLUGIN = "colord_gimp"
WIRE_CLIENT = "colord_wire.py"  # the one shared module every bundle must have
# Written by `install` beside the shared modules: how the plug-in starts this colord's daemon
# (read by plugins/wire/colord_launch.py). Not in packed zips, which may go to another machine.
LAUNCH_FILE = "colord_launch.json"
IDLE_EXIT_MINUTES = 30  # a daemon the app started frees its memory after this long unused
# Beside the plug-in in the host's folder: what the last install wrote, path -> sha256.
MANIFEST_SUFFIX = ".colord-install.json"

# Fixed timestamp so that packing the same files twice gives the same zip.
_ZIP_DATE = (2024, 1, 1, 0, 0, 0)
_SKIPPED_PARTS = {"__pycache__"}


class PluginInstallError(Exception):
    """Installing or packing failed; the message says why in one sentence."""


@dataclass(frozen=True)
class BundleFile:
    install_path: PurePosixPath  # relative to the host's data/config folder
    archive_path: PurePosixPath  # inside the zip
    data: bytes
    executable: bool = False


@dataclass(frozen=True)
class InstallReport:
    destination: Path
    files: list[Path]  # written, the install manifest last
    kritarc: Path | None  # the Krita settings file in which the plug-in was enabled
    removed: list[Path] = field(default_factory=list)  # stale files of an earlier install
    overwritten: list[Path] = field(default_factory=list)  # changed files replaced (--force)
    disabled_in: Path | None = None  # the kritarc that keeps the plug-in disabled, left alone


def _plugins_root() -> Traversable:
    return resources.files("colord.plugins")


def _package_files(folder: Traversable, prefix: PurePosixPath) -> list[tuple[PurePosixPath, bytes]]:
    """Every file under `folder` (recursively, caches skipped) as (path under prefix, bytes)."""
    found: list[tuple[PurePosixPath, bytes]] = []
    for entry in sorted(folder.iterdir(), key=lambda item: item.name):
        if entry.name in _SKIPPED_PARTS or entry.name.endswith(".pyc"):
            continue
        if entry.is_dir():
            found.extend(_package_files(entry, prefix / entry.name))
        else:
            found.append((prefix / entry.name, entry.read_bytes()))
    return found


def _shared_modules(folder: Traversable) -> list[tuple[str, bytes]]:
    """The standard-library modules every plug-in bundle carries beside its own files."""
    return [
        (entry.name, entry.read_bytes())
        for entry in sorted(folder.iterdir(), key=lambda item: item.name)
        if entry.is_file() and entry.name.endswith(".py")
    ]


def bundle(host: str) -> list[BundleFile]:
    """The files that make up the installable plug-in for `host` ("krita" or "gimp")."""
    root = _plugins_root()
    wire = root / "wire" / WIRE_CLIENT
    if not wire.is_file():
        raise PluginInstallError(f"The wire client {WIRE_CLIENT} is missing from colord.plugins.")
    shared = _shared_modules(root / "wire")
    if host == "krita":
        package = root / "krita" / KRITA_PLUGIN
        files = [
            BundleFile(PurePosixPath("pykrita") / path, path, data)
            for path, data in _package_files(package, PurePosixPath(KRITA_PLUGIN))
        ]
        files.extend(
            BundleFile(
                PurePosixPath("pykrita", KRITA_PLUGIN, name),
                PurePosixPath(KRITA_PLUGIN, name),
                data,
            )
            for name, data in shared
        )
        for name, folder in (
            (f"{KRITA_PLUGIN}.desktop", "pykrita"),
            (f"{KRITA_PLUGIN}.action", "actions"),
        ):
            files.append(
                BundleFile(
                    PurePosixPath(folder, name),
                    PurePosixPath(name),
                    (root / "krita" / name).read_bytes(),
                )
            )
        return files
    if host == "gimp":
        package = root / "gimp" / GIMP_PLUGIN
        main_file = PurePosixPath(GIMP_PLUGIN, f"{GIMP_PLUGIN}.py")
        files = [
            BundleFile(PurePosixPath("plug-ins") / path, path, data, executable=path == main_file)
            for path, data in _package_files(package, PurePosixPath(GIMP_PLUGIN))
        ]
        files.extend(
            BundleFile(
                PurePosixPath("plug-ins", GIMP_PLUGIN, name), PurePosixPath(GIMP_PLUGIN, name), data
            )
            for name, data in shared
        )
        return files
    raise PluginInstallError(f"Unknown host {host!r}: choose one of {', '.join(HOSTS)}.")


def _platform_dirs(
    platform: str | None, environ: Mapping[str, str] | None, home: Path | None
) -> tuple[str, Mapping[str, str], Path]:
    return (
        platform if platform is not None else sys.platform,
        environ if environ is not None else os.environ,
        home if home is not None else Path.home(),
    )


def _windows_folder(environ: Mapping[str, str], variable: str, home: Path, fallback: str) -> Path:
    value = environ.get(variable)
    return Path(value) if value else home / fallback


def daemon_command() -> list[str]:
    """The command that starts `colord serve` from this installation, whatever the app's PATH,
    with `--idle-exit` when this colord's `serve` has it."""
    from colord.daemon.cli_serve import serve

    command = [sys.executable, "-c", "from colord.daemon.cli import main; main()", "serve"]
    if any("--idle-exit" in parameter.opts for parameter in serve.params):
        command += ["--idle-exit", str(IDLE_EXIT_MINUTES)]
    return command


def launch_file(host: str) -> BundleFile:
    """The bundle file that records `daemon_command()` for the `host` plug-in."""
    folder = (
        PurePosixPath("pykrita", KRITA_PLUGIN)
        if host == "krita"
        else PurePosixPath("plug-ins", GIMP_PLUGIN)
    )
    data = json.dumps({"command": daemon_command()}, indent=1).encode()
    return BundleFile(folder / LAUNCH_FILE, PurePosixPath(folder.name, LAUNCH_FILE), data)


def default_destination(
    host: str,
    *,
    platform: str | None = None,
    environ: Mapping[str, str] | None = None,
    home: Path | None = None,
) -> Path:
    """Where the host reads user plug-ins from: Krita's data folder, GIMP 3's config folder."""
    platform, environ, home = _platform_dirs(platform, environ, home)
    if host == "krita":
        if platform.startswith("win"):
            return _windows_folder(environ, "APPDATA", home, "AppData/Roaming") / "krita"
        if platform == "darwin":
            return home / "Library" / "Application Support" / "krita"
        data_home = environ.get("XDG_DATA_HOME") or str(home / ".local" / "share")
        return Path(data_home) / "krita"
    if host == "gimp":
        if platform.startswith("win"):
            return _windows_folder(environ, "APPDATA", home, "AppData/Roaming") / "GIMP" / "3.0"
        if platform == "darwin":
            return home / "Library" / "Application Support" / "GIMP" / "3.0"
        config_home = environ.get("XDG_CONFIG_HOME") or str(home / ".config")
        return Path(config_home) / "GIMP" / "3.0"
    raise PluginInstallError(f"Unknown host {host!r}: choose one of {', '.join(HOSTS)}.")


def default_kritarc(
    *,
    platform: str | None = None,
    environ: Mapping[str, str] | None = None,
    home: Path | None = None,
) -> Path:
    """Where Krita keeps its settings file (kritarc) on this OS."""
    platform, environ, home = _platform_dirs(platform, environ, home)
    if platform.startswith("win"):
        return _windows_folder(environ, "LOCALAPPDATA", home, "AppData/Local") / "kritarc"
    if platform == "darwin":
        return home / "Library" / "Preferences" / "kritarc"
    config_home = environ.get("XDG_CONFIG_HOME") or str(home / ".config")
    return Path(config_home) / "kritarc"


def enable_in_kritarc(text: str, plugin: str = KRITA_PLUGIN) -> str:
    """`text` (a kritarc) with `enable_<plugin>=true` under [python]; other lines kept as is."""
    key = f"enable_{plugin}"
    setting = f"{key}=true"
    lines = text.splitlines()
    section_start = next((i for i, line in enumerate(lines) if line.strip() == "[python]"), None)
    if section_start is None:
        prefix = [*lines, ""] if lines and lines[-1].strip() else lines
        return "\n".join([*prefix, "[python]", setting]) + "\n"
    section_end = next(
        (i for i in range(section_start + 1, len(lines)) if lines[i].lstrip().startswith("[")),
        len(lines),
    )
    for i in range(section_start + 1, section_end):
        if lines[i].split("=", 1)[0].strip() == key:
            lines[i] = setting
            break
    else:
        lines.insert(section_start + 1, setting)
    return "\n".join(lines) + "\n"


def kritarc_disables(text: str, plugin: str = KRITA_PLUGIN) -> bool:
    """True when `text` (a kritarc) says `enable_<plugin>=false` under [python]: the user's
    choice, which installing again must not undo."""
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys keep their case
    try:
        parser.read_string(text)
    except configparser.Error:
        return False
    return parser.get("python", f"enable_{plugin}", fallback="").strip().lower() == "false"


@dataclass(frozen=True)
class _Plan:
    """What an install will do, decided before anything is written."""

    writes: list[tuple[Path, BundleFile]]
    stale: list[Path]  # files an earlier colord install wrote that this one no longer ships
    changed: list[Path]  # existing files that are not what colord installed there
    kritarc_text: str | None  # the kritarc's new text; None: leave it alone


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _manifest_path(destination: Path, host: str) -> Path:
    return destination / f".{KRITA_PLUGIN if host == 'krita' else GIMP_PLUGIN}{MANIFEST_SUFFIX}"


def _read_manifest(path: Path) -> dict[str, str]:
    """{install path: sha256} of the files the last colord install wrote ({} if none)."""
    try:
        files = json.loads(path.read_bytes()).get("files")
    except (OSError, ValueError, AttributeError):
        return {}
    if not isinstance(files, dict):
        return {}
    return {str(key): str(value) for key, value in files.items()}


def _refuse_symlinks(destination: Path, target: Path) -> None:
    """Raise if any existing part of `target` below `destination` is a symbolic link."""
    current = destination
    for part in target.relative_to(destination).parts:
        current = current / part
        if current.is_symlink():
            raise PluginInstallError(
                f"{current} is a symbolic link; colord installs only into real folders and files "
                "inside the plug-in folder. Remove the link and install again."
            )


def _existing_digest(path: Path) -> str | None:
    try:
        return _digest(path.read_bytes())
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        return ""  # never what colord installed


def _plan(host: str, destination: Path, kritarc: Path | None) -> _Plan:
    manifest = _read_manifest(_manifest_path(destination, host))
    writes, changed = [], []
    shipped = set()
    for item in [*bundle(host), launch_file(host)]:
        key = str(item.install_path)
        shipped.add(key)
        target = destination.joinpath(*item.install_path.parts)
        _refuse_symlinks(destination, target)
        current = _existing_digest(target)
        if current is not None and current not in (_digest(item.data), manifest.get(key)):
            changed.append(target)
        writes.append((target, item))
    stale = []
    for key, recorded in sorted(manifest.items()):
        target = destination.joinpath(*PurePosixPath(key).parts)
        if key in shipped or not target.is_file():
            continue
        _refuse_symlinks(destination, target)
        stale.append(target)
        if _existing_digest(target) != recorded:
            changed.append(target)
    kritarc_text = None
    if kritarc is not None:
        try:
            text = kritarc.read_bytes().decode("utf-8") if kritarc.exists() else ""
        except UnicodeDecodeError:
            raise PluginInstallError(
                f"Krita's settings file {kritarc} is not UTF-8 text; nothing was installed. Fix "
                "or remove it (Krita writes a fresh one), then install again."
            ) from None
        if not kritarc_disables(text):
            kritarc_text = enable_in_kritarc(text)
    return _Plan(writes, stale, changed, kritarc_text)


def _write_file(target: Path, data: bytes, mode: int) -> None:
    """Write through a fresh temporary file beside `target` (never through a link), then rename."""
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    descriptor = os.open(temporary, flags, mode)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
        os.chmod(temporary, mode)  # whatever the umask
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def install(
    host: str,
    dest: Path | None = None,
    *,
    kritarc: Path | None = None,
    force: bool = False,
) -> InstallReport:
    """Copy the `host` plug-in into `dest` (default: the host's per-user folder on this OS).

    For Krita the plug-in is also enabled in kritarc (`kritarc` or the OS default), since Krita
    loads a Python plug-in only when it is both installed and enabled, unless the user disabled
    it there. Files a user changed are not overwritten without `force`; files an earlier install
    wrote and this one no longer ships are removed. Everything is checked before anything is
    written; nothing is written through a symbolic link inside `dest`.
    """
    destination = Path(dest) if dest is not None else default_destination(host)
    settings = None
    if host == "krita":
        settings = Path(kritarc) if kritarc is not None else default_kritarc()
    try:
        plan = _plan(host, destination, settings)
        if plan.changed and not force:
            raise PluginInstallError(
                f"Not installing: {len(plan.changed)} file(s) in {destination} differ from what "
                f"colord installed there ({_listed(plan.changed, destination)}). Back up your "
                "changes, then install again with --force to overwrite them."
            )
        written: list[Path] = []
        for target, item in plan.writes:
            target.parent.mkdir(parents=True, exist_ok=True)
            _write_file(target, item.data, 0o755 if item.executable else 0o644)
            written.append(target)
        for target in plan.stale:
            target.unlink(missing_ok=True)
        manifest = {str(item.install_path): _digest(item.data) for _, item in plan.writes}
        manifest_path = _manifest_path(destination, host)
        _write_file(manifest_path, json.dumps({"files": manifest}, indent=1).encode(), 0o644)
        if settings is not None and plan.kritarc_text is not None:
            settings.parent.mkdir(parents=True, exist_ok=True)
            settings.write_text(plan.kritarc_text, encoding="utf-8")
    except OSError as error:
        raise PluginInstallError(
            f"Could not install the {host} plug-in into {destination}: {error}"
        ) from error
    return InstallReport(
        destination=destination,
        files=[*written, manifest_path],
        kritarc=settings if plan.kritarc_text is not None else None,
        removed=plan.stale,
        overwritten=plan.changed,
        disabled_in=settings if settings is not None and plan.kritarc_text is None else None,
    )


def _listed(paths: list[Path], root: Path, limit: int = 5) -> str:
    names = [str(path.relative_to(root)) for path in paths]
    return ", ".join(names[:limit]) + (
        f" and {len(names) - limit} more" if len(names) > limit else ""
    )


def _zip_info(path: str, *, directory: bool = False, executable: bool = False) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(path, date_time=_ZIP_DATE)
    if directory:
        info.external_attr = (stat.S_IFDIR | 0o755) << 16 | 0x10  # 0x10: MS-DOS directory flag
    else:
        info.external_attr = (stat.S_IFREG | (0o755 if executable else 0o644)) << 16
        info.compress_type = zipfile.ZIP_DEFLATED
    return info


def pack(host: str, output: Path) -> Path:
    """Write the `host` plug-in as a zip at `output`, with folder entries (Krita needs them)."""
    files = bundle(host)
    folders = sorted(
        {
            str(parent)
            for item in files
            for parent in item.archive_path.parents
            if str(parent) != "."
        }
    )
    output = Path(output)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(output, "w") as archive:
            for folder in folders:
                archive.writestr(_zip_info(folder + "/", directory=True), b"")
            for item in files:
                archive.writestr(
                    _zip_info(str(item.archive_path), executable=item.executable), item.data
                )
    except OSError as error:
        raise PluginInstallError(f"Could not write {output}: {error}") from error
    return output
