"""`rlan debug`: one in-process training run (no Ray) that logs to MLflow and ends with a diagnostics table."""

from __future__ import annotations

import contextlib
import tempfile

from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
from tqdm.auto import tqdm

from orchestrator.tracking.artifacts import render_final_plots, summary_table
from orchestrator.tracking.recorder import RunRecorder
from orchestrator.tracking.uri import run_tags
from rlan import engine
from rlan.config import RunConfig
from rlan.diagnostics import EPOCH_LINE_KEYS


def epoch_line(epoch: int, total: int, metrics: dict[str, float]) -> str:
    parts = [f"{label} {metrics[key]:.4g}" for key, label in EPOCH_LINE_KEYS if key in metrics]
    return f"epoch {epoch + 1}/{total}: " + ", ".join(parts)


class MlflowReporter:
    """The engine's Reporter: each epoch to the run's recorder (step = epoch number, 1-based), one progress line."""

    def __init__(self, recorder: RunRecorder, total_epochs: int, echo: bool = True):
        self.recorder = recorder
        self.total_epochs = total_epochs
        self.echo = echo
        self.last_checkpoint: str | None = None
        self.epoch_bar = tqdm(total=total_epochs, desc="epochs", disable=not echo, dynamic_ncols=True)

    def report(self, epoch: int, metrics: dict[str, float], checkpoint_dir: str | None) -> None:
        self.recorder.log_epoch(epoch + 1, metrics)
        self.last_checkpoint = checkpoint_dir
        self.epoch_bar.update(1)
        if self.echo:
            tqdm.write(epoch_line(epoch, self.total_epochs, metrics))

    def close(self) -> None:
        self.epoch_bar.close()


@contextlib.contextmanager
def _finishing(monitor: SystemMetricsMonitor):
    """Stop the monitor (its last samples logged) before the run ends."""
    try:
        yield
    finally:
        monitor.finish()


def run_debug(
    config: RunConfig,
    tracking_uri: str,
    experiment: str | None = None,
    run_name: str | None = None,
    echo: bool = True,
    resume_from: str | None = None,
) -> tuple[str, dict[str, float]]:
    """Train in this process; returns (MLflow run id, last epoch's metrics). Raises on training failure."""
    recorder = RunRecorder.open(
        config,
        tracking_uri,
        experiment or config.logging.experiment_name,
        run_name=run_name or config.logging.run_name or "debug",
        tags=run_tags(config, {"rlan.command": "debug"}),
    )
    reporter = MlflowReporter(recorder, config.training.max_epochs, echo)
    # The run trains in this process, so MLflow's own system metrics (CPU, memory, disk, network, GPU, sampled
    # every MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL seconds, default 10) describe it; system/process/* keeps
    # them apart from the engine's per-epoch system/* metrics.
    monitor = SystemMetricsMonitor(
        recorder.run_id, sampling_interval=10, node_id="process", tracking_uri=recorder.tracking_uri
    )
    monitor.start()
    with recorder, tempfile.TemporaryDirectory(prefix="rlan-debug-") as scratch, _finishing(monitor):
        state = engine.build(config)
        if resume_from:
            engine.resume(state, resume_from)
            recorder.start_after(state.epoch)
            recorder.logger.set_tags({"rlan.resumed_from": str(resume_from)})
        metrics = engine.fit(state, reporter, checkpoint_root=scratch, progress=echo)
        reporter.close()
        # The same end artifacts as a Train run: plots rendered into the final checkpoint folder, then logged.
        final = reporter.last_checkpoint
        if final:
            render_final_plots(state, final)
        recorder.log_end_artifacts(final)
    print(summary_table(metrics))
    return recorder.run_id, metrics
