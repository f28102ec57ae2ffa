"""The settings `rlan` reads from the environment, declared in one place, with their meaning and default.

Each is read when it is used (never at import), through `env_number` for the numeric ones; `check_environment`
refuses a malformed value in one line before a command starts anything. README.md ("Settings from the
environment") lists the same table; tests/orchestrator/test_environment.py keeps the two in step.
"""

from __future__ import annotations

import os

from rlan.config import ConfigError

# name -> (meaning, default as written, numeric)
ENV_SETTINGS: dict[str, tuple[str, str, bool]] = {
    "MLFLOW_TRACKING_URI": ("the MLflow store when --tracking-uri is not given", "sqlite:///mlruns.db", False),
    "RLAN_STORAGE": ("where Ray keeps checkpoints and sweep state when --storage is not given", "./ray_results", False),
    "RLAN_MLFLOW_RETRY_S": ("seconds one MLflow call retries transient failures before it gives up", "60", True),
    "RLAN_MLFLOW_BUFFER_METRICS": ("metric values kept in memory while MLflow is down", "100000", True),
    "RLAN_TRACEBACK": ("when set, a training failure also prints its Python traceback", "unset", False),
}  # fmt: skip


def env_number(name: str) -> float:
    """The numeric setting `name` (>= 0), or its default when unset; ConfigError when malformed."""
    text = os.environ.get(name, "").strip()
    if not text:
        return float(ENV_SETTINGS[name][1])
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise ConfigError(
            f"environment variable {name}='{text}': expected a number >= 0 ({ENV_SETTINGS[name][0]})"
        )
    return value


def check_environment() -> None:
    """Every numeric setting parses; the first malformed one is a one-line ConfigError."""
    for name, (_, _, numeric) in ENV_SETTINGS.items():
        if numeric:
            env_number(name)


# MLflow's own per-call HTTP retries, shortened so that RLAN_MLFLOW_RETRY_S bounds the whole wait
# (orchestrator/tracking/retries.py). Here, not there: the CLI sets them before it imports MLflow.
LIBRARY_RETRIES = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "4",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


def configure_http_retries() -> None:
    """MLflow's HTTP retry settings of LIBRARY_RETRIES, where the environment does not set them already."""
    for name, value in LIBRARY_RETRIES.items():
        os.environ.setdefault(name, value)
