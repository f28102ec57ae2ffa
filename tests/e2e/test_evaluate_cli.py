"""`rlan evaluate` as a user runs it: a submission from a trained run's checkpoint (by MLflow run id and by
path), scored top-2 on ARC-AGI-1 tasks, written unscored for task files without outputs; bad input is one line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from orchestrator.runs.debug import run_debug
from tests.conftest import tiny

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def rlan(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("evaluate")
    uri = f"sqlite:///{folder}/runs.db"
    run_id, _ = run_debug(tiny("training.max_epochs=1"), uri, echo=False)
    return folder, uri, run_id


def test_a_run_id_gives_a_scored_submission_logged_to_mlflow(trained):
    folder, uri, run_id = trained
    out = folder / "sub" / "submission.json"
    done = rlan("evaluate", run_id, "--max-tasks", "3", "--out", str(out), "--tracking-uri", uri, cwd=folder)
    assert done.returncode == 0, done.stderr[-2000:]
    submission = json.loads(out.read_text())
    assert len(submission) == 3 and all(len(entries) >= 1 for entries in submission.values())
    assert "score (ARC Prize, top-2): " in done.stdout and "over 3 tasks" in done.stdout
    client = MlflowClient(uri)
    (run,) = [r for r in client.search_runs([r.info.experiment_id for r in [client.get_run(run_id)]])
              if r.data.tags.get("rlan.command") == "evaluate"]  # fmt: skip
    assert run.data.tags["rlan.source"] == run_id and run.data.metrics["submission/outputs"] >= 3
    assert [a.path for a in client.list_artifacts(run.info.run_id, "submission")] == [
        "submission/submission.json"
    ]


def test_task_files_without_outputs_are_predicted_not_scored(trained, tmp_path):
    folder, uri, run_id = trained
    local = MlflowClient(uri).download_artifacts(run_id, "checkpoint/checkpoint.pt", str(tmp_path))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    demo = {"input": [[1, 0], [0, 1]], "output": [[0, 1], [1, 0]]}
    for name in ("aaaa0001", "aaaa0002"):
        (tasks / f"{name}.json").write_text(
            json.dumps({"train": [demo, demo], "test": [{"input": [[1, 1]]}] * 2})
        )
    out = tmp_path / "submission.json"
    done = rlan(
        "evaluate", local, "--folder", str(tasks), "--out", str(out), "--tracking-uri", uri, cwd=folder
    )
    assert done.returncode == 0, done.stderr[-2000:]
    submission = json.loads(out.read_text())
    assert list(submission) == ["aaaa0001", "aaaa0002"] and all(len(v) == 2 for v in submission.values())
    assert "not scored" in done.stdout


@pytest.mark.parametrize(
    ("source", "expect"),
    [
        ("no-such-sweep", "'no-such-sweep': not a checkpoint, a model, an MLflow run id or a sweep"),
        ("0" * 32, "no checkpoint/checkpoint.pt artifact"),
    ],
)
def test_a_source_that_holds_no_checkpoint_is_one_line(trained, source, expect):
    folder, uri, _ = trained
    done = rlan("evaluate", source, "--out", str(folder / "x.json"), "--tracking-uri", uri, cwd=folder)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("rlan evaluate:")]
    assert len(lines) == 1 and expect in lines[0], done.stderr[-2000:]
