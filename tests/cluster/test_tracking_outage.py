"""MLflow outages without a server: retry classification and budget, the metric buffer, the gap tag, and the sweep
callback going on when MLflow stays down. Fast; the same paths against a real server are in test_mlflow_postgres."""

from __future__ import annotations

import os
import threading
import time
from types import SimpleNamespace

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE

from orchestrator.sweeps.callback import MlflowSweepCallback
from orchestrator.sweeps.sweep import HealthStopper
from orchestrator.tracking import retries as mlflow_retries
from orchestrator.tracking.names import compact_steps
from orchestrator.tracking.recorder import ARTIFACT_ERROR_TAG
from orchestrator.tracking.retries import TrackingUnavailable, is_transient, with_retries
from orchestrator.tracking.run_logger import GAP_TAG, RunLogger
from orchestrator.tracking.uri import TrackingError
from tests.cluster._util import free_port
from tests.conftest import tiny

DOWN = "API request to http://127.0.0.1:1/api/2.0/mlflow/runs/log-batch failed with exception Max retries exceeded"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('outage')}/mlruns.db"


@pytest.fixture
def no_waiting(monkeypatch):
    """Retries without real sleeps: the waits are recorded and the clock moves by them."""
    waits: list[float] = []
    clock = [time.monotonic()]
    monkeypatch.setattr(
        mlflow_retries, "_sleep", lambda s: (waits.append(s), clock.__setitem__(0, clock[0] + s))
    )
    monkeypatch.setattr(mlflow_retries, "_clock", lambda: clock[0])
    return waits


class Outage:
    """Wraps a RunLogger's client.log_batch: while `down`, every call fails the way MLflow's REST client does."""

    def __init__(self, logger: RunLogger, monkeypatch):
        self.down, self.calls, real = False, 0, logger.client.log_batch

        def log_batch(*args, **kwargs):
            self.calls += 1
            if self.down:
                raise MlflowException(DOWN)
            return real(*args, **kwargs)

        monkeypatch.setattr(logger.client, "log_batch", log_batch)


def test_the_rest_clients_transport_failure_is_transient_and_a_bad_request_is_not(store, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(MlflowException) as refused:
        MlflowClient(f"http://127.0.0.1:{free_port()}").search_experiments()
    assert is_transient(refused.value)
    with pytest.raises(MlflowException) as unknown:
        MlflowClient(store).get_run("0" * 32)
    assert not is_transient(unknown.value)
    assert is_transient(MlflowException("x", error_code=TEMPORARILY_UNAVAILABLE))
    assert not is_transient(ValueError("bad"))


def test_library_retries_are_shortened_unless_set(monkeypatch):
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    assert mlflow_retries.with_retries(lambda: "ok", what="a call") == "ok"  # the first call sets them
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "4"
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "5"  # the user's value stays


def test_with_retries_waits_longer_each_time_within_its_budget(no_waiting):
    failures = iter([MlflowException(DOWN)] * 3)

    def flaky():
        error = next(failures, None)
        if error:
            raise error
        return "ok"

    assert with_retries(flaky, what="probe", budget_s=60) == "ok"
    assert no_waiting == [1.0, 2.0, 4.0]

    no_waiting.clear()
    with pytest.raises(TrackingUnavailable) as info:
        with_retries(lambda: (_ for _ in ()).throw(MlflowException(DOWN)), what="log_metrics", budget_s=60)
    assert sum(no_waiting) <= 60 and no_waiting[:5] == [1.0, 2.0, 4.0, 8.0, 15.0]
    assert "MLflow unavailable for 60 s (log_metrics)" in str(info.value) and "\n" not in str(info.value)

    calls = []
    with pytest.raises(MlflowException):  # not transient: raised at once
        with_retries(lambda: calls.append(1) or (_ for _ in ()).throw(MlflowException("bad")), what="x")
    assert calls == [1]


def test_metrics_are_buffered_while_mlflow_is_down_and_flushed_in_order(store, monkeypatch, no_waiting):
    monkeypatch.setenv("RLAN_MLFLOW_RETRY_S", "30")
    logger = RunLogger(store, "outage", run_name="buffer")
    outage = Outage(logger, monkeypatch)
    logger.log_metrics({"loss": 1.0}, step=1)

    outage.down = True
    logger.log_metrics({"loss": 2.0}, step=2)  # waits its whole budget once, then keeps the batch
    waited = sum(no_waiting)
    assert 15 <= waited <= 30 and logger.buffered_steps == [2]
    calls = outage.calls
    logger.log_metrics({"loss": 3.0}, step=3)  # MLflow was down a moment ago: no call, no wait
    assert outage.calls == calls and sum(no_waiting) == waited and logger.buffered_steps == [2, 3]
    assert logger.metric_history("loss") == [(1, 1.0), (2, 2.0), (3, 3.0)]  # buffered values are visible
    with pytest.raises(TrackingUnavailable):  # anything else needs MLflow, after the buffered metrics
        logger.set_tags({"k": "v"})

    outage.down = False
    mlflow_retries._sleep(
        15.0
    )  # half the budget later, the next batch tries once and takes the backlog along
    logger.log_metrics({"loss": 4.0}, step=4)
    assert logger.buffered_steps == []
    logger.end()
    history = MlflowClient(store).get_metric_history(logger.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0)]
    assert GAP_TAG not in MlflowClient(store).get_run(logger.run_id).data.tags


