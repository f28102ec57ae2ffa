"""The ablation report: per-arm diagnostics (mean and spread over seeds), a verdict per fix, markdown + PNGs.

Every trial's epoch series comes from MLflow, so a report can be rebuilt for any past ablation.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from mlflow.tracking import MlflowClient

from orchestrator.tracking.experiments import search_all_runs
from rlan.diagnostics import ABLATION_KEYS

# column -> (MLflow metric, how its epoch series becomes one number per trial), from the catalogue
DIAGNOSTICS: dict[str, tuple[str, str]] = ABLATION_KEYS


def _logit_abs_max(row: dict[str, float]) -> float:
    low, high = row["logit_min"], row["logit_max"]
    return math.nan if math.isnan(low) or math.isnan(high) else max(-low, high)


# name -> how one trial's row of DIAGNOSTICS gives it (computed here, so any past ablation reports it)
DERIVED = {"logit_abs_max": _logit_abs_max}
REPORTED = [*DIAGNOSTICS, *DERIVED]


def reduce_series(values: list[float], how: str) -> float:
    if not values:
        return math.nan
    if how == "sum":
        return float(sum(values))
    if how == "min":
        return float(min(values))
    if how == "max":
        return float(max(values))
    if how == "active_mean":  # the epochs in which the term was switched on
        active = [v for v in values if v != 0.0]
        return float(statistics.fmean(active)) if active else 0.0
    return float(values[-1])


@dataclass
class Spread:
    mean: float
    std: float
    n: int

    def text(self) -> str:
        if math.isnan(self.mean):
            return "n/a"
        return f"{self.mean:.4g} ± {self.std:.2g}" if self.n > 1 else f"{self.mean:.4g}"


def spread(values: list[float]) -> Spread:
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return Spread(math.nan, math.nan, 0)
    return Spread(statistics.fmean(finite), statistics.stdev(finite) if len(finite) > 1 else 0.0, len(finite))


def collect_trials(tracking_uri: str, sweep: str) -> dict[str, list[dict[str, float]]]:
    """{arm: [per-trial diagnostics]} from the sweep's child runs (tag rlan.arm)."""
    client = MlflowClient(tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    query = f"tags.`rlan.sweep` = '{sweep}' and tags.`rlan.role` = 'trial'"
    arms: dict[str, list[dict[str, float]]] = {}
    for run in search_all_runs(client, experiments, query):
        arm = run.data.tags.get("rlan.arm")
        if not arm:
            continue
        row = {}
        for name, (key, how) in DIAGNOSTICS.items():
            history = sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)
            row[name] = reduce_series([m.value for m in history], how)
        for name, derive in DERIVED.items():
            row[name] = derive(row)
        row["run_id"] = run.info.run_id
        arms.setdefault(arm, []).append(row)
    return arms


def summarize(arms: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, Spread]]:
    return {
        arm: {name: spread([t[name] for t in trials]) for name in REPORTED} for arm, trials in arms.items()
    }


@dataclass(frozen=True)
class Expectation:
    fix: str
    claim: str  # the seed's expected outcome, in words
    diagnostic: str
    rule: str  # 'lower', 'higher', 'zero', 'positive', 'at_most'
    threshold: float = 0.0


EXPECTATIONS = [
    Expectation(
        "fix1_logit_clamp", "output logits held near the clamp (lower |logit| max)", "logit_abs_max", "lower"
    ),
    Expectation("fix1_logit_clamp", "no NaN batches", "nan_batches", "zero"),
    Expectation("fix2_meta_cap", "task loss dominates: meta share <= 25%", "meta_share_max", "at_most", 0.25),
    Expectation(
        "fix3_output_equivariance", "a non-zero output equivariance loss", "output_equiv_loss", "positive"
    ),
    Expectation(
        "fix4_pool_context_simple",
        "a non-zero context equivariance loss",
        "context_equiv_loss",
        "positive",
        1e-4,
    ),
    Expectation("fix5_clue_variance", "clue counts vary across samples (higher std)", "clues_std", "higher"),
    Expectation(
        "fix6_stop_saturation",
        "a learnable stop predictor (fewer saturated stop logits)",
        "stop_saturated_share",
        "lower",
    ),
]


@dataclass
class Verdict:
    expectation: Expectation
    on: Spread
    off: Spread
    observed: bool
    within_spread: bool
    note: str


