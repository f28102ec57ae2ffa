"""The MLflow record of one training run, whichever command drives it: `rlan debug`, `rlan train`, a sweep trial.

A RunRecorder owns, for all three:
  - opening the run, or re-attaching the newest one that carries the caller's identity tags (a Train run
    started again with the same name and storage, a resumed sweep trial), with the config as params; on a
    re-attach, params the config changed become `rlan.resumed_with.<key>` tags (MLflow params are immutable);
  - logging each epoch once (step = epoch, 1-based): an epoch at or below the last one in MLflow is skipped
    (a restarted worker group re-reports from its checkpoint), a jump past it is recorded in `rlan.metrics_gap`;
    `record` queues epochs and `flush` sends them in one request, so a sweep can coalesce them;
  - epochs whose report was lost (a driver or controller that died after Train kept the epoch's checkpoint)
    read back from the Train run's kept checkpoints (`recover_from_checkpoints`);
  - buffering through MLflow outages (RunLogger, orchestrator/tracking/run_logger.py);
  - the learning curves, over the catalogue's curve keys (rlan/diagnostics.py): from the epochs it recorded
    when MLflow held none before it, else read back from the run;
  - the end-of-run artifacts: the resolved config, the learning curves, and what the final checkpoint folder
    holds (plots/*.png and the per-query tables that render_final_plots wrote, and checkpoint.pt).
The callers are thin adapters: orchestrator/runs/debug.py, orchestrator/runs/train.py, orchestrator/sweeps/trial_runs.py.
"""

from __future__ import annotations

import sys
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from mlflow import MlflowClient

from orchestrator.tracking import plots
from orchestrator.tracking.artifacts import checkpointed_metrics, local_checkpoint, log_plot_folder
from orchestrator.tracking.names import sanitize_key
from orchestrator.tracking.retries import with_retries
from orchestrator.tracking.run_logger import MAX_PARAM_LENGTH, RunLogger
from orchestrator.tracking.uri import TrackingError, resolve_tracking_uri
from rlan.config import RunConfig
from rlan.diagnostics import curve_keys

ERROR_TAG = "rlan.error"
ARTIFACT_ERROR_TAG = "rlan.artifact_error"


def find_run(client: MlflowClient, experiment_id: str, identity: dict[str, str]) -> Any | None:
    """The newest run of the experiment carrying every identity tag. Values holding a quote (storage paths
    may) are compared here rather than in MLflow's filter."""
    plain = {k: v for k, v in identity.items() if "'" not in v}
    query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in plain.items())
    runs = with_retries(
        client.search_runs,
        [experiment_id],
        filter_string=query,
        max_results=100,
        order_by=["attributes.start_time DESC"],
        what="search_runs",
    )
    matching = [run for run in runs if all(run.data.tags.get(k) == v for k, v in identity.items())]
    return matching[0] if matching else None


