"""End to end in the real Krita (Debian's krita, full GUI under Xvfb) with a real daemon.

One Krita run in a fresh profile plays every step below: colord's plug-in is installed and enabled
by `colord plugin install krita`, a driver plug-in builds each document, makes the line art active,
and triggers the plug-in's real action; the reference comes from the plug-in's own setting. The
tests then check what Krita recorded against what the daemon answers for the same bytes.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
from capabilities import HOSTS, missing
from conftest import draw_line_art, draw_reference
from daemon_helpers import reference_as_sent, start_daemon
from hosts.daemon_without_flats import start_daemon_without_flats
from hosts.krita_harness import KritaRun, alpha_bounds, krita_problem, to_bgra

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins" / "wire"))
import colord_wire

pytestmark = pytest.mark.host

LINE_ART = "Line art"
REFERENCE = "Reference"
RESULT = f"Colorized ({REFERENCE})"
WIDTH, HEIGHT = 160, 128
LINE_ART_AT = (24, 16)  # where the 96x72 line-art tile is written
REFERENCE_AT = (8, 12)
SRGB8 = {"model": "RGBA", "depth": "U8", "profile": "sRGB-elle-V2-srgbtrc.icc"}
SRGB16 = {"model": "RGBA", "depth": "U16", "profile": "sRGB-elle-V2-srgbtrc.icc"}
GRAY8 = {"model": "GRAYA", "depth": "U8", "profile": "Gray-D50-elle-V2-srgbtrc.icc"}
# step -> (working size, keep lines) the plug-in's settings hold when the step runs
SUCCESS_STEPS = {"srgb8": (64, True), "rgba16-group": (None, False)}  # None: automatic
FAILURE_STEPS = {
    "wrong-token": ["token"],
    "mask-active": ["transparency mask", "not a layer"],
    "no-reference": ["No reference layer chosen", "colord docker", "No reference"],
    "bad-size": ["100 px", "multiple of 16", "nearest is 96 px"],
    "result-active": ["is a colord result", "select the line-art layer"],
    "no-flats-daemon": ["cannot make flats", "restart its daemon"],
}
DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "model" / "weights" / "default.safetensors"
BY_NAME = {"reference_id": "", "reference": REFERENCE, "working_size": "64", "keep_lines": "true",
           "flats": "none"}  # fmt: skip


def canvas_layer(tile: np.ndarray, at: tuple[int, int]) -> np.ndarray:
    """`tile` (RGBA8) placed at `at` on a transparent canvas."""
    canvas = np.zeros((HEIGHT, WIDTH, 4), np.uint8)
    x, y = at
    canvas[y : y + tile.shape[0], x : x + tile.shape[1]] = tile
    return canvas


LINE_ART_CANVAS = canvas_layer(draw_line_art(72, 96), LINE_ART_AT)
REFERENCE_CANVAS = canvas_layer(draw_reference(100, 140), REFERENCE_AT)
# The same strokes scanned: black on opaque white paper over the whole canvas.
SCAN_CANVAS = np.dstack([np.repeat(255 - LINE_ART_CANVAS[..., 3:], 3, axis=2),
                         np.full((HEIGHT, WIDTH, 1), 255, np.uint8)])  # fmt: skip


def as_u16(bgra: np.ndarray) -> np.ndarray:
    return bgra.astype(np.uint16) * 257


def as_gray(rgba: np.ndarray) -> np.ndarray:
    """RGBA8 to Krita's GRAYA8 bytes (grey, alpha)."""
    grey = rgba[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.ascontiguousarray(np.dstack([grey.round().astype(np.uint8), rgba[..., 3]]))


def build_steps(run: KritaRun, connection_file: Path, without_flats: Path) -> None:
    line_art = to_bgra(draw_line_art(72, 96))
    reference = to_bgra(draw_reference(100, 140))
    files = {
        "line8": run.add_pixels("line8", line_art),
        "ref8": run.add_pixels("ref8", reference),
        "line16": run.add_pixels("line16", as_u16(line_art)),
        "ref16": run.add_pixels("ref16", as_u16(reference)),
        "scan": run.add_pixels("scan", to_bgra(SCAN_CANVAS)),
        "line-gray": run.add_pixels("line-gray", as_gray(draw_line_art(72, 96))),
        "ref-gray": run.add_pixels("ref-gray", as_gray(draw_reference(100, 140))),
    }
    ref8 = {"name": REFERENCE, "x": REFERENCE_AT[0], "y": REFERENCE_AT[1], **files["ref8"]}
    line8 = {"name": LINE_ART, "x": LINE_ART_AT[0], "y": LINE_ART_AT[1], **files["line8"]}
    flat8 = [ref8, line8]
    grouped16 = [
        {"name": REFERENCE, "type": "grouplayer"},
        {"name": "Reference paint", "parent": REFERENCE, "x": REFERENCE_AT[0],
         "y": REFERENCE_AT[1], **files["ref16"]},
        {"name": LINE_ART, "x": LINE_ART_AT[0], "y": LINE_ART_AT[1], **files["line16"]},
    ]  # fmt: skip
    wrong_token = json.loads(connection_file.read_text()) | {"token": "0" * 32}
    (run.data / "wrong-token.json").write_text(json.dumps(wrong_token))
    (run.data / "wrong-token.json").chmod(0o600)  # the plug-in refuses a file others may read
    document = {"width": WIDTH, "height": HEIGHT}
    common = {"active": LINE_ART, "connection_file": str(connection_file), "settings": BY_NAME}
    run.steps = [
        # two clicks in a row: the second arrives while the first request is still running
        common | {"name": "srgb8", "document": document | SRGB8, "layers": flat8, "clicks": 2,
                  "undo": True},
        common | {"name": "rgba16-group", "document": document | SRGB16, "layers": grouped16,
                  "settings": BY_NAME | {"working_size": "auto", "keep_lines": "false"}},
        common | {"name": "wrong-token", "document": document | SRGB8, "layers": flat8,
                  "connection_file": str(run.data / "wrong-token.json")},
        common | {"name": "mask-active", "document": document | SRGB8, "active": "Mask",
                  "layers": [*flat8, {"name": "Mask", "type": "transparencymask",
                                      "parent": LINE_ART}]},
        common | {"name": "no-reference", "document": document | SRGB8, "layers": flat8,
                  "settings": BY_NAME | {"reference": ""}},
        common | {"name": "bad-size", "document": document | SRGB8, "layers": flat8,
                  "settings": BY_NAME | {"working_size": "100"}},
        common | {"name": "result-active", "document": document | SRGB8, "active": RESULT,
                  "layers": [*flat8, line8 | {"name": RESULT}]},
        # (1) line art on opaque paper, as a scan or an opened PNG is
        common | {"name": "opaque-scan", "document": document | SRGB8,
                  "layers": [ref8, {"name": LINE_ART, "x": 0, "y": 0, **files["scan"]}]},
        # (2) a greyscale document
        common | {"name": "gray-document", "document": document | GRAY8,
                  "layers": [ref8 | files["ref-gray"], line8 | files["line-gray"]]},
        # (3) the one layer of a document opened from a PNG, without a reference; and the
        # lowest layer of a group
        common | {"name": "one-layer", "document": document | SRGB8, "active": "Background",
                  "layers": [{"name": "Background", "existing": True, "x": 0, "y": 0,
                              **files["scan"]}],
                  "settings": BY_NAME | {"reference_id": "none", "reference": ""}},
        common | {"name": "group-bottom", "document": document | SRGB8,
                  "layers": [ref8, {"name": "Inks", "type": "grouplayer"},
                             line8 | {"parent": "Inks"}]},
        # (4) Colorize twice: the line art again, not the first result
        common | {"name": "twice", "document": document | SRGB8, "layers": flat8, "repeat": 2},
        # (8) the reference chosen in the docker, then renamed
        common | {"name": "renamed-reference", "document": document | SRGB8, "layers": flat8,
                  "reference_by_id": REFERENCE, "rename": [REFERENCE, "Palette"]},
        # (9) Cancel while the daemon works
        common | {"name": "cancel", "document": document | SRGB8, "layers": flat8,
                  "cancel": True},
        # flats beside the colour, and flats alone over opaque line art
        common | {"name": "flats", "document": document | SRGB8, "layers": flat8,
                  "settings": BY_NAME | {"flats": "with_colour"}, "ask_daemon_first": True},
        common | {"name": "no-flats-daemon", "document": document | SRGB8, "layers": flat8,
                  "settings": BY_NAME | {"flats": "only"}, "ask_daemon_first": True,
                  "connection_file": str(without_flats)},
        common | {"name": "flats-only-scan", "document": document | SRGB8,
                  "layers": [ref8, {"name": LINE_ART, "x": 0, "y": 0, **files["scan"]}],
                  "settings": BY_NAME | {"flats": "only"}},
        # (5) no daemon running: the plug-in starts one (the colord that installed it)
        common | {"name": "start-daemon", "document": document | SRGB8, "layers": flat8,
                  "connection_file": str(run.data / "started" / "colord" / "daemon.json")},
    ]  # fmt: skip


@pytest.fixture(scope="module")
def krita_ready() -> None:
    problem = krita_problem()
    if problem is not None:
        missing(problem, HOSTS)


@pytest.fixture(scope="module")
def daemon(krita_ready):
    # The shipped model, not a random one: the first-five-minutes tests look for colour.
    with start_daemon(DEFAULT_MODEL) as running:
        yield running


@pytest.fixture(scope="module")
def daemon_without_flats(krita_ready):
    with start_daemon_without_flats(DEFAULT_MODEL) as running:
        yield running


@pytest.fixture(scope="module")
def krita_run(daemon, daemon_without_flats):
    run = KritaRun()
    run.install_plugin()
    run.install_driver()
    run.set_plugin_settings(BY_NAME)
    build_steps(run, daemon.connection_file, daemon_without_flats.connection_file)
    try:
        result = run.run()
    finally:
        stop_started_daemon(run.data / "started" / "colord" / "daemon.json")
    report = result.report
    assert report is not None and "error" not in report, (
        f"the Krita run failed: {report and report.get('error')}\n{result.output[-4000:]}"
    )
    yield run, report
    run.remove()


def stop_started_daemon(connection_file: Path) -> None:
    """Stop the daemon the plug-in started (it runs detached, in its own session)."""
    try:
        pid = json.loads(connection_file.read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)


def pixels_8bit(run: KritaRun, entry: dict) -> np.ndarray:
    """A dumped layer as (H, W, 4) BGRA8; 16-bit dumps are scaled down exactly (v = 257 * b)."""
    if entry["space"][1] == "U16":
        return (
            (run.read_dump(entry, (HEIGHT, WIDTH, 4), "<u2").astype(np.uint32) + 128) // 257
        ).astype(np.uint8)
    return run.read_dump(entry, (HEIGHT, WIDTH, 4))


def crop(pixels: np.ndarray, rect: tuple[int, int, int, int]) -> np.ndarray:
    x, y, width, height = rect
    return np.ascontiguousarray(pixels[y : y + height, x : x + width])


def test_krita_python_has_neither_pyzmq_nor_msgpack(krita_run) -> None:
    _, report = krita_run
    assert report["modules"] == {"zmq": False, "msgpack": False}


def test_action_and_docker_are_there(krita_run) -> None:
    _, report = krita_run
    step = report["steps"]["srgb8"]
    assert step["action_text"] == "Colorize with Reference…"
    docker = step["docker"]
    assert docker["reference_text"] == REFERENCE
    texts = [text.strip() for text in docker["texts"]]
    assert texts[0].startswith("No reference") and {LINE_ART, REFERENCE, "Background"} <= set(texts)
    assert all(docker["thumbnails"][1:]), "every layer is shown with its thumbnail"
    assert docker["daemon"].startswith("Running: colord") and not docker["start_visible"]


@pytest.mark.parametrize("step_name", sorted(SUCCESS_STEPS))
def test_result_is_the_daemons_answer_directly_below_the_line_art(
    krita_run, daemon, step_name: str
) -> None:
    run, report = krita_run
    step = report["steps"][step_name]
    assert step["message_boxes"] == [], step["events"]
    before, after = step["before"], step["after"]
    assert [event["event"] for event in step["events"]] == ["inserted"], step["events"]

    # Exactly one new node: right below the line art, in the same parent.
    old_ids = {entry["uid"] for entry in before}
    new = [entry for entry in after if entry["uid"] not in old_ids]
    assert [entry["name"] for entry in new] == [RESULT]
    result = new[0]
    line_art = next(entry for entry in after if entry["name"] == LINE_ART)
    assert result["type"] == "paintlayer"
    assert result["parent"] == line_art["parent"]
    assert result["index"] == line_art["index"] - 1  # Krita counts children from the bottom

    # Every original node: same place, same bounds, same bytes.
    by_id = {entry["uid"]: entry for entry in after}
    for old in before:
        now = by_id[old["uid"]]
        moved = 1 if old["parent"] == line_art["parent"] and old["index"] >= result["index"] else 0
        assert (now["name"], now["parent"], now["index"] - moved, now["bounds"]) == (
            old["name"], old["parent"], old["index"], old["bounds"],
        )  # fmt: skip
        before_bytes = (run.data / old["file"]).read_bytes()
        assert (run.data / now["file"]).read_bytes() == before_bytes, old["name"]

    # The line art was read over its exact bounds, offsets included.
    line_rect = alpha_bounds(LINE_ART_CANVAS)
    assert line_art["bounds"] == list(line_rect)
    reference_rect = alpha_bounds(REFERENCE_CANVAS)
    working_size, keep_lines = SUCCESS_STEPS[step_name]
    with colord_wire.WireClient.from_connection_file(daemon.connection_file) as client:
        reference = reference_as_sent(
            crop(to_bgra(REFERENCE_CANVAS), reference_rect), working_size, client.info()
        )
        expected, _ = client.colorize(
            colord_wire.Image(line_rect[2], line_rect[3], "BGRA8",
                              crop(to_bgra(LINE_ART_CANVAS), line_rect).tobytes()),
            colord_wire.Image(reference.shape[1], reference.shape[0], "BGRA8", reference.tobytes()),
            working_size=working_size, keep_lines=keep_lines, result_format="BGRA8",
            ground="transparent",  # the plug-in's default: the paper around the figure cleared
        )  # fmt: skip
    answer = np.frombuffer(expected.data, np.uint8)
    assert (answer[3::4] == 0).any() and (answer[3::4] == 255).any()
    result_pixels = pixels_8bit(run, result)
    inside = crop(result_pixels, line_rect)
    np.testing.assert_array_equal(inside, answer.reshape(inside.shape))
    outside = result_pixels.copy()
    x, y, width, height = line_rect
    outside[y : y + height, x : x + width] = 0
    assert not outside.any(), "the result layer reaches beyond the line art's bounds"
    # The originals are what the test put there.
    original_line_art = next(entry for entry in before if entry["name"] == LINE_ART)
    np.testing.assert_array_equal(pixels_8bit(run, original_line_art), to_bgra(LINE_ART_CANVAS))


def test_second_click_while_busy_adds_nothing_and_undo_takes_the_result_away(krita_run) -> None:
    _, report = krita_run
    step = report["steps"]["srgb8"]
    assert sum(event["event"] == "inserted" for event in step["events"]) == 1
    assert len(step["after"]) == len(step["before"]) + 1
    assert step["after_undo"] == [entry["name"] for entry in step["before"]]


@pytest.mark.parametrize(("step_name", "words"), sorted(FAILURE_STEPS.items()))
def test_failure_shows_a_message_and_changes_nothing(
    krita_run, step_name: str, words: list[str]
) -> None:
    run, report = krita_run
    step = report["steps"][step_name]
    messages = [event["text"] for event in step["events"] if event["event"] == "message"]
    assert len(messages) == 1 and [e["event"] for e in step["events"]] == ["message"]
    assert step["message_boxes"] == messages  # shown in Krita, not only logged
    for word in words:
        assert word.lower() in messages[0].lower(), messages[0]
    assert "Traceback" not in messages[0]
    assert [(e["uid"], e["index"], e["bounds"]) for e in step["after"]] == [
        (e["uid"], e["index"], e["bounds"]) for e in step["before"]
    ]
    for old, now in zip(step["before"], step["after"], strict=True):
        assert (run.data / old["file"]).read_bytes() == (run.data / now["file"]).read_bytes()


# -- the first five minutes (issue 13) ----------------------------------------------------------


def new_nodes(step: dict) -> list[dict]:
    old_ids = {entry["uid"] for entry in step["before"]}
    return [entry for entry in step["after"] if entry["uid"] not in old_ids]


def originals_unchanged(run: KritaRun, step: dict) -> None:
    """Every layer that was there before: same pixels, same blending, same bounds."""
    by_id = {entry["uid"]: entry for entry in step["after"]}
    for old in step["before"]:
        now = by_id[old["uid"]]
        assert now["blending"] == old["blending"], old["name"]
        if old["type"] == "grouplayer":
            continue  # a group shows its children, the result among them
        assert now["bounds"] == old["bounds"], old["name"]
        before_bytes = (run.data / old["file"]).read_bytes()
        assert (run.data / now["file"]).read_bytes() == before_bytes, old["name"]


def chroma(bgra: np.ndarray) -> np.ndarray:
    """How far each pixel is from grey (0 for black, white and greys)."""
    colour = bgra[..., :3].astype(np.int16)
    return colour.max(axis=-1) - colour.min(axis=-1)


def projection(run: KritaRun, record: dict) -> np.ndarray:
    return run.read_dump(record, (HEIGHT, WIDTH, 4))


def inserted(step: dict) -> list[dict]:
    return [event for event in step["events"] if event["event"] == "inserted"]


def test_1_result_over_opaque_line_art_shows_on_the_canvas(krita_run) -> None:
    run, report = krita_run
    step = report["steps"]["opaque-scan"]
    assert step["message_boxes"] == [], step["events"]
    [result] = new_nodes(step)
    line_art = next(entry for entry in step["after"] if entry["name"] == LINE_ART)
    assert result["index"] == line_art["index"] + 1 and result["blending"] == "multiply"
    originals_unchanged(run, step)
    figure = alpha_bounds(LINE_ART_CANVAS)
    before = crop(projection(run, step["projection_before"]), figure)
    after = crop(projection(run, step["projection_after"]), figure)
    assert chroma(before).max() == 0  # the scan hides the colourful reference below it
    assert chroma(after).max() > 8, "the composited canvas shows no colour"
    [event] = inserted(step)
    assert "Multiply" in " ".join(event["notes"]) and "opaque" in " ".join(event["notes"])


def test_2_a_greyscale_document_gets_a_colour_layer_and_is_told(krita_run) -> None:
    run, report = krita_run
    step = report["steps"]["gray-document"]
    assert step["message_boxes"] == [], step["events"]
    [result] = new_nodes(step)
    assert result["space"][:2] == ["RGBA", "U8"]
    pixels = run.read_dump(result, (HEIGHT, WIDTH, 4))
    assert chroma(pixels)[pixels[..., 3] > 0].max() > 8, "the result layer holds no colour"
    originals_unchanged(run, step)
    [event] = inserted(step)
    assert "greyscale" in " ".join(event["notes"]) and "RGB" in " ".join(event["notes"])


@pytest.mark.parametrize("step_name", ["one-layer", "group-bottom"])
def test_3_the_lowest_layer_of_its_group_gets_its_result(krita_run, step_name: str) -> None:
    run, report = krita_run
    step = report["steps"][step_name]
    assert step["message_boxes"] == [], step["events"]
    [result] = new_nodes(step)
    line_art = next(entry for entry in step["after"] if entry["name"] == step["active_after"])
    assert line_art["index"] == 0  # still the lowest
    assert (result["parent"], result["index"]) == (line_art["parent"], 1)
    assert result["blending"] == "multiply"
    originals_unchanged(run, step)
    figure = alpha_bounds(LINE_ART_CANVAS)
    after = crop(projection(run, step["projection_after"]), figure)
    assert chroma(after).max() > 8, "the composited canvas shows no colour"


def test_4_colorize_twice_colours_the_line_art_again(krita_run) -> None:
    run, report = krita_run
    step = report["steps"]["twice"]
    assert step["message_boxes"] == [], step["events"]
    assert [event["layer"] for event in inserted(step)] == [RESULT, f"{RESULT} 2"]
    assert step["active_after"] == LINE_ART
    first, second = new_nodes(step)
    assert (run.data / first["file"]).read_bytes() == (run.data / second["file"]).read_bytes()
    originals_unchanged(run, step)


def test_5_with_no_daemon_running_the_plugin_starts_one(krita_run) -> None:
    run, report = krita_run
    step = report["steps"]["start-daemon"]
    assert step["message_boxes"] == [], step["events"]
    assert not step["docker"]["daemon"].startswith("Running")
    assert step["docker"]["start_visible"]
    assert [event["layer"] for event in inserted(step)] == [RESULT]
    assert step["docker_after"]["daemon"].startswith("Running: colord")
    assert not step["docker_after"]["start_visible"]
    log = (run.data / "started" / "colord" / "daemon.log").read_text()
    assert "listening on tcp://127.0.0.1:" in log  # the colord that installed the plug-in


def test_6_paper_around_the_figure_is_transparent(krita_run) -> None:
    run, report = krita_run
    step = report["steps"]["srgb8"]
    [result] = new_nodes(step)
    alpha = pixels_8bit(run, result)[..., 3]
    x, y, width, height = alpha_bounds(LINE_ART_CANVAS)
    corners = [alpha[y, x], alpha[y, x + width - 1], alpha[y + height - 1, x]]
    assert corners == [0, 0, 0]  # outside the face outline
    assert alpha[y + height // 2, x + width // 2] > 0  # inside it


def test_8_the_reference_is_remembered_by_layer_not_by_name(krita_run) -> None:
    _, report = krita_run
    step = report["steps"]["renamed-reference"]
    assert step["message_boxes"] == [], step["events"]
    assert [event["layer"] for event in inserted(step)] == ["Colorized (Palette)"]
    assert step["docker"]["reference_text"].strip() == "Palette"


def test_9_cancel_drops_the_request_and_progress_shows_in_the_status_bar(krita_run) -> None:
    _, report = krita_run
    step = report["steps"]["cancel"]
    assert inserted(step) == [] and new_nodes(step) == []
    assert step["docker_after"]["status"] == "Cancelled; nothing was added."
    assert step["docker_after"]["colorize_enabled"]
    # run from the menu (the docker is closed in a fresh profile): the status bar tells
    assert report["steps"]["srgb8"]["status_bar"].startswith(f"colord: Added “{RESULT}”")


def test_10_colorize_is_disabled_without_a_document(krita_run) -> None:
    _, report = krita_run
    assert report["no_document"]["colorize_enabled"] is False
    assert report["steps"]["srgb8"]["docker"]["colorize_enabled"] is True


# -- flats (issue 12) ---------------------------------------------------------------------------

FLATS = f"Flats ({REFERENCE})"


def daemon_flats(daemon, line_art: np.ndarray, rect: tuple[int, int, int, int]) -> np.ndarray:
    """The daemon's flats (BGRA8) for the same bytes the plug-in sends, at the step's settings."""
    reference_rect = alpha_bounds(REFERENCE_CANVAS)
    with colord_wire.WireClient.from_connection_file(daemon.connection_file) as client:
        reference = reference_as_sent(
            crop(to_bgra(REFERENCE_CANVAS), reference_rect), 64, client.info()
        )
        layers = client.colorize_layers(
            colord_wire.Image(rect[2], rect[3], "BGRA8", crop(to_bgra(line_art), rect).tobytes()),
            colord_wire.Image(reference.shape[1], reference.shape[0], "BGRA8", reference.tobytes()),
            working_size=64, keep_lines=True, result_format="BGRA8", flats="only",
            flats_ground="transparent",
        )  # fmt: skip
    return np.frombuffer(layers.flats.data, np.uint8).reshape(rect[3], rect[2], 4)


def check_flats_pixels(run: KritaRun, daemon, node: dict, line_art: np.ndarray) -> None:
    """The layer holds the daemon's flats over the line art's bounds, and nothing else: a few
    solid colours, each pixel exactly one of them (no blends), the ground transparent."""
    rect = alpha_bounds(line_art) if line_art[..., 3].min() == 0 else (0, 0, WIDTH, HEIGHT)
    pixels = pixels_8bit(run, node)
    inside = crop(pixels, rect)
    np.testing.assert_array_equal(inside, daemon_flats(daemon, line_art, rect))
    outside = pixels.copy()
    outside[rect[1] : rect[1] + rect[3], rect[0] : rect[0] + rect[2]] = 0
    assert not outside.any()
    assert set(np.unique(inside[..., 3])) <= {0, 255}, "flats have no soft edges"
    palette = np.unique(inside[inside[..., 3] == 255][:, :3], axis=0)
    assert 1 <= len(palette) <= 16, palette
    assert (inside[..., 3] == 0).any(), "the ground around the figure is transparent"


def test_flats_with_the_colour_lie_under_it_below_the_line_art(krita_run, daemon) -> None:
    run, report = krita_run
    step = report["steps"]["flats"]
    assert step["message_boxes"] == [], step["events"]
    [event] = inserted(step)
    assert event["layers"] == [RESULT, FLATS]
    by_name = {node["name"]: node for node in new_nodes(step)}
    assert set(by_name) == {RESULT, FLATS}
    line_art = next(entry for entry in step["after"] if entry["name"] == LINE_ART)
    # Krita counts children from the bottom: line art, then the colour, then the flats
    assert by_name[RESULT]["index"] == line_art["index"] - 1
    assert by_name[FLATS]["index"] == line_art["index"] - 2
    assert by_name[FLATS]["parent"] == line_art["parent"]
    assert (by_name[FLATS]["blending"], by_name[FLATS]["visible"]) == ("normal", True)
    check_flats_pixels(run, daemon, by_name[FLATS], LINE_ART_CANVAS)
    originals_unchanged(run, step)
    assert step["active_after"] == LINE_ART
    assert step["docker"]["flats_enabled"] == [True, True, True]
    assert step["docker"]["flats_note"] == ""


def test_the_docker_greys_out_flats_a_daemon_cannot_make(krita_run) -> None:
    _, report = krita_run
    docker = report["steps"]["no-flats-daemon"]["docker"]
    assert docker["flats_enabled"] == [True, False, False]  # "No flats" stays choosable
    assert "cannot make flats" in docker["flats_note"]


def test_flats_alone_over_opaque_line_art_go_above_it_in_multiply(krita_run, daemon) -> None:
    run, report = krita_run
    step = report["steps"]["flats-only-scan"]
    assert step["message_boxes"] == [], step["events"]
    [flats] = new_nodes(step)
    line_art = next(entry for entry in step["after"] if entry["name"] == LINE_ART)
    assert flats["name"] == FLATS and flats["index"] == line_art["index"] + 1
    assert (flats["blending"], flats["visible"]) == ("multiply", True)
    check_flats_pixels(run, daemon, flats, SCAN_CANVAS)
    originals_unchanged(run, step)
    figure = alpha_bounds(LINE_ART_CANVAS)
    assert chroma(crop(projection(run, step["projection_after"]), figure)).max() > 8
