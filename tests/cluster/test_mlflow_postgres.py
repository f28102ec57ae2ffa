"""A real MLflow tracking server on PostgreSQL 15: sweeps log over HTTP, `rlan compare` reads them back, a
server killed and restarted in the middle of a sweep costs no metric, and a proxy in front of it that starts
refusing (401) stops the sweep at once, resumable.

The servers come from bench/mlflow_postgres.py (shared with `python -m bench --scale`). The tests skip only when
the PostgreSQL binaries are absent.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path

import pytest
from mlflow import MlflowClient
from ray import tune

from bench.mlflow_postgres import MlflowServer, PostgresUnavailable, throwaway_postgres
from orchestrator.comparison.compare import compare_sweep
from orchestrator.sweeps.sweep import resume_sweep, run_sweep
from orchestrator.tracking.run_logger import GAP_TAG, RunLogger
from orchestrator.tracking.uri import TrackingRefused
from tests.cluster._util import Background, wait_for
from tests.conftest import start_local_ray, sweep_children, sweep_settings, tiny, write_space
from tests.http_endpoint import Endpoint, forward

pytestmark = pytest.mark.slow
MEASURED: dict[str, float] = {}


@pytest.fixture(scope="module")
def postgres():
    """A throw-away PostgreSQL 15 (bench/mlflow_postgres.py); yields its SQLAlchemy URI."""
    with ExitStack() as stack:
        try:
            uri = stack.enter_context(throwaway_postgres())
        except PostgresUnavailable as exc:
            pytest.skip(str(exc))
        yield uri


@pytest.fixture(scope="module")
def mlflow_server(postgres, tmp_path_factory):
    folder = tmp_path_factory.mktemp("mlflow-server")
    server = MlflowServer(postgres, folder / "artifacts", folder / "server.log")
    try:
        MEASURED["server first start, schema created (s)"] = server.start()
        yield server
    finally:
        server.kill()
        for key, value in MEASURED.items():
            print(f"[mlflow-postgres] {key}: {value:.1f}")


@pytest.fixture(scope="module")
def local_ray():
    # 3 logical CPUs: two 1-worker trials and their token-CPU drivers at once on this 2-core machine.
    with start_local_ray(num_cpus=3) as ray:
        yield ray


def postgres_sweep(tmp_path: Path, server: MlflowServer, name: str, **kw):
    space = write_space(tmp_path)
    settings = sweep_settings(
        tmp_path, name, space, tracking_uri=server.uri, experiment="postgres-sweeps", trials=2,
        concurrency=2, scheduler="fifo", **kw,
    )  # fmt: skip
    return settings, space


def steps(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return [m.step for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


# ------------------------------------------------------------------------------------------ tests
def test_a_sweep_logged_over_http_reads_back_with_compare(mlflow_server, local_ray, tmp_path):
    epochs = 2
    settings, space = postgres_sweep(tmp_path, mlflow_server, "over-http")
    summary = run_sweep(tiny(f"training.max_epochs={epochs}"), space, settings)
    assert summary["trials"] == 2 and summary["errors"] == 0

    comparison = compare_sweep(mlflow_server.uri, "over-http", out=str(tmp_path / "compare"))
    client, parents, children = sweep_children(mlflow_server.uri, "over-http")
    assert len(parents) == 1 and comparison.parent_run_id == parents[0].info.run_id
    assert len(children) == 2 and len(comparison.trials) == 2
    assert {t.run_id for t in comparison.trials} == {r.info.run_id for r in children}
    for trial in comparison.trials:
        assert trial.status == "FINISHED" and trial.stop_reason == "completed" and trial.epochs == epochs
        assert trial.value is not None and "train/loss" in trial.diagnostics
        for key in ("epoch", "score", "train/loss", "heldout/exact_match"):
            assert steps(client, trial.run_id, key) == list(range(1, epochs + 1)), key
    assert comparison.best is not None and comparison.best_config_yaml
    # Artifacts go through the server's proxy into --artifacts-destination.
    logged = {a.path for a in client.list_artifacts(parents[0].info.run_id, "compare")}
    assert "compare/best_config.yaml" in logged
    assert {a.path for a in client.list_artifacts(children[0].info.run_id, "plots")} >= {
        "plots/learning_curves.png"
    }


def test_a_sweep_keeps_going_while_the_server_restarts(mlflow_server, local_ray, tmp_path):
    epochs, name = 4, "server-restart"
    settings, space = postgres_sweep(tmp_path, mlflow_server, name, max_failures=0)
    sweep = Background(lambda: run_sweep(tiny(f"training.max_epochs={epochs}"), space, settings))
    sweep.start()

    def first_epoch_logged() -> bool:
        _, _, children = sweep_children(mlflow_server.uri, name)
        return any(run.data.metrics.get("epoch", 0) >= 1 for run in children)

    wait_for(first_epoch_logged, 240, "the first trial's first epoch in MLflow", sweep.is_alive)
    killed_at = time.time()
    mlflow_server.kill()
    # Keep it down until Train has checkpointed an epoch more (its report must now reach MLflow late).
    snapshots = Path(settings.sweep_dir, "train").glob
    newer = lambda: [
        p for p in snapshots("trial-*/checkpoint_manager_snapshot.json") if p.stat().st_mtime > killed_at
    ]
    wait_for(
        lambda: newer() and time.time() - killed_at > 3, 120, "an epoch during the outage", sweep.is_alive
    )
    MEASURED["restart: start to /health (s)"] = mlflow_server.start()
    MEASURED["restart: server down (s)"] = time.time() - killed_at
    summary = sweep.outcome(400)
    MEASURED["restart: server back to sweep done (s)"] = (
        time.time() - killed_at - MEASURED["restart: server down (s)"]
    )

    assert summary["trials"] == 2 and summary["errors"] == 0
    client, parents, children = sweep_children(mlflow_server.uri, name)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 2
    for run in children:
        assert run.info.status == "FINISHED" and run.data.tags["rlan.stop_reason"] == "completed"
        assert GAP_TAG not in run.data.tags  # the outage was shorter than the retry budget: nothing missing
        for key in ("epoch", "train/loss", "score"):
            assert steps(client, run.info.run_id, key) == list(range(1, epochs + 1)), key


def test_a_proxy_that_starts_refusing_stops_the_sweep_at_once_and_resume_finishes_it(
    mlflow_server, local_ray, tmp_path, monkeypatch
):
    # A proxy in front of the server, as an auth gateway is; it refuses everything (401) from the first
    # epoch's metrics on, as when a token expires mid-sweep. An outage would be retried for 60 s per call.
    epochs, name, refusing = 2, "refused-mid-way", []
    unauthorised = (401, "text/html", b"<html>session expired: log in again</html>")

    def gateway(request):
        if not refusing and b'"train/loss"' in request.body:
            refusing.append(len(proxy.requests))  # requests before the first refused one
        return unauthorised if refusing else forward(mlflow_server.uri, request)

    for variable in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(variable, raising=False)
    with Endpoint(gateway) as proxy:
        settings, space = postgres_sweep(tmp_path, mlflow_server, name)
        settings.tracking_uri, settings.concurrency = proxy.uri, 1
        with pytest.raises(TrackingRefused) as info:
            run_sweep(tiny(f"training.max_epochs={epochs}"), space, settings)
        line = str(info.value)
        assert proxy.uri in line and "HTTP 401" in line and f"rlan resume {name}" in line
        assert len(proxy.requests) - refusing[0] <= 2  # refused once, asked no more (no minute of retries)
        assert tune.Tuner.can_restore(settings.sweep_dir)
        _, _, children = sweep_children(mlflow_server.uri, name)
        assert len(children) == 1  # the sweep stopped in its first trial

        proxy.answer = lambda request: forward(mlflow_server.uri, request)
        _, summary = resume_sweep(settings.sweep_dir)
    assert summary["trials"] == 2 and summary["errors"] == 0 and summary["unfinished"] == 0
    client, parents, children = sweep_children(mlflow_server.uri, name)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED" and len(children) == 2
    for run in children:
        assert run.data.tags["rlan.stop_reason"] == "completed"
        # The refused epoch 1 is logged when the resumed trial trains it again (Tune had not registered its
        # checkpoint when the writer's refusal stopped the loop), else it is named as missing; nothing else is.
        assert run.data.tags.get(GAP_TAG, "") in ("", "1")
        logged = list(range(2 if run.data.tags.get(GAP_TAG) else 1, epochs + 1))
        assert steps(client, run.info.run_id, "train/loss") == logged


def test_metrics_wait_in_memory_while_the_server_is_down(mlflow_server, monkeypatch):
    # No retries at all, so every call made while the server is down fails at once and the buffer is used;
    # a buffer of 2 metrics, so the logger with 2 keys per step must drop its oldest step and report it.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("RLAN_MLFLOW_RETRY_S", "0")
    monkeypatch.setenv("RLAN_MLFLOW_BUFFER_METRICS", "2")
    small = RunLogger(mlflow_server.uri, "postgres-buffer", run_name="one-key")
    wide = RunLogger(mlflow_server.uri, "postgres-buffer", run_name="two-keys")
    for logger in (small, wide):
        logger.log_metrics({"a": 1.0, "b": 1.0} if logger is wide else {"a": 1.0}, step=1)

    mlflow_server.kill()
    started = time.monotonic()
    for step in (2, 3):
        small.log_metrics({"a": float(step)}, step=step)
        wide.log_metrics({"a": float(step), "b": float(step)}, step=step)
    assert time.monotonic() - started < 10  # nothing waits for the server
    assert small.buffered_steps == [2, 3] and wide.buffered_steps == [3]
    mlflow_server.start()

    for logger in (small, wide):
        logger.log_metrics({"a": 4.0, "b": 4.0} if logger is wide else {"a": 4.0}, step=4)
        assert logger.buffered_steps == []
        logger.end()
    client = MlflowClient(mlflow_server.uri)
    assert [(m.step, m.value) for m in client.get_metric_history(small.run_id, "a")] == [
        (s, float(s)) for s in (1, 2, 3, 4)
    ]
    assert steps(client, wide.run_id, "a") == steps(client, wide.run_id, "b") == [1, 3, 4]
    assert client.get_run(wide.run_id).data.tags[GAP_TAG] == "2"
    assert GAP_TAG not in client.get_run(small.run_id).data.tags