def judge(expectation: Expectation, on: Spread, off: Spread) -> Verdict:
    """Was the fix's expected outcome seen with the fix on (all_on) versus off (without_<fix>)?"""
    rule, t = expectation.rule, expectation.threshold
    if math.isnan(on.mean) or math.isnan(off.mean):
        return Verdict(expectation, on, off, False, False, "the diagnostic is missing for an arm")
    if rule == "zero":
        observed = on.mean == 0.0
        differs = off.mean > 0.0
    elif rule == "positive":
        observed = on.mean > t
        differs = off.mean <= t
    elif rule == "at_most":
        observed = on.mean <= t + 1e-9
        differs = off.mean > t + 1e-9
    elif rule == "higher":
        observed = differs = on.mean > off.mean
    elif rule == "lower":
        observed = differs = on.mean < off.mean
    else:
        raise ValueError(f"unknown rule {rule}")
    gap = abs(on.mean - off.mean)
    within = on.n > 1 and off.n > 1 and 0 < gap <= on.std + off.std
    if gap == 0:
        note = "identical with and without the fix: it had no effect on this diagnostic in this run"
        note = ("observed, but " if observed else "not observed; ") + note
    elif not observed:
        note = "expected outcome not observed"
    elif not differs:
        note = "observed, but the arm without the fix shows it too"
    else:
        note = "observed, and absent without the fix"
    if within:
        note += "; the difference is inside the seed-to-seed spread"
    return Verdict(expectation, on, off, observed, within, note)


def verdicts(summary: dict[str, dict[str, Spread]]) -> list[Verdict]:
    found = []
    for e in EXPECTATIONS:
        on, off = summary.get("all_on"), summary.get(f"without_{e.fix}")
        if on is None or off is None:
            continue
        found.append(judge(e, on[e.diagnostic], off[e.diagnostic]))
    if "all_on" in summary and "all_off" in summary:
        for overall in (
            Expectation("all six", "higher TTA consensus", "tta_consensus", "higher"),
            Expectation("all six", "a higher held-out score", "score", "higher"),
        ):
            d = overall.diagnostic
            found.append(judge(overall, summary["all_on"][d], summary["all_off"][d]))
    return found


def markdown(summary: dict[str, dict[str, Spread]], found: list[Verdict], header: str) -> str:
    arms = sorted(summary, key=lambda a: (a != "all_off", a != "all_on", a))
    lines = [
        header,
        "",
        "## Verdicts (all_on vs the arm without the fix)",
        "",
        "| fix | expected | diagnostic | fix on | fix off | observed | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for v in found:
        e = v.expectation
        lines.append(
            f"| {e.fix} | {e.claim} | {e.diagnostic} | {v.on.text()} | {v.off.text()} | "
            f"{'yes' if v.observed else 'no'} | {v.note} |"
        )
    lines += [
        "",
        "## Diagnostics per arm (mean ± std over seeds)",
        "",
        "| diagnostic | " + " | ".join(arms) + " |",
        "|---|" + "---|" * len(arms),
    ]
    for name in REPORTED:
        lines.append(f"| {name} | " + " | ".join(summary[a][name].text() for a in arms) + " |")
    return "\n".join(lines) + "\n"


def plot_arms(summary: dict[str, dict[str, Spread]], out: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    from orchestrator.tracking import plots  # sets the Agg backend

    arms = sorted(summary, key=lambda a: (a != "all_off", a != "all_on", a))
    names = [n for n in REPORTED if any(not math.isnan(summary[a][n].mean) for a in arms)]
    cols = 3
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 2.8 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        means = [summary[a][name].mean for a in arms]
        errs = [summary[a][name].std if summary[a][name].n > 1 else 0.0 for a in arms]
        ax.bar(
            range(len(arms)), means, yerr=errs, color=["#888888", "#2ECC40"] + ["#0074D9"] * (len(arms) - 2)
        )
        ax.set_title(name, fontsize=9)
        ax.set_xticks(
            range(len(arms)),
            [a.replace("without_", "-").replace("_", " ") for a in arms],
            rotation=60,
            ha="right",
            fontsize=7,
        )
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.tight_layout()
    return [plots.save_figure(fig, out / "ablation_diagnostics.png")]
