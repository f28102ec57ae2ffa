"""The one recorder of every run (orchestrator/tracking/recorder.py), on a real SQLite MLflow store."""

import pytest
from mlflow import MlflowClient

from orchestrator.tracking.recorder import ERROR_TAG, RunRecorder
from orchestrator.tracking.run_logger import GAP_TAG, RunLogger
from rlan.diagnostics import CURVE_KEYS
from tests.conftest import tiny


@pytest.fixture
def store(tmp_path):
    return f"sqlite:///{tmp_path}/mlruns.db"


def open_run(store, config, identity):
    return RunRecorder.open(config, store, "recorder", run_name="r", identity=identity)


def test_the_same_identity_re_attaches_its_run_and_a_changed_param_becomes_a_tag(store):
    identity = {"rlan.train_name": "a", "rlan.train_storage": "/data/it's here"}  # a quote in a value
    first = open_run(store, tiny(), identity)
    first.log_epoch(1, {"epoch": 1.0, "train/loss": 2.0})
    first.logger.set_tags({ERROR_TAG: "worker 0: OOM"})
    first.end("FAILED")
    other = open_run(store, tiny(), {**identity, "rlan.train_name": "b"})
    assert other.run_id != first.run_id

    again = open_run(store, tiny("training.max_epochs=5"), identity)
    assert again.run_id == first.run_id and again.last_step == 1
    run = MlflowClient(store).get_run(first.run_id)
    assert run.info.status == "RUNNING" and ERROR_TAG not in run.data.tags
    assert run.data.tags["rlan.resumed_with.training.max_epochs"] == "5"
    assert run.data.params["training.max_epochs"] == str(tiny().training.max_epochs)


def test_each_epoch_is_logged_once_and_a_jump_is_a_gap(store):
    run = open_run(store, tiny(), None)
    assert run.record(1, {"epoch": 1.0, "train/loss": 3.0, "note": "text is dropped"})
    assert not run.record(1, {"epoch": 1.0, "train/loss": 9.0})  # re-reported: MLflow has it (once flushed)
    assert run.record(4, {"epoch": 4.0, "train/loss": 1.0})
    assert run.queued
    run.flush()
    assert not run.queued
    run.log_epoch(5, {"epoch": 5.0, "train/loss": 0.5})
    client = MlflowClient(store)
    loss = sorted((m.step, m.value) for m in client.get_metric_history(run.run_id, "train/loss"))
    assert loss == [(1, 3.0), (4, 1.0), (5, 0.5)]
    assert client.get_run(run.run_id).data.tags[GAP_TAG] == "2-3"


def test_curves_come_from_what_it_recorded_or_are_read_back(store, monkeypatch):
    run = open_run(store, tiny(), {"rlan.trial_id": "t"})
    for epoch in (1, 2):
        run.log_epoch(epoch, {"epoch": float(epoch), "train/loss": 1.0 / epoch, "lr": 0.1})
    history = RunLogger.metric_history
    monkeypatch.setattr(RunLogger, "metric_history", lambda *a: pytest.fail("a fresh run reads nothing back"))
    assert run.curves() == {"train/loss": [(1, 1.0), (2, 0.5)]}  # the catalogue's curve keys only
    assert "lr" not in CURVE_KEYS
    monkeypatch.setattr(RunLogger, "metric_history", history)
    resumed = open_run(store, tiny(), {"rlan.trial_id": "t"})  # MLflow holds epochs it did not see
    resumed.log_epoch(3, {"epoch": 3.0, "train/loss": 0.25})
    assert resumed.curves() == {"train/loss": [(1, 1.0), (2, 0.5), (3, 0.25)]}


def test_end_artifacts_come_from_the_final_checkpoint_folder(store, tmp_path):
    folder = tmp_path / "epoch_0002"
    (folder / "plots").mkdir(parents=True)
    (folder / "plots" / "clue_attention.png").write_bytes(b"png")
    (folder / "plots" / "heldout_queries.json").write_text("[]")
    (folder / "checkpoint.pt").write_bytes(b"weights")
    run = open_run(store, tiny(), None)
    run.log_epoch(1, {"epoch": 1.0, "train/loss": 1.0})
    run.log_end_artifacts(str(folder), log_checkpoint=False)
    run.end(tags={"rlan.stop_reason": "completed"})
    client = MlflowClient(store)
    paths = {a.path for top in ("config", "plots", "results") for a in client.list_artifacts(run.run_id, top)}
    assert paths == {
        "config/resolved_config.yaml",
        "plots/learning_curves.png",
        "plots/clue_attention.png",
        "results/heldout_queries.json",
    }
    assert not client.list_artifacts(run.run_id, "checkpoint")  # log_checkpoint=False: the plots only
    ended = client.get_run(run.run_id)
    assert ended.info.status == "FINISHED" and ended.data.tags["rlan.stop_reason"] == "completed"
