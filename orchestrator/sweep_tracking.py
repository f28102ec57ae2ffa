"""MLflow for sweeps: one parent run per sweep, one child run per trial, written by the Tune driver only.

Why not Ray's MLflowLoggerCallback: it makes one MLflow call per metric per result, has no parent run, and
starts a new run when a trial resumes. This callback logs each result with one batched call, nests trials
under the sweep's parent run, and re-attaches a resumed trial to its existing child run (found by tag), so
an interrupted and resumed sweep still has exactly one child run per trial and no duplicate epoch steps.
The callback is pickled into the Tuner state; it holds names only and opens MLflow lazily.

MLflow outages never stop the sweep (orchestrator/tracking.py has the retry and buffering rules): metrics are
buffered by RunLogger, and a hook whose MLflow call still fails after the retry budget prints one warning and
returns; the trial trains on. An epoch that never reached this callback (its trial driver died after Train
registered the epoch's checkpoint but before Tune received the report), or whose result arrived while the
child run could not be opened, is recorded in the child's `rlan.metrics_gap` tag.

Every MLflow call runs on one writer thread (orchestrator/serial_writer.py), in the order Tune's hooks
submitted them: the scale benchmark (docs/performance.md (e)) found Tune's loop spending most of its time
waiting for MLflow in this callback. Epochs are coalesced per trial: its first at once, then at most one
request per `flush_every_s`, and all that waits once the writer is idle; a trial's end sends them first. The
experiment's end waits for every write. A driver that dies loses what was still queued; the resumed trial's
gap tag names those epochs.

A refusal is not an outage: when MLflow (or a proxy in front of it) answers 401, 403 or a login page, the
writer says so once and makes no more calls, and the next hook raises it, which aborts Tune's loop as a
driver crash would: no running trial is marked finished, so `rlan resume` continues every one of them once the
credentials are fixed (a Stopper would mark them terminated). `refusal_in` finds the refusal in what Tune raises.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
import zlib
from functools import partial
from types import SimpleNamespace
from typing import Any

from mlflow.tracking import MlflowClient
from ray.tune import Callback

from orchestrator import plots
from orchestrator.artifacts import local_checkpoint, log_plot_folder
from orchestrator.serial_writer import SerialWriter
from orchestrator.tracking import RunLogger, TrackingError, TrackingRefused, TrackingUnavailable, with_retries
from orchestrator.train_run import CHECKPOINT_RANK
from orchestrator.trial_config import ARM_KEY, trial_config
from rlan.config import RunConfig

ARTIFACT_ERROR_TAG = "rlan.artifact_error"
_PYPLOT = threading.Lock()  # pyplot's figure registry is not thread-safe: the writers draw one at a time
# Keys Tune adds to every result; they are bookkeeping, not diagnostics.
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


def is_unhealthy(result: dict, nan_batches_abort: int) -> bool:
    """The health stopper's rule: too many NaN batches, or a non-finite loss."""
    loss = result.get("train/loss")
    too_many = result.get("nan_batches", 0) >= nan_batches_abort or result.get("epoch_aborted", 0) > 0
    return bool(too_many or (loss is not None and not math.isfinite(loss)))


def _snapshot(trial) -> SimpleNamespace:
    """What the writer thread needs of a Tune trial, copied on Tune's loop (which goes on changing the trial)."""
    return SimpleNamespace(trial_id=trial.trial_id, config=dict(trial.config))


def find_run(client: MlflowClient, experiment_id: str, tags: dict[str, str]) -> str | None:
    """The run id carrying every one of `tags`, via MLflow's search API."""
    query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    runs = with_retries(
        client.search_runs, [experiment_id], filter_string=query, max_results=1, what="search_runs"
    )
    return runs[0].info.run_id if runs else None


