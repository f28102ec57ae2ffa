"""A sweep comparison as records (one Trial per child run, ranked) and in its three forms: an aligned table,
CSV and JSON. orchestrator/comparison/compare.py fills it from MLflow; orchestrator/comparison/report.py writes its files."""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from orchestrator.comparison.chance import ChanceCheck
from rlan.config import ConfigError
from rlan.diagnostics import COMPARE_KEYS, SCORE_DEFINITION

DEFAULT_METRIC, DEFAULT_MODE = "heldout/exact_match", "max"
DIAGNOSTICS = COMPARE_KEYS
FORMATS = ("table", "csv", "json")


class CompareError(ConfigError):
    """A compare problem in one line (the CLI exits 2 on it)."""


@dataclass
class Trial:
    run_id: str
    trial_id: str
    status: str  # the MLflow run status: FINISHED, KILLED (stopped early), FAILED, RUNNING
    stop_reason: str  # completed, asha, unhealthy, error ('' when the tag is missing)
    value: float | None  # last value of the metric; None when never logged (or not finite)
    epochs: int | None
    knobs: dict[str, Any]
    diagnostics: dict[str, float]
    params: dict[str, str]


@dataclass
class SweepComparison:
    sweep: str
    tracking_uri: str
    parent_run_id: str
    metric: str
    mode: str
    knobs: list[str]
    trials: list[Trial]  # best first; trials without the metric last
    best_config_yaml: str | None
    importance: dict[str, float] | None
    importance_note: str  # how importance was computed, or why it is unavailable
    files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    chance: ChanceCheck | None = None  # whether the knob effects stand out from shuffled scores

    @property
    def best(self) -> Trial | None:
        return self.trials[0] if self.trials and self.trials[0].value is not None else None

    def diagnostic_keys(self) -> list[str]:
        return [k for k in DIAGNOSTICS if k != self.metric and any(k in t.diagnostics for t in self.trials)]

    def rows(self) -> list[dict[str, Any]]:
        """One flat record per trial, in rank order (the CSV rows)."""
        return [
            {
                "rank": rank,
                "trial_id": t.trial_id,
                "run_id": t.run_id,
                "status": t.status,
                "stop_reason": t.stop_reason,
                self.metric: t.value,
                "epochs": t.epochs,
                **{k: t.knobs.get(k) for k in self.knobs},
                **{k: t.diagnostics.get(k) for k in self.diagnostic_keys()},
            }
            for rank, t in enumerate(self.trials, start=1)
        ]


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


# ------------------------------------------------------------------------------------------ formats
def format_comparison(comparison: SweepComparison, fmt: str = "table") -> str:
    """table (aligned, a header line, one row per trial, then a summary), csv or json."""
    if fmt == "csv":
        buffer = io.StringIO()
        rows = comparison.rows()
        fields = list(rows[0]) if rows else ["rank", "trial_id", "run_id", "status", "stop_reason"]
        writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows([{k: "" if v is None else v for k, v in row.items()} for row in rows])
        return buffer.getvalue()
    if fmt == "json":
        return json.dumps(_as_json(comparison), indent=2, default=str)  # YAML dates in params
    if fmt == "table":
        return _table(comparison)
    raise CompareError(f"format '{fmt}': expected one of {', '.join(FORMATS)}")


def _as_json(c: SweepComparison) -> dict[str, Any]:
    trials = [
        {
            "rank": rank,
            "trial_id": t.trial_id,
            "run_id": t.run_id,
            "status": t.status,
            "stop_reason": t.stop_reason,
            "value": t.value,
            "epochs": t.epochs,
            "knobs": t.knobs,
            "diagnostics": {k: _finite(v) for k, v in t.diagnostics.items()},  # JSON has no NaN
        }
        for rank, t in enumerate(c.trials, start=1)
    ]
    return {
        "sweep": c.sweep,
        "tracking_uri": c.tracking_uri,
        "parent_run_id": c.parent_run_id,
        "metric": c.metric,
        "mode": c.mode,
        "knobs": c.knobs,
        "trials": trials,
        "best_trial": c.best.trial_id if c.best else None,
        "best_config": c.best_config_yaml,
        "importance": c.importance,
        "importance_note": c.importance_note,
        "chance": asdict(c.chance) if c.chance else None,
        "files": c.files,
        "notes": c.notes,
    }


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace(" ", "")  # one token per cell, so the table splits on whitespace


def _table(c: SweepComparison) -> str:
    leaves = [k.rsplit(".", 1)[-1] for k in c.knobs]
    labels = [leaf if leaves.count(leaf) == 1 else key for leaf, key in zip(leaves, c.knobs)]
    header = ["rank", "trial", "status", c.metric, "epochs", *labels, *c.diagnostic_keys()]
    lines = [header]
    for row in c.rows():
        status = f"{row['status']}/{row['stop_reason'] or '-'}"
        cells = [row["rank"], row["trial_id"], status, row[c.metric], row["epochs"]]
        lines.append([_cell(v) for v in cells + [row[k] for k in c.knobs + c.diagnostic_keys()]])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines]
    best = c.best.trial_id if c.best else "none (no trial has the metric)"
    text += ["", f"sweep '{c.sweep}' (parent run {c.parent_run_id}): {len(c.trials)} trials by {c.metric}"]
    text[-1] += f" ({c.mode}); best: {best}"
    if c.metric == "score":
        text.append(SCORE_DEFINITION)
    if c.importance is not None:
        ranked = ", ".join(f"{k} {v:.2f}" for k, v in c.importance.items())
        text.append(f"importance ({c.importance_note}): {ranked}")
    else:
        text.append(f"importance {c.importance_note}")
    if c.chance is not None:
        text.append(c.chance.note())
    text += [f"note: {note}" for note in c.notes]
    text += [f"wrote {path}" for path in c.files]
    if c.best_config_yaml:
        text += ["best config (YAML for -c):", c.best_config_yaml.rstrip()]
    return "\n".join(text)
