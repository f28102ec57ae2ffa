"""`rlan debug` as a user runs it: a real 2-epoch run on 8 ARC-AGI-1 tasks, read back from MLflow."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[2]
DIAGNOSTICS = [
    "train/loss",
    "train/task_loss",
    "train/exact_match",
    "train/pixel_accuracy",
    "train/entropy",
    "heldout/exact_match",
    "heldout/tta_exact_match",
    "heldout/tta_consensus",
    "eval/exact_match",
    "eval/tta_exact_match",
    "eval/pass_at_2",
    "eval/pass_at_3",
    "eval/tta_consensus",
    "eval/pixel_accuracy",
    "eval/unique_predictions",
    "eval/entropy",
    "entropy_ratio",
    "nan_batches",
    "nan_streak_max",
    "logits/min",
    "logits/max",
    "logits/mean_abs",
    "stop/mean",
    "stop/std",
    "stop/min",
    "stop/max",
    "stop/saturated_share",
    "clues/mean",
    "clues/std",
    "meta/share",
    "meta/cap_factor",
    "meta/loo_loss",
    "meta/equiv_loss",
    "meta/output_equiv_loss",
    "lora/delta_norm",
    "grad_norm",
    "lr",
    "temperature",
    "samples_per_s",
    "epoch",
]


def rlan(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_debug_run_logs_params_every_diagnostic_per_epoch_and_artifacts(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path}/runs.db"
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "1")  # MLflow's monitor, every second
    done = rlan(
        "debug",
        "-c",
        str(ROOT / "configs/debug.yaml"),
        "training.max_epochs=2",
        "data.max_tasks=8",
        "training.equivariance_training.enabled=true",
        "--tracking-uri",
        uri,
        "--quiet",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "clues used std" in done.stdout  # the closing diagnostics table
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("rlan-debug")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["training.max_epochs"] == "2" and run.data.params["data.max_tasks"] == "8"
    assert run.data.params["model.hidden_dim"] == "32"
    for key in DIAGNOSTICS:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert steps == [1, 2], key
    # MLflow's own system metrics of the training process, beside the engine's per-epoch system/*
    sampled = client.get_metric_history(run.info.run_id, "system/process/cpu_utilization_percentage")
    assert sampled and [m.step for m in sampled] == list(range(len(sampled)))
    assert "system/process/system_memory_usage_megabytes" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    artifacts |= {
        a.path
        for d in ("config", "plots", "checkpoint", "results")
        for a in client.list_artifacts(run.info.run_id, d)
    }
    for path in [
        "config/resolved_config.yaml",
        "plots/learning_curves.png",
        "plots/predictions_heldout.png",
        "plots/predictions_eval.png",
        "plots/clue_attention.png",
        "checkpoint/checkpoint.pt",
        "results/heldout_queries.json",
        "results/eval_queries.json",
    ]:
        assert path in artifacts, path
    local = client.download_artifacts(run.info.run_id, "results/heldout_queries.json", str(tmp_path))
    rows = json.loads(Path(local).read_text())
    assert rows and {"task_id", "exact", "tta_pass_at_1", "target_shape", "predicted_shape"} <= set(rows[0])
    assert run.data.metrics["heldout/exact_match"] == pytest.approx(sum(r["exact"] for r in rows) / len(rows))


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["-c", "configs/nope.yaml"], "nope.yaml: config file not found"),
        (
            ["-c", "configs/debug.yaml", "training.clue_targt_variance=0.3"],
            "did you mean 'training.clue_target_variance'",
        ),
        (
            ["-c", "configs/debug.yaml", "training.meta_escalation.meta_loss_cap_ratio=1.5"],
            "meta_loss_cap_ratio' = 1.5: Input should be less than 1",
        ),
        (
            ["-c", "configs/debug.yaml", "data.source=folder", "data.path=/no/such/folder"],
            "/no/such/folder: not a folder",
        ),
        (["-c", "configs/debug.yaml", "--tracking-uri", "http://127.0.0.1:9"], "cannot reach MLflow"),
        (["-c", "configs/debug.yaml", "--tracking-uri", "file:///tmp/mlruns"], "file store"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_no_traceback(tmp_path, args, expected):
    done = rlan("debug", *[a if not a.startswith("configs/") else str(ROOT / a) for a in args], cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "mlruns.db").exists()  # nothing was started


def test_bad_arc_file_names_file_and_reason(tmp_path):
    folder = tmp_path / "tasks"
    folder.mkdir()
    (folder / "bad.json").write_text('{"train": [{"input": [[12]], "output": [[1]]}], "test": []}')
    done = rlan(
        "debug",
        "-c",
        str(ROOT / "configs/debug.yaml"),
        "data.source=folder",
        f"data.path={folder}",
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert "bad.json: task bad: train[0].input: colour 12 is outside 0-9" in done.stderr
