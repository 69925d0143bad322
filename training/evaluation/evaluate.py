"""`colord eval`: colourise a held-out folder in the paper's two settings and measure the results.

Self reference: the sketch of image i with a jittered, TPS-warped copy of i as reference (the
augmented-self reference of training); the jittered image is the ground truth and the warp says
which reference pixel matches which output pixel (SC-PSNR keypoints, and the truth the model's
attention is scored against). Where the sketch is drawn line art, each of its closed regions has
one colour in the ground truth, and region colour accuracy asks whether each region came out in
its own colour. Cross reference: the sketch of image i with another image j as reference; no
ground truth, so only FID and colour distance.
With an SPair-71k folder, a third setting pairs annotated images and scores SC-PSNR on their
keypoints, as the paper's Table 2 does.

The model is always measured next to baselines computed in the same run on the same inputs: the
no-reference mode, the line art filled with the reference's mean colour, and the reference itself.
Optionally, the synthetic probes of `colord.training.evaluation.probes` (flat shapes, each its own
colour) say per region whether the model placed the reference's colours.
Writes `eval.md` (tables), `eval.json` (every number with the backbone it was measured with and,
where it splits by image, its 95 % bootstrap interval `ci95`) and `contact_sheet.png` (one row
per example: sketch | reference | outputs | ground truth).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import cv2
import numpy as np
import torch
from PIL import Image, ImageDraw

from colord.model.pixels import SIZE_MULTIPLE, from_signed, to_signed
from colord.training.evaluation import metrics, probes
from colord.training.evaluation.spair import (
    KeypointPairs,
    SPairPair,
    keypoints_from_correspondence,
    load_spair_split,
)
from colord.training.samples.augment import jitter_colors, thin_plate_spline_warp
from colord.training.samples.dataset import ImageReadError, load_line_art, load_rgb, scan_folder
from colord.training.samples.sketch import binarize_line_art, xdog

MODEL = "model"
BASELINES = ("no_reference", "mean_color", "reference")
# Reported in a table of their own (the self setting's correspondence), not in each setting's.
ATTENTION_METRICS = ("attention_acc_16px", "attention_acc_32px")
REGION_METRICS = ("region_acc_de10", "region_mean_de", "region_mean_de_area")
DEFAULT_METRICS = (
    "fid",
    "sc_psnr_db",
    "psnr_db",
    "ssim_gt",
    "color_distance",
    *ATTENTION_METRICS,
    *REGION_METRICS,
)


class Colorizer(Protocol):
    """Colours a batch of sketches after references; the thing `colord eval` measures."""

    name: str

    def __call__(
        self, sketches: Sequence[np.ndarray], references: Sequence[np.ndarray] | None
    ) -> list[np.ndarray]:
        """sketches (H, W) uint8, lines 0 on 255; references (H, W, 3) uint8 RGB, or None for
        the no-reference mode. Returns (H, W, 3) uint8 RGB images."""
        ...


@runtime_checkable
class AttentionColorizer(Colorizer, Protocol):
    """A colorizer that can also say where its attention peaks."""

    def colorize_with_attention(
        self, sketches: Sequence[np.ndarray], references: Sequence[np.ndarray]
    ) -> tuple[list[np.ndarray], list[metrics.AttentionArgmax] | None]:
        """The outputs, and each example's attention argmax (None: the model has no attention)."""
        ...


