"""A tiny real ablation, interrupted and resumed: its arms run through the sweep machinery, no report is
written from part of them, and `rlan resume` finishes every arm into the report and MLflow."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from orchestrator.ablation.report import REPORTED
from tests.conftest import TINY_MODEL

ROOT = Path(__file__).resolve().parents[2]
# Three arms go through the machinery: all on, all off, and the one whose config differs in a second key
# (fix 4). That every one of the eight arms is defined and lands in the report is checked on constructed
# numbers in tests/ablation/test_verdicts.py. (All eight here, and a second ablation for the interruption,
# took 129 s + 84 s.)
RUN_ARMS = ["all_off", "all_on", "without_fix4_pool_context_simple"]
TINY = [*TINY_MODEL, "data.samples_per_task=2", "evaluation.max_tasks=2", "evaluation.heldout_max_tasks=2",
        "evaluation.batch_size=32"]  # fmt: skip


@pytest.mark.slow
def test_an_interrupted_ablation_writes_no_report_until_resume_finishes_every_arm(tmp_path):
    # Ctrl-C stops Tune gracefully and it returns: the ablation used to write a report from the arms it
    # had and exit 0. Now it exits 130 saying how to go on, and `rlan resume` writes the full report.
    uri = f"sqlite:///{tmp_path}/runs.db"
    command = [sys.executable, "-m", "orchestrator.cli"]
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    ablate = subprocess.Popen(
        [*command, "ablate", "-c", str(ROOT / "configs/ablation.yaml"), *TINY, "--epochs", "2", "--tasks", "3",
         "--seeds", "1", "--arms", *RUN_ARMS, "--concurrency", "2", "--name", "tiny-ablation",
         "--tracking-uri", uri, "--out", str(tmp_path / "report"), "--quiet"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    train_runs = tmp_path / "ray_results/tiny-ablation/train"
    deadline = time.monotonic() + 300
    while not (train_runs.exists() and any(train_runs.glob("trial-*/checkpoint_*"))):
        assert ablate.poll() is None and time.monotonic() < deadline, ablate.communicate()
        time.sleep(0.5)  # polling the file system for the first checkpoint, not a sync by sleep
    ablate.send_signal(signal.SIGINT)
    out, err = ablate.communicate(timeout=300)
    assert ablate.returncode == 130, out[-2000:] + err[-2000:]
    assert "interrupted (" in err and "rlan resume tiny-ablation" in err
    assert not (tmp_path / "report/ablation.md").exists()

    resumed = subprocess.run(
        [*command, "resume", "tiny-ablation", "--out", str(tmp_path / "report")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    report = (tmp_path / "report/ablation.md").read_text()
    assert "Seeds per arm: 1" in report
    for arm in RUN_ARMS:
        assert f" {arm} |" in report or f"| {arm} " in report, arm
    for name in REPORTED:
        assert f"| {name} |" in report, name
    assert (tmp_path / "report/ablation_diagnostics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("rlan-ablation").experiment_id
    runs = client.search_runs([experiment], "tags.`rlan.sweep` = 'tiny-ablation'")
    trials = [r for r in runs if r.data.tags.get("rlan.role") == "trial"]
    assert sorted(r.data.tags["rlan.arm"] for r in trials) == sorted(RUN_ARMS)  # each arm once
    (parent,) = [r for r in runs if r.data.tags.get("rlan.role") == "sweep"]
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "ablation")} == {
        "ablation/ablation.md",
        "ablation/ablation_diagnostics.png",
    }
    for run in trials:
        assert run.info.status == "FINISHED"
        plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
        assert {
            "plots/learning_curves.png",
            "plots/predictions_heldout.png",
            "plots/predictions_eval.png",
            "plots/clue_attention.png",
        } <= plots, plots
        assert run.data.params["model.hyperlora_pooling"] == "simple"  # fix 4 leaves the forward alone
        pooling = run.data.params["training.equivariance_training.pooling"]
        assert pooling == (
            "d4" if run.data.tags["rlan.arm"] in ("all_off", "without_fix4_pool_context_simple") else "simple"
        )
