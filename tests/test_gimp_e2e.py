"""End to end in the real GIMP 3 (Debian trixie chroot): the plug-in, called from batch mode.

One GIMP run (a fresh profile with the plug-in installed by `colord plugin install`'s code) executes
every case below against a real daemon process; the tests then read what GIMP recorded. A second run
goes through the procedure's dialog on a virtual display.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
from capabilities import HOSTS, missing
from conftest import draw_line_art, draw_reference
from daemon_helpers import reference_as_sent, start_daemon
from hosts.daemon_without_flats import start_daemon_without_flats
from hosts.gimp_harness import (
    GimpRun,
    chroot_dir,
    chroot_problem,
    chroot_python,
    virtual_display,
)

from colord.daemon.client import Client

pytestmark = pytest.mark.host

REFERENCE = "Reference"
DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "model" / "weights" / "default.safetensors"
LINE_ART = "Line art"
SUCCESS_CASES = {
    # name: (working size, keep lines, reference layer or None)
    "rgb8-offset": (64, True, REFERENCE),
    "rgb16-in-group": (0, False, REFERENCE),  # 0: automatic, the daemon chooses
    "f32-linear": (64, True, REFERENCE),
    "no-reference": (64, True, None),
}


@pytest.fixture(scope="module")
def gimp_root():
    root = chroot_dir()
    problem = chroot_problem(root)
    if problem is not None:
        missing(problem, HOSTS)
    return root


def procedure_options(case: str) -> dict:
    working_size, keep_lines, reference = SUCCESS_CASES[case]
    return {
        "working-size": working_size,
        "keep-lines": keep_lines,
        "without-reference": reference is None,
    }


def scan(height: int, width: int) -> np.ndarray:
    """The line art scanned: black strokes on opaque white paper."""
    strokes = 255 - draw_line_art(height, width)[..., 3:]
    return np.dstack([strokes, strokes, strokes, np.full_like(strokes, 255)])


def free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def paper(height: int, width: int) -> np.ndarray:
    return np.full((height, width, 4), 255, np.uint8)


def notes(height: int, width: int) -> np.ndarray:
    """A half-transparent red scribble layer that sits beside the line art in its group."""
    layer = np.zeros((height, width, 4), np.uint8)
    layer[height // 3 : height // 2, :, :] = (200, 30, 30, 128)
    return layer


def build_cases(run: GimpRun, connection_text: str) -> None:
    line_art = run.add_pixels("line_art", draw_line_art(72, 96))
    reference = run.add_pixels("reference", draw_reference(100, 140))
    background = run.add_pixels("paper", paper(128, 160))
    scribble = run.add_pixels("notes", notes(40, 60))
    scanned = run.add_pixels("scan", scan(72, 96))
    flat = [
        {"name": LINE_ART, "x": 40, "y": 24, **line_art},
        {"name": REFERENCE, "x": 10, "y": 5, **reference},
        {"name": "Paper", "x": 0, "y": 0, **background},
    ]
    grouped = [
        {
            "name": "Inks",
            "layers": [
                {"name": "Notes", "x": 3, "y": 90, **scribble},
                {"name": LINE_ART, "x": 61, "y": 7, **line_art},
            ],
        },
        {"name": REFERENCE, "x": 0, "y": 0, **reference},
        {"name": "Paper", "x": 0, "y": 0, **background},
    ]
    wrong_token = json.loads(connection_text) | {"token": "0" * 32}
    nobody_listens = wrong_token | {
        "endpoint": f"tcp://127.0.0.1:{free_loopback_port()}",
        "pid": os.getpid(),
    }
    common = {"canvas": [160, 128], "select": [LINE_ART], "reference": REFERENCE}
    run.cases = [
        common
        | {
            "name": "rgb8-offset",
            "layers": flat,
            "connection": connection_text,
            "options": procedure_options("rgb8-offset"),
        },
        common
        | {
            "name": "rgb16-in-group",
            "precision": "u16_non_linear",
            "layers": grouped,
            "connection": connection_text,
            "options": procedure_options("rgb16-in-group"),
        },
        common | {"name": "no-daemon", "layers": flat, "connection": None},
        common | {"name": "wrong-token", "layers": flat, "connection": json.dumps(wrong_token)},
        common | {"name": "no-listener", "layers": flat, "connection": json.dumps(nobody_listens)},
        common
        | {
            "name": "grey-image",
            "base_type": "gray",
            "layers": [entry | {"base_type": "gray"} for entry in flat],
            "connection": connection_text,
        },
        common
        | {"name": "group-selected", "layers": grouped, "select": ["Inks"], "connection": None},
        common
        | {
            "name": "mask-selected",
            "layers": [flat[0] | {"mask": "Line art mask"}, *flat[1:]],
            "select": ["Line art mask"],
            "connection": None,
        },
        common
        | {
            "name": "two-selected",
            "layers": flat,
            "select": [LINE_ART, REFERENCE],
            "connection": connection_text,
        },
        common
        | {
            "name": "f32-linear",
            "precision": "float_linear",
            "layers": flat,
            "connection": connection_text,
            "options": procedure_options("f32-linear"),
        },
        common
        | {
            "name": "no-reference",
            "layers": flat,
            "reference": None,
            "connection": connection_text,
            "options": procedure_options("no-reference"),
        },
        # (10) no reference, and not the artist's choice either
        common
        | {"name": "reference-unchosen", "layers": flat, "reference": None,
           "connection": connection_text},
        # (7) a working size the daemon would refuse
        common
        | {"name": "bad-size", "layers": flat, "connection": connection_text,
           "options": {"working-size": 100}},
        # (1) line art on opaque paper, as a scan or an opened PNG is
        common
        | {"name": "opaque-scan", "layers": [flat[0] | scanned, *flat[1:]],
           "connection": connection_text, "options": {"working-size": 64}},
        # (4) twice in a row: the line art both times
        common
        | {"name": "twice", "layers": flat, "connection": connection_text, "repeat": 2,
           "options": {"working-size": 64}},
        # flats beside the colour, and flats alone over opaque line art
        common
        | {"name": "flats", "layers": flat, "connection": connection_text,
           "options": {"working-size": 64, "flats": "with_colour"}},
        common
        | {"name": "flats-only-scan", "layers": [flat[0] | scanned, *flat[1:]],
           "connection": connection_text, "options": {"working-size": 64, "flats": "only"}},
    ]  # fmt: skip


def run_to_completion(run: GimpRun, display: str | None = None) -> None:
    result = run.run(display=display)
    assert result.returncode == 0 and run.completed(), f"GIMP batch run failed:\n{result.output}"


@pytest.fixture(scope="module")
def daemon(gimp_root):
    # The shipped model, not a random one: the first-five-minutes tests look for colour.
    with start_daemon(DEFAULT_MODEL) as running:
        yield running


@pytest.fixture(scope="module")
def daemon_without_flats(gimp_root):
    with start_daemon_without_flats(DEFAULT_MODEL) as running:
        yield running


@pytest.fixture(scope="module")
def gimp_run(gimp_root, daemon, daemon_without_flats):
    run = GimpRun(gimp_root)
    try:
        build_cases(run, daemon.connection_file.read_text())
        run.cases.append(
            run.cases[0] | {"name": "no-flats-daemon", "options": {"flats": "only"},
                            "connection": daemon_without_flats.connection_file.read_text()}
        )  # fmt: skip
        run_to_completion(run)
        yield run
    finally:
        run.remove()


@pytest.fixture(scope="module")
def gimp_dialog_run(gimp_root, daemon, daemon_without_flats):
    """The first success case again, run interactively: through the real procedure dialog."""
    if shutil.which("Xvfb") is None:
        missing("Xvfb is needed to show GIMP's procedure dialog", HOSTS)
    run = GimpRun(gimp_root)
    try:
        build_cases(run, daemon.connection_file.read_text())
        interactive = run.cases[0] | {"run_mode": "interactive"}
        run.cases = [
            # (10) no daemon, and none can be started (the chroot lacks this colord's Python):
            # said before the dialog opens
            interactive | {"name": "interactive-no-daemon", "connection": None},
            interactive | {"name": "interactive"},
            # (10) no reference chosen yet: the dialog proposes one
            interactive | {"name": "interactive-proposed", "reference": None},
            # a daemon that cannot make flats: the dialog says so; asked anyway, a message
            interactive | {"name": "interactive-no-flats",
                           "connection": daemon_without_flats.connection_file.read_text(),
                           "options": interactive["options"] | {"flats": "only"}},
        ]  # fmt: skip
        with virtual_display() as display:
            run_to_completion(run, display)
        yield run
    finally:
        run.remove()


def test_chroot_has_neither_pyzmq_nor_msgpack(gimp_root) -> None:
    assert chroot_python(gimp_root, "import gi").returncode == 0
    for module in ("zmq", "msgpack"):
        probe = chroot_python(gimp_root, f"import {module}")
        assert probe.returncode != 0 and "ModuleNotFoundError" in probe.stderr, module


def test_procedure_sits_in_the_layer_menu_with_its_arguments(gimp_run: GimpRun) -> None:
    registered = gimp_run.procedure()
    assert registered["menu_label"] == "Colorize with Reference…"
    assert registered["menu_paths"] == ["<Image>/Layer"]
    arguments = {argument.pop("name"): argument for argument in registered["arguments"]}
    assert list(arguments)[:3] == ["run-mode", "image", "drawables"]
    assert arguments["reference"]["type"] == "GimpLayer"
    assert arguments["working-size"] == {
        "type": "gint",
        "default_value": 0,  # automatic
        "minimum": 0,
        "maximum": 4096,
    }
    assert arguments["keep-lines"] == {"type": "gboolean", "default_value": True}


def layout(record: dict) -> dict:
    """A layer's name, parent, kind and geometry (its position among siblings left out)."""
    return {k: v for k, v in record.items() if k not in ("position", "pixels")}