class GeneratorColorizer:
    """A generator run directly, at the sketches' own size, in batches."""

    def __init__(
        self, generator: torch.nn.Module, *, name: str, device: str = "cpu", batch_size: int = 8
    ) -> None:
        self.generator = generator.to(device).eval()
        self.name = name
        self.device = device
        self.batch_size = batch_size

    def __call__(
        self, sketches: Sequence[np.ndarray], references: Sequence[np.ndarray] | None
    ) -> list[np.ndarray]:
        return self._run(sketches, references, with_attention=False)[0]

    def colorize_with_attention(
        self, sketches: Sequence[np.ndarray], references: Sequence[np.ndarray]
    ) -> tuple[list[np.ndarray], list[metrics.AttentionArgmax] | None]:
        """The outputs and, from the same forward passes, each example's attention argmax; None
        for an aggregation without attention (addition, AdaIN)."""
        return self._run(sketches, references, with_attention=True)

    @torch.no_grad()
    def _run(
        self,
        sketches: Sequence[np.ndarray],
        references: Sequence[np.ndarray] | None,
        *,
        with_attention: bool,
    ) -> tuple[list[np.ndarray], list[metrics.AttentionArgmax] | None]:
        outputs: list[np.ndarray] = []
        argmaxes: list[metrics.AttentionArgmax] | None = [] if with_attention else None
        for start in range(0, len(sketches), self.batch_size):
            stop = start + self.batch_size
            sketch = _to_tensor(np.stack(sketches[start:stop])[..., None]).to(self.device)
            reference = None
            if references is not None:
                reference = _to_tensor(np.stack(references[start:stop])).to(self.device)
            if argmaxes is None:
                image = self.generator(sketch, reference)
            else:
                image, extras = self.generator(sketch, reference, return_extras=True)
                if extras.attention is None:
                    argmaxes = None
                else:
                    argmaxes += [
                        metrics.AttentionArgmax(
                            cells, tuple(extras.sketch_grid), tuple(extras.reference_grid)
                        )
                        for cells in extras.attention.argmax(dim=-1).cpu().numpy()
                    ]
            outputs.extend(_to_uint8(image.float().cpu()))
        return outputs, argmaxes


def load_checkpoint_colorizer(
    path: Path, *, device: str = "cpu", label: str | None = None
) -> GeneratorColorizer:
    """The checkpoint's generator, named by `label` (default: the file name) and its preset."""
    from colord.model import load_checkpoint

    loaded = load_checkpoint(path, map_location=device)
    name = f"{label or Path(path).name} (preset {loaded.preset.name})"
    return GeneratorColorizer(loaded.generator, name=name, device=device)


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    """(B, H, W, C) uint8 -> (B, C, H, W) float in [-1, 1]."""
    return to_signed(torch.from_numpy(images).permute(0, 3, 1, 2))


def _to_uint8(images: torch.Tensor) -> list[np.ndarray]:
    """(B, 3, H, W) in [-1, 1] -> list of (H, W, 3) uint8."""
    return list(from_signed(images).permute(0, 2, 3, 1).numpy())


# ---------------------------------------------------------------------------------------------
# Inputs


@dataclass
class HeldOutSet:
    names: list[str]
    images: list[np.ndarray]  # (size, size, 3) uint8, square crops
    line_art: list[np.ndarray | None]  # drawn line art (binarized) where paired; None = XDoG
    skipped: list[str] = field(default_factory=list)  # files that could not be read


def load_held_out(
    folder: Path, size: int, limit: int = 0, line_art_dir: Path | None = None
) -> HeldOutSet:
    """Every readable image under `folder` (sorted), centre-cropped square and resized to `size`,
    with its drawn line art from `line_art_dir` (same relative path and stem) where there is one."""
    if size <= 0 or size % SIZE_MULTIPLE:
        raise ValueError(
            f"the evaluation size must be a positive multiple of {SIZE_MULTIPLE}, got {size}"
        )
    try:
        entries = scan_folder(Path(folder), Path(line_art_dir) if line_art_dir else None)
    except FileNotFoundError as error:
        raise ValueError(str(error)) from None
    held_out = HeldOutSet([], [], [])
    for entry in entries:
        if limit and len(held_out.images) >= limit:
            break
        name = str(entry.image.relative_to(folder))
        try:
            image = square_resize(load_rgb(entry.image), size)
            line_art = None
            if entry.line_art is not None:
                line_art = binarize_line_art(square_resize(load_line_art(entry.line_art), size))
        except ImageReadError:
            held_out.skipped.append(name)
            continue
        held_out.names.append(name)
        held_out.images.append(image)
        held_out.line_art.append(line_art)
    if len(held_out.images) < 2:
        raise ValueError(
            f"{folder} holds {len(held_out.images)} readable image(s); evaluation needs at least 2 "
            "(the cross setting pairs each image with another)"
        )
    return held_out


