"""`colord plugin install|pack`: per-OS folders, kritarc editing, the installed tree, the zips."""

from __future__ import annotations

import hashlib
import json
import shutil
import stat
import subprocess
import sys
import zipfile
from configparser import ConfigParser
from pathlib import Path, PurePosixPath

import pytest
from capabilities import HOSTS, missing
from click.testing import CliRunner

from colord.daemon.cli import main
from colord.daemon.plugin_install import (
    LAUNCH_FILE,
    MANIFEST_SUFFIX,
    PluginInstallError,
    bundle,
    default_destination,
    default_kritarc,
    enable_in_kritarc,
    install,
    pack,
)

REPO = Path(__file__).resolve().parents[1]
WIRE = REPO / "plugins" / "wire" / "colord_wire.py"
KRITA_IMPORTER = Path("/usr/share/krita/pykrita/plugin_importer/plugin_importer.py")
HOME = Path("/home/ada")


@pytest.mark.parametrize(
    ("host", "platform", "environ", "expected"),
    [
        ("krita", "linux", {}, HOME / ".local/share/krita"),
        ("krita", "linux", {"XDG_DATA_HOME": "/data"}, Path("/data/krita")),
        ("krita", "darwin", {}, HOME / "Library/Application Support/krita"),
        ("krita", "win32", {"APPDATA": "C:/Users/ada/AppData/Roaming"},
         Path("C:/Users/ada/AppData/Roaming/krita")),
        ("krita", "win32", {}, HOME / "AppData/Roaming/krita"),
        ("gimp", "linux", {}, HOME / ".config/GIMP/3.0"),
        ("gimp", "linux", {"XDG_CONFIG_HOME": "/cfg"}, Path("/cfg/GIMP/3.0")),
        ("gimp", "darwin", {}, HOME / "Library/Application Support/GIMP/3.0"),
        ("gimp", "win32", {"APPDATA": "C:/Roaming"}, Path("C:/Roaming/GIMP/3.0")),
    ],
)  # fmt: skip
def test_default_destination_per_os(host, platform, environ, expected) -> None:
    assert default_destination(host, platform=platform, environ=environ, home=HOME) == expected


@pytest.mark.parametrize(
    ("platform", "environ", "expected"),
    [
        ("linux", {}, HOME / ".config/kritarc"),
        ("linux", {"XDG_CONFIG_HOME": "/cfg"}, Path("/cfg/kritarc")),
        ("darwin", {}, HOME / "Library/Preferences/kritarc"),
        ("win32", {"LOCALAPPDATA": "C:/Local"}, Path("C:/Local/kritarc")),
    ],
)
def test_default_kritarc_per_os(platform, environ, expected) -> None:
    assert default_kritarc(platform=platform, environ=environ, home=HOME) == expected


def test_unknown_host_is_a_clear_error() -> None:
    with pytest.raises(PluginInstallError, match="Unknown host 'photoshop'"):
        bundle("photoshop")


KRITARC = """[General]
LastPreset=Basic_tip_default
Some Key=50%

[python]
enable_scripter=true
enable_colord_krita=false

[theme]
Theme=Krita dark
"""


def test_enable_in_kritarc_edits_one_line_and_keeps_the_rest() -> None:
    edited = enable_in_kritarc(KRITARC)
    assert edited == KRITARC.replace("enable_colord_krita=false", "enable_colord_krita=true")
    assert enable_in_kritarc(edited) == edited


def test_enable_in_kritarc_adds_the_line_or_the_section() -> None:
    without_line = KRITARC.replace("enable_colord_krita=false\n", "")
    edited = enable_in_kritarc(without_line)
    assert edited == without_line.replace("[python]\n", "[python]\nenable_colord_krita=true\n")
    without_section = "[General]\nLastPreset=x\n"
    assert enable_in_kritarc(without_section) == (
        "[General]\nLastPreset=x\n\n[python]\nenable_colord_krita=true\n"
    )
    assert enable_in_kritarc("") == "[python]\nenable_colord_krita=true\n"


