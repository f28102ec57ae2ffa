"""MLflow runs through MlflowClient only: every call names its run, so several runs can be open in one process
(a sweep's parent beside its trials) and no global state is left behind. URIs and run tags live in
orchestrator/tracking/uri.py (re-exported here): a SQLite file or an `mlflow server` over http(s).

Metric and param keys go through `sanitize_key` (orchestrator/tracking/names.py has the rule).

MLflow outages (a tracking server restarted or briefly unreachable; docs/reliability.md has the measurements):
  - Every RunLogger call is retried for up to RLAN_MLFLOW_RETRY_S seconds (default 60) when MLflow fails in a way
    that can pass: connection refused or reset, a timeout, HTTP 408/429/500/502/503/504 (after MLflow's own
    retries), "database is locked". Waits grow 1, 2, 4, 8, 15, 15 ... s. Other errors (a bad request, an
    unknown run) are raised at once.
  - Under that, MLflow's own HTTP retries are shortened (unless set in the environment) to
    MLFLOW_HTTP_REQUEST_MAX_RETRIES=4, MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR=1 (about 15 s per call) and
    MLFLOW_HTTP_REQUEST_TIMEOUT=30. MLflow's defaults (7 retries, factor 2, 120 s timeout) can hold one call for
    4 minutes and more, during which a sweep's Tune loop stands still.
  - Metrics are never dropped for an outage that ends: when the budget runs out, `log_metrics` keeps the batch in
    memory (with its original timestamps, so a batch the server did receive is not stored twice) and returns.
    Later calls add to the buffer without waiting; at most every RLAN_MLFLOW_RETRY_S / 2 seconds one of them tries
    MLflow once, and the first call that gets through sends the buffer, oldest first, before its own batch. `end`
    and every other call (tags, params, artifacts, reads) retry for the whole budget, flush the buffer first, and
    raise TrackingUnavailable when MLflow is still down.
  - The buffer holds at most RLAN_MLFLOW_BUFFER_METRICS metrics (default 100000). Past that the oldest batches are
    dropped and their steps are written, once MLflow answers again, as the tag `rlan.metrics_gap` ("3-5,9").
    Callers that see an epoch missing for another reason (a trial driver that died between Train registering a
    checkpoint and Tune receiving that epoch, when no kept checkpoint holds its metrics) record it with
    `note_gap`, in the same tag.
  - A metric batch still buffered when the process dies is lost (the tag cannot be written then either)."""

from __future__ import annotations

import logging
import numbers
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

from orchestrator.environment import env_number
from orchestrator.tracking import retries as mlflow_retries
from orchestrator.tracking.experiments import get_or_create_experiment
from orchestrator.tracking.names import compact_steps, sanitize_key
from orchestrator.tracking.retries import (
    BUFFER_ENV,
    TrackingUnavailable,
    retry_budget_s,
    with_retries,
)
from orchestrator.tracking.uri import (
    TrackingError,
    default_artifact_root,
    resolve_tracking_uri,
)

MAX_PARAM_LENGTH = 6000
MAX_TAG_LENGTH = 8000
PARAMS_PER_BATCH = 100
METRICS_PER_BATCH = 1000
PARENT_TAG = "mlflow.parentRunId"
GAP_TAG = "rlan.metrics_gap"
_log = logging.getLogger(__name__)
_T = TypeVar("_T")


def _as_float(value: Any) -> float | None:
    # numbers.Real covers int, float, bool and numpy scalars; strings, None and tensors are dropped.
    return float(value) if isinstance(value, numbers.Real) else None


