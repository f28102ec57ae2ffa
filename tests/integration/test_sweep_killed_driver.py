"""A sweep driver killed mid-trial and resumed with `rlan resume`, through the CLI as a user runs it."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import TINY_MODEL, sweep_children

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _rlan(*args, cwd, **kw):
    env = dict(os.environ, TUNE_GLOBAL_CHECKPOINT_S="1", RAY_USAGE_STATS_ENABLED="0")
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kw,
    )


def test_a_killed_driver_resumes_with_no_duplicate_runs_or_steps(tmp_path):
    uri = f"sqlite:///{tmp_path}/runs.db"
    overrides = [
        *TINY_MODEL,
        "data.max_tasks=4",
        "data.samples_per_task=2",
        "evaluation.max_tasks=3",
        "evaluation.heldout_max_tasks=3",
        "training.max_epochs=3",
        "logging.experiment_name=resume-test",
    ]
    sweep = _rlan(
        "sweep",
        "-c",
        str(ROOT / "configs/debug.yaml"),
        "-s",
        str(ROOT / "search_spaces/quick.yaml"),
        *overrides,
        "--trials",
        "2",
        "--concurrency",
        "1",
        "--scheduler",
        "fifo",
        "--name",
        "kill-me",
        "--tracking-uri",
        uri,
        "--quiet",
        cwd=tmp_path,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    try:
        # Wait (on the file system, not MLflow: a second process touching a fresh SQLite store races its
        # schema migration) until trial 1 has its first checkpoint, then kill everything: trial 1 resumes
        # from it, trial 2 has not started. The kill lands in the window between Train keeping a
        # checkpoint and Tune (and MLflow) receiving its epoch: the epoch comes back from the checkpoint.
        train_runs = tmp_path / "ray_results/kill-me/train"
        while time.monotonic() < deadline:
            runs = list(train_runs.glob("trial-*")) if train_runs.exists() else []
            if any(list(r.glob("checkpoint_*")) for r in runs):
                break
            assert sweep.poll() is None, sweep.stdout.read()
            time.sleep(0.5)
        else:
            pytest.fail("the sweep never checkpointed its first trial")
    finally:
        os.killpg(sweep.pid, signal.SIGKILL)
        sweep.wait()
    assert sweep.returncode == -signal.SIGKILL

    resumed = _rlan("resume", "kill-me", cwd=tmp_path)
    output, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, output[-3000:]
    client, parents, children = sweep_children(uri, "kill-me")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(r.data.tags["rlan.trial_id"] for r in children) == sorted(
        {r.data.tags["rlan.trial_id"] for r in children}
    )
    assert len(children) == 2
    for run in children:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
        assert steps == [1, 2, 3], steps
        assert run.info.status == "FINISHED" and "rlan.metrics_gap" not in run.data.tags
        assert math.isfinite(run.data.metrics["score"])
    state = json.loads((tmp_path / "ray_results/kill-me/rlan_sweep.json").read_text())
    assert state["settings"]["parent_run_id"] == parents[0].info.run_id
