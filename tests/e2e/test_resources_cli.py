"""A sweep asking for a GPU on a machine without one: Ray would queue its trials forever; `rlan sweep` exits 2
with one line once the local Ray is up, before any MLflow run or trial exists."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.e2e.bad_input_cases import CONFIG, QUICK_SPACE, TINY

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_a_gpu_per_trial_without_a_gpu_exits_2_in_one_line(tmp_path):
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", PYTHONPATH=str(ROOT))
    with tempfile.TemporaryDirectory(dir="/tmp", prefix="rlan-") as ray_tmp:  # Ray's socket paths are short
        env["RAY_TMPDIR"] = ray_tmp
        uri = f"sqlite:///{tmp_path}/runs.db"
        done = subprocess.run(
            [sys.executable, "-m", "orchestrator.cli", "sweep", "-c", CONFIG, "-s", QUICK_SPACE, *TINY]
            + [
                "--gpus-per-worker",
                "1",
                "--trials",
                "1",
                "--tracking-uri",
                uri,
                "--storage",
                str(tmp_path / "r"),
            ]
            + ["--quiet"],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=ROOT,
            env=env,
        )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr + done.stdout
    ours = [line for line in done.stderr.splitlines() if line.startswith("rlan sweep:")]
    assert len(ours) == 1 and "needs 1 worker(s) of 1 CPU and 1 GPU each" in ours[0], done.stderr[-2000:]
    client = MlflowClient(uri)
    assert not client.search_runs([e.experiment_id for e in client.search_experiments()])  # nothing started