def pixels_by_name(run: GimpRun, case: str, tree: list[dict]) -> dict[str, np.ndarray]:
    return {r["name"]: run.layer_pixels(case, r) for r in tree if not r["group"]}


@pytest.mark.parametrize("case", sorted(SUCCESS_CASES))
def test_result_layer_is_the_daemons_answer_directly_below_the_line_art(
    gimp_run: GimpRun, daemon, case: str
) -> None:
    observed = gimp_run.observations(case)
    assert observed["statuses"] == ["success"], observed["messages"]
    before, after = observed["before"], observed["after"]
    index = next(i for i, r in enumerate(after) if r["name"] == LINE_ART)
    line_art, new = after[index], after[index + 1]
    working_size, keep_lines, reference = SUCCESS_CASES[case]
    assert new["name"] == f"Colorized ({reference or 'no reference'})"
    assert not new["group"]
    assert new["parent"] == line_art["parent"]
    assert new["position"] == line_art["position"] + 1
    geometry = ("x", "y", "width", "height")
    assert [new[key] for key in geometry] == [line_art[key] for key in geometry]
    assert line_art["x"] != 0 and line_art["y"] != 0

    # The originals: same tree, same places, same pixels.
    originals = [layout(r) for r in after]
    del originals[index + 1]
    assert originals == [layout(r) for r in before]
    pixels_before = pixels_by_name(gimp_run, case, before)
    pixels_after = pixels_by_name(gimp_run, case, after)
    for name, pixels in pixels_before.items():
        np.testing.assert_array_equal(pixels_after[name], pixels, err_msg=name)
    np.testing.assert_array_equal(pixels_before[LINE_ART], draw_line_art(72, 96))

    # The new layer holds exactly what the daemon answers for the pixels the plug-in read.
    with Client.from_connection_file(daemon.connection_file) as client:
        sent = None
        if reference:
            sent = reference_as_sent(pixels_before[reference], working_size, client.info())
        expected = client.colorize(
            pixels_before[LINE_ART],
            sent,
            working_size=working_size or None,
            keep_lines=keep_lines,
            ground="transparent",  # the plug-in's default: the paper around the figure cleared
        ).image
    assert (expected[..., 3] == 0).any() and (expected[..., 3] == 255).any()
    np.testing.assert_array_equal(pixels_after[new["name"]], expected)


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("no-daemon", ["not running", "colord serve"]),
        ("reference-unchosen", ["reference layer", "Colour without a reference"]),
        ("bad-size", ["100 px", "multiple of 16", "nearest is 96 px"]),
        ("no-listener", ["colord"]),
        ("wrong-token", ["token"]),
        ("grey-image", ["Grayscale", "Image › Mode › RGB"]),
        ("group-selected", ["layer group"]),
        ("mask-selected", ["layer mask"]),
        ("two-selected", ["exactly one layer", "2 are selected"]),
    ],
)
def test_failure_is_a_readable_error_and_changes_nothing(
    gimp_run: GimpRun, case: str, words: list[str]
) -> None:
    observed = gimp_run.observations(case)
    assert observed["statuses"] == ["execution-error"]
    message = observed["messages"][0]
    for word in words:
        assert word.lower() in message.lower(), message
    assert "Traceback" not in message and "\n" not in message.strip()
    assert [layout(r) for r in observed["after"]] == [layout(r) for r in observed["before"]]
    for before, after in zip(observed["before"], observed["after"], strict=True):
        if not before["group"]:
            np.testing.assert_array_equal(
                gimp_run.layer_pixels(case, after), gimp_run.layer_pixels(case, before)
            )


