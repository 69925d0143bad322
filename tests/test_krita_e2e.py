"""End to end in the real Krita (Debian's krita, full GUI under Xvfb) with a real daemon.

One Krita run in a fresh profile plays every step below: colord's plug-in is installed and enabled
by `colord plugin install krita`, a driver plug-in builds each document, makes the line art active,
and triggers the plug-in's real action; the reference comes from the plug-in's own setting. The
tests then check what Krita recorded against what the daemon answers for the same bytes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from capabilities import HOSTS, missing
from conftest import draw_line_art, draw_reference
from daemon_helpers import start_daemon
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
# step -> (working size, keep lines) the plug-in's settings hold when the step runs
SUCCESS_STEPS = {"srgb8": (64, True), "rgba16-group": (None, False)}  # None: automatic
FAILURE_STEPS = {
    "no-daemon": ["not running", "colord serve"],
    "wrong-token": ["token"],
    "mask-active": ["transparency mask", "not a layer"],
    "no-reference": ["No reference layer chosen", "colord docker"],
}


def canvas_layer(tile: np.ndarray, at: tuple[int, int]) -> np.ndarray:
    """`tile` (RGBA8) placed at `at` on a transparent canvas."""
    canvas = np.zeros((HEIGHT, WIDTH, 4), np.uint8)
    x, y = at
    canvas[y : y + tile.shape[0], x : x + tile.shape[1]] = tile
    return canvas


LINE_ART_CANVAS = canvas_layer(draw_line_art(72, 96), LINE_ART_AT)
REFERENCE_CANVAS = canvas_layer(draw_reference(100, 140), REFERENCE_AT)


def as_u16(bgra: np.ndarray) -> np.ndarray:
    return bgra.astype(np.uint16) * 257


def build_steps(run: KritaRun, connection_file: Path) -> None:
    line_art = to_bgra(draw_line_art(72, 96))
    reference = to_bgra(draw_reference(100, 140))
    files = {
        "line8": run.add_pixels("line8", line_art),
        "ref8": run.add_pixels("ref8", reference),
        "line16": run.add_pixels("line16", as_u16(line_art)),
        "ref16": run.add_pixels("ref16", as_u16(reference)),
    }
    flat8 = [
        {"name": REFERENCE, "x": REFERENCE_AT[0], "y": REFERENCE_AT[1], **files["ref8"]},
        {"name": LINE_ART, "x": LINE_ART_AT[0], "y": LINE_ART_AT[1], **files["line8"]},
    ]
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
    common = {"active": LINE_ART, "connection_file": str(connection_file)}
    run.steps = [
        # two clicks in a row: the second arrives while the first request is still running
        common | {"name": "srgb8", "document": document | SRGB8, "layers": flat8, "clicks": 2,
                  "undo": True},
        common | {"name": "rgba16-group", "document": document | SRGB16, "layers": grouped16,
                  "settings": {"working_size": "auto", "keep_lines": "false"}},
        common | {"name": "no-daemon", "document": document | SRGB8, "layers": flat8,
                  "connection_file": str(run.data / "absent" / "daemon.json")},
        common | {"name": "wrong-token", "document": document | SRGB8, "layers": flat8,
                  "connection_file": str(run.data / "wrong-token.json")},
        common | {"name": "mask-active", "document": document | SRGB8, "active": "Mask",
                  "layers": [*flat8, {"name": "Mask", "type": "transparencymask",
                                      "parent": LINE_ART}]},
        common | {"name": "no-reference", "document": document | SRGB8, "layers": flat8,
                  "settings": {"reference": ""}},
    ]  # fmt: skip


@pytest.fixture(scope="module")
def krita_ready() -> None:
    problem = krita_problem()
    if problem is not None:
        missing(problem, HOSTS)


@pytest.fixture(scope="module")
def daemon(krita_ready, tiny_checkpoint):
    with start_daemon(tiny_checkpoint) as running:
        yield running


@pytest.fixture(scope="module")
def krita_run(daemon):
    run = KritaRun()
    run.install_plugin()
    run.install_driver()
    run.set_plugin_settings({"reference": REFERENCE, "working_size": "64", "keep_lines": "true"})
    build_steps(run, daemon.connection_file)
    result = run.run()
    report = result.report
    assert report is not None and "error" not in report, (
        f"the Krita run failed: {report and report.get('error')}\n{result.output[-4000:]}"
    )
    yield run, report
    run.remove()


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
    assert docker["reference"] == REFERENCE
    assert {LINE_ART, REFERENCE, "Background"} <= set(docker["layers"])
    assert docker["daemon"].startswith("Running: colord")


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
        expected, _ = client.colorize(
            colord_wire.Image(line_rect[2], line_rect[3], "BGRA8",
                              crop(to_bgra(LINE_ART_CANVAS), line_rect).tobytes()),
            colord_wire.Image(reference_rect[2], reference_rect[3], "BGRA8",
                              crop(to_bgra(REFERENCE_CANVAS), reference_rect).tobytes()),
            working_size=working_size, keep_lines=keep_lines, result_format="BGRA8",
        )  # fmt: skip
    result_pixels = pixels_8bit(run, result)
    inside = crop(result_pixels, line_rect)
    np.testing.assert_array_equal(
        inside, np.frombuffer(expected.data, np.uint8).reshape(inside.shape)
    )
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
