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
    """Answers like the daemon: layers of the line art's size, pixels chosen by the test (the
    flats: every pixel 7)."""

    def __init__(
        self, answer: colord_wire.Image | None = None, cap: int = 4096, features=("flats",)
    ) -> None:
        self.answer = answer
        self.cap = cap
        self.features = list(features)
        self.calls: list[tuple] = []  # (line art, reference, working size, keep lines, format)
        self.options: list[dict] = []

    def info(self) -> dict:
        return {"limits": {"max_working_size": self.cap}, "features": self.features}

    def colorize_layers(self, line_art, reference=None, **options):
        self.options.append(options)
        self.calls.append(
            (line_art, reference, options["working_size"], options["keep_lines"],
             options["result_format"])
        )  # fmt: skip
        size = line_art.width * line_art.height * 4
        image = self.answer or colord_wire.Image(
            line_art.width, line_art.height, "RGBA8", pattern(size)
        )
        flats = options.get("flats")
        return colord_wire.Layers(
            None if flats == "only" else image,
            None if flats is None else image._replace(data=bytes([7]) * size),
            {"queue_ms": 0.1, "engine_ms": 5.0, "total_ms": 6.0},
        )


def layer_of(result: logic.Result) -> LayerPixels:
    """The one new layer of a result without flats."""
    [new] = result.placement.layers
    return new.pixels


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
    [new] = result.placement.layers
    layer = new.pixels
    assert layer.name == "Colorized (Palette)"
    assert (layer.x, layer.y, layer.width, layer.height) == (30, 12, 8, 8)
    assert layer.data == pattern(8 * 8 * 4)
    assert result.timings["engine_ms"] == 5.0
    # a transparent line art: the result goes below it, in Normal mode
    assert not result.placement.above and not new.multiply and new.visible


def test_no_reference_is_sent_as_none_and_named_so() -> None:
    client = FakeClient()
    result = logic.colorize_layers(client, record("Ink", 0, 0, 8, 8, 0), None)
    assert client.calls[0][1] is None
    assert client.calls[0][2] is None  # by default the daemon chooses the working size
    assert layer_of(result).name == "Colorized (no reference)"


def test_results_are_numbered_and_go_above_opaque_line_art() -> None:
    client = FakeClient()
    scan = record("Scan", 0, 0, 8, 8, 255)  # opaque white paper
    taken = ("Scan", "Colorized (Palette)")
    reference = record("Palette", 0, 0, 4, 6, 200)
    result = logic.colorize_layers(client, scan, reference, taken_names=taken)
    assert layer_of(result).name == "Colorized (Palette) 2" and result.placement.above
    assert result.placement.layers[0].multiply
    result = logic.colorize_layers(client, scan, reference, multiply_over_opaque=False)
    assert not result.placement.above


def test_paper_outside_the_drawing_is_transparent_by_default() -> None:
    client = FakeClient()
    result = logic.colorize_layers(client, record("Scan", 0, 0, 8, 8, 255), None)
    assert layer_of(result).data[3::4] == bytes(64)  # all paper, nothing drawn: all outside
    kept = logic.colorize_layers(
        client, record("Scan", 0, 0, 8, 8, 255), None, transparent_paper=False
    )
    assert layer_of(kept).data == pattern(8 * 8 * 4)


def test_a_daemon_with_the_ground_feature_clears_the_paper_itself() -> None:
    client = FakeClient(features=("flats", "ground"))
    result = logic.colorize_layers(client, record("Scan", 0, 0, 8, 8, 255), None)
    assert client.options[0]["ground"] == "transparent"
    assert layer_of(result).data == pattern(8 * 8 * 4)  # the daemon's pixels, not cleared again
    logic.colorize_layers(client, record("Scan", 0, 0, 8, 8, 255), None, transparent_paper=False)
    assert "ground" not in client.options[1]
    older = FakeClient()  # without the feature: not asked for (it would be refused by name)
    logic.colorize_layers(older, record("Scan", 0, 0, 8, 8, 255), None)
    assert "ground" not in older.options[0]


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


def test_flats_are_asked_for_with_the_paper_choice_and_come_back_under_the_colour() -> None:
    client = FakeClient()
    reference = record("Palette", 0, 0, 4, 6, 200)
    result = logic.colorize_layers(
        client, record("Ink", 5, 6, 8, 8, 0), reference, flats="with_colour"
    )
    assert client.options[0]["flats"] == "with_colour"
    assert client.options[0]["flats_ground"] == "transparent"  # the paper choice, for flats too
    colour, flats = result.placement.layers
    assert (colour.pixels.name, flats.pixels.name) == ("Colorized (Palette)", "Flats (Palette)")
    assert (flats.pixels.x, flats.pixels.y) == (5, 6) and flats.pixels.data == bytes([7]) * 256

    only = logic.colorize_layers(
        client, record("Ink", 0, 0, 8, 8, 0), reference, flats="only", transparent_paper=False
    )
    assert client.options[1]["flats_ground"] == "opaque"
    assert [new.pixels.name for new in only.placement.layers] == ["Flats (Palette)"]
    logic.colorize_layers(client, record("Ink", 0, 0, 8, 8, 0), reference)
    assert "flats" not in client.options[2]  # no flats: a request any daemon understands


def test_flats_from_a_daemon_without_them_are_refused_before_sending() -> None:
    client = FakeClient(features=())
    with pytest.raises(PluginError, match="cannot make flats"):
        logic.colorize_layers(client, record("Ink", 0, 0, 8, 8, 0), None, flats="only")
    assert client.calls == []
