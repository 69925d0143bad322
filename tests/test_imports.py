"""Dependencies flow one way (DESIGN.md, Layout), read from the source with ast:

- nothing under training/ imports the daemon; nothing under model/ imports the daemon or training;
- a plug-in file imports only the standard library, its host's API (krita, PyQt, gi), the shared
  modules of plugins/wire and the files of its own bundle;
- the protocol module imports only the standard library, and the daemon takes the contract from it.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from colord.plugins.wire import colord_protocol

ROOT = Path(__file__).resolve().parents[1]
HOST_APIS = {"krita", "PyQt5", "PyQt6", "gi"}
SHARED = {path.stem for path in (ROOT / "plugins" / "wire").glob("*.py")}


def sources(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def imported(path: Path) -> list[str]:
    """Every absolute module name `path` imports, anywhere in it (functions included); a
    relative import stays inside its own package and is left out."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
            if node.module == "colord":  # from colord import daemon
                names += [f"colord.{alias.name}" for alias in node.names]
    return names


def reaching(path: Path, packages: tuple[str, ...]) -> list[str]:
    return [
        name
        for name in imported(path)
        if any(name == package or name.startswith(package + ".") for package in packages)
    ]


def _names(node: ast.Import | ast.ImportFrom) -> list[str]:
    """The modules and names an import statement mentions."""
    module = [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
    return module + [alias.name for alias in node.names]


def name_of(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("path", sources("training"), ids=name_of)
def test_training_never_imports_the_daemon(path: Path) -> None:
    assert reaching(path, ("colord.daemon",)) == []


@pytest.mark.parametrize("path", sources("model"), ids=name_of)
def test_the_model_imports_neither_the_daemon_nor_training(path: Path) -> None:
    assert reaching(path, ("colord.daemon", "colord.training")) == []


@pytest.mark.parametrize("path", sources("plugins"), ids=name_of)
def test_plugin_files_import_only_what_their_bundle_carries(path: Path) -> None:
    bundle = {sibling.stem for sibling in path.parent.iterdir()}  # files and packages beside it
    allowed = set(sys.stdlib_module_names) | HOST_APIS | SHARED | bundle
    foreign = [name for name in imported(path) if name.split(".")[0] not in allowed]
    assert foreign == []


def test_the_checker_sees_what_it_must_refuse(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import numpy\nfrom colord import daemon\n"
        "def later():\n    from colord.training.loop import train\n    from . import sibling\n"
    )
    assert imported(sample) == ["numpy", "colord", "colord.daemon", "colord.training.loop"]
    assert reaching(sample, ("colord.daemon", "colord.training")) == [
        "colord.daemon",
        "colord.training.loop",
    ]


def test_the_protocol_module_is_standard_library_only() -> None:
    protocol = ROOT / "plugins" / "wire" / "colord_protocol.py"
    assert {name.split(".")[0] for name in imported(protocol)} <= set(sys.stdlib_module_names)


@pytest.mark.parametrize(
    "module",
    [
        "daemon/protocol.py",
        "daemon/connection.py",
        "daemon/server.py",
        "daemon/client.py",
        "daemon/job.py",
        "plugins/wire/colord_wire.py",
    ],
)
def test_the_contract_is_taken_from_the_protocol_module(module: str) -> None:
    """No second copy: each module on the request path imports colord_protocol and assigns none
    of its constants itself."""
    tree = ast.parse((ROOT / module).read_text(encoding="utf-8"))
    assigned = {
        target.id
        for node in tree.body
        if isinstance(node, ast.Assign | ast.AnnAssign)
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(target, ast.Name)
    }
    assert assigned & {name for name in vars(colord_protocol) if name.isupper()} == set()
    importers = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        and any(name.rpartition(".")[2] == "colord_protocol" for name in _names(node))
    ]
    assert importers, f"{module} does not import colord_protocol"