def test_a_full_buffer_drops_the_oldest_steps_and_reports_them(store, monkeypatch, no_waiting):
    monkeypatch.setenv("RLAN_MLFLOW_RETRY_S", "0")
    monkeypatch.setenv("RLAN_MLFLOW_BUFFER_METRICS", "4")
    logger = RunLogger(store, "outage", run_name="gap")
    outage = Outage(logger, monkeypatch)
    outage.down = True
    for step in range(1, 5):
        logger.log_metrics({"a": 1.0, "b": 2.0}, step=step)
    assert logger.buffered_steps == [3, 4]
    outage.down = False
    logger.end()
    run = MlflowClient(store).get_run(logger.run_id)
    assert run.data.tags[GAP_TAG] == "1-2" and run.info.status == "FINISHED"
    assert [m.step for m in MlflowClient(store).get_metric_history(logger.run_id, "b")] == [3, 4]


def test_end_raises_while_mlflow_is_down_and_works_after(store, monkeypatch, no_waiting):
    monkeypatch.setenv("RLAN_MLFLOW_RETRY_S", "0")
    logger = RunLogger(store, "outage", run_name="end")
    outage = Outage(logger, monkeypatch)
    outage.down = True
    logger.log_metrics({"a": 1.0}, step=1)
    with pytest.raises(TrackingError, match="MLflow unavailable"):
        logger.end()
    outage.down = False
    logger.end()
    assert MlflowClient(store).get_run(logger.run_id).info.status == "FINISHED"


def test_compact_steps():
    assert compact_steps([9, 3, 4, 5, 4]) == "3-5,9"
    assert compact_steps([]) == "" and compact_steps([7]) == "7"


# ------------------------------------------------------------------------------------------ sweep callback
def _callback(store: str) -> MlflowSweepCallback:
    parent = RunLogger(
        store, "outage-sweep", run_name="sweep", tags={"rlan.sweep": "s", "rlan.role": "sweep"}
    )
    config = tiny()
    return MlflowSweepCallback(store, "outage-sweep", "s", parent.run_id, config, "score", 3, echo=False)


def test_a_trial_resumed_after_its_last_epoch_gets_its_end_plots_from_its_newest_train_checkpoint(
    store, tmp_path
):
    # Resumed after finishing training during an interruption, a trial reports its last epoch again without
    # a checkpoint path (seen in the interrupted-ablation test at two trials at a time).
    train = tmp_path / "train" / "trial-t9"
    for name in ("checkpoint_2026-12-03_15-16-36.1", "checkpoint_2026-12-03_15-16-38.2"):
        (train / name / "plots").mkdir(parents=True)
        (train / name / "plots" / f"{name[-1]}.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    callback = _callback(store)
    callback.train_root = str(tmp_path / "train")
    trial = SimpleNamespace(trial_id="t9", config={})
    callback.on_trial_start(0, [], trial)
    callback.on_trial_result(0, [], trial, {"epoch": 2.0, "score": 0.5, "train/loss": 1.0})
    callback.on_trial_complete(0, [], trial)
    callback.wait_idle()
    client = MlflowClient(store)
    (run,) = client.search_runs(
        [client.get_experiment_by_name("outage-sweep").experiment_id], "tags.`rlan.trial_id` = 't9'"
    )
    assert {a.path for a in client.list_artifacts(run.info.run_id, "plots")} == {
        "plots/2.png",  # the newest checkpoint's, not the older one's
        "plots/learning_curves.png",
    }


def test_an_epoch_that_never_reached_tune_is_reported_as_a_gap(store):
    callback = _callback(store)
    trial = SimpleNamespace(trial_id="t1", config={})
    callback.on_trial_start(0, [], trial)
    for epoch in (1, 3, 3):  # epoch 2's report died with its trial driver; 3 is re-reported after a restart
        callback.on_trial_result(
            0, [], trial, {"epoch": float(epoch), "score": 0.1 * epoch, "train/loss": 1.0}
        )
    callback.on_trial_complete(0, [], trial)
    callback.wait_idle()  # the writes run on the callback's writer thread
    client = MlflowClient(store)
    (run,) = client.search_runs(
        [client.get_experiment_by_name("outage-sweep").experiment_id], "tags.`rlan.trial_id` = 't1'"
    )
    assert run.data.tags[GAP_TAG] == "2" and run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "score")] == [1, 3]