def test_interactive_run_shows_the_dialog_with_a_layer_chooser_and_colorizes(
    gimp_dialog_run: GimpRun,
) -> None:
    no_daemon = gimp_dialog_run.observations("interactive-no-daemon")
    assert no_daemon["statuses"] == ["execution-error"]
    assert "not running" in no_daemon["messages"][0]
    # three dialogs for four runs: none for the run that could not reach a daemon
    first, second, _ = gimp_dialog_run.dialog_records()
    assert first == second
    dialog = first
    assert dialog == {
        "title": "Colorize with Reference",
        "visible": True,
        "reference_widget": "DrawableChooser",
        "reference_shown": True,
        "flats_shown": True,
        "flats_notes": [],
    }
    observed = gimp_dialog_run.observations("interactive")
    assert observed["statuses"] == ["success"], observed["messages"]
    names = [record["name"] for record in observed["after"]]
    assert names == [LINE_ART, f"Colorized ({REFERENCE})", REFERENCE, "Paper"]


def chroma(rgba: np.ndarray) -> np.ndarray:
    colour = rgba[..., :3].astype(np.int16)
    return colour.max(axis=-1) - colour.min(axis=-1)


def test_1_result_over_opaque_line_art_shows_in_the_image(gimp_run: GimpRun) -> None:
    observed = gimp_run.observations("opaque-scan")
    assert observed["statuses"] == ["success"], observed["messages"]
    after = observed["after"]
    index = next(i for i, r in enumerate(after) if r["name"] == LINE_ART)
    assert after[index - 1]["name"] == f"Colorized ({REFERENCE})"
    assert after[index - 1]["mode"] == "multiply"
    assert [layout(r) for r in after if r["name"] != after[index - 1]["name"]] == [
        layout(r) for r in observed["before"]
    ]
    folder = gimp_run.work / "out" / "opaque-scan"
    shape = (128, 160, 4)
    before = np.frombuffer((folder / observed["composite_before"]).read_bytes(), np.uint8)
    composed = np.frombuffer((folder / observed["composite_after"]).read_bytes(), np.uint8)
    figure = (slice(24, 24 + 72), slice(40, 40 + 96))
    assert chroma(before.reshape(shape)[figure]).max() == 0  # the scan hides the reference
    assert chroma(composed.reshape(shape)[figure]).max() > 8, "the image shows no colour"


