"""The child runs of a sweep in MLflow: every call the sweep callback makes, run on its writer threads.

`TrialRuns` is the half of MlflowSweepCallback (orchestrator/sweep_tracking.py) that talks to MLflow: it opens
or re-attaches a trial's child run by tags, coalesces its epochs into few requests, notes gaps, draws the
learning curves from the results it saw, logs the end-of-trial artifacts and ends the run. The callback's
other half runs on Tune's loop and only submits these calls (the module docstring there has the rules for
outages, refusals and ordering). Every method here runs on a writer thread; one trial's calls on one thread.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from types import SimpleNamespace

from mlflow.tracking import MlflowClient

from orchestrator import plots
from orchestrator.artifacts import local_checkpoint, log_plot_folder
from orchestrator.tracking import RunLogger, TrackingError, TrackingRefused, TrackingUnavailable, with_retries
from orchestrator.train_run import CHECKPOINT_RANK
from orchestrator.trial_config import ARM_KEY, trial_config
from rlan.config import RunConfig

ARTIFACT_ERROR_TAG = "rlan.artifact_error"
_PYPLOT = threading.Lock()  # pyplot's figure registry is not thread-safe: the writers draw one at a time
TUNE_KEYS = {
    "training_iteration",
    "time_this_iter_s",
    "time_total_s",
    "timestamp",
    "pid",
    "hostname",
    "node_ip",
    "done",
    "trial_id",
    "date",
    "iterations_since_restore",
    "time_since_restore",
    "checkpoint_dir_name",
    "should_checkpoint",
    "checkpoint_path",
    "experiment_tag",
    CHECKPOINT_RANK,  # the sweep metric again, for Ray Train's checkpoint retention
}


def find_run(client: MlflowClient, experiment_id: str, tags: dict[str, str]) -> str | None:
    """The run id carrying every one of `tags`, via MLflow's search API."""
    query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    runs = with_retries(
        client.search_runs, [experiment_id], filter_string=query, max_results=1, what="search_runs"
    )
    return runs[0].info.run_id if runs else None


