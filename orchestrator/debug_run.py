"""`rlan debug`: one in-process training run (no Ray) that logs to MLflow and ends with a diagnostics table."""

from __future__ import annotations

import tempfile

from tqdm.auto import tqdm

from orchestrator.artifacts import attention_figure, log_run_artifacts, summary_table
from orchestrator.tracking import RunLogger, run_tags
from rlan.config import RunConfig
from rlan.engine import Hooks, Trainer
from rlan.schedule import stages_at

EPOCH_LINE_KEYS = [
    ("train/loss", "loss"),
    ("train/exact_match", "train EM"),
    ("heldout/exact_match", "held-out EM"),
    ("eval/exact_match", "eval EM"),
    ("nan_batches", "NaN"),
    ("samples_per_s", "samples/s"),
]


def epoch_line(epoch: int, total: int, metrics: dict[str, float]) -> str:
    parts = [f"{label} {metrics[key]:.4g}" for key, label in EPOCH_LINE_KEYS if key in metrics]
    return f"epoch {epoch + 1}/{total}: " + ", ".join(parts)


class MlflowReporter:
    """Metrics of each epoch to the run (step = epoch number, 1-based) and one progress line."""

    def __init__(self, logger: RunLogger, total_epochs: int, echo: bool = True):
        self.logger = logger
        self.total_epochs = total_epochs
        self.echo = echo
        self.last_checkpoint: str | None = None
        self.epoch_bar = tqdm(total=total_epochs, desc="epochs", disable=not echo, dynamic_ncols=True)

    def report(self, epoch: int, metrics: dict[str, float], checkpoint_dir: str | None) -> None:
        self.logger.log_metrics(metrics, step=epoch + 1)
        self.last_checkpoint = checkpoint_dir
        self.epoch_bar.update(1)
        if self.echo:
            tqdm.write(epoch_line(epoch, self.total_epochs, metrics))

    def close(self) -> None:
        self.epoch_bar.close()


def run_debug(
    config: RunConfig,
    tracking_uri: str,
    experiment: str | None = None,
    run_name: str | None = None,
    hooks: Hooks | None = None,
    echo: bool = True,
    resume_from: str | None = None,
) -> tuple[str, dict[str, float]]:
    """Train in this process; returns (MLflow run id, last epoch's metrics). Raises on training failure."""
    logger = RunLogger(
        tracking_uri,
        experiment or config.logging.experiment_name,
        run_name=run_name or config.logging.run_name or "debug",
        tags=run_tags(config, {"rlan.command": "debug"}),
    )
    reporter = MlflowReporter(logger, config.training.max_epochs, echo)
    with logger, tempfile.TemporaryDirectory(prefix="rlan-debug-") as scratch:
        logger.log_params(config.to_flat_dict())
        trainer = Trainer(config, reporter, checkpoint_root=scratch, hooks=hooks, progress=echo)
        if resume_from:
            trainer.resume(resume_from)
            logger.set_tags({"rlan.resumed_from": str(resume_from)})
        metrics = trainer.fit()
        reporter.close()
        results = trainer.evaluation.last_results
        sets = trainer.evaluation.sets()
        spec = (sets.get("heldout") or sets["eval"] or [None])[0]
        fig = None
        if spec is not None:
            fig = attention_figure(trainer.core, spec, stages_at(config, trainer.epoch - 1), trainer.device)
        log_run_artifacts(logger, config, trainer.history, results, reporter.last_checkpoint, fig)
    print(summary_table(metrics))
    return logger.run_id, metrics
