"""Several models measured on the same held-out images, side by side, with their uncertainty.

Each metric of each model gets a 95 % percentile-bootstrap interval over the images; each model
after the first gets its difference from the first with an interval from the same resampled
images (paired: the same draw of images scores both models), which is what tells a real gain
from the luck of which 20 images were held out. Writes compare.md and compare.json.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from colord.training.evaluation import metrics
from colord.training.evaluation.evaluate import (
    MODEL,
    SETTING_TITLES,
    Colorizer,
    EvalOptions,
    EvalReport,
    evaluate,
    format_value,
)


@dataclass
class Comparison:
    summary: dict  # what compare.json holds
    markdown: str
    paths: dict[str, Path]


def file_labels(paths: Sequence[Path]) -> list[str]:
    """Each file's name, with as many parent folders as it takes to tell it from the others."""
    parts = [Path(path).resolve().parts for path in paths]
    if len(set(parts)) < len(parts):
        raise ValueError("the same checkpoint is given twice")
    labels = []
    for own in parts:
        others = [other for other in parts if other != own]
        depth = 1
        while any(other[-depth:] == own[-depth:] for other in others):
            depth += 1
        labels.append("/".join(own[-depth:]))
    return labels


def evaluate_and_compare(
    models: Sequence[tuple[str, Callable[[], Colorizer]]], options: EvalOptions
) -> tuple[list[EvalReport], Comparison]:
    """Evaluate each (label, loader) model in turn into `options.out`/<label> (its own eval.md,
    eval.json and contact sheet), then compare them in `options.out`."""
    features: list[metrics.FeatureExtractor] = []

    def shared_features() -> metrics.FeatureExtractor:
        if not features:
            features.append(
                metrics.load_fid_features(options.inception_weights, device=options.device)
            )
        return features[0]

    reports = []
    for label, load in models:
        out = Path(options.out) / label.replace("/", "_")
        own = dataclasses.replace(options, out=out)
        reports.append(evaluate(load(), own, load_features=shared_features))
    labels = [label for label, _ in models]
    return reports, compare(labels, reports, Path(options.out))


def compare(labels: Sequence[str], reports: Sequence[EvalReport], out: Path) -> Comparison:
    """The model rows of `reports` (one per label, all over the same settings and images)."""
    if len(labels) != len(reports) or len(reports) < 2:
        raise ValueError("compare needs two or more reports, one label each")
    summary = {
        "models": {
            label: report.summary["model"] for label, report in zip(labels, reports, strict=True)
        },
        "confidence": metrics.CONFIDENCE,
        "resamples": metrics.BOOTSTRAP_RESAMPLES,
        "settings": {
            setting: _compare_setting(labels, [r.results[setting][MODEL] for r in reports])
            for setting in reports[0].results
        },
    }
    markdown = markdown_comparison(summary)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / "compare.md", "json": out / "compare.json"}
    paths["markdown"].write_text(markdown)
    paths["json"].write_text(json.dumps(summary, indent=2) + "\n")
    return Comparison(summary, markdown, paths)


def _compare_setting(
    labels: Sequence[str], results: Sequence[list[metrics.MetricResult]]
) -> dict[str, dict]:
    """metric name -> each model's value and interval, and each later model's paired
    difference from the first."""
    by_model = [{result.name: result for result in model_results} for model_results in results]
    table: dict[str, dict] = {}
    for name, first in by_model[0].items():
        if not all(name in model for model in by_model):
            continue
        draws = [metrics.bootstrap(model[name]) for model in by_model]
        entry: dict = {"higher_is_better": first.higher_is_better, "models": {}, "vs_first": {}}
        for label, model, drawn in zip(labels, by_model, draws, strict=True):
            entry["models"][label] = {"value": model[name].value, "ci95": _listed(drawn)}
        for label, model, drawn in zip(labels[1:], by_model[1:], draws[1:], strict=True):
            paired = None if drawn is None or draws[0] is None else drawn - draws[0]
            difference = model[name].value - first.value
            entry["vs_first"][label] = {"difference": difference, "ci95": _listed(paired)}
        table[name] = entry
    return table


def _listed(drawn: np.ndarray | None) -> list[float] | None:
    bounds = metrics.interval(drawn)
    return None if bounds is None else list(bounds)


def _cell(value: float, bounds: list[float] | None) -> str:
    if bounds is None:
        return format_value(value)
    return f"{format_value(value)} [{format_value(bounds[0])}, {format_value(bounds[1])}]"


def _verdict(entry: dict, label: str) -> str:
    """Whether the paired interval leaves out 0, and which way that is better."""
    bounds = entry["vs_first"][label]["ci95"]
    if bounds is None or bounds[0] <= 0 <= bounds[1]:
        return ""
    return " better" if (bounds[0] > 0) == entry["higher_is_better"] else " worse"


def markdown_comparison(summary: dict) -> str:
    labels = list(summary["models"])
    level = f"{summary['confidence']:.0%}"
    lines = ["# colord evaluation: models compared", ""]
    lines += [f"- `{label}`: {name}" for label, name in summary["models"].items()]
    for setting, table in summary["settings"].items():
        if not table:
            continue
        names = list(table)
        arrows = [f"{name} {'↑' if table[name]['higher_is_better'] else '↓'}" for name in names]
        lines += ["", f"## {SETTING_TITLES[setting]}", ""]
        lines += ["| model | " + " | ".join(arrows) + " |", "|" + "---|" * (len(names) + 1)]
        for label in labels:
            values = [table[name]["models"][label] for name in names]
            cells = [_cell(value["value"], value["ci95"]) for value in values]
            lines.append("| " + " | ".join([label, *cells]) + " |")
        for label in labels[1:]:
            differences = [table[name]["vs_first"][label] for name in names]
            cells = [
                _cell(difference["difference"], difference["ci95"]) + _verdict(table[name], label)
                for name, difference in zip(names, differences, strict=True)
            ]
            lines.append("| " + " | ".join([f"{label} − {labels[0]}", *cells]) + " |")
    lines += [
        "",
        f"Brackets: {level} percentile-bootstrap intervals over the held-out images "
        f"({summary['resamples']} resamples). A difference row compares with `{labels[0]}` on "
        "the same resampled images; it says better or worse only where its interval leaves out "
        "0. FID does not split by image and has no interval.",
        "",
    ]
    return "\n".join(lines)