def tree(folder: Path) -> dict[str, bytes]:
    """The plug-in files under `folder` (the install manifest left out)."""
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not path.name.endswith(MANIFEST_SUFFIX)
    }


def test_install_krita_copies_the_bundle_and_enables_it(tmp_path: Path) -> None:
    kritarc = tmp_path / "config" / "kritarc"
    kritarc.parent.mkdir()
    kritarc.write_text(KRITARC.replace("enable_colord_krita=false\n", ""))
    report = install("krita", tmp_path / "krita", kritarc=kritarc)

    files = tree(tmp_path / "krita")
    source = REPO / "plugins" / "krita"
    assert files["pykrita/colord_krita/colord_wire.py"] == WIRE.read_bytes()
    assert files["pykrita/colord_krita.desktop"] == (source / "colord_krita.desktop").read_bytes()
    assert files["actions/colord_krita.action"] == (source / "colord_krita.action").read_bytes()
    for module in (source / "colord_krita").glob("*.py"):
        assert files[f"pykrita/colord_krita/{module.name}"] == module.read_bytes()
    assert not any("__pycache__" in name for name in files)
    manifest = tmp_path / "krita" / f".colord_krita{MANIFEST_SUFFIX}"
    assert report.files[-1] == manifest
    assert sorted(report.files[:-1]) == sorted(tmp_path / "krita" / name for name in files)

    settings = kritarc.read_text()
    assert "[General]\nLastPreset=Basic_tip_default\nSome Key=50%\n" in settings
    assert "[python]\nenable_colord_krita=true\nenable_scripter=true\n" in settings
    assert report.kritarc == kritarc


def test_install_krita_desktop_file_names_the_package(tmp_path: Path) -> None:
    install("krita", tmp_path, kritarc=tmp_path / "kritarc")
    desktop = ConfigParser()
    desktop.read(tmp_path / "pykrita" / "colord_krita.desktop")
    entry = desktop["Desktop Entry"]
    assert entry["ServiceTypes"] == "Krita/PythonPlugin"
    assert entry["X-KDE-Library"] == "colord_krita"
    assert entry["X-Python-2-Compatible"] == "false"
    action = (tmp_path / "actions" / "colord_krita.action").read_text()
    assert '<Action name="colord_colorize">' in action


def test_install_gimp_makes_the_main_file_executable(tmp_path: Path) -> None:
    report = install("gimp", tmp_path)
    folder = tmp_path / "plug-ins" / "colord_gimp"
    main_file = folder / "colord_gimp.py"
    assert stat.S_IMODE(main_file.stat().st_mode) == 0o755
    assert (folder / "colord_wire.py").read_bytes() == WIRE.read_bytes()
    assert main_file.read_text().startswith("#!/usr/bin/env python3")
    assert report.kritarc is None


def test_install_into_a_file_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with pytest.raises(PluginInstallError, match="Could not install the gimp plug-in"):
        install("gimp", blocker)


def test_krita_zip_layout_and_reproducibility(tmp_path: Path) -> None:
    first = pack("krita", tmp_path / "a.zip").read_bytes()
    second = pack("krita", tmp_path / "b.zip").read_bytes()
    assert first == second
    with zipfile.ZipFile(tmp_path / "a.zip") as archive:
        names = archive.namelist()
        assert names[0] == "colord_krita/"  # Krita's importer looks for the folder entry
        assert {"colord_krita/__init__.py", "colord_krita/colord_wire.py"} <= set(names)
        assert {"colord_krita.desktop", "colord_krita.action"} <= set(names)
        assert archive.read("colord_krita/colord_wire.py") == WIRE.read_bytes()


