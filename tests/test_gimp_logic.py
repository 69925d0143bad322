"""The GIMP plug-in's host-free logic: selection checks, reference choice, the round trip."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"
sys.path[:0] = [str(PLUGINS / "wire"), str(PLUGINS / "gimp" / "colord_gimp")]

import colord_gimp_logic as logic  # noqa: E402
import colord_wire  # noqa: E402
from colord_plugin_core import LayerPixels, PluginError  # noqa: E402


def record(name: str, x: int, y: int, width: int, height: int, fill: int) -> LayerPixels:
    return LayerPixels(name, x, y, width, height, bytes([fill]) * (width * height * 4))


def pattern(size: int) -> bytes:
    return bytes(index % 251 for index in range(size))


class FakeClient:
    """Answers like the daemon: a result of the line art's size, pixels chosen by the test."""

    def __init__(self, answer: colord_wire.Image | None = None, cap: int = 4096) -> None:
        self.answer = answer
        self.cap = cap
        self.calls: list[tuple] = []

    def info(self) -> dict:
        return {"limits": {"max_working_size": self.cap}}

    def colorize(
        self, line_art, reference=None, *, working_size=None, keep_lines=True, result_format="RGBA8"
    ):
        self.calls.append((line_art, reference, working_size, keep_lines, result_format))
        image = self.answer or colord_wire.Image(
            line_art.width, line_art.height, "RGBA8", pattern(line_art.width * line_art.height * 4)
        )
        return image, {"queue_ms": 0.1, "engine_ms": 5.0, "total_ms": 6.0}


def test_round_trip_sends_both_layers_and_places_result_over_line_art() -> None:
    line_art = record("Ink", 30, 12, 8, 8, 0)
    reference = record("Palette", 0, 0, 4, 6, 200)
    client = FakeClient()

    result = logic.colorize_layers(
        client, line_art, reference, working_size=256, keep_lines=False, transparent_paper=False
    )

    sent_line_art, sent_reference, working_size, keep_lines, result_format = client.calls[0]
    assert sent_line_art == colord_wire.Image(8, 8, "RGBA8", line_art.data)
    assert sent_reference == colord_wire.Image(4, 6, "RGBA8", reference.data)
    assert (working_size, keep_lines, result_format) == (256, False, "RGBA8")
    layer = result.layer
    assert layer.name == "Colorized (Palette)"
    assert (layer.x, layer.y, layer.width, layer.height) == (30, 12, 8, 8)
    assert layer.data == pattern(8 * 8 * 4)
    assert result.timings["engine_ms"] == 5.0
    assert not result.above  # a transparent line art: the result goes below it


def test_no_reference_is_sent_as_none_and_named_so() -> None:
    client = FakeClient()
    result = logic.colorize_layers(client, record("Ink", 0, 0, 8, 8, 0), None)
    assert client.calls[0][1] is None
    assert client.calls[0][2] is None  # by default the daemon chooses the working size
    assert result.layer.name == "Colorized (no reference)"


def test_results_are_numbered_and_go_above_opaque_line_art() -> None:
    client = FakeClient()
    scan = record("Scan", 0, 0, 8, 8, 255)  # opaque white paper
    taken = ("Scan", "Colorized (Palette)")
    reference = record("Palette", 0, 0, 4, 6, 200)
    result = logic.colorize_layers(client, scan, reference, taken_names=taken)
    assert result.layer.name == "Colorized (Palette) 2" and result.above
    result = logic.colorize_layers(client, scan, reference, multiply_over_opaque=False)
    assert not result.above


def test_paper_outside_the_drawing_is_transparent_by_default() -> None:
    client = FakeClient()
    result = logic.colorize_layers(client, record("Scan", 0, 0, 8, 8, 255), None)
    assert result.layer.data[3::4] == bytes(64)  # all paper, nothing drawn: all outside
    kept = logic.colorize_layers(
        client, record("Scan", 0, 0, 8, 8, 255), None, transparent_paper=False
    )
    assert kept.layer.data == pattern(8 * 8 * 4)


def test_answer_of_wrong_size_is_a_clear_error() -> None:
    client = FakeClient(colord_wire.Image(4, 4, "RGBA8", bytes(64)))
    with pytest.raises(PluginError, match="4x4 RGBA8 image for a 8x8 line art"):
        logic.colorize_layers(client, record("Ink", 0, 0, 8, 8, 0), None)


def test_pixel_buffer_of_wrong_length_is_refused_before_sending() -> None:
    client = FakeClient()
    broken = LayerPixels("Ink", 0, 0, 8, 8, bytes(10))
    with pytest.raises(ValueError, match="expected 256"):
        logic.colorize_layers(client, broken, None)
    assert client.calls == []


def test_working_size_zero_means_automatic() -> None:
    client = FakeClient()
    logic.colorize_layers(client, record("Ink", 0, 0, 8, 8, 0), None, working_size=0)
    logic.colorize_layers(client, record("Ink", 0, 0, 8, 8, 0), None, working_size=64)
    assert [call[2] for call in client.calls] == [None, 64]


@pytest.mark.parametrize("working_size", [63, 4097, -1, 16, 100])
def test_unusable_working_size_is_refused_before_sending(working_size: int) -> None:
    client = FakeClient()
    with pytest.raises(PluginError, match=r"choose Automatic, or a multiple of 16 from 64 to 4096"):
        logic.colorize_layers(client, record("Ink", 0, 0, 8, 8, 0), None, working_size=working_size)
    assert client.calls == []


def test_working_size_above_the_daemons_cap_is_refused_before_sending() -> None:
    client = FakeClient(cap=512)
    with pytest.raises(PluginError, match="runs at most 512 px"):
        logic.colorize_layers(client, record("Ink", 0, 0, 8, 8, 0), None, working_size=1024)
    assert client.calls == []


@pytest.mark.parametrize(
    ("kinds", "words"),
    [
        ([], "exactly one layer"),
        (["layer", "layer"], "2 are selected"),
        (["group"], "layer group"),
        (["mask"], "layer mask"),
        (["channel"], "channel is selected"),
    ],
)
def test_selection_that_is_not_one_plain_layer_is_refused(kinds: list[str], words: str) -> None:
    with pytest.raises(PluginError, match=words):
        logic.check_line_art_selection(kinds)


def test_one_plain_layer_is_accepted() -> None:
    logic.check_line_art_selection(["layer"])


@pytest.mark.parametrize(("base_type", "mode"), [("gray", "Grayscale"), ("indexed", "Indexed")])
def test_non_rgb_image_is_refused_with_the_fix(base_type: str, mode: str) -> None:
    with pytest.raises(PluginError, match=f"in {mode} mode.*Image › Mode › RGB"):
        logic.check_image_mode(base_type)
    logic.check_image_mode("rgb")


def test_running_without_a_reference_must_be_chosen() -> None:
    with pytest.raises(PluginError, match="Colour without a reference"):
        logic.check_reference_choice(has_reference=False, without_reference=False)
    logic.check_reference_choice(has_reference=False, without_reference=True)
    logic.check_reference_choice(has_reference=True, without_reference=False)


def test_the_dialog_proposes_the_topmost_other_layer_as_reference() -> None:
    layers = [(5, "Colorized (Ref)"), (3, "Inks"), (9, "Ref"), (1, "Paper")]
    assert logic.default_reference(layers, line_art_id=3) == 9
    assert logic.default_reference([(3, "Inks")], line_art_id=3) is None
