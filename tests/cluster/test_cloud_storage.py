"""A sweep on S3 storage: Tune state, Train checkpoints and the sweep file live in a bucket, and the MLflow
callback logs each trial's plots and final checkpoint from there (Tune hands it the path without its
scheme). The bucket is a real S3 API: moto's server on 127.0.0.1, reached through pyarrow as Ray reaches S3."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient
from ray import tune

from orchestrator.sweeps.sweep import run_sweep
from tests.cluster._util import free_port, wait_for
from tests.conftest import start_local_ray, sweep_settings, tiny, write_space

pytestmark = pytest.mark.slow
MOTO = Path(sys.executable).parent / "moto_server"


@pytest.fixture
def s3(monkeypatch):
    """A moto S3 server and the AWS variables that point pyarrow (and so Ray) at it; yields a bucket URI."""
    import pyarrow.fs

    port = free_port()
    server = subprocess.Popen(
        [str(MOTO), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        for name, value in {
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        }.items():
            monkeypatch.setenv(name, value)
        admin = pyarrow.fs.S3FileSystem(
            endpoint_override=f"127.0.0.1:{port}", scheme="http", allow_bucket_creation=True
        )

        def bucket_made() -> bool:
            try:
                admin.create_dir("rlan-runs")
                return True
            except OSError:
                return server.poll() is not None and pytest.fail("moto_server exited")

        wait_for(bucket_made, 60, "moto's S3 server")
        yield "s3://rlan-runs/sweeps"
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)


def test_a_sweep_on_s3_logs_checkpoints_and_plots_from_the_bucket(s3, tmp_path):
    space = write_space(tmp_path, "training.learning_rate: {type: choice, values: [0.003]}\n")
    settings = sweep_settings(
        tmp_path, "on-s3", space, storage=s3, trials=1, concurrency=1, scheduler="fifo", log_checkpoints=True
    )
    with start_local_ray(num_cpus=2):  # started after the AWS variables: its workers inherit them
        summary = run_sweep(tiny(), space, settings)
    assert summary["errors"] == 0 and summary["trials"] == 1
    assert tune.Tuner.can_restore(settings.sweep_dir)  # Tune's state is in the bucket
    client = MlflowClient(settings.tracking_uri)
    experiment = client.get_experiment_by_name(settings.experiment)
    (run,) = client.search_runs([experiment.experiment_id], "tags.`rlan.role` = 'trial'")
    assert "rlan.artifact_error" not in run.data.tags, run.data.tags.get("rlan.artifact_error")
    assert [a.path for a in client.list_artifacts(run.info.run_id, "checkpoint")] == [
        "checkpoint/checkpoint.pt"
    ]
    assert "plots/learning_curves.png" in {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {a.path for a in client.list_artifacts(run.info.run_id, "results")} >= {
        "results/heldout_queries.json"
    }