def test_4_twice_colours_the_line_art_both_times(gimp_run: GimpRun) -> None:
    observed = gimp_run.observations("twice")
    assert observed["statuses"] == ["success", "success"], observed["messages"]
    names = [record["name"] for record in observed["after"]]
    assert names == [LINE_ART, f"Colorized ({REFERENCE}) 2", f"Colorized ({REFERENCE})",
                     REFERENCE, "Paper"]  # fmt: skip
    assert observed["selected_after"] == [LINE_ART]
    pixels = pixels_by_name(gimp_run, "twice", observed["after"])
    np.testing.assert_array_equal(
        pixels[f"Colorized ({REFERENCE}) 2"], pixels[f"Colorized ({REFERENCE})"]
    )


def test_10_the_dialog_proposes_a_reference(gimp_dialog_run: GimpRun) -> None:
    observed = gimp_dialog_run.observations("interactive-proposed")
    assert observed["statuses"] == ["success"], observed["messages"]
    names = [record["name"] for record in observed["after"]]
    assert names == [LINE_ART, f"Colorized ({REFERENCE})", REFERENCE, "Paper"]


# -- flats (issue 12) ---------------------------------------------------------------------------

FLATS = f"Flats ({REFERENCE})"


def check_flats(gimp_run: GimpRun, daemon, case: str, flats: dict) -> None:
    """The layer is the daemon's flats for the pixels the plug-in read: a few solid colours, each
    pixel exactly one of them (no blends), the ground around the figure transparent."""
    observed = gimp_run.observations(case)
    pixels_before = pixels_by_name(gimp_run, case, observed["before"])
    with Client.from_connection_file(daemon.connection_file) as client:
        sent = reference_as_sent(pixels_before[REFERENCE], 64, client.info())
        expected = client.colorize(
            pixels_before[LINE_ART], sent, working_size=64, flats="only",
            flats_ground="transparent",
        ).flats  # fmt: skip
    pixels = gimp_run.layer_pixels(case, flats)
    np.testing.assert_array_equal(pixels, expected)
    assert set(np.unique(pixels[..., 3])) <= {0, 255}, "flats have no soft edges"
    palette = np.unique(pixels[pixels[..., 3] == 255][:, :3], axis=0)
    assert 1 <= len(palette) <= 16, palette
    assert (pixels[..., 3] == 0).any(), "the ground around the figure is transparent"