# ------------------------------------------------------------------------------------------ run
class RunLogger:
    """One MLflow run: created here, or re-attached through run_id (a resumed trial keeps its run).

    Every call retries transient MLflow failures, and metrics outlive an outage in memory (module docstring).
    """

    def __init__(
        self,
        tracking_uri: str | None,
        experiment_name: str,
        run_name: str | None = None,
        tags: dict[str, Any] | None = None,
        parent_run_id: str | None = None,
        run_id: str | None = None,
        experiment_id: str | None = None,
    ) -> None:
        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        self.client = MlflowClient(tracking_uri=self.tracking_uri)
        self._pending: list[list[Metric]] = []  # metric batches MLflow has not taken yet, oldest first
        self._gap: set[int] = set()  # steps whose metrics are lost; reported in GAP_TAG
        self._gap_written = ""
        self._last_try = 0.0
        all_tags = dict(tags or {})
        if parent_run_id:
            all_tags[PARENT_TAG] = parent_run_id
        if run_id is None:
            root = default_artifact_root(self.tracking_uri)
            self.experiment_id = experiment_id or self._retry(
                get_or_create_experiment, self.client, experiment_name, root, what="experiment"
            )
            run = self._retry(
                self.client.create_run,
                self.experiment_id,
                tags=_tag_strings(all_tags),
                run_name=run_name,
                what="create_run",
            )
        else:
            run = self._retry(self.client.get_run, run_id, what="get_run")
            self.experiment_id = run.info.experiment_id
            self._retry(self.client.update_run, run_id, status="RUNNING", what="update_run")
            if all_tags:
                self._retry(self.client.log_batch, run_id, tags=_tag_list(all_tags), what="set_tags")
        self._run_id = run.info.run_id
        self._params: dict[str, str] = dict(run.data.params)
        self._ended = False

    @property
    def run_id(self) -> str:
        return self._run_id

    def _retry(self, call: Callable[..., _T], *args: Any, what: str, **kwargs: Any) -> _T:
        return with_retries(call, *args, what=what, tracking_uri=self.tracking_uri, **kwargs)

    def _call(self, what: str, call: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """An MLflow call with the full retry budget, after the buffered metrics (which go first)."""
        self._flush()
        return self._retry(call, *args, what=f"{what}, run {self._run_id}", **kwargs)

    def log_params(self, flat: dict[str, Any]) -> None:
        """Log {key: value} as strings; a key already logged with the same value is skipped."""
        fresh: dict[str, str] = {}
        for key, value in flat.items():
            name, text = sanitize_key(key), str(value)[:MAX_PARAM_LENGTH]
            if name in self._params:
                if self._params[name] != text:
                    raise TrackingError(
                        f"param '{name}' of run {self._run_id} is '{self._params[name]}'; cannot change to "
                        f"'{text}' (params are immutable in MLflow)"
                    )
                continue
            fresh[name] = text
        items = list(fresh.items())
        for start in range(0, len(items), PARAMS_PER_BATCH):
            chunk = items[start : start + PARAMS_PER_BATCH]
            self._call(
                "log_params", self.client.log_batch, self._run_id, params=[Param(k, v) for k, v in chunk]
            )
        self._params.update(fresh)

    def log_metrics(self, metrics: dict[str, Any], step: int) -> None:
        """Numeric values (bools as 0/1) at one step; others are dropped.

        NaN and inf are kept: a diverging run should show it (a SQLite store reads inf back as +-1.8e308).
        While MLflow is unreachable the batch is buffered and this returns (module docstring).
        """
        self.log_steps([(step, metrics)])

    def log_steps(self, rows: Iterable[tuple[int, dict[str, Any]]]) -> None:
        """log_metrics for several steps at once: one request per METRICS_PER_BATCH values, not per step."""
        now = int(time.time() * 1000)
        batch = [
            Metric(sanitize_key(key), number, now, int(step))
            for step, metrics in rows
            for key, value in metrics.items()
            if (number := _as_float(value)) is not None
        ]
        backlog = bool(self._pending)  # MLflow was down at the last call
        for start in range(0, len(batch), METRICS_PER_BATCH):
            self._pending.append(batch[start : start + METRICS_PER_BATCH])
        if not backlog:
            self._flush(keep=True)
        elif mlflow_retries._clock() - self._last_try >= retry_budget_s() / 2:
            self._flush(budget_s=0, keep=True)  # one try (MLflow's own short retries only), no waiting beyond
        self._trim()

    def _flush(self, budget_s: float | None = None, keep: bool = False) -> None:
        """Send the buffered metric batches, oldest first, then the gap tag when it changed.

        keep=True leaves what could not be sent in the buffer (log_metrics); else TrackingUnavailable is raised.
        """
        try:
            while self._pending:
                self._last_try = mlflow_retries._clock()
                self._retry(
                    self.client.log_batch,
                    self._run_id,
                    metrics=self._pending[0],
                    what=f"log_metrics, run {self._run_id}",
                    budget_s=budget_s,
                )
                self._pending.pop(0)
            gap = compact_steps(self._gap)
            if gap != self._gap_written:
                self._retry(
                    self.client.log_batch,
                    self._run_id,
                    tags=[RunTag(GAP_TAG, gap[:MAX_TAG_LENGTH])],
                    what="gap tag",
                    budget_s=budget_s,
                )
                self._gap_written = gap
        except TrackingUnavailable as exc:
            self._last_try = mlflow_retries._clock()
            if not keep:
                raise
            steps = compact_steps(m.step for batch in self._pending for m in batch)
            _log.warning("%s; metrics of steps %s kept in memory until MLflow answers", exc, steps)

    def _trim(self) -> None:
        """Drop the oldest buffered batches beyond RLAN_MLFLOW_BUFFER_METRICS metrics; their steps become a gap."""
        limit = int(env_number(BUFFER_ENV))
        while self._pending and sum(len(batch) for batch in self._pending) > limit:
            dropped = self._pending.pop(0)
            self._gap.update(m.step for m in dropped)
            _log.warning(
                "MLflow buffer of run %s full: metrics of step(s) %s dropped",
                self._run_id,
                compact_steps(m.step for m in dropped),
            )

    def note_gap(self, steps: Iterable[int]) -> None:
        """Record steps whose metrics will never arrive: tag GAP_TAG, written with the next call that reaches MLflow."""
        self._gap.update(int(step) for step in steps)

    @property
    def buffered_steps(self) -> list[int]:
        """Steps with metrics still waiting for MLflow."""
        return sorted({m.step for batch in self._pending for m in batch})

    def set_tags(self, tags: dict[str, Any]) -> None:
        if tags:
            self._call("set_tags", self.client.log_batch, self._run_id, tags=_tag_list(tags))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._call("log_artifact", self.client.log_artifact, self._run_id, str(path), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        self._call("log_text", self.client.log_text, self._run_id, text, artifact_file)

    def log_dict_yaml(self, tree: dict[str, Any], artifact_file: str) -> None:
        self.log_text(yaml.safe_dump(tree, sort_keys=False), artifact_file)

    def log_figure(self, fig: Any, artifact_file: str, close: bool = True) -> None:
        """Save a matplotlib figure as PNG and log it at artifact_file (e.g. 'plots/curves.png')."""
        folder, _, name = artifact_file.rpartition("/")
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / name
            fig.savefig(local, format="png", dpi=100)  # our figures are laid out tight already
            self.log_artifact(local, folder or None)
        if close:
            import matplotlib.pyplot as plt  # only here: tracking itself draws nothing

            plt.close(fig)

    def metric_history(self, key: str) -> list[tuple[int, float]]:
        """(step, value) of `key`, oldest first; buffered values are included."""
        name = sanitize_key(key)
        stored = self._retry(
            self.client.get_metric_history, self._run_id, name, what=f"metric_history {name}"
        )
        # A buffered batch may already be stored (its answer lost): the same (step, timestamp, value) counts once.
        found = {(m.step, m.timestamp, m.value) for m in stored}
        found |= {(m.step, m.timestamp, m.value) for batch in self._pending for m in batch if m.key == name}
        return [(step, value) for step, _, value in sorted(found, key=lambda m: (m[0], m[1]))]

    def last_logged_step(self, key: str) -> int | None:
        steps = [step for step, _ in self.metric_history(key)]
        return max(steps) if steps else None

    def end(self, status: str = "FINISHED") -> None:
        """Terminate the run once, after sending the buffered metrics; later calls do nothing."""
        if status not in ("FINISHED", "FAILED", "KILLED"):
            raise TrackingError(f"run status '{status}': expected FINISHED, FAILED or KILLED")
        if not self._ended:
            self._call("end", self.client.set_terminated, self._run_id, status=status)
            self._ended = True

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if exc_type is None:
            self.end("FINISHED")
        else:
            self.end("KILLED" if issubclass(exc_type, KeyboardInterrupt) else "FAILED")


def _tag_strings(tags: dict[str, Any]) -> dict[str, str]:
    return {str(k): str(v)[:MAX_TAG_LENGTH] for k, v in tags.items()}


def _tag_list(tags: dict[str, Any]) -> list[RunTag]:
    return [RunTag(k, v) for k, v in _tag_strings(tags).items()]
