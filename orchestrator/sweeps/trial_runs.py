"""The child runs of a sweep in MLflow: every call the sweep callback makes, run on its writer threads.

`TrialRuns` is the half of MlflowSweepCallback (orchestrator/sweeps/callback.py) that talks to MLflow, through
one RunRecorder per trial (orchestrator/tracking/recorder.py: open or re-attach by tags, each epoch once, gaps, curves,
end artifacts). What is the sweep's own: which results are metrics, when a trial's queued epochs are sent
(coalesced), and what an outage or a refusal does to the sweep. The callback's other half runs on Tune's loop
and only submits these calls (the module docstring there has the rules for outages, refusals and ordering).
Every method here runs on a writer thread; one trial's calls on one thread.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from types import SimpleNamespace

from mlflow.tracking import MlflowClient

from orchestrator.runs.train_worker import CHECKPOINT_RANK
from orchestrator.sweeps.trial_config import ARM_KEY, PBT_SOURCE, parse_source, trial_config
from orchestrator.tracking.artifacts import newest_checkpoint
from orchestrator.tracking.recorder import RunRecorder
from orchestrator.tracking.retries import TrackingUnavailable, with_retries
from orchestrator.tracking.uri import TrackingRefused
from rlan.config import RunConfig

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


class TrialRuns:
    """MLflow state per trial (the callback sets the attributes in its __init__)."""

    # -------------------------------------------------------------------------------- trial runs
    def _trial_config(self, trial) -> RunConfig:
        return trial_config(self.base_config, trial.config)

    def _run(self, trial) -> RunRecorder:
        """The trial's child run: re-attached after a restore (found by its tags), else created."""
        run = self._runs.get(trial.trial_id)
        if run is not None:
            return run
        identity = {"rlan.sweep": self.sweep_name, "rlan.role": "trial", "rlan.trial_id": trial.trial_id}
        if ARM_KEY in trial.config:
            identity["rlan.arm"] = str(trial.config[ARM_KEY])
        if not self._experiment_id:
            client = MlflowClient(self.tracking_uri)
            parent = with_retries(client.get_run, self.parent_run_id, what="get_run")
            self._experiment_id = parent.info.experiment_id
        run = RunRecorder.open(
            self._trial_config(trial),
            self.tracking_uri,
            self.experiment_name,
            run_name=f"{self.sweep_name}-{trial.trial_id}",
            identity=identity,
            parent_run_id=self.parent_run_id,
            experiment_id=self._experiment_id,
            objective=self.metric,
        )
        self._runs[trial.trial_id] = run
        return run

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
        """Open the trial's child run (re-attach it, when resumed or retried) and queue the epochs its kept
        checkpoints hold that MLflow lacks now, before its Train run starts again: a running one's
        retention may delete such a checkpoint before the next report would have asked for it."""
        if self._refusal is not None:
            return
        try:
            run = self._run(trial)
            self._recover(trial, run, range(run.last_step + 1, sys.maxsize))
        except TrackingUnavailable as exc:  # opened again with the trial's first result
            self._unavailable(trial, "child run", exc)
        except TrackingRefused as exc:
            self._refuse(trial, exc)

    def _record(self, trial, result: dict) -> None:
        """Queue the result's metrics for the trial's next coalesced write (epochs MLflow has are skipped)."""
        if self._refusal is not None:
            return
        epoch = int(result.get("epoch", 0))
        metrics = {k: v for k, v in result.items() if k not in TUNE_KEYS and not k.startswith("config")}
        try:
            if result.get(PBT_SOURCE):  # PBT copied another trial's weights before this epoch: say whose
                who, at, _ = parse_source(result[PBT_SOURCE])
                tag = f"rlan.pbt.copied_before_epoch_{epoch:04d}"
                self._run(trial).logger.set_tags({tag: f"trial {who}, its epoch {at} ({result[PBT_SOURCE]})"})
            run = self._run(trial)
            if epoch > run.last_step + 1:
                self._recover(trial, run, range(run.last_step + 1, epoch))
            run.record(epoch, metrics)
        except TrackingUnavailable as exc:  # a gap, noted by the next epoch that gets through
            self._unavailable(trial, f"epoch {epoch}", exc)
        except TrackingRefused as exc:
            self._refuse(trial, exc)

    def _recover(self, trial, run: RunRecorder, missing: range) -> None:
        """Epochs that never reached us (a driver that died between Train keeping a checkpoint and Tune
        receiving its epoch; `rlan resume` then starts after it) from the trial's kept checkpoints: at the
        trial's start, and at a result after a gap (the start could not reach MLflow). What no checkpoint
        holds stays a gap, which `record` notes."""
        if self.train_root:
            folder = f"{self.train_root}/trial-{trial.trial_id}"
            run.recover_from_checkpoints(folder, missing, self.storage, f"trial {trial.trial_id}")

    def _send_due(self, idle: bool, shard: int) -> None:
        """Each trial's queued epochs in one request: its first epoch at once, then at most one request per
        flush_every_s, and everything once the writer is idle (RunLogger buffers them through an outage)."""
        now = time.monotonic()
        for trial_id in [t for t in list(self._runs) if self._shard(t) == shard]:
            if idle or now - self._sent_at.get(trial_id, -math.inf) >= self.flush_every_s:
                self._send(trial_id)

    def _send(self, trial_id: str) -> None:
        run = self._runs.get(trial_id)
        if self._refusal is not None or run is None or not run.queued:
            return
        self._sent_at[trial_id] = time.monotonic()
        try:
            run.flush()
        except TrackingRefused as exc:
            self._refuse(SimpleNamespace(trial_id=trial_id), exc)

    def _finish(self, trial, reason: str, checkpoint: str | None) -> None:
        try:
            if self._refusal is not None:
                return
            run = self._run(trial)
            run.flush()
            # A trial that finished training while the sweep was interrupted reports, once resumed, its last
            # epoch again without a checkpoint: its end artifacts come from its Train run's newest one.
            if not checkpoint and self.train_root:
                checkpoint = newest_checkpoint(f"{self.train_root}/trial-{trial.trial_id}")
            run.log_end_artifacts(
                checkpoint,
                storage=self.storage,
                log_checkpoint=self.log_checkpoints,
                title=f"trial {trial.trial_id}",
                draw_lock=_PYPLOT,
            )
            run.end("FINISHED" if reason == "completed" else "KILLED", {"rlan.stop_reason": reason})
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
            tags = {"rlan.stop_reason": "error", "rlan.error": error.strip().splitlines()[-1][:500]}
            self._run(trial).end("FAILED", tags)
        except TrackingUnavailable as exc:
            self._unavailable(trial, "the end of the run (error)", exc)
        except TrackingRefused as exc:
            self._refuse(trial, exc)
        finally:
            self._forget(trial.trial_id)

    def _forget(self, trial_id: str) -> None:
        """Drop the ended trial's handles (and, as with its RunLogger's buffer, epochs MLflow never took)."""
        self._runs.pop(trial_id, None)
        self._sent_at.pop(trial_id, None)