def _keep_checkpoints(train, epochs) -> list:
    """Checkpoint folders laid out as Ray Train keeps them, each holding the metrics of the epoch it ends."""
    import torch

    folders = []
    for index, epoch in enumerate(epochs):
        folder = train / f"checkpoint_2026-12-04_03-40-0{index}.{index}"
        folder.mkdir(parents=True)
        metrics = {"epoch": float(epoch), "score": 0.1 * epoch, "train/loss": 1.0 / epoch}
        state = {"model": {}, "optimizer": {}, "epoch": epoch, "config": {}, "last_metrics": metrics}
        torch.save(state, folder / "checkpoint.pt")
        folders.append(folder)
    return folders


def _report_and_read(callback, trial, epochs, store: str):
    """Report `epochs` for the trial, end it, and read back its MLflow score history and tags."""
    for epoch in epochs:
        callback.on_trial_result(
            0, [], trial, {"epoch": float(epoch), "score": 0.1 * epoch, "train/loss": 1.0}
        )
    callback.on_trial_complete(0, [], trial)
    callback.wait_idle()
    client = MlflowClient(store)
    (run,) = client.search_runs(
        [client.get_experiment_by_name("outage-sweep").experiment_id],
        f"tags.`rlan.trial_id` = '{trial.trial_id}'",
    )
    history = client.get_metric_history(run.info.run_id, "score")
    return [(m.step, round(m.value, 6)) for m in history], run.data.tags


def test_an_epoch_whose_report_died_after_its_checkpoint_is_recovered_from_that_checkpoint(store, tmp_path):
    # The driver was killed after Train kept epoch 2's checkpoint but before Tune had epoch 2's report;
    # `rlan resume` continues at epoch 3. The checkpoint holds epoch 2's metrics: MLflow gets them, no gap.
    # The checkpoints appear after the trial's start here, so the gap before epoch 3 finds them (as when
    # the start could not reach MLflow); the next test has them before the start.
    callback = _callback(store)
    callback.train_root = str(tmp_path / "train")
    trial = SimpleNamespace(trial_id="t4", config={})
    callback.on_trial_start(0, [], trial)
    callback.wait_idle()
    _keep_checkpoints(tmp_path / "train" / "trial-t4", (1, 2, 3))
    history, tags = _report_and_read(callback, trial, (1, 3), store)
    assert history == [(1, 0.1), (2, 0.2), (3, 0.3)]
    assert GAP_TAG not in tags


def test_a_resumed_trial_recovers_its_lost_epoch_at_start_before_retention_can_delete_it(store, tmp_path):
    # `rlan resume` after a kill that lost epoch 1's report: Train kept epoch 1's checkpoint. Once the
    # resumed Train run keeps epochs 2 and 3 (2 kept, best by score), retention may delete epoch 1's before
    # the writer sees epoch 2's result. A clean-clone CI run lost epoch 1 so: it is read at the trial's start.
    import shutil

    (folder,) = _keep_checkpoints(tmp_path / "train" / "trial-t5", (1,))
    callback = _callback(store)
    callback.train_root = str(tmp_path / "train")
    trial = SimpleNamespace(trial_id="t5", config={})
    callback.on_trial_start(0, [], trial)
    callback.wait_idle()
    shutil.rmtree(folder)  # retention, after the resumed run kept epochs 2 and 3
    history, tags = _report_and_read(callback, trial, (2, 3), store)
    assert history == [(1, 0.1), (2, 0.2), (3, 0.3)]
    assert GAP_TAG not in tags


def test_the_sweep_callback_goes_on_when_mlflow_stays_down(store, monkeypatch, capsys):
    callback = _callback(store)
    trial = SimpleNamespace(trial_id="t2", config={})

    def down(*args, **kwargs):
        raise TrackingUnavailable("MLflow unavailable for 60 s (test)")

    monkeypatch.setattr(RunLogger, "__init__", down)  # the child run cannot even be opened
    callback.on_trial_start(0, [], trial)
    callback.on_trial_result(0, [], trial, {"epoch": 1.0, "score": 0.1})
    callback.on_trial_complete(0, [], trial)
    callback.on_trial_error(0, [], SimpleNamespace(trial_id="t3", config={}, error_message="boom"))
    callback.wait_idle()
    warnings = capsys.readouterr().err
    assert warnings.count("not written to MLflow: MLflow unavailable") == 4
    monkeypatch.undo()
    callback.on_trial_result(0, [], trial, {"epoch": 2.0, "score": 0.2})  # MLflow back: epoch 1 is the gap
    callback.on_trial_complete(0, [], trial)
    callback.wait_idle()
    client = MlflowClient(store)
    (run,) = client.search_runs(
        [client.get_experiment_by_name("outage-sweep").experiment_id], "tags.`rlan.trial_id` = 't2'"
    )
    assert run.data.tags[GAP_TAG] == "1" and [
        m.step for m in client.get_metric_history(run.info.run_id, "score")
    ] == [2]


