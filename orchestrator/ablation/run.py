"""`rlan ablate`: every seed fix off vs on, through the sweep machinery (a Tune grid of arms x seeds).

Arms (orchestrator/sweeps/trial_config.py): all_off (the pre-fix baseline), all_on, and without_<fix> for each of
the six fixes (all on except that one). Each arm runs once per seed; MLflow gets one parent run and a child
per (arm, seed) with tag rlan.arm. The report compares all_on with each without_<fix> arm.
"""

from __future__ import annotations

from pathlib import Path

from mlflow.tracking import MlflowClient

from orchestrator.ablation.report import collect_trials, markdown, plot_arms, summarize, verdicts
from orchestrator.sweeps.sweep import SweepSettings, run_sweep
from orchestrator.sweeps.trial_config import ARM_KEY, ARMS
from rlan.config import RunConfig


def run_ablation(
    base: RunConfig, settings: SweepSettings, seeds: list[int], arms: list[str] | None = None
) -> dict:
    settings.scheduler = "fifo"  # every arm runs all its epochs: early stopping would bias the comparison
    grid = {ARM_KEY: list(arms or ARMS), "training.seed": seeds}
    return run_sweep(base, None, settings, grid=grid)


def write_ablation_report(settings: SweepSettings, out: str | Path, command: str) -> Path:
    """Markdown + PNG under `out`, both also logged to the sweep's parent run under ablation/."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(collect_trials(settings.tracking_uri, settings.name))
    found = verdicts(summary)
    header = (
        f"# Ablation `{settings.name}`\n\nCommand: `{command}`\n\n"
        f"MLflow: `{settings.tracking_uri}`, experiment `{settings.experiment}`, parent run "
        f"`{settings.parent_run_id}`. Seeds per arm: {max((s.n for a in summary.values() for s in a.values()), default=0)}."
    )
    report = out / "ablation.md"
    report.write_text(markdown(summary, found, header))
    pictures = plot_arms(summary, out)
    client = MlflowClient(settings.tracking_uri)  # not a RunLogger: re-attaching would reopen the parent
    for path in [report, *pictures]:
        client.log_artifact(settings.parent_run_id, str(path), "ablation")
    return report