class MlflowSweepCallback(Callback):
    def __init__(
        self,
        tracking_uri: str,
        experiment_name: str,
        sweep_name: str,
        parent_run_id: str,
        base_config: dict[str, Any],
        metric: str,
        nan_batches_abort: int,
        log_checkpoints: bool = False,
        echo: bool = True,
        storage: str = "",
        flush_every_s: float = 1.0,
        writer_threads: int = 4,
    ):
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self.sweep_name = sweep_name
        self.parent_run_id = parent_run_id
        self.base_config = base_config
        self.metric = metric
        self.nan_batches_abort = nan_batches_abort
        self.log_checkpoints = log_checkpoints
        self.echo = echo
        self.storage = storage  # the sweep's storage root: the filesystem of cloud checkpoints
        self.flush_every_s = flush_every_s
        self.refused = ""  # the refusal's line, once MLflow has refused a request
        self._experiment_id = ""  # the parent's, read once
        self._loggers: dict[str, RunLogger] = {}
        self._last_step: dict[str, int] = {}
        self._last_result: dict[str, dict] = {}
        self._unsent: dict[str, list[tuple[int, dict]]] = {}  # epochs queued for the next coalesced write
        self._sent_at: dict[str, float] = {}
        # Learning-curve points of trials whose child run this process created (so holds every epoch): the
        # end-of-trial plot needs no MLflow reads. Re-attached runs read their history back instead.
        self._curves: dict[str, dict[str, list[tuple[int, float]]]] = {}
        self.writer_threads = writer_threads
        self._writers: list[SerialWriter] = []
        self._refusal: TrackingRefused | None = None  # met by the writer, raised on Tune's loop
        self._refusal_raised = False

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_loggers"] = {}  # live MLflow handles are re-opened after a restore
        state["_sent_at"] = {}  # monotonic times of this process
        state["_writers"] = []  # threads; started again on the first write
        return state

    def setup(self, **info) -> None:
        # MLflow prints two "View run" lines, after one more get_run request, for every run ended on an HTTP
        # server: a thousand-trial sweep's output would be mostly links. The sweep prints its own trial lines.
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

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

    # ------------------------------------------------------------------ Tune's loop (the driver's main thread)
    def _shard(self, trial_id: str) -> int:
        return zlib.crc32(trial_id.encode()) % self.writer_threads

    def _submit(self, call, trial, *args) -> None:
        """Queue `call(trial, *args)` on the trial's writer: one trial's writes keep their order, and
        different trials' run side by side (the server answers each in tens of ms; one thread waited 97% of a
        sweep)."""
        if not self._writers:
            self._writers = [
                SerialWriter(
                    partial(self._send_due, shard=i), self.flush_every_s, name=f"rlan-mlflow-writer-{i}"
                )
                for i in range(self.writer_threads)
            ]
        self._writers[self._shard(trial.trial_id)].submit(call, trial, *args)

    def _raise_refusal(self) -> None:
        """Abort Tune's loop, once, after the writer met a refusal: raised here, since only an exception out
        of a hook stops Tune."""
        if self._refusal is not None and not self._refusal_raised:
            self._refusal_raised = True
            raise self._refusal

    def wait_idle(self) -> None:
        """Return once every write submitted so far is done (tests, and the end of the experiment)."""
        for writer in self._writers:
            writer.wait_idle()

    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        self._raise_refusal()
        self._submit(self._open, _snapshot(trial))

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        self._last_result[trial.trial_id] = result
        self._raise_refusal()
        self._submit(self._record, _snapshot(trial), result)

    def on_step_end(self, iteration: int, trials: list, **info) -> None:
        self._raise_refusal()

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        reason = self._stop_reason(trial)
        checkpoint = self._result(trial).get("checkpoint_path")
        self._submit(self._finish, _snapshot(trial), reason, checkpoint)
        if self.echo:
            print(self.trial_line(trial, reason), flush=True)
        self._last_result.pop(trial.trial_id, None)  # a thousand-trial sweep need not keep them all
        self._raise_refusal()

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        error = getattr(trial, "error_message", None) or "trial failed (see the Ray trial log)"
        self._submit(self._fail, _snapshot(trial), str(error))
        if self.echo:
            print(self.trial_line(trial, "error"), flush=True)
        self._last_result.pop(trial.trial_id, None)
        self._raise_refusal()

    def on_experiment_end(self, trials: list, **info) -> None:
        for writer in self._writers:
            writer.close()  # every queued write, before `run_sweep` reads the children back
        self._writers = []
        self._raise_refusal()

    def _result(self, trial) -> dict:
        """The trial's last result: Tune's own; for a trial that ends right after a resume with no new report
        (its last epoch was checkpointed before the sweep stopped), its latest checkpoint's; else the last
        this callback saw."""
        last = getattr(trial, "last_result", None) or {}
        saved = getattr(getattr(trial, "latest_checkpoint_result", None), "metrics", None) or {}
        for result in (last, saved, self._last_result.get(trial.trial_id, {})):
            if "epoch" in result:
                return result
        return last

    def _stop_reason(self, trial) -> str:
        result = self._result(trial)
        if is_unhealthy(result, self.nan_batches_abort):
            return "unhealthy"
        return "completed" if int(result.get("epoch", 0)) >= self._budget(trial) else "asha"

    def _budget(self, trial) -> int:
        """The trial's own training.max_epochs: a search space may sweep it."""
        return self._trial_config(trial).training.max_epochs

    # ------------------------------------------------------------------ the writer thread (all MLflow calls)
    def _unavailable(self, trial, what: str, exc: TrackingUnavailable) -> None:
        """MLflow stayed down for the whole retry budget: say so for this write, and let the sweep go on."""
        print(
            f"[rlan] trial {trial.trial_id}: {what} not written to MLflow: {exc}", file=sys.stderr, flush=True
        )

    def _refuse(self, trial, exc: TrackingRefused) -> None:
        """Stop calling MLflow, and have Tune's loop abort the sweep: no wait makes a missing credential appear."""
        if not self.refused:
            self.refused = str(exc)
            print(f"[rlan] trial {trial.trial_id}: {exc}; stopping the sweep", file=sys.stderr, flush=True)
            self._refusal = exc

    def _open(self, trial) -> None:
        if self.refused:
            return
        try:
            self._logger(trial)
        except TrackingUnavailable as exc:  # opened again with the trial's first result
            self._unavailable(trial, "child run", exc)
        except TrackingRefused as exc:
            self._refuse(trial, exc)

    def _record(self, trial, result: dict) -> None:
        epoch = int(result.get("epoch", 0))
        if self.refused or epoch <= self._last_step.get(trial.trial_id, 0):
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
        if self.refused or not rows or logger is None:
            return
        try:
            logger.log_steps(rows)
        except TrackingRefused as exc:
            self._refuse(SimpleNamespace(trial_id=trial_id), exc)

    def _finish(self, trial, reason: str, checkpoint: str | None) -> None:
        try:
            if self.refused:
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
            if self.refused:
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

    def trial_line(self, trial, reason: str) -> str:
        result = self._result(trial)
        value = result.get(self.metric)
        shown = f"{value:.4g}" if isinstance(value, (int, float)) else "n/a"
        knobs = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.config.items()
        )
        epoch = int(result.get("epoch", 0))
        return f"trial {trial.trial_id} {reason} at epoch {epoch}/{self._budget(trial)}: {self.metric} {shown} | {knobs}"


def refusal_in(error: BaseException) -> TrackingRefused | None:
    """The TrackingRefused behind an exception out of Tuner.fit (Tune re-raises a callback's error as a
    TuneError carrying the traceback text; the original stays on the exception chain)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, TrackingRefused):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None
