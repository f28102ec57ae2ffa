"""MLflow for sweeps: one parent run per sweep, one child run per trial, written by the Tune driver only.

Why not Ray's MLflowLoggerCallback: it makes one MLflow call per metric per result, has no parent run, and
starts a new run when a trial resumes. This callback logs each result with one batched call, nests trials
under the sweep's parent run, and re-attaches a resumed trial to its existing child run (found by tag), so
an interrupted and resumed sweep still has exactly one child run per trial and no duplicate epoch steps.
The callback is pickled into the Tuner state; it holds names and the base config only and opens MLflow lazily.

MLflow outages never stop the sweep (orchestrator/tracking/run_logger.py has the retry and buffering rules): metrics are
buffered by RunLogger, and a hook whose MLflow call still fails after the retry budget prints one warning and
returns; the trial trains on. An epoch that never reached this callback (its trial driver died after Train
registered the epoch's checkpoint but before Tune received the report), or whose result arrived while the
child run could not be opened, is recorded in the child's `rlan.metrics_gap` tag.

Every MLflow call runs on writer threads (orchestrator/tracking/serial_writer.py), each trial's on one thread in the
order Tune's hooks submitted them: the scale benchmark (docs/performance.md (e)) found Tune's loop spending most of its time
waiting for MLflow in this callback. Epochs are coalesced per trial: its first at once, then at most one
request per `flush_every_s`, and all that waits once its writer is idle; a trial's end sends them first. The
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
import zlib
from functools import partial
from types import SimpleNamespace

from ray.tune import Callback

from orchestrator.sweeps.settings import SweepError, read_sweep_file
from orchestrator.sweeps.trial_runs import TrialRuns
from orchestrator.tracking.recorder import RunRecorder
from orchestrator.tracking.serial_writer import SerialWriter
from orchestrator.tracking.uri import TrackingRefused
from rlan.config import RunConfig


def is_unhealthy(result: dict, nan_batches_abort: int) -> bool:
    """The health stopper's rule: too many NaN batches, or a non-finite loss."""
    loss = result.get("train/loss")
    too_many = result.get("nan_batches", 0) >= nan_batches_abort or result.get("epoch_aborted", 0) > 0
    return bool(too_many or (loss is not None and not math.isfinite(loss)))


def _snapshot(trial) -> SimpleNamespace:
    """What the writer thread needs of a Tune trial, copied on Tune's loop (which goes on changing the trial)."""
    return SimpleNamespace(trial_id=trial.trial_id, config=dict(trial.config))


class MlflowSweepCallback(TrialRuns, Callback):
    """Tune's hooks: each submits its MLflow work (TrialRuns, orchestrator/sweeps/trial_runs.py) to the trial's writer."""

    def __init__(
        self,
        tracking_uri: str,
        experiment_name: str,
        sweep_name: str,
        parent_run_id: str,
        base_config: RunConfig,
        metric: str,
        nan_batches_abort: int,
        log_checkpoints: bool = False,
        echo: bool = True,
        storage: str = "",
        flush_every_s: float = 1.0,
        writer_threads: int = 4,
        train_root: str = "",
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
        self.train_root = train_root  # where the trials' Train runs keep their checkpoints (trial-<id>/)
        self.flush_every_s = flush_every_s
        self._experiment_id = ""  # the parent's, read once
        self._runs: dict[str, RunRecorder] = {}  # each trial's child run, with its queued epochs
        self._last_result: dict[str, dict] = {}
        self._sent_at: dict[str, float] = {}  # when each trial's epochs were last sent
        self.writer_threads = writer_threads
        self._writers: list[SerialWriter] = []
        self._refusal: TrackingRefused | None = None  # met by the writer, raised on Tune's loop
        self._refusal_raised = False

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_runs"] = {}  # live MLflow handles are re-opened (re-attached) after a restore
        state["_sent_at"] = {}  # monotonic times of this process
        state["_writers"] = []  # threads; started again on the first write
        return state

    def setup(self, **info) -> None:
        # MLflow prints two "View run" lines, after one more get_run request, for every run ended on an HTTP
        # server: a thousand-trial sweep's output would be mostly links. The sweep prints its own trial lines.
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        self.tracking_uri = self._saved_tracking_uri() or self.tracking_uri

    def _saved_tracking_uri(self) -> str | None:
        """Where the sweep file says MLflow is: Tune restores this callback as it was pickled, and `rlan resume
        --tracking-uri` (MLflow moved) rewrites only the file."""
        if not self.storage:
            return None
        try:
            return read_sweep_file(f"{self.storage.rstrip('/')}/{self.sweep_name}")[0].tracking_uri
        except SweepError:
            return None

    # ------------------------------------------------------------------ Tune's loop (the driver's main thread)
    def _shard(self, trial_id: str) -> int:
        return zlib.crc32(trial_id.encode()) % self.writer_threads

    def _submit(self, call, trial, *args) -> None:
        """Queue `call(trial, *args)` on the trial's writer: one trial's writes keep their order, and
        different trials' run side by side (a single writer was busy 97% of the scale benchmark's sweep)."""
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
        checkpoint = self._last_result.get(trial.trial_id, {}).get("checkpoint_path")
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

    def _stop_reason(self, trial) -> str:
        result = self._last_result.get(trial.trial_id, {})
        if is_unhealthy(result, self.nan_batches_abort):
            return "unhealthy"
        return "completed" if int(result.get("epoch", 0)) >= self._budget(trial) else "asha"

    def _budget(self, trial) -> int:
        """The trial's own training.max_epochs: a search space may sweep it."""
        return self._trial_config(trial).training.max_epochs

    def trial_line(self, trial, reason: str) -> str:
        result = self._last_result.get(trial.trial_id, {})
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