def test_the_sweep_callback_writes_a_trials_epochs_together_off_tunes_loop_and_plots_without_reading_back(
    store, monkeypatch
):
    callback = _callback(store)
    callback.flush_every_s = 3600.0  # nothing is idle for that long in this test
    trial = SimpleNamespace(trial_id="t-together", config={})
    metric_requests, threads, real = [], set(), MlflowClient.log_batch

    def log_batch(self, run_id, metrics=(), **kwargs):
        metric_requests.extend([len(metrics)] if metrics else [])
        threads.add(threading.current_thread().name)
        return real(self, run_id, metrics=metrics, **kwargs)

    monkeypatch.setattr(MlflowClient, "log_batch", log_batch)
    callback.on_trial_start(0, [], trial)
    for epoch in range(1, 7):
        callback.on_trial_result(
            0, [], trial, {"epoch": float(epoch), "score": 0.1 * epoch, "train/loss": 1.0}
        )
    callback.wait_idle()
    run_id = callback._runs["t-together"].run_id
    client = MlflowClient(store)
    steps = lambda: [m.step for m in client.get_metric_history(run_id, "score")]  # noqa: E731
    assert steps() == [1]  # the first epoch at once; the others wait for the window
    assert len(threads) == 1 and threads.pop().startswith("rlan-mlflow-writer")  # one trial, one writer

    def no_reads(*args, **kwargs):
        raise AssertionError("the curves of a run this callback created are drawn from what it saw")

    monkeypatch.setattr(RunLogger, "metric_history", no_reads)
    callback.on_trial_complete(0, [], trial)
    callback.on_experiment_end([])
    assert steps() == [1, 2, 3, 4, 5, 6] and len(metric_requests) == 2  # epoch 1, then epochs 2-6
    artifacts = [a.path for a in client.list_artifacts(run_id, "plots")]
    assert "plots/learning_curves.png" in artifacts and client.get_run(run_id).info.status == "FINISHED"


# ------------------------------------------------------------------------------------------ NaN batches
def test_the_health_stopper_ends_a_nan_trial_as_unhealthy_and_killed(store):
    stopper = HealthStopper(nan_batches_abort=3)
    assert not stopper("t", {"train/loss": 1.0, "nan_batches": 2})
    assert stopper("t", {"train/loss": 1.0, "nan_batches": 3})
    assert stopper("t", {"train/loss": 1.0, "epoch_aborted": 1.0})
    assert stopper("t", {"train/loss": float("nan")}) and not stopper.stop_all()
    callback = _callback(store)
    trial = SimpleNamespace(trial_id="t4", config={})
    callback.on_trial_result(0, [], trial, {"epoch": 1.0, "train/loss": float("inf"), "nan_batches": 3.0})
    callback.on_trial_complete(0, [], trial)
    callback.wait_idle()
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("outage-sweep").experiment_id
    (run,) = client.search_runs([experiment], "tags.`rlan.trial_id` = 't4'")
    assert run.data.tags["rlan.stop_reason"] == "unhealthy" and run.info.status == "KILLED"


def test_a_checkpoint_artifact_that_cannot_be_logged_is_recorded_and_the_trial_still_ends(store, tmp_path):
    callback = _callback(store)
    callback.log_checkpoints = True
    trial = SimpleNamespace(trial_id="t-art", config={})
    callback.on_trial_start(0, [], trial)
    missing = tmp_path / "gone" / "checkpoint_000001"  # deleted by retention, or never synced
    callback.on_trial_result(
        0, [], trial, {"epoch": 2.0, "score": 0.1, "train/loss": 1.0, "checkpoint_path": str(missing)}
    )
    callback.on_trial_complete(0, [], trial)  # would raise, and so abort the sweep, before
    callback.wait_idle()
    client = MlflowClient(store)
    (run,) = client.search_runs(
        [client.get_experiment_by_name("outage-sweep").experiment_id], "tags.`rlan.trial_id` = 't-art'"
    )
    assert run.info.status == "FINISHED" and run.data.tags["rlan.stop_reason"] == "completed"
    assert "checkpoint.pt" in run.data.tags[ARTIFACT_ERROR_TAG]
