"""The MLflow side of `rlan train`, on orchestrator/tracking/recorder.py: the run found again by name and storage, each
report logged once from Ray Train's controller, and one line per epoch on the driver."""

from __future__ import annotations

import re
import sys
import threading
from typing import Any

from ray.train import UserCallback

from orchestrator.runs.debug import epoch_line
from orchestrator.tracking.recorder import RunRecorder
from orchestrator.tracking.retries import TrackingUnavailable
from orchestrator.tracking.uri import run_tags
from rlan.config import RunConfig
from rlan.diagnostics import EPOCH_LINE_KEYS

NAME_TAG, STORAGE_TAG = "rlan.train_name", "rlan.train_storage"


def default_train_name(config: RunConfig, experiment: str) -> str:
    """Deterministic, so the same command finds its Train snapshot and MLflow run again."""
    slug = lambda text: re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"
    return f"{slug(experiment)}-{slug(config.logging.run_name or 'train')}-{config.config_hash()}"


def open_train_run(
    config: RunConfig, tracking_uri: str, experiment: str, name: str, storage: str
) -> RunRecorder:
    """The MLflow run of Train run (storage, name): re-attached if one exists (any status), else created."""
    return RunRecorder.open(
        config,
        tracking_uri,
        experiment,
        run_name=name,
        identity={NAME_TAG: name, STORAGE_TAG: storage},
        tags=run_tags(config, {"rlan.command": "train"}),
    )


class MlflowTrainCallback(UserCallback):
    """Rank 0's metrics of each report to one MLflow run (step = epoch, 1-based); runs in the controller.

    Epochs already in the run are skipped (the recorder's rule): a restarted worker group re-reports from its
    checkpoint. An epoch that never reached this callback (the controller died with the driver's node after
    Train kept the epoch's checkpoint, so the re-run command resumes after it) is read back from the Train
    run's kept checkpoints, each of which holds the metrics of the epoch it ends; one that no checkpoint
    holds is named in the run's `rlan.metrics_gap` tag. train_folder: the Train run's folder
    (<storage>/<name>); storage: the storage root, for cloud checkpoints.
    """

    def __init__(self, tracking_uri: str, run_id: str, train_folder: str = "", storage: str = ""):
        self.tracking_uri, self.run_id = tracking_uri, run_id
        self.train_folder, self.storage = train_folder, storage
        self._recorder: RunRecorder | None = None

    def __getstate__(self) -> dict[str, Any]:  # the client is opened where the callback runs
        return {**self.__dict__, "_recorder": None}

    def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
        if not metrics or "epoch" not in metrics[0]:
            return
        step = int(metrics[0]["epoch"])
        try:
            if self._recorder is None:
                self._recorder = RunRecorder.attach(self.tracking_uri, self.run_id)
            if step > self._recorder.last_step + 1 and self.train_folder:
                missing = range(self._recorder.last_step + 1, step)
                self._recorder.recover_from_checkpoints(
                    self.train_folder, missing, self.storage, "rlan train"
                )
            self._recorder.log_epoch(step, metrics[0])  # buffered by RunLogger if MLflow is down
        except TrackingUnavailable as exc:
            # An exception here would fail the whole Train run: training goes on, the gap is reported.
            print(f"rlan: MLflow unavailable, epoch {step} not logged: {exc}", file=sys.stderr, flush=True)
            if self._recorder is not None:
                self._recorder.note_gap([step])


class EpochPrinter(threading.Thread):
    """One line per epoch on the driver, read back from the MLflow run (controller output is not forwarded)."""

    def __init__(self, recorder: RunRecorder, total_epochs: int, shown: int, interval_s: float = 2.0):
        super().__init__(daemon=True)
        self.recorder, self.total, self.shown, self.interval_s = recorder, total_epochs, shown, interval_s
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.interval_s):
            self.poll()

    def poll(self) -> None:
        try:
            by_step = self.recorder.history(["epoch", *(key for key, _ in EPOCH_LINE_KEYS)])
        except Exception:  # printing is best effort; the next poll tries again
            return
        for step in sorted(s for s, row in by_step.items() if s > self.shown and "epoch" in row):
            print(epoch_line(step - 1, self.total, by_step[step]), flush=True)
            self.shown = step

    def stop(self) -> None:
        self.done.set()
        self.join()
        self.poll()
