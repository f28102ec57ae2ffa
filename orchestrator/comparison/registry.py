"""A sweep's best trial as a version of an MLflow registered model (MLflow's Model Registry), loadable back by
`rlan evaluate models:/NAME/VERSION`.

The version's source is the trial run's checkpoint/ artifact; a trial that did not log its checkpoint
(sweeps log it only with --log-checkpoints) gets its last Train checkpoint from the sweep's storage uploaded
there first. The version carries the sweep, the trial, the metric and its value as tags, and the best
config (what differs from the defaults) as its description.
"""

from __future__ import annotations

import tempfile

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from orchestrator.comparison.records import CompareError, SweepComparison
from orchestrator.runs.evaluate import trial_checkpoint
from orchestrator.tracking.retries import with_retries


def register_best(comparison: SweepComparison, model: str, storage: str) -> ModelVersion:
    best = comparison.best
    if best is None:
        raise CompareError(
            f"sweep '{comparison.sweep}': no trial has {comparison.metric}, nothing to register"
        )
    client = MlflowClient(tracking_uri=comparison.tracking_uri)
    with tempfile.TemporaryDirectory(prefix="rlan-register-") as scratch:
        folder = trial_checkpoint(client, comparison.sweep, best.run_id, best.trial_id, storage, scratch)
        logged = [
            a.path
            for a in with_retries(client.list_artifacts, best.run_id, "checkpoint", what="list_artifacts")
        ]
        if "checkpoint/checkpoint.pt" not in logged:
            with_retries(
                client.log_artifact,
                best.run_id,
                str(folder / "checkpoint.pt"),
                "checkpoint",
                what="log_artifact",
            )
    try:
        with_retries(client.create_registered_model, model, what="create_registered_model")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise CompareError(f"--register {model}: {str(exc).splitlines()[0]}") from None
    tags = {
        "rlan.sweep": comparison.sweep,
        "rlan.trial_id": best.trial_id,
        "rlan.metric": comparison.metric,
        "rlan.value": f"{best.value:.6g}",
    }
    return with_retries(
        client.create_model_version,
        model,
        f"runs:/{best.run_id}/checkpoint",
        run_id=best.run_id,
        tags=tags,
        description=comparison.best_config_yaml or "",
        what="create_model_version",
    )
