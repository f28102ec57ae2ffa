"""Real sweeps: local Ray, Ray Train trials under Tune with Optuna and ASHA, MLflow parent and child runs."""

import json
from pathlib import Path

import pytest

from orchestrator.sweeps.sweep import run_sweep
from tests.conftest import sweep_children, sweep_settings, tiny, write_space

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_three_trials_agree_between_tune_and_mlflow(local_ray, tmp_path):
    space = write_space(
        tmp_path,
        "training.clue_target_variance: {type: uniform, low: 0.1, high: 1.5}\n"
        "training.learning_rate: {type: loguniform, low: 0.0005, high: 0.005}\n",
    )
    study_url = f"sqlite:///{tmp_path}/optuna.db"
    settings = sweep_settings(
        tmp_path, "agree", space, trials=3, concurrency=2, scheduler="fifo", study_storage=study_url
    )
    summary = run_sweep(tiny(), space, settings)
    assert summary["trials"] == 3 and summary["errors"] == 0
    client, parents, children = sweep_children(settings.tracking_uri, "agree")
    assert len(parents) == 1 and len(children) == 3
    assert parents[0].info.status == "FINISHED"
    by_trial = {r.data.tags["rlan.trial_id"]: r for r in children}
    baseline_seen = False
    for result in summary["results"]:
        run = by_trial[result.metrics["trial_id"]]
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert run.info.status == "FINISHED" and run.data.tags["rlan.stop_reason"] == "completed"
        knobs = {k: float(run.data.params[k]) for k in space.knobs}
        assert space.contains(knobs) and knobs == pytest.approx(result.config)
        baseline_seen |= knobs == pytest.approx(
            {"training.clue_target_variance": 0.5, "training.learning_rate": 0.0005}
        )
        scores = client.get_metric_history(run.info.run_id, "score")
        assert [m.step for m in scores] == [1, 2]
        assert scores[-1].value == pytest.approx(result.metrics["score"])
        tune_rows = result.metrics_dataframe
        assert list(tune_rows["epoch"]) == [1.0, 2.0]
        for key in ("train/loss", "heldout/exact_match", "clues/std", "meta/share", "nan_batches"):
            history = [m.value for m in client.get_metric_history(run.info.run_id, key)]
            assert history == pytest.approx(list(tune_rows[key])), key
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
        assert "plots/learning_curves.png" in artifacts
        tables = {a.path for a in client.list_artifacts(run.info.run_id, "results")}
        assert {"results/heldout_queries.json", "results/eval_queries.json"} <= tables
        files = {path.name.split(".out.")[0] for path in Path(result.path).iterdir()}
        assert {"progress.csv", "result.json"} <= files and "events" not in files  # no TensorBoard writer
    assert baseline_seen  # the base config (lr 5e-4 is its value clipped into the space) is a trial
    # Two trials ran at once on 2 CPUs (their drivers hold no CPU): the second's worker began training before
    # the first's last report. With 0.01 CPU per driver the second waited for the first's worker CPU, and
    # began seconds after it (a new worker process, torch and the engine built again). A trial's training
    # began at its first report's time less the worker's own wall_s; Tune's timestamps are whole seconds
    # (floored), so the start is at most 1 s later than computed and the end at least the last timestamp.
    spans = sorted(
        (rows["timestamp"].iloc[0] - rows["wall_s"].iloc[0], rows["timestamp"].iloc[-1])
        for rows in (r.metrics_dataframe for r in summary["results"])
    )
    assert spans[1][0] + 1.0 <= spans[0][1], spans
    # Each trial ran in its own trial process (sweep.REUSE_ACTORS is off: a reused one waits on the last
    # trial's Train run, which Tune's stop does not end).
    assert len({r.metrics["pid"] for r in summary["results"]}) == 3
    # `rlan evaluate SWEEP` submits with the best trial's last Train checkpoint (none was logged to MLflow)
    from orchestrator.comparison.compare import compare_sweep
    from orchestrator.runs.evaluate import checkpoint_folder, run_evaluate

    best = compare_sweep(settings.tracking_uri, "agree").best
    found = checkpoint_folder("agree", settings.tracking_uri, settings.storage, str(tmp_path))
    assert found.parent == Path(settings.storage) / "agree" / "train" / f"trial-{best.trial_id}"
    run_id, score, submission = run_evaluate(
        "agree",
        tracking_uri=settings.tracking_uri,
        out=str(tmp_path / "s.json"),
        storage=settings.storage,
        max_tasks=2,
    )
    assert len(submission) == 2 and score is not None and score.tasks == 2
    assert client.get_run(run_id).data.tags["rlan.source"] == "agree"
    # `rlan compare agree --register M`: the best trial's Train checkpoint becomes version 1 of M, loadable back
    from orchestrator.comparison.registry import register_best

    version = register_best(compare_sweep(settings.tracking_uri, "agree"), "rlan-agree", settings.storage)
    assert (str(version.version), version.run_id) == ("1", best.run_id)
    assert version.tags["rlan.trial_id"] == best.trial_id and version.tags["rlan.metric"] == "score"
    logged = [a.path for a in client.list_artifacts(best.run_id, "checkpoint")]
    assert logged == ["checkpoint/checkpoint.pt"]  # uploaded for the registry (the sweep logged none)
    _, again, _ = run_evaluate(
        "models:/rlan-agree/latest", tracking_uri=settings.tracking_uri, out=str(tmp_path / "m.json"),
        storage=settings.storage, max_tasks=2,
    )  # fmt: skip
    assert again == score  # the same weights, the same submission score
    _extend_and_resume(settings, study_url, client)