class TrialRuns:
    """MLflow state per trial (the callback sets the attributes in its __init__)."""

    # -------------------------------------------------------------------------------- trial runs
    def _trial_config(self, trial) -> RunConfig:
        return trial_config(self.base_config, trial.config)

    def _logger(self, trial) -> RunLogger:
        logger = self._loggers.get(trial.trial_id)
        if logger is not None:
            return logger
        tags = {"rlan.sweep": self.sweep_name, "rlan.role": "trial", "rlan.trial_id": trial.trial_id}
        if ARM_KEY in trial.config:
            tags["rlan.arm"] = trial.config[ARM_KEY]
        client = MlflowClient(self.tracking_uri)
        if not self._experiment_id:
            parent = with_retries(client.get_run, self.parent_run_id, what="get_run")
            self._experiment_id = parent.info.experiment_id
        existing = find_run(client, self._experiment_id, tags)
        logger = RunLogger(
            self.tracking_uri,
            self.experiment_name,
            run_name=f"{self.sweep_name}-{trial.trial_id}",
            tags=tags,
            parent_run_id=self.parent_run_id,
            run_id=existing,
            experiment_id=self._experiment_id,
        )
        if existing is None:
            logger.log_params(self._trial_config(trial).to_flat_dict())
            self._curves.setdefault(trial.trial_id, {})
        else:  # a resumed trial: MLflow knows which epochs it already has
            last = logger.last_logged_step("epoch") or 0
            self._last_step[trial.trial_id] = max(self._last_step.get(trial.trial_id, 0), last)
            self._curves.pop(trial.trial_id, None)
        self._loggers[trial.trial_id] = logger
        return logger

    def _curve_keys(self) -> list[str]:
        keys = ["train/loss", "train/task_loss", self.metric, "eval/exact_match", "heldout/exact_match"]
        return list(dict.fromkeys(keys))

    # ------------------------------------------------------------------ the writer thread (all MLflow calls)
    def _unavailable(self, trial, what: str, exc: TrackingUnavailable) -> None:
        """MLflow stayed down for the whole retry budget: say so for this write, and let the sweep go on."""
        print(
            f"[rlan] trial {trial.trial_id}: {what} not written to MLflow: {exc}", file=sys.stderr, flush=True
        )

    def _refuse(self, trial, exc: TrackingRefused) -> None:
        """Stop calling MLflow, and have Tune's loop abort the sweep: no wait makes a missing credential appear."""
        if self._refusal is None:
            print(f"[rlan] trial {trial.trial_id}: {exc}; stopping the sweep", file=sys.stderr, flush=True)
            self._refusal = exc

    def _open(self, trial) -> None:
        if self._refusal is not None:
            return
        try:
            self._logger(trial)
        except TrackingUnavailable as exc:  # opened again with the trial's first result
            self._unavailable(trial, "child run", exc)
        except TrackingRefused as exc:
            self._refuse(trial, exc)

    def _record(self, trial, result: dict) -> None:
        epoch = int(result.get("epoch", 0))
        if self._refusal is not None or epoch <= self._last_step.get(trial.trial_id, 0):
            return  # MLflow refused us, or an epoch re-reported after a restart: already in MLflow
        metrics = {
            k: v
            for k, v in result.items()
            if k not in TUNE_KEYS and not k.startswith("config") and isinstance(v, (int, float))
        }
        try:
            logger = self._logger(trial)  # a new logger reads the last logged epoch back from MLflow
        except TrackingUnavailable as exc:  # a gap, noted by the next epoch that gets through
            return self._unavailable(trial, f"epoch {epoch}", exc)
        except TrackingRefused as exc:
            return self._refuse(trial, exc)
        last = self._last_step.get(trial.trial_id, 0)
        if epoch <= last:
            return
        if epoch > last + 1:
            logger.note_gap(range(last + 1, epoch))  # reports that never reached Tune, or were not logged
        self._unsent.setdefault(trial.trial_id, []).append((epoch, metrics))
        self._last_step[trial.trial_id] = epoch
        curves = self._curves.get(trial.trial_id)
        if curves is not None:
            for key in self._curve_keys():
                if isinstance(metrics.get(key), (int, float)):
                    curves.setdefault(key, []).append((epoch, float(metrics[key])))

    def _send_due(self, idle: bool, shard: int) -> None:
        """Each trial's queued epochs in one request: its first epoch at once, then at most one request per
        flush_every_s, and everything once the writer is idle (RunLogger buffers them through an outage)."""
        now = time.monotonic()
        for trial_id in [t for t in list(self._unsent) if self._shard(t) == shard]:
            if idle or now - self._sent_at.get(trial_id, -math.inf) >= self.flush_every_s:
                self._send(trial_id)

    def _send(self, trial_id: str) -> None:
        rows = self._unsent.pop(trial_id, [])
        self._sent_at[trial_id] = time.monotonic()
        logger = self._loggers.get(trial_id)
        if self._refusal is not None or not rows or logger is None:
            return
        try:
            logger.log_steps(rows)
        except TrackingRefused as exc:
            self._refuse(SimpleNamespace(trial_id=trial_id), exc)

    def _finish(self, trial, reason: str, checkpoint: str | None) -> None:
        try:
            if self._refusal is not None:
                return
            logger = self._logger(trial)
            self._send(trial.trial_id)
            logger.set_tags({"rlan.stop_reason": reason})
            self._finish_artifacts(trial, logger, checkpoint)
            logger.end("FINISHED" if reason == "completed" else "KILLED")
        except TrackingUnavailable as exc:
            self._unavailable(trial, f"the end of the run ({reason})", exc)
        except TrackingRefused as exc:
            self._refuse(trial, exc)
        finally:
            self._forget(trial.trial_id)

    def _fail(self, trial, error: str) -> None:
        try:
            if self._refusal is not None:
                return
            logger = self._logger(trial)
            self._send(trial.trial_id)
            logger.set_tags({"rlan.stop_reason": "error", "rlan.error": error.strip().splitlines()[-1][:500]})
            logger.end("FAILED")
        except TrackingUnavailable as exc:
            self._unavailable(trial, "the end of the run (error)", exc)
        except TrackingRefused as exc:
            self._refuse(trial, exc)
        finally:
            self._forget(trial.trial_id)

    def _forget(self, trial_id: str) -> None:
        """Drop the ended trial's handles (and, as with its RunLogger's buffer, epochs MLflow never took)."""
        for table in (self._loggers, self._sent_at, self._curves, self._unsent):
            table.pop(trial_id, None)

    def _finish_artifacts(self, trial, logger: RunLogger, checkpoint: str | None) -> None:
        logger.log_text(self._trial_config(trial).to_yaml(), "config/resolved_config.yaml")
        history = self._curves.get(trial.trial_id)
        if history is None:
            history = {k: logger.metric_history(k) for k in self._curve_keys()}
        history = {k: v for k, v in history.items() if v}
        if history:
            with _PYPLOT:
                figure = plots.plot_learning_curves(history, None, f"trial {trial.trial_id}")
                logger.log_figure(figure, "plots/learning_curves.png")
        if not checkpoint:
            return
        try:  # plots the worker rendered into its final checkpoint, and the checkpoint itself
            with local_checkpoint(checkpoint, self.storage) as folder:
                log_plot_folder(logger, folder)
                if self.log_checkpoints:
                    logger.log_artifact(f"{folder}/checkpoint.pt", "checkpoint")
        except TrackingError:
            raise  # an outage or a refusal: the hook's own handling
        except Exception as exc:  # one artifact that cannot be read or uploaded never stops the sweep
            line = f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:500]
            print(f"[rlan] trial {trial.trial_id}: checkpoint artifacts not logged: {line}", file=sys.stderr)
            logger.set_tags({ARTIFACT_ERROR_TAG: line})