class RunRecorder:
    """One run's epochs, curves and end artifacts (module docstring). Open it with `open` or `attach`."""

    def __init__(self, logger: RunLogger, config: RunConfig | None, objective: str | None, last_step: int):
        self.logger = logger
        self.config = config
        self.keys = curve_keys(objective)
        self.last_step = last_step  # the last epoch MLflow has (or will have, once flushed)
        self._queued: list[tuple[int, dict[str, float]]] = []
        # Curve points of every epoch this recorder took; None when MLflow held epochs before it (then the
        # curves are read back from the run).
        self._points: dict[str, list[tuple[int, float]]] | None = {} if last_step == 0 else None
        self._recorded = False
        self._ended = False

    @classmethod
    def open(
        cls,
        config: RunConfig,
        tracking_uri: str | None,
        experiment: str,
        *,
        run_name: str,
        identity: dict[str, str] | None = None,
        tags: dict[str, Any] | None = None,
        parent_run_id: str | None = None,
        experiment_id: str | None = None,
        objective: str | None = None,
    ) -> RunRecorder:
        """The run carrying `identity` re-attached (any status), else a new one; identity=None: always new."""
        found = None
        if identity:
            uri = resolve_tracking_uri(tracking_uri)
            client = MlflowClient(tracking_uri=uri)
            if experiment_id is None:
                existing = with_retries(client.get_experiment_by_name, experiment, what="experiment")
                if existing is not None and existing.lifecycle_stage == "active":
                    experiment_id = existing.experiment_id
            if experiment_id is not None:
                found = find_run(client, experiment_id, identity)
        all_tags = {**(tags or {}), **(identity or {})}
        logger = RunLogger(
            tracking_uri,
            experiment,
            run_name=run_name,
            tags=all_tags,
            parent_run_id=parent_run_id,
            run_id=found.info.run_id if found else None,
            experiment_id=experiment_id,
        )
        flat = {sanitize_key(k): str(v)[:MAX_PARAM_LENGTH] for k, v in config.to_flat_dict().items()}
        if found is None:
            logger.log_params(flat)
            return cls(logger, config, objective, 0)
        if ERROR_TAG in found.data.tags:  # the failure this attempt resumes from
            with_retries(logger.client.delete_tag, logger.run_id, ERROR_TAG, what="delete_tag")
        logged = found.data.params
        logger.log_params({k: v for k, v in flat.items() if k not in logged})
        logger.set_tags({f"rlan.resumed_with.{k}": v for k, v in flat.items() if logged.get(k, v) != v})
        return cls(logger, config, objective, logger.last_logged_step("epoch") or 0)

    @classmethod
    def attach(cls, tracking_uri: str, run_id: str) -> RunRecorder:
        """The run `run_id`, for a process that only logs its epochs (Ray Train's controller)."""
        logger = RunLogger(tracking_uri, "", run_id=run_id)
        return cls(logger, None, None, logger.last_logged_step("epoch") or 0)

    @property
    def run_id(self) -> str:
        return self.logger.run_id

    @property
    def tracking_uri(self) -> str:
        return self.logger.tracking_uri

    # ------------------------------------------------------------------------------------ epochs
    def start_after(self, epoch: int) -> None:
        """Epochs up to `epoch` belong to another run (a debug run resumed from a checkpoint): not a gap."""
        self.last_step = max(self.last_step, epoch)

    def record(self, epoch: int, metrics: dict[str, Any]) -> bool:
        """Queue one epoch's numeric metrics for the next flush; False for an epoch MLflow already has."""
        if epoch <= self.last_step:
            return False
        if epoch > self.last_step + 1:
            self.logger.note_gap(range(self.last_step + 1, epoch))  # reports that never reached us
        numeric = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}
        self._queued.append((epoch, numeric))
        self.last_step, self._recorded = epoch, True
        if self._points is not None:
            for key in self.keys:
                if key in numeric:
                    self._points.setdefault(key, []).append((epoch, numeric[key]))
        return True

    def recover_from_checkpoints(self, folder: str, missing: range, storage: str, who: str) -> None:
        """Queue the epochs of `missing` that the Train run at `folder` kept checkpoints of (each holds the
        metrics of the epoch it ends); the others stay a gap, which the next `record` notes. An unreadable
        checkpoint is one line on stderr for `who`, never an error: training must go on."""
        try:
            found = checkpointed_metrics(folder, missing, storage)
        except Exception as exc:
            print(
                f"[rlan] {who}: epochs {missing.start}-{missing.stop - 1} not recovered: {exc}",
                file=sys.stderr,
            )
            return
        for epoch in sorted(found):
            self.record(epoch, found[epoch])

    @property
    def queued(self) -> bool:
        return bool(self._queued)

    def flush(self) -> None:
        """Send the queued epochs in one request (RunLogger keeps them through an outage)."""
        rows, self._queued = self._queued, []
        if rows:
            self.logger.log_steps(rows)

    def log_epoch(self, epoch: int, metrics: dict[str, Any]) -> None:
        if self.record(epoch, metrics):
            self.flush()

    def note_gap(self, steps) -> None:
        self.logger.note_gap(steps)

    def history(self, keys: list[str]) -> dict[int, dict[str, float]]:
        """{epoch: {key: value}} of `keys`, read back from the run."""
        by_step: dict[int, dict[str, float]] = {}
        for key in keys:
            for step, value in self.logger.metric_history(key):
                by_step.setdefault(step, {})[key] = value
        return by_step

    def curves(self) -> dict[str, list[tuple[int, float]]]:
        """{key: [(epoch, value), ...]} of the curve keys that have points."""
        if self._points is not None and self._recorded:
            return {k: v for k, v in self._points.items() if v}
        by_step = self.history(self.keys)
        series = {k: [(s, row[k]) for s, row in sorted(by_step.items()) if k in row] for k in self.keys}
        return {k: v for k, v in series.items() if v}

    # ------------------------------------------------------------------------------------ the end
    def log_end_artifacts(
        self,
        checkpoint: str | None,
        *,
        storage: str = "",
        log_checkpoint: bool = True,
        title: str = "learning curves",
        draw_lock: AbstractContextManager | None = None,
    ) -> None:
        """Config, learning curves, and the final checkpoint folder's plots, tables and (optionally) weights.

        draw_lock: held while drawing (pyplot is not thread-safe; sweeps draw on
        several writer threads). A checkpoint that cannot be read or uploaded is reported in
        ARTIFACT_ERROR_TAG and never fails the run; MLflow outages and refusals propagate."""
        if self.config is not None:
            self.logger.log_text(self.config.to_yaml(), "config/resolved_config.yaml")
        series = self.curves()
        if series:
            with draw_lock or nullcontext():
                self.logger.log_figure(
                    plots.plot_learning_curves(series, None, title), "plots/learning_curves.png"
                )
        if not checkpoint:
            return
        try:
            with local_checkpoint(checkpoint, storage) as folder:
                log_plot_folder(self.logger, folder)
                if log_checkpoint:
                    self.logger.log_artifact(str(Path(folder) / "checkpoint.pt"), "checkpoint")
        except TrackingError:
            raise
        except Exception as exc:  # one artifact that cannot be read or uploaded never fails the run
            line = f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:500]
            print(f"[rlan] run {self.run_id}: checkpoint artifacts not logged: {line}", file=sys.stderr)
            self.logger.set_tags({ARTIFACT_ERROR_TAG: line})

    def end(self, status: str = "FINISHED", tags: dict[str, Any] | None = None) -> None:
        """Send what is queued, set the closing tags and terminate the run (once)."""
        self.flush()
        if tags:
            self.logger.set_tags(tags)
        self.logger.end(status)
        self._ended = True

    def __enter__(self) -> RunRecorder:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._ended:
            return
        if exc_type is None:
            self.end("FINISHED")
        else:
            self.end("KILLED" if issubclass(exc_type, KeyboardInterrupt) else "FAILED")