def _extend_and_resume(settings, study_url, client):
    """`rlan extend agree --trials 1`, then `rlan resume agree` on the finished, extended sweep."""
    import optuna

    from orchestrator.comparison.compare import compare_sweep
    from orchestrator.sweeps.extend import extend_sweep, extension_settings
    from orchestrator.sweeps.study import TRIAL_ID_ATTR, load_study
    from orchestrator.sweeps.sweep import SWEEP_FILE, resume_sweep

    part = extension_settings(settings.sweep_dir, 1)
    assert (part.part, part.trials, part.sweep_dir) == (1, 1, f"{settings.sweep_dir}/extend-1")
    summary = extend_sweep(settings.sweep_dir, part)
    assert (summary["trials"], summary["errors"], summary["unfinished"]) == (1, 0, 0)
    parent = client.get_run(settings.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["rlan.trials"] == "4"
    assert parent.data.tags["rlan.study_storage"] == study_url
    _, _, children = sweep_children(settings.tracking_uri, "agree")
    assert len(children) == 4 and {r.info.status for r in children} == {"FINISHED"}
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {settings.parent_run_id}
    # One study holds all four, each named by its Tune trial (so by its MLflow child); no point twice.
    study = load_study(study_url, "agree")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 4
    assert {t.user_attrs[TRIAL_ID_ATTR] for t in study.trials} == {
        r.data.tags["rlan.trial_id"] for r in children
    }
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 4
    root = json.loads((Path(settings.sweep_dir) / SWEEP_FILE).read_text())["settings"]
    assert root["extended_by"] == [1] and root["part"] == 0
    comparison = compare_sweep(settings.tracking_uri, "agree")
    assert len(comparison.trials) == 4
    assert comparison.importance is not None, comparison.importance_note
    assert comparison.importance_note.endswith("of the sweep's Optuna study")
    # resume visits both parts; both finished, so nothing runs again and the counts stand
    _, resumed = resume_sweep(settings.sweep_dir)
    assert (resumed["trials"], resumed["errors"], resumed["unfinished"]) == (4, 0, 0)
    assert len(load_study(study_url, "agree").trials) == 4


def test_asha_stops_a_clearly_worse_trial_early(local_ray, tmp_path):
    # Trial 1 is the baseline (lr 0.003); TPE (seed 0) then proposes lr 1e-9, which cannot learn: at
    # the first rung its score is below the baseline's, so ASHA (reduction factor 2) stops it there.
    space = write_space(tmp_path, "training.learning_rate: {type: choice, values: [0.003, 1.0e-9]}\n")
    settings = sweep_settings(tmp_path, "asha", space, trials=2, concurrency=1, scheduler="asha", seed=0)
    summary = run_sweep(tiny("training.max_epochs=3", "training.learning_rate=0.003"), space, settings)
    _, _, children = sweep_children(settings.tracking_uri, "asha")
    reasons = {
        float(r.data.params["training.learning_rate"]): r.data.tags["rlan.stop_reason"] for r in children
    }
    assert reasons == {0.003: "completed", 1e-9: "asha"}
    epochs = {float(r.data.params["training.learning_rate"]): r.data.metrics["epoch"] for r in children}
    assert epochs == {0.003: 3.0, 1e-9: 1.0}
    assert summary["errors"] == 0


def test_evaluation_every_other_epoch_still_drives_optuna_and_asha(local_ray, tmp_path, monkeypatch):
    # Epochs between evaluations carry no score: Tune's strict metric check and Ray's OptunaSearch both
    # failed on the first of them, so any sweep or ablation with evaluation.eval_every > 1 died at epoch 1.
    monkeypatch.setenv("TUNE_DISABLE_STRICT_METRIC_CHECKING", "0")  # restored after the test
    space = write_space(tmp_path)
    settings = sweep_settings(
        tmp_path, "every2", space, trials=2, concurrency=2, scheduler="asha", grace_period=1
    )
    base = tiny("training.max_epochs=3", "evaluation.eval_every=2")
    summary = run_sweep(base, space, settings)
    assert summary["trials"] == 2 and summary["errors"] == 0
    client, _, children = sweep_children(settings.tracking_uri, "every2")
    assert len(children) == 2
    for run in children:
        epochs = int(run.data.metrics["epoch"])  # 3, or 2 where ASHA stopped it at its first score
        steps = {
            key: [m.step for m in client.get_metric_history(run.info.run_id, key)]
            for key in ("score", "train/loss")
        }
        assert steps == {
            "score": [s for s in (2, 3) if s <= epochs],
            "train/loss": list(range(1, epochs + 1)),
        }
    assert all("score" in r.metrics for r in summary["results"])  # every trial's last epoch was evaluated


def test_swept_budgets_complete_at_their_own_epochs_and_retention_keeps_the_best_checkpoint(
    local_ray, tmp_path
):
    # One sweep, two claims. (1) The base budget (4) is neither trial's: each trial stops at its own
    # training.max_epochs, "completed", not an ASHA stop (ASHA's top rung is the largest swept budget).
    # A grid, so that each budget is one trial (TPE may draw a value twice); a space takes the same path.
    # (2) Ranked by train/loss with mode max, the best epoch of the 5-epoch trial is an early one (the loss
    # falls), which keeping only the newest checkpoints (Ray's default order) deletes by epoch 5.
    from rlan.checkpoint import load_checkpoint

    space = write_space(tmp_path)  # only for the settings' file fields
    settings = sweep_settings(
        tmp_path,
        "budgets",
        space,
        concurrency=2,
        scheduler="asha",
        grace_period=5,
        metric="train/loss",
        mode="max",
    )
    grid = {"training.max_epochs": [2, 5]}
    summary = run_sweep(tiny("training.max_epochs=4"), None, settings, grid=grid)
    assert summary["errors"] == 0 and summary["unfinished"] == 0 and summary["trials"] == 2
    _, parents, children = sweep_children(settings.tracking_uri, "budgets")
    runs = {int(r.data.params["training.max_epochs"]): r for r in children}
    assert sorted(runs) == [2, 5]
    for budget, run in runs.items():
        assert run.data.tags["rlan.stop_reason"] == "completed" and run.info.status == "FINISHED"
        assert run.data.metrics["epoch"] == budget
    assert parents[0].info.status == "FINISHED"

    (long,) = [r for r in summary["results"] if r.config["training.max_epochs"] == 5]
    rows = long.metrics_dataframe
    losses = dict(zip(rows["epoch"].astype(int), rows["train/loss"], strict=True))
    best = max(losses, key=losses.get)
    assert best < 4  # the precondition: the newest two checkpoints alone would not hold the best epoch
    kept_by_trial = [
        {int(load_checkpoint(f)["epoch"]) for f in trial.glob("checkpoint_*") if f.is_dir()}
        for trial in Path(settings.sweep_dir, "train").glob("trial-*")
    ]
    (kept,) = [epochs for epochs in kept_by_trial if 5 in epochs]
    assert best in kept and len(kept) == 3, (kept, losses)  # the 2 best, and the latest


def test_a_failed_trial_is_counted_and_makes_the_sweep_exit_1(local_ray, tmp_path):
    # One grid point names a task that does not exist: its trial fails inside the worker, the other
    # finishes, and the exit status says so unless partial results are accepted.
    from orchestrator.cli.sweeps import trials_exit_status

    space = write_space(tmp_path)
    settings = sweep_settings(tmp_path, "one-fails", space, concurrency=2, scheduler="fifo", max_failures=0)
    grid = {"data.tasks": [["007bbfb7", "00d62c1b"], ["zzzzzzzz"]]}
    summary = run_sweep(tiny("training.max_epochs=1"), None, settings, grid=grid)
    assert (summary["trials"], summary["errors"]) == (2, 1)
    _, parents, children = sweep_children(settings.tracking_uri, "one-fails")
    assert sorted(r.info.status for r in children) == ["FAILED", "FINISHED"]
    assert parents[0].data.tags["rlan.trial_errors"] == "1"
    assert trials_exit_status("sweep", summary, allow_partial=False) == 1
    assert trials_exit_status("sweep", summary, allow_partial=True) == 0


def test_pbt_copies_the_better_trial_s_weights_and_mlflow_shows_whom_and_the_knobs_in_force(
    local_ray, tmp_path
):
    # Two members, an exploit after every epoch: with a quantile of a quarter (rounded up) the worse of the
    # two copies the better after epoch 1, and perturbs its continuous knobs inside the space.
    import random

    from orchestrator.sweeps.trial_config import parse_source

    random.seed(0)  # PBT's own choices (perturb up or down, resample) draw from Python's random
    space = write_space(
        tmp_path,
        "training.clue_target_variance: {type: uniform, low: 0.1, high: 1.5}\n"
        "training.learning_rate: {type: loguniform, low: 0.0005, high: 0.005}\n",
    )
    settings = sweep_settings(
        tmp_path, "pbt", space, trials=2, concurrency=2, scheduler="pbt", perturbation_interval=1
    )
    summary = run_sweep(tiny("training.max_epochs=2"), space, settings)
    assert (summary["trials"], summary["errors"], summary["unfinished"]) == (2, 0, 0)
    client, _, children = sweep_children(settings.tracking_uri, "pbt")
    by_id = {r.data.tags["rlan.trial_id"]: r for r in children}
    assert len(by_id) == 2 and {r.info.status for r in children} == {"FINISHED"}
    copies = [
        (trial_id, key, value)
        for trial_id, run in by_id.items()
        for key, value in run.data.tags.items()
        if key.startswith("rlan.pbt.copied_before_epoch_")
    ]
    assert copies, "no trial copied another"
    for trial_id, key, value in copies:
        epoch = int(key.rsplit("_", 1)[1])
        who, at, restored_sum = parse_source(value.split("(", 1)[1].rstrip(")"))
        assert who in by_id and who != trial_id and at == epoch - 1
        # the weights it resumed from are the other trial's at that epoch, to the last bit of their sum
        source_sums = {
            m.step: m.value for m in client.get_metric_history(by_id[who].info.run_id, "pbt/weights_sum")
        }
        assert restored_sum == pytest.approx(source_sums[at], rel=1e-12)
        copied = {
            m.step: m.value for m in client.get_metric_history(by_id[trial_id].info.run_id, "pbt/copied")
        }
        assert copied[epoch] == 1.0
    # per epoch, each trial's knobs in force, always inside the space
    for run in children:
        for key in space.knobs:
            history = client.get_metric_history(run.info.run_id, f"pbt/{key}")
            assert [m.step for m in history] == [1, 2]
            assert all(space.knobs[key].contains(m.value) for m in history), (key, history)
        # the end artifacts come from the final checkpoint, kept where a Train trial's would be
        tables = {a.path for a in client.list_artifacts(run.info.run_id, "results")}
        assert {"results/heldout_queries.json", "results/eval_queries.json"} <= tables
    from orchestrator.runs.evaluate import checkpoint_folder

    found = checkpoint_folder("pbt", settings.tracking_uri, settings.storage, str(tmp_path))
    assert found.name == "checkpoint_final" and (found / "checkpoint.pt").exists()
