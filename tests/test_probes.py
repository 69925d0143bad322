"""Synthetic probes: flat shapes, each its own colour, the reference the same drawing warped. A
model that places colours passes; one that averages them fails."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from colord.daemon.cli import main
from colord.model.default_model import load_default_model
from colord.training.evaluation import probes
from colord.training.evaluation.evaluate import GeneratorColorizer, mean_color_fill
from colord.training.evaluation.metrics import closed_regions

SIZE = 128  # the shipped model's training size


@pytest.fixture(scope="module")
def probe_set() -> list[probes.Probe]:
    return probes.make_probes(SIZE, seed=0)


def test_probes_are_deterministic_per_seed() -> None:
    first, again = probes.make_probes(64, seed=3), probes.make_probes(64, seed=3)
    other = probes.make_probes(64, seed=4)
    for a, b, c in zip(first, again, other, strict=True):
        np.testing.assert_array_equal(a.reference, b.reference)
        np.testing.assert_array_equal(a.truth, c.truth)  # the drawing does not depend on it ...
        assert not np.array_equal(a.reference, c.reference)  # ... the warp does


@pytest.mark.parametrize("size", [64, 128, 256])
def test_each_shape_is_one_closed_region_in_its_own_colour(size: int) -> None:
    for probe in probes.make_probes(size):
        assert probe.sketch.shape == (size, size) and probe.reference.shape == (size, size, 3)
        colors = [shape.color for shape in probe.shapes]
        assert len(set(colors)) == len(colors), probe.name
        assert closed_regions(probe.sketch).max() == len(probe.shapes), probe.name
        for shape in probe.shapes:  # the reference shows every colour of the drawing
            assert (probe.reference == probes.PALETTE[shape.color]).all(axis=2).any()


def test_probe_size_must_be_a_multiple_of_16() -> None:
    with pytest.raises(ValueError, match="multiple of 16"):
        probes.make_probes(100)


def test_a_perfect_colorizer_passes(probe_set: list[probes.Probe]) -> None:
    report = probes.run_probes(lambda sketches, _: [p.truth for p in probe_set], probe_set)
    assert report.passed
    assert len(report.regions) == sum(len(probe.shapes) for probe in probe_set)
    assert all(region.delta_e < 1 for region in report.regions)


def test_a_colorizer_that_averages_the_reference_fails(probe_set: list[probes.Probe]) -> None:
    def mean_colour(sketches, references):
        return [mean_color_fill(s, r) for s, r in zip(sketches, references, strict=True)]

    report = probes.run_probes(mean_colour, probe_set)
    assert not report.passed
    for probe in probe_set:  # one colour everywhere: at most one region per probe can own it
        assert sum(r.own_color for r in report.regions if r.probe == probe.name) <= 1


def test_a_colorizer_that_leaves_the_line_art_uncoloured_fails(
    probe_set: list[probes.Probe],
) -> None:
    report = probes.run_probes(
        lambda sketches, _: [np.repeat(s[..., None], 3, axis=2) for s in sketches], probe_set
    )
    assert {region.nearest for region in report.regions} == {probes.GROUND}
    assert not report.passed
    assert report.to_json()["own_color"] == 0


def test_the_shipped_model_gives_each_region_its_own_colour(
    probe_set: list[probes.Probe],
) -> None:
    colorizer = GeneratorColorizer(load_default_model().generator, name="default")
    report = probes.run_probes(colorizer, probe_set)
    wrong = [(r.probe, r.region, r.color, r.nearest) for r in report.regions if not r.own_color]
    assert not wrong


def test_eval_runs_the_probes_alone(tiny_checkpoint: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["eval", "--model", str(tiny_checkpoint), "--probes", "--size", "64",
         "--out", str(tmp_path)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "eval.json").read_text())
    report = summary["probes"]
    assert report["count"] == len(report["regions"]) == 13
    first = report["regions"][0]
    assert first["probe"] == "square in circle (red, blue)" and first["color"] == "red"
    assert set(first) >= {"region", "output_rgb", "delta_e", "nearest", "own_color"}
    markdown = (tmp_path / "eval.md").read_text()
    assert "## Synthetic probes" in markdown
    assert f"{report['own_color']} of 13 regions took their own colour" in markdown
