"""Experiments and run searches in MLflow: an experiment by name (created once, race-safe), every matching run."""

from __future__ import annotations

from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.exceptions import MlflowException

from orchestrator.tracking.retries import with_retries
from orchestrator.tracking.uri import TrackingError


def get_or_create_experiment(client: MlflowClient, name: str, artifact_location: str | None = None) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(name, artifact_location=artifact_location)
        except MlflowException as exc:  # another process created it between our read and create
            if "already exists" not in str(exc) and exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage == "deleted":
        raise TrackingError(f"experiment '{name}' is deleted; restore it or pick another name")
    return experiment.experiment_id


def search_all_runs(
    client: MlflowClient, experiment_ids: list[str], filter_string: str, order_by: list[str] | None = None
) -> list[Run]:
    """Every run matching the filter, page by page: one search answers at most 50,000 runs (MLflow refuses a
    larger max_results) and a server pages them 1,000 at a time."""
    runs: list[Run] = []
    token = None
    while experiment_ids:
        page = with_retries(
            client.search_runs,
            experiment_ids,
            filter_string,
            max_results=1000,
            order_by=order_by,
            page_token=token,
            what="search_runs",
        )
        runs += list(page)
        token = page.token
        if not token:
            break
    return runs