def test_krita_zip_is_what_krita_s_own_importer_accepts(tmp_path: Path) -> None:
    """Krita's "Import Python Plugin from File…" code, run on the zip, gives the installed tree."""
    if not KRITA_IMPORTER.is_file():
        missing("Krita is not installed (its plug-in importer is part of it)", HOSTS)
    archive = pack("krita", tmp_path / "colord_krita.zip")
    imported = tmp_path / "imported"
    imported.mkdir()
    shutil.copy(KRITA_IMPORTER, tmp_path / "plugin_importer.py")
    result = subprocess.run(
        [sys.executable, str(tmp_path / "plugin_importer.py"), str(archive), str(imported)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "Imported plugin: colord: Colorize with Reference" in result.stdout
    install("krita", tmp_path / "installed", kritarc=tmp_path / "kritarc")
    installed = tree(tmp_path / "installed")
    # only an install records how to start this machine's colord; a zip may go elsewhere
    del installed[f"pykrita/colord_krita/{LAUNCH_FILE}"]
    assert tree(imported) == installed


@pytest.mark.parametrize(
    ("host", "folder"), [("krita", "pykrita/colord_krita"), ("gimp", "plug-ins/colord_gimp")]
)
def test_install_records_how_to_start_this_colord(tmp_path: Path, host: str, folder: str) -> None:
    install(host, tmp_path, kritarc=tmp_path / "kritarc")
    recorded = json.loads((tmp_path / folder / LAUNCH_FILE).read_text())["command"]
    assert recorded[0] == sys.executable and Path(recorded[0]).is_absolute()
    # it runs from an app's environment, whatever its PATH and working folder
    shown = subprocess.run(
        [*recorded, "--help"], capture_output=True, text=True, timeout=120,
        env={"PATH": "/nonexistent", "HOME": str(tmp_path)}, cwd=tmp_path,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert "Usage:" in shown.stdout and "--max-side" in shown.stdout
    # a daemon the app started frees its memory when unused, where this colord can
    assert ("--idle-exit" in shown.stdout) == (recorded[-2:] == ["--idle-exit", "30"])


def test_gimp_zip_keeps_the_executable_bit(tmp_path: Path) -> None:
    with zipfile.ZipFile(pack("gimp", tmp_path / "g.zip")) as archive:
        modes = {info.filename: info.external_attr >> 16 for info in archive.infolist()}
    assert stat.S_IMODE(modes["colord_gimp/colord_gimp.py"]) == 0o755
    assert stat.S_IMODE(modes["colord_gimp/colord_wire.py"]) == 0o644
    assert stat.S_ISDIR(modes["colord_gimp/"])
    expected = {str(PurePosixPath(item.archive_path)) for item in bundle("gimp")}
    assert set(modes) == expected | {"colord_gimp/"}


def test_cli_install_and_pack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    result = runner.invoke(
        main,
        ["plugin", "install", "krita", "--dest", str(tmp_path / "k"),
         "--kritarc", str(tmp_path / "kritarc")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Tools › Scripts › Colorize with Reference…" in result.output
    assert f"the plug-in starts one with: {sys.executable} -c " in result.output
    assert (tmp_path / "k" / "pykrita" / "colord_krita" / "__init__.py").is_file()
    assert "enable_colord_krita=true" in (tmp_path / "kritarc").read_text()

    result = runner.invoke(main, ["plugin", "pack", "gimp", "-o", str(tmp_path / "g.zip")])
    assert result.exit_code == 0, result.output
    assert zipfile.is_zipfile(tmp_path / "g.zip")

    monkeypatch.chdir(tmp_path)
    result = runner.invoke(main, ["plugin", "pack", "krita"])
    assert result.exit_code == 0, result.output
    assert zipfile.is_zipfile(tmp_path / "colord_krita.zip")


def test_cli_reports_errors_without_a_traceback(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["plugin", "install", "photoshop"])
    assert result.exit_code == 2 and "photoshop" in result.output
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = runner.invoke(main, ["plugin", "install", "gimp", "--dest", str(blocker / "GIMP")])
    assert result.exit_code == 1
    assert "Could not install the gimp plug-in" in result.output
    assert "Traceback" not in result.output


def test_an_edited_file_is_not_overwritten_without_force(tmp_path: Path) -> None:
    install("gimp", tmp_path)
    main_file = tmp_path / "plug-ins" / "colord_gimp" / "colord_gimp.py"
    main_file.write_text("# my own tweaks\n")
    with pytest.raises(PluginInstallError, match=r"colord_gimp\.py\).*--force"):
        install("gimp", tmp_path)
    assert main_file.read_text() == "# my own tweaks\n"
    report = install("gimp", tmp_path, force=True)
    assert report.overwritten == [main_file]
    assert main_file.read_text().startswith("#!/usr/bin/env python3")
    assert install("gimp", tmp_path).overwritten == []  # an unchanged install: no complaint


def test_a_file_colord_did_not_write_is_not_overwritten(tmp_path: Path) -> None:
    wire = tmp_path / "plug-ins" / "colord_gimp" / "colord_wire.py"
    wire.parent.mkdir(parents=True)
    wire.write_text("someone else's")
    with pytest.raises(PluginInstallError, match="differ from what colord installed"):
        install("gimp", tmp_path)
    assert wire.read_text() == "someone else's"
    assert not (tmp_path / f".colord_gimp{MANIFEST_SUFFIX}").exists()


def test_stale_files_of_an_earlier_install_are_removed_unless_edited(tmp_path: Path) -> None:
    install("gimp", tmp_path)
    folder = tmp_path / "plug-ins" / "colord_gimp"
    manifest_path = tmp_path / f".colord_gimp{MANIFEST_SUFFIX}"
    manifest = json.loads(manifest_path.read_text())
    old = folder / "old_helper.py"
    old.write_text("# shipped by an older colord\n")
    manifest["files"]["plug-ins/colord_gimp/old_helper.py"] = hashlib.sha256(
        old.read_bytes()
    ).hexdigest()
    manifest_path.write_text(json.dumps(manifest))
    report = install("gimp", tmp_path)
    assert report.removed == [old] and not old.exists()

    old.write_text("# edited\n")  # recorded again, then changed by the user
    manifest["files"]["plug-ins/colord_gimp/old_helper.py"] = "0" * 64
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(PluginInstallError, match=r"old_helper\.py"):
        install("gimp", tmp_path)
    assert old.exists()


def test_an_explicitly_disabled_plugin_stays_disabled(tmp_path: Path) -> None:
    kritarc = tmp_path / "kritarc"
    kritarc.write_text(KRITARC)  # says enable_colord_krita=false
    report = install("krita", tmp_path / "krita", kritarc=kritarc)
    assert kritarc.read_text() == KRITARC
    assert (report.kritarc, report.disabled_in) == (None, kritarc)
    result = CliRunner().invoke(
        main,
        ["plugin", "install", "krita", "--dest", str(tmp_path / "krita"),
         "--kritarc", str(kritarc)],
    )  # fmt: skip
    assert result.exit_code == 0 and "Left it disabled" in result.output


@pytest.mark.skipif(sys.platform == "win32", reason="symbolic links")
@pytest.mark.parametrize("link", ["plug-ins", "plug-ins/colord_gimp/colord_wire.py"])
def test_nothing_is_written_through_a_symbolic_link(tmp_path: Path, link: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    destination = tmp_path / "GIMP"
    planted = destination / link
    planted.parent.mkdir(parents=True)
    planted.symlink_to(outside / "target")
    with pytest.raises(PluginInstallError, match="symbolic link"):
        install("gimp", destination)
    assert list(outside.iterdir()) == []
    assert not (destination / f".colord_gimp{MANIFEST_SUFFIX}").exists()


def test_a_kritarc_that_is_not_utf8_fails_before_anything_is_written(tmp_path: Path) -> None:
    kritarc = tmp_path / "kritarc"
    kritarc.write_bytes(b"[General]\nName=\xff\xfe\n")
    result = CliRunner().invoke(
        main,
        ["plugin", "install", "krita", "--dest", str(tmp_path / "krita"),
         "--kritarc", str(kritarc)],
    )  # fmt: skip
    assert result.exit_code == 1 and "not UTF-8" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "krita").exists()
