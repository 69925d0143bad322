"""The paper's ablations, re-run on your budget: Table 3 (loss terms) and Table 4 (aggregation);
and colord's own levers for learning correspondence on a small budget.

Each row is one training run, `train(cfg)` with a few config overrides and `run.max_steps` (or
`run.max_minutes`, for an equal wall-clock budget) as the budget, followed by `colord eval` on a
held-out folder. Rows that train the same configuration (the
full model of Table 3 is the SCFT row of Table 4) share one run. The result is a table shaped like
the paper's, one row per variant, with the baselines measured in the same evaluation below them.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from colord.training.evaluation import metrics
from colord.training.evaluation.evaluate import (
    BASELINES,
    MODEL,
    EvalOptions,
    GeneratorColorizer,
    evaluate,
    results_table,
)
from colord.training.train.config import ConfigError, TrainConfig, apply_override, validate


@dataclass(frozen=True)
class Variant:
    key: str  # folder name of its run
    label: str  # row label, as the paper writes it
    overrides: tuple[str, ...]  # `section.key=value` on top of the base config


NO_TRIPLET = "loss.triplet=0"
# colord's levers, added one at a time on top of the base config (the v1 default-model recipe).
KAIMING = ("model.weight_init=kaiming",)
DENSE = (*KAIMING, "loss.correspondence=1.0")
MOTION = (
    *DENSE,
    "data.reference_shift=0.15",
    "data.reference_zoom=0.25",
    "data.reference_rotation=10.0",
    "data.min_crop_fraction=0.5",
)
FINE_GRID = (*MOTION, "model.attention_stride=8")
TABLES: dict[str, tuple[Variant, ...]] = {
    # Table 3: loss terms added one group at a time.
    "losses": (
        Variant("rec", "L_rec", ("loss.adv=0", "loss.perc=0", "loss.style=0", NO_TRIPLET)),
        Variant("rec_adv", "L_rec + L_adv", ("loss.perc=0", "loss.style=0", NO_TRIPLET)),
        Variant("rec_adv_perc_style", "L_rec + L_adv + L_perc + L_style", (NO_TRIPLET,)),
        Variant("full", "L_rec + L_adv + L_perc + L_style + L_tr", ()),
    ),
    # Table 4 (supplement A.1): how reference features join the sketch's. The triplet loss
    # supervises SCFT's attention, which the other two do not have.
    "aggregation": (
        Variant("add", "(a) Addition", ("model.aggregation=add", NO_TRIPLET)),
        Variant("adain", "(b) AdaIN", ("model.aggregation=adain", NO_TRIPLET)),
        Variant("full", "(c) SCFT", ()),
    ),
    # Levers for correspondence on a CPU budget, each row adding one to the row above.
    "correspondence": (
        Variant("full", "base recipe", ()),
        Variant("kaiming", "+ variance-preserving init", KAIMING),
        Variant("dense", "+ dense correspondence loss", DENSE),
        Variant("motion", "+ reference motion and scale crops", MOTION),
        Variant("fine_grid", "+ 1/8 attention grid", FINE_GRID),
        Variant("color_hint", "+ colour hint", (*FINE_GRID, "model.color_hint=true")),
    ),
}
TABLE_TITLES = {
    "losses": "Loss terms (paper Table 3)",
    "aggregation": "Aggregation (paper Table 4)",
    "correspondence": "Correspondence levers (colord)",
}


@dataclass
class AblationOptions:
    base: TrainConfig  # data.images, preset, batch size ... shared by every row
    held_out: Path  # folder `colord eval` measures each row on
    out: Path  # one sub-folder per run, plus ablation.md and ablation.json
    steps: int  # training steps per row: the budget (0: `minutes` is)
    tables: tuple[str, ...] = ("losses", "aggregation")
    eval: EvalOptions | None = None  # evaluation settings; images/out are filled in per row
    minutes: float = 0.0  # training wall time per row, the budget when `steps` is 0


def budget_text(steps: int, minutes: float) -> str:
    return f"{steps} training steps" if steps else f"{minutes:g} minutes of training"


def variant_config(
    base: TrainConfig, variant: Variant, out: Path, steps: int, minutes: float = 0.0
) -> TrainConfig:
    cfg = copy.deepcopy(base)
    for override in variant.overrides:
        apply_override(cfg, override)
    cfg.run.out = str(out / variant.key)
    cfg.run.max_steps = steps
    cfg.run.max_minutes = minutes
    validate(cfg)
    return cfg


def run_ablation(
    options: AblationOptions, *, features: metrics.FeatureExtractor | None = None
) -> dict:
    """Train and evaluate every row of the requested tables; write ablation.md and .json."""
    from colord.training.train.loop import train

    unknown = [name for name in options.tables if name not in TABLES]
    if unknown:
        raise ConfigError(f"unknown ablation table(s) {unknown}; choose from {', '.join(TABLES)}")
    if options.steps <= 0 and options.minutes <= 0:
        raise ConfigError("the budget must be at least one step or a positive time per row")
    if options.base.model.init and "aggregation" in options.tables:
        raise ConfigError(
            "the aggregation ablation trains new architectures: leave model.init empty"
        )
    out = Path(options.out)
    eval_base = options.eval or EvalOptions(images=options.held_out, out=out)
    variants = {v.key: v for name in options.tables for v in TABLES[name]}
    configs = {
        key: variant_config(options.base, v, out, options.steps, options.minutes)
        for key, v in variants.items()
    }
    metric_names = eval_base.metrics
    if features is None and "fid" in metric_names:
        features = metrics.load_fid_features(eval_base.inception_weights, device=eval_base.device)

    evaluations: dict[str, dict] = {}
    for key, cfg in configs.items():
        result = train(cfg)
        colorizer = GeneratorColorizer(
            result.generator, name=variants[key].label, device=eval_base.device
        )
        row_options = replace(eval_base, images=options.held_out, out=Path(cfg.run.out) / "eval")
        report = evaluate(colorizer, row_options, load_features=lambda: features)
        evaluations[key] = {
            "overrides": list(variants[key].overrides),
            "steps": result.step,
            "backbone": result.backbone,
            "run": str(result.run_dir),
            "settings": report.summary["settings"],
        }

    summary = {
        "steps_per_row": options.steps,
        "minutes_per_row": options.minutes,
        "held_out": str(options.held_out),
        "feature_backbone": None if features is None else features.name,
        "tables": {
            name: [{"key": v.key, "label": v.label} for v in TABLES[name]]
            for name in options.tables
        },
        "runs": evaluations,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablation.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "ablation.md").write_text(ablation_markdown(summary))
    return summary


def row_metrics(settings: dict, method: str) -> dict[str, dict]:
    """One table row: every metric of `method` in both settings, named `<setting>: <metric>`."""
    return {
        f"{setting}: {name}": value
        for setting, by_method in settings.items()
        for name, value in by_method[method].items()
    }


def ablation_table(summary: dict, table: str) -> str:
    runs = summary["runs"]
    entries: Sequence[dict] = summary["tables"][table]
    # under a time budget, the steps each row managed are part of the result
    timed = bool(summary.get("minutes_per_row"))
    rows = {
        (f"{e['label']} ({runs[e['key']]['steps']} steps)" if timed else e["label"]): row_metrics(
            runs[e["key"]]["settings"], MODEL
        )
        for e in entries
    }
    first = runs[entries[0]["key"]]["settings"]
    for baseline in BASELINES:
        rows[f"baseline: {baseline}"] = row_metrics(first, baseline)
    return results_table(rows, first_column=TABLE_TITLES[table].split(" (")[0])


def ablation_markdown(summary: dict) -> str:
    lines = [
        "# colord ablations",
        "",
        f"{budget_text(summary['steps_per_row'], summary.get('minutes_per_row', 0.0))} per row; "
        f"evaluated on {summary['held_out']}.",
    ]
    if summary["feature_backbone"]:
        lines.append(f"FID features: {summary['feature_backbone']}.")
    for table in summary["tables"]:
        lines += ["", f"## {TABLE_TITLES[table]}", "", ablation_table(summary, table)]
    lines += [
        "",
        "Baseline rows come from the evaluation of each table's first row; `no_reference` is "
        "that row's model with a zero-filled reference.",
        "",
    ]
    return "\n".join(lines)
