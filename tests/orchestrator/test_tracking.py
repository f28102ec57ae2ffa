import math
import os
import socket
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from mlflow import MlflowClient  # noqa: E402

from orchestrator.tracking import uri as tracking_uri  # noqa: E402
from orchestrator.tracking.experiments import get_or_create_experiment  # noqa: E402
from orchestrator.tracking.names import sanitize_key  # noqa: E402
from orchestrator.tracking.run_logger import RunLogger  # noqa: E402
from orchestrator.tracking.uri import (  # noqa: E402
    TrackingError,
    check_reachable,
    default_artifact_root,
    resolve_tracking_uri,
    run_tags,
)
from rlan.config import RunConfig  # noqa: E402


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """One SQLite store for the module: creating its tables is the slow part."""
    folder = tmp_path_factory.mktemp("mlflow")
    return f"sqlite:///{folder}/mlruns.db"


@pytest.fixture(autouse=True)
def _no_env_uri(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)  # nothing may land in the cwd


# ------------------------------------------------------------------------------------ URIs
def test_resolve_prefers_cli_then_env_then_default(monkeypatch, tmp_path):
    assert resolve_tracking_uri(None) == f"sqlite:///{tmp_path}/mlruns.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env-host:5000")
    assert resolve_tracking_uri(None) == "http://env-host:5000"
    assert resolve_tracking_uri("https://cli-host") == "https://cli-host"


def test_resolve_makes_relative_sqlite_and_bare_paths_absolute(tmp_path):
    assert resolve_tracking_uri("sqlite:///mlruns.db") == f"sqlite:///{tmp_path}/mlruns.db"
    assert resolve_tracking_uri("sub/runs.db") == f"sqlite:///{tmp_path}/sub/runs.db"
    assert resolve_tracking_uri("sqlite:////abs/x.db?timeout=30") == "sqlite:////abs/x.db?timeout=30"


@pytest.mark.parametrize("uri", ["file://{tmp}/mlruns", "./mlruns", "mlruns/", "mlruns"])
def test_resolve_rejects_the_file_store_in_one_line(uri, tmp_path):
    (tmp_path / "mlruns").mkdir()
    uri = uri.format(tmp=tmp_path)
    with pytest.raises(TrackingError, match="refuses the file store") as info:
        resolve_tracking_uri(uri)
    assert "\n" not in str(info.value) and str(info.value).endswith(f"use sqlite:///{tmp_path}/mlruns.db")


@pytest.mark.parametrize("uri", ["ftp://x", "sqlite://", "sqlite:///", "http://"])
def test_resolve_rejects_unknown_forms_naming_the_uri(uri):
    with pytest.raises(TrackingError, match="expected sqlite:///") as info:
        resolve_tracking_uri(uri)
    assert f"'{uri}'" in str(info.value) and "\n" not in str(info.value)


def test_env_uri_error_names_the_variable(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "file:///x")
    with pytest.raises(TrackingError, match="^MLFLOW_TRACKING_URI 'file:///x'"):
        resolve_tracking_uri(None)


def test_check_reachable_closed_port_is_one_line():
    with socket.socket() as probe:  # a port that was free a moment ago and has no listener now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(TrackingError, match="cannot reach MLflow at http://127.0.0.1") as info:
        check_reachable(f"http://127.0.0.1:{port}", timeout_s=2)
    assert "\n" not in str(info.value)


def test_check_reachable_sqlite_needs_an_existing_folder(tmp_path):
    check_reachable(f"sqlite:///{tmp_path}/ok.db")
    with pytest.raises(TrackingError, match="cannot reach MLflow.*does not exist"):
        check_reachable(f"sqlite:///{tmp_path}/missing/x.db")


def test_default_artifact_root_sits_next_to_the_db():
    assert default_artifact_root("sqlite:////data/runs/mlruns.db") == "file:///data/runs/mlartifacts"
    assert default_artifact_root("http://host:5000") is None


# ------------------------------------------------------------------------------------ keys
@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("eval/pass@2", "eval/pass_at_2"),
        ("train/loss", "train/loss"),
        ("a:b(c)", "a_b_c_"),
        ("/lead//double/", "lead/double"),
        ("x/../y", "x/_/y"),
        ("", "_"),
    ],
)
def test_sanitize_key_rule(key, expected):
    assert sanitize_key(key) == expected


def test_sanitized_key_is_accepted_and_read_back(store):
    with RunLogger(store, "keys") as run:
        run.log_metrics({"eval/pass@2": 0.25, "weird key:(x)": 1.0}, step=0)
        assert run.metric_history("eval/pass@2") == [(0, 0.25)]
        logged = MlflowClient(store).get_run(run.run_id).data.metrics
    assert logged == {"eval/pass_at_2": 0.25, "weird key__x_": 1.0}