def square_resize(image: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop to a square and resize to size x size (area filter when shrinking)."""
    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return resize_whole(np.ascontiguousarray(image[top : top + side, left : left + side]), size)


@dataclass
class Setting:
    """The inputs of one setting, one entry per example."""

    name: str
    sketches: list[np.ndarray]
    references: list[np.ndarray]
    ground_truths: list[np.ndarray] | None
    keypoints: list[KeypointPairs] | None
    labels: list[str]
    real_images: list[np.ndarray]  # what FID compares the outputs with
    # (H, W, 2) per example: for each sketch pixel, the reference pixel its content lands on
    correspondences: list[np.ndarray] | None = None
    # Per example, the sketch again where it is drawn line art over a flat ground truth, else None
    flat_line_art: list[np.ndarray | None] | None = None


def build_settings(
    held_out: HeldOutSet, *, seed: int, keypoint_count: int, patch_size: int
) -> dict[str, Setting]:
    """The self- and cross-reference inputs, reproducible from `seed`."""
    rng = np.random.default_rng(seed)
    sketches = [
        xdog(image) if line_art is None else line_art
        for image, line_art in zip(held_out.images, held_out.line_art, strict=True)
    ]
    truths, warped, keypoints, correspondences = [], [], [], []
    for image in held_out.images:
        truth, _ = jitter_colors(image, rng)
        reference, correspondence = thin_plate_spline_warp(truth, rng)
        truths.append(truth)
        warped.append(reference)
        correspondences.append(correspondence)
        keypoints.append(
            keypoints_from_correspondence(
                correspondence, keypoint_count, rng, margin=patch_size // 2
            )
        )
    count = len(held_out.images)
    shift = int(rng.integers(1, count))  # each image takes image i + shift as its reference
    partners = [(i + shift) % count for i in range(count)]
    return {
        "self": Setting(
            "self",
            sketches,
            warped,
            truths,
            keypoints,
            list(held_out.names),
            held_out.images,
            correspondences,
            list(held_out.line_art),  # drawn line art: its regions are flat in the colour image
        ),
        "cross": Setting(
            "cross",
            sketches,
            [held_out.images[j] for j in partners],
            None,
            None,
            [f"{held_out.names[i]} <- {held_out.names[j]}" for i, j in enumerate(partners)],
            held_out.images,
        ),
    }


def build_spair_setting(pairs: Sequence[SPairPair], size: int) -> Setting:
    """Sketch of each pair's source image, its target image as reference, and the annotated
    keypoints: SC-PSNR as the paper measures it (Table 2). Both images are resized to size x size
    whole (no crop, so every keypoint stays in the picture) and the keypoints scaled with them."""
    if not pairs:
        raise ValueError("no SPair-71k pairs to evaluate (check the split and categories)")
    sources, targets, keypoints = [], [], []
    for pair in pairs:
        try:
            source, target = load_rgb(pair.source_image), load_rgb(pair.target_image)
        except ImageReadError as error:
            raise ValueError(f"SPair-71k pair {pair.name}: {error}") from None
        keypoints.append(
            pair.keypoints.scaled(
                (size / source.shape[1], size / source.shape[0]),
                (size / target.shape[1], size / target.shape[0]),
            )
        )
        sources.append(resize_whole(source, size))
        targets.append(resize_whole(target, size))
    return Setting(
        "spair",
        [xdog(image) for image in sources],
        targets,
        None,
        keypoints,
        [f"{pair.category}: {pair.name}" for pair in pairs],
        sources,
    )


def resize_whole(image: np.ndarray, size: int) -> np.ndarray:
    """Resize to size x size without cropping (the aspect ratio changes)."""
    shrinking = min(image.shape[:2]) > size
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
    return cv2.resize(image, (size, size), interpolation=interpolation)


# ---------------------------------------------------------------------------------------------
# Methods


def mean_color_fill(sketch: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """The line art's regions filled with the reference's mean colour, lines kept dark."""
    mean = reference.reshape(-1, 3).mean(axis=0)
    shade = sketch.astype(np.float64)[..., None] / 255.0
    return np.rint(shade * mean).astype(np.uint8)


def run_methods(
    colorizer: Colorizer, setting: Setting
) -> tuple[dict[str, list[np.ndarray]], list[metrics.AttentionArgmax] | None]:
    """The model's outputs and each baseline's, on the same inputs; and where the setting knows
    the true correspondence and the model can show it, where the model's attention peaks."""
    attention = None
    if setting.correspondences is not None and isinstance(colorizer, AttentionColorizer):
        model, attention = colorizer.colorize_with_attention(setting.sketches, setting.references)
    else:
        model = colorizer(setting.sketches, setting.references)
    outputs = {
        MODEL: model,
        "no_reference": colorizer(setting.sketches, None),
        "mean_color": [
            mean_color_fill(s, r) for s, r in zip(setting.sketches, setting.references, strict=True)
        ],
        "reference": list(setting.references),
    }
    return outputs, attention


def _nth(values: list | None, i: int) -> Any:
    return None if values is None else values[i]


def measure(
    setting: Setting,
    outputs: list[np.ndarray],
    *,
    real_images: list[np.ndarray],
    features: metrics.FeatureExtractor | None,
    metric_names: Sequence[str],
    patch_size: int,
    attention: list[metrics.AttentionArgmax] | None = None,
) -> list[metrics.MetricResult]:
    samples = [
        metrics.EvalSample(
            output=output,
            reference=setting.references[i],
            ground_truth=_nth(setting.ground_truths, i),
            keypoints=_nth(setting.keypoints, i),
            correspondence=_nth(setting.correspondences, i),
            attention=_nth(attention, i),
            flat_line_art=_nth(setting.flat_line_art, i),
        )
        for i, output in enumerate(outputs)
    ]
    inputs = metrics.MetricInputs(samples, real_images, features, patch_size)
    return metrics.calc_metrics(metric_names, inputs)


# ---------------------------------------------------------------------------------------------
# The run


@dataclass
class EvalOptions:
    images: Path | None  # held-out folder (self and cross reference)
    out: Path  # where eval.md, eval.json and contact_sheet.png go
    size: int = 256  # evaluation resolution (paper: 256)
    limit: int = 0  # use at most this many images (0 = all)
    seed: int = 0
    metrics: tuple[str, ...] = DEFAULT_METRICS
    keypoints: int = 64  # SC-PSNR keypoint pairs per self-reference example
    patch_size: int = 11  # SC-PSNR patch side
    contact_rows: int = 6  # examples per setting on the contact sheet
    inception_weights: Path | None = None  # InceptionV3 state dict; else the named FID proxy
    device: str = "cpu"
    line_art: Path | None = None  # drawn line art paired with the held-out images; else XDoG
    spair: Path | None = None  # an SPair-71k folder: adds the annotated-keypoint setting
    spair_split: str = "test"
    spair_categories: tuple[str, ...] | None = None  # e.g. ("cat", "dog", "car"); None = all
    probes: bool = (
        False  # also run the synthetic probes (colord.training.evaluation.probes) at `size`
    )


@dataclass
class EvalReport:
    summary: dict  # what eval.json holds
    markdown: str
    paths: dict[str, Path]
    results: dict[str, dict[str, list[metrics.MetricResult]]]  # setting -> method -> results


def evaluate(
    colorizer: Colorizer,
    options: EvalOptions,
    *,
    load_features: Callable[[], metrics.FeatureExtractor] | None = None,
) -> EvalReport:
    """Run every setting and method, measure them, and write the report files."""
    unknown = [name for name in options.metrics if not metrics.is_valid_metric(name)]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; known: {', '.join(metrics.list_metrics())}")
    settings: dict[str, Setting] = {}
    held_out = None
    if options.images is not None:
        held_out = load_held_out(options.images, options.size, options.limit, options.line_art)
        settings |= build_settings(
            held_out,
            seed=options.seed,
            keypoint_count=options.keypoints,
            patch_size=options.patch_size,
        )
    if options.spair is not None:
        pairs = load_spair_split(options.spair, options.spair_split, options.spair_categories)
        settings["spair"] = build_spair_setting(pairs[: options.limit or None], options.size)
    if not settings and not options.probes:
        raise ValueError(
            "nothing to evaluate: give a held-out folder, an SPair-71k folder or the probes"
        )
    features = None
    if "fid" in options.metrics:
        features = (
            load_features
            or (lambda: metrics.load_fid_features(options.inception_weights, device=options.device))
        )()

    results: dict[str, dict[str, list[metrics.MetricResult]]] = {}
    sheet_rows: list[tuple[str, list[np.ndarray | None]]] = []
    for setting in settings.values():
        outputs, attention = run_methods(colorizer, setting)
        results[setting.name] = {
            method: measure(
                setting,
                images,
                real_images=setting.real_images,
                features=features,
                metric_names=options.metrics,
                patch_size=options.patch_size,
                attention=attention if method == MODEL else None,
            )
            for method, images in outputs.items()
        }
        for i in range(min(options.contact_rows, len(setting.sketches))):
            truth = None if setting.ground_truths is None else setting.ground_truths[i]
            sketch_rgb = np.repeat(setting.sketches[i][..., None], 3, axis=2)
            cells = [sketch_rgb, setting.references[i], outputs[MODEL][i]]
            cells += [outputs["no_reference"][i], outputs["mean_color"][i], truth]
            sheet_rows.append((f"{setting.name}: {setting.labels[i]}", cells))
    probe_report = None
    if options.probes:
        probe_set = probes.make_probes(options.size, seed=options.seed)
        probe_report = probes.run_probes(colorizer, probe_set)
        for probe, output in zip(probe_set, probe_report.outputs, strict=True):
            sketch_rgb = np.repeat(probe.sketch[..., None], 3, axis=2)
            cells = [sketch_rgb, probe.reference, output, None, None, probe.truth]
            sheet_rows.append((f"probe: {probe.name}", cells))

    summary = {
        "model": colorizer.name,
        "examples": {name: len(setting.sketches) for name, setting in settings.items()},
        "skipped_files": [] if held_out is None else held_out.skipped,
        "drawn_line_art": 0 if held_out is None else sum(a is not None for a in held_out.line_art),
        "size": options.size,
        "seed": options.seed,
        "feature_backbone": None if features is None else features.name,
        "attention_not_measured": None
        if "self" not in results
        else attention_missing(colorizer, options.metrics, results["self"][MODEL]),
        "settings": {
            setting: {
                method: {r.name: _result_json(r) for r in method_results}
                for method, method_results in by_method.items()
            }
            for setting, by_method in results.items()
        },
        "probes": None if probe_report is None else probe_report.to_json(),
    }
    markdown = markdown_report(summary)
    paths = write_report(Path(options.out), "", markdown, summary)
    contact_sheet(sheet_rows, SHEET_COLUMNS).save(paths["contact_sheet"])
    return EvalReport(summary, markdown, paths, results)


def write_report(out: Path, prefix: str, markdown: str, summary: dict) -> dict[str, Path]:
    """Write `eval.md` and `eval.json` (prefix "") or `<prefix>.md` and `<prefix>.json` into
    `out`; returns their paths and the contact sheet's, which the caller draws."""
    out.mkdir(parents=True, exist_ok=True)
    stem = prefix or "eval"
    paths = {
        "markdown": out / f"{stem}.md",
        "json": out / f"{stem}.json",
        "contact_sheet": out / (f"{prefix}_contact_sheet.png" if prefix else "contact_sheet.png"),
    }
    paths["markdown"].write_text(markdown)
    paths["json"].write_text(json.dumps(summary, indent=2) + "\n")
    return paths


def _result_json(result: metrics.MetricResult) -> dict:
    values = {
        "value": result.value,
        "metric": result.metric,
        "backbone": result.backbone,
        "higher_is_better": result.higher_is_better,
        "count": result.count,
    }
    if result.chance is not None:
        values["chance"] = result.chance
    bounds = metrics.interval(metrics.bootstrap(result))
    if bounds is not None:
        values["ci95"] = list(bounds)
    return values


def attention_missing(
    colorizer: Colorizer, metric_names: Sequence[str], self_results: list[metrics.MetricResult]
) -> str | None:
    """Why the model's attention accuracy was asked for in the self setting but not measured."""
    asked = [name for name in metric_names if name in ATTENTION_METRICS]
    if not asked or any(result.metric in asked for result in self_results):
        return None
    if isinstance(colorizer, AttentionColorizer):
        return "the model has no attention (its aggregation is not SCFT)"
    return "the model's attention is not visible through this colorizer (e.g. the daemon)"


# ---------------------------------------------------------------------------------------------
# Reports

SETTING_TITLES = {
    "self": "Self reference (sketch of i, jittered + TPS-warped i as reference; ground truth)",
    "cross": "Cross reference (sketch of i, another image j as reference)",
    "spair": "SPair-71k (sketch of the source, target as reference, annotated keypoints)",
}
SHEET_COLUMNS = ("sketch", "reference", "model", "no reference", "mean colour", "ground truth")


def format_value(value: float) -> str:
    return "inf" if math.isinf(value) else f"{value:.4g}" if abs(value) < 1000 else f"{value:.1f}"


def results_table(
    rows: dict[str, dict[str, dict]], *, first_column: str, leave_out: Sequence[str] = ()
) -> str:
    """A markdown table: a row per key of `rows`, a column per metric (arrows: which is better)."""
    columns: list[str] = []
    for row in rows.values():
        columns += [name for name in row if name not in columns and name not in leave_out]
    header = [first_column] + [f"{name} {'↑' if _higher(rows, name) else '↓'}" for name in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, row in rows.items():
        cells = [format_value(row[name]["value"]) if name in row else "–" for name in columns]
        lines.append("| " + " | ".join([label, *cells]) + " |")
    return "\n".join(lines)


def _higher(rows: dict[str, dict[str, dict]], name: str) -> bool:
    return next(row[name]["higher_is_better"] for row in rows.values() if name in row)


def markdown_report(summary: dict) -> str:
    lines = [
        f"# colord evaluation: {summary['model']}",
        "",
        f"At {summary['size']} px, seed {summary['seed']}; examples per setting: "
        + ", ".join(f"{name} {count}" for name, count in summary["examples"].items())
        + ".",
    ]
    if summary["feature_backbone"]:
        lines.append(f"FID features: {summary['feature_backbone']}.")
    if summary["skipped_files"]:
        lines.append(f"Skipped {len(summary['skipped_files'])} unreadable file(s).")
    for setting, by_method in summary["settings"].items():
        lines += ["", f"## {SETTING_TITLES[setting]}", ""]
        lines.append(
            results_table(
                by_method, first_column="method", leave_out=ATTENTION_METRICS + REGION_METRICS
            )
        )
    if "self" in summary["settings"]:
        lines += correspondence_section(summary["settings"]["self"], summary)
    if summary["probes"] is not None:
        lines += probes.markdown_section(summary["probes"])
    lines += [
        "",
        "Baselines: `no_reference` = the model with a zero-filled reference; `mean_color` = the "
        "line art's regions filled with the reference's mean colour; `reference` = the reference "
        "itself, unchanged (in the cross setting the references are held-out images, so its FID "
        "there is 0 by construction). FID compares with the held-out images (SPair: the source "
        "images); on few images it is biased upwards, so compare FIDs only at equal counts.",
        "",
    ]
    return "\n".join(lines)


CORRESPONDENCE_COLUMNS = (
    "attention acc @16px ↑",
    "attention acc @32px ↑",
    "chance @16px / @32px",
    f"region acc (ΔE≤{metrics.REGION_DELTA_E:g}) ↑",
    "mean ΔE ↓",
    "mean ΔE, area-weighted ↓",
)


def correspondence_section(by_method: dict[str, dict[str, dict]], summary: dict) -> list[str]:
    """Markdown lines: attention and region colour accuracy of each method in the self setting."""
    model = by_method[MODEL]
    if (
        not any(name in model for name in ATTENTION_METRICS + REGION_METRICS)
        and not summary["attention_not_measured"]
    ):
        return []

    def cell(row: dict[str, dict], name: str, missing: str) -> str:
        return format_value(row[name]["value"]) if name in row else missing

    lines = [
        "",
        "## Correspondence (self reference)",
        "",
        "| method | " + " | ".join(CORRESPONDENCE_COLUMNS) + " |",
        "|" + "---|" * (len(CORRESPONDENCE_COLUMNS) + 1),
    ]
    for method, row in by_method.items():
        no_attention = "n/a" if method == MODEL else "–"  # baselines have none to measure
        accuracy = [cell(row, name, no_attention) for name in ATTENTION_METRICS]
        chance = [format_value(row[name]["chance"]) for name in ATTENTION_METRICS if name in row]
        regions = [cell(row, name, "n/a") for name in REGION_METRICS]
        lines.append(
            "| " + " | ".join([method, *accuracy, " / ".join(chance) or "–", *regions]) + " |"
        )
    lines += [
        "",
        "Attention accuracy: the share of sketch cells whose attention argmax lies within 16 (32) "
        "px of where the cell's content really is in the reference (the TPS warp), beside what a "
        "uniformly random argmax scores; cells whose content leaves the frame are not scored. "
        "Region colour accuracy: over the closed regions of the drawn line art (not the open "
        f"ground around the drawing, nor regions under {metrics.MIN_REGION_FRACTION:.1%} of the "
        "picture), the median colour of each region, off the lines, against its true colour in "
        "CIEDE2000; n/a without drawn line art.",
    ]
    if summary["attention_not_measured"]:
        lines.append(f"Attention accuracy n/a: {summary['attention_not_measured']}.")
    scored = [
        f"{model[names[0]]['count']} {what}"
        for names, what in ((ATTENTION_METRICS, "sketch cells"), (REGION_METRICS, "regions"))
        if names[0] in model
    ]
    if scored:
        lines.append(f"Scored: {' and '.join(scored)}.")
    return lines


def contact_sheet(
    rows: list[tuple[str, list[np.ndarray | None]]],
    column_titles: Sequence[str],
    *,
    cell: int = 128,
    label_height: int = 14,
) -> Image.Image:
    """A grid: a title row, then per example a caption line and its images (None = left grey)."""
    columns = len(column_titles)
    width = columns * cell
    height = label_height + len(rows) * (label_height + cell)
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for c, title in enumerate(column_titles):
        draw.text((c * cell + 3, 1), title, fill=(0, 0, 0))
    for r, (caption, images) in enumerate(rows):
        top = label_height + r * (label_height + cell)
        draw.text((3, top + 1), caption, fill=(80, 80, 80))
        for c, image in enumerate(images):
            box = (c * cell, top + label_height)
            if image is None:
                draw.rectangle([box, (box[0] + cell - 1, box[1] + cell - 1)], fill=(200, 200, 200))
            else:
                tile = Image.fromarray(image).resize((cell, cell), Image.Resampling.LANCZOS)
                sheet.paste(tile, box)
    return sheet