def originals_unchanged(gimp_run: GimpRun, case: str, new_names: set[str]) -> None:
    observed = gimp_run.observations(case)
    after = [r for r in observed["after"] if r["name"] not in new_names]
    assert [layout(r) for r in after] == [layout(r) for r in observed["before"]]
    pixels_before = pixels_by_name(gimp_run, case, observed["before"])
    pixels_after = pixels_by_name(gimp_run, case, observed["after"])
    for name, pixels in pixels_before.items():
        np.testing.assert_array_equal(pixels_after[name], pixels, err_msg=name)


def test_flats_with_the_colour_lie_under_it_below_the_line_art(gimp_run: GimpRun, daemon) -> None:
    observed = gimp_run.observations("flats")
    assert observed["statuses"] == ["success"], observed["messages"]
    after = observed["after"]
    names = [record["name"] for record in after]
    assert names == [LINE_ART, f"Colorized ({REFERENCE})", FLATS, REFERENCE, "Paper"]
    flats = after[2]
    assert (flats["mode"], flats["visible"]) == ("normal", True)
    assert [flats[key] for key in ("x", "y", "width", "height")] == [40, 24, 96, 72]
    check_flats(gimp_run, daemon, "flats", flats)
    originals_unchanged(gimp_run, "flats", {f"Colorized ({REFERENCE})", FLATS})
    assert observed["selected_after"] == [LINE_ART]


def test_flats_alone_over_opaque_line_art_go_above_it_in_multiply(
    gimp_run: GimpRun, daemon
) -> None:
    observed = gimp_run.observations("flats-only-scan")
    assert observed["statuses"] == ["success"], observed["messages"]
    after = observed["after"]
    assert [record["name"] for record in after] == [FLATS, LINE_ART, REFERENCE, "Paper"]
    assert (after[0]["mode"], after[0]["visible"]) == ("multiply", True)
    check_flats(gimp_run, daemon, "flats-only-scan", after[0])
    originals_unchanged(gimp_run, "flats-only-scan", {FLATS})


def test_the_dialog_says_when_the_daemon_cannot_make_flats(gimp_dialog_run: GimpRun) -> None:
    *_, dialog = gimp_dialog_run.dialog_records()
    assert dialog["flats_shown"]
    [note] = dialog["flats_notes"]
    assert "cannot make flats" in note
    # the greyed-out choice falls back to no flats in the dialog: the colour alone
    observed = gimp_dialog_run.observations("interactive-no-flats")
    assert observed["statuses"] == ["success"], observed["messages"]
    names = [record["name"] for record in observed["after"]]
    assert names == [LINE_ART, f"Colorized ({REFERENCE})", REFERENCE, "Paper"]


def test_flats_asked_of_a_daemon_without_them_are_a_message(gimp_run: GimpRun) -> None:
    observed = gimp_run.observations("no-flats-daemon")
    assert observed["statuses"] == ["execution-error"]
    assert "cannot make flats" in observed["messages"][0]
    assert [layout(r) for r in observed["after"]] == [layout(r) for r in observed["before"]]
