import contextlib
import os

import pytest

from rlan.config import RunConfig, load_config

# Ray Train's controller polls its workers (and so takes their reports and sees them finish) every 2 s by
# default: about 1 s per short run of the suite's (a run's end waits for the next poll). Set before any Ray
# starts, so every Ray worker and every CLI child inherits it. The twelve slowest tests of tests/integration
# took 492 s with it against 540 s without (one run each). Once, with it, a resumed trial lost an epoch to
# checkpoint retention before the sweep callback read it back; the callback now reads at the trial's start
# (trial_runs._open).
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")

# The smallest model the tests train: each test adds the data and run settings it needs.
TINY_MODEL = ["model.hidden_dim=16", "model.max_clues=2", "model.num_solver_steps=2"]
TINY = [
    *TINY_MODEL,
    "model.dropout=0.0",
    "training.max_epochs=2",
    "training.batch_size=4",
    "training.seed=3",
    "data.max_tasks=4",
    "data.samples_per_task=2",
    "evaluation.max_tasks=3",
    "evaluation.heldout_max_tasks=3",
    "evaluation.tta_color_perms=1",
    "evaluation.batch_size=16",
    "logging.progress=false",
]


@pytest.fixture
def tiny_config() -> RunConfig:
    """A seconds-long real run: 4 ARC-AGI-1 training tasks, hidden 16, 2 epochs, every stage on."""
    return load_config(None, TINY)


def tiny(*overrides: str) -> RunConfig:
    return load_config(None, TINY + list(overrides))


TWO_LEARNING_RATES = "training.learning_rate: {type: choice, values: [0.003, 0.001]}\n"


def write_space(tmp_path, text: str = TWO_LEARNING_RATES):
    """A search-space file under tmp_path, loaded."""
    from orchestrator.sweeps.search_space import load_search_space

    path = tmp_path / "space.yaml"
    path.write_text(text)
    return load_search_space(path)


def sweep_settings(tmp_path, name: str, space, **overrides):
    """A quiet test sweep: Ray storage and a SQLite MLflow store under tmp_path; overrides win."""
    from orchestrator.sweeps.sweep import SweepSettings

    defaults = dict(
        name=name,
        storage=str(tmp_path / "ray_results"),
        tracking_uri=f"sqlite:///{tmp_path}/runs.db",
        experiment="sweep-tests",
        search_space_file=space.path,
        search_space_text=space.text,
        echo=False,
    )
    return SweepSettings(**{**defaults, **overrides})


def sweep_children(uri: str, name: str):
    """(client, parent runs, child runs) of the sweep `name` in any experiment of the store."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    query = f"tags.`rlan.sweep` = '{name}'"
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], filter_string=query, max_results=1000
    )
    parents = [r for r in runs if r.data.tags.get("rlan.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("rlan.role") == "trial"]
    return client, parents, children


@contextlib.contextmanager
def start_local_ray(num_cpus: int):
    """A fresh local Ray with num_cpus logical CPUs, shut down on exit (about 5 s to start on 2 cores)."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():  # a module before us left one running
        ray.shutdown()
    ray.init(num_cpus=num_cpus, log_to_driver=False, configure_logging=True, logging_level="WARNING")
    try:
        yield ray
    finally:
        ray.shutdown()