# ------------------------------------------------------------------------------------ runs
def test_run_logger_round_trip(store, tmp_path):
    config = RunConfig()
    note = tmp_path / "note.txt"
    note.write_text("hello")
    with RunLogger(store, "round-trip", run_name="r1", tags={"kind": "unit"}) as run:
        run.log_params(config.to_flat_dict())
        for step in range(3):
            run.log_metrics({"train/loss": 1.0 / (step + 1), "train/acc": step / 4, "skip": "text"}, step)
        run.set_tags({"stage": "done"})
        run.log_artifact(note, "notes")
        run.log_text("abc", "text/a.txt")
        run.log_dict_yaml({"a": 1}, "config.yaml")
        fig, ax = plt.subplots()
        ax.plot([0, 1], [1, 0])
        run.log_figure(fig, "plots/curve.png")
        assert run.last_logged_step("train/loss") == 2
        assert run.last_logged_step("never") is None
    client = MlflowClient(store)
    got = client.get_run(run.run_id)
    assert got.info.status == "FINISHED" and got.info.run_name == "r1"
    assert got.data.params["training.learning_rate"] == str(config.training.learning_rate)
    assert len(got.data.params) == len(config.to_flat_dict()) > 100  # more than one params batch
    assert got.data.tags["kind"] == "unit" and got.data.tags["stage"] == "done"
    assert "skip" not in got.data.metrics
    history = client.get_metric_history(run.run_id, "train/loss")
    assert sorted((m.step, m.value) for m in history) == [(0, 1.0), (1, 0.5), (2, pytest.approx(1 / 3))]
    top = {f.path for f in client.list_artifacts(run.run_id)}
    assert top == {"notes", "text", "config.yaml", "plots"}
    pngs = client.list_artifacts(run.run_id, "plots")
    assert [f.path for f in pngs] == ["plots/curve.png"] and pngs[0].file_size > 0
    assert got.info.artifact_uri.startswith(default_artifact_root(store))
    assert plt.get_fignums() == []  # log_figure closed the figure
    assert not (tmp_path / "mlruns").exists()


def test_nan_and_inf_are_kept(store):
    with RunLogger(store, "nan") as run:
        run.log_metrics({"loss": float("nan"), "grad": float("inf"), "ok": True}, step=5)
        values = MlflowClient(store).get_run(run.run_id).data.metrics
    assert math.isnan(values["loss"]) and values["grad"] > 1e300 and values["ok"] == 1.0  # SQLite caps inf


def test_child_run_is_found_by_parent_tag(store):
    with RunLogger(store, "sweep", run_name="parent") as parent:
        children = [
            RunLogger(store, "sweep", run_name=f"t{i}", parent_run_id=parent.run_id) for i in range(2)
        ]
        for child in children:
            child.end()
    client = MlflowClient(store)
    experiment_id = get_or_create_experiment(client, "sweep")
    found = client.search_runs(
        [experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.run_id}'"
    )
    assert sorted(r.info.run_id for r in found) == sorted(c.run_id for c in children)


def test_reattaching_logs_the_same_params_again(store):
    first = RunLogger(store, "resume")
    first.log_params({"a": 1, "b": "x"})
    first.log_metrics({"loss": 0.5}, step=3)
    first.end("KILLED")
    second = RunLogger(store, "resume", run_id=first.run_id, tags={"resumed": "yes"})
    second.log_params({"a": 1, "b": "x", "c": 2.5})
    assert second.last_logged_step("loss") == 3
    with pytest.raises(TrackingError, match="param 'a'.*cannot change"):
        second.log_params({"a": 2})
    second.end()
    got = MlflowClient(store).get_run(first.run_id)
    assert got.data.params == {"a": "1", "b": "x", "c": "2.5"}
    assert got.data.tags["resumed"] == "yes" and got.info.status == "FINISHED"


def test_end_killed_and_long_params_truncated(store):
    run = RunLogger(store, "status")
    run.log_params({"long": "x" * 7000})
    run.end("KILLED")
    run.end("FINISHED")  # a second end does nothing
    got = MlflowClient(store).get_run(run.run_id)
    assert got.info.status == "KILLED" and len(got.data.params["long"]) == 6000


def test_exception_inside_with_ends_failed(store):
    with pytest.raises(ValueError, match="boom"), RunLogger(store, "status") as run:
        raise ValueError("boom")
    assert MlflowClient(store).get_run(run.run_id).info.status == "FAILED"


def test_get_or_create_experiment_is_idempotent(store):
    client = MlflowClient(store)
    assert get_or_create_experiment(client, "same") == get_or_create_experiment(client, "same")


# ------------------------------------------------------------------------------------ provenance
def test_run_tags_hold_hash_commit_and_versions(monkeypatch):
    monkeypatch.setattr(tracking_uri, "git_commit", lambda: "a" * 40)
    tags = run_tags(RunConfig(), {"sweep": "s1", "rlan.version.ray": "override"})
    assert tags["rlan.config_hash"] == RunConfig().config_hash()
    assert tags["rlan.git_commit"] == "a" * 40 and tags["sweep"] == "s1"
    assert tags["rlan.version.mlflow"].startswith("3.") and tags["rlan.version.ray"] == "override"
    assert all(isinstance(v, str) for v in tags.values())


def test_git_commit_is_none_where_it_cannot_run(tmp_path):
    assert tracking_uri.git_commit(Path(tmp_path) / "no-such-folder") is None


def _open_store_at_once(uri, barrier, results):
    from orchestrator.tracking.uri import check_reachable

    barrier.wait()  # every process opens the new store in the same instant, as `rlan debug` does
    try:
        check_reachable(uri)
        MlflowClient(uri).create_experiment(f"run-{os.getpid()}")
        results.put("ok")
    except Exception as exc:  # noqa: BLE001 - the test reports whatever a process died of
        results.put(f"{type(exc).__name__}: {exc}")


def test_processes_opening_one_new_sqlite_store_at_once_all_succeed(tmp_path):
    # Two `rlan debug` runs started together on a new store raced in MLflow's schema migration, and one
    # died ("table _alembic_tmp_metrics already exists"); creating the store holds a lock on its folder.
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    uri = f"sqlite:///{tmp_path}/new.db"
    barrier, results = context.Barrier(3), context.Queue()
    processes = [context.Process(target=_open_store_at_once, args=(uri, barrier, results)) for _ in range(3)]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=60)
    assert outcomes == ["ok"] * 3
    assert MlflowClient(uri).get_experiment("0").name == "Default"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.db"]  # no lock file left behind
