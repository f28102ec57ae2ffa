"""One parent run per sweep: a sweep that failed after creating its MLflow parent but before Tune saved any
state is re-attached by tags when rerun with the same --name, never given a second parent; a name MLflow
already holds for another sweep is refused in one line. Real SQLite MLflow, no Ray needed."""

import pytest
from mlflow.tracking import MlflowClient

from orchestrator.sweeps.sweep import SweepError, start_parent_run
from orchestrator.tracking.run_logger import RunLogger
from tests.conftest import sweep_settings, tiny, write_space


def _parents(settings):
    client = MlflowClient(settings.tracking_uri)
    experiment = client.get_experiment_by_name(settings.experiment)
    query = f"tags.`rlan.sweep` = '{settings.name}' and tags.`rlan.role` = 'sweep'"
    return client.search_runs([experiment.experiment_id], query)


def test_a_rerun_re_attaches_to_the_parent_of_the_failed_attempt(tmp_path):
    settings = sweep_settings(tmp_path, "again", write_space(tmp_path))
    first = start_parent_run(tiny(), settings)  # the attempt that failed before Tune saved anything
    RunLogger(settings.tracking_uri, settings.experiment, run_id=first).end("FAILED")
    second = start_parent_run(tiny(), settings)
    assert second == first
    parents = _parents(settings)
    assert [r.info.run_id for r in parents] == [first] and parents[0].info.status == "RUNNING"


def test_the_same_name_in_another_storage_is_refused(tmp_path):
    settings = sweep_settings(tmp_path, "taken", write_space(tmp_path))
    start_parent_run(tiny(), settings)
    settings.storage = str(tmp_path / "elsewhere")
    with pytest.raises(SweepError, match=r"already holds sweep 'taken' .*pick another --name"):
        start_parent_run(tiny(), settings)
    assert len(_parents(settings)) == 1


def test_a_parent_that_has_trial_runs_is_refused(tmp_path):
    settings = sweep_settings(tmp_path, "with-trials", write_space(tmp_path))
    parent = start_parent_run(tiny(), settings)
    tags = {"rlan.sweep": "with-trials", "rlan.role": "trial"}
    RunLogger(settings.tracking_uri, settings.experiment, run_name="t", tags=tags, parent_run_id=parent)
    with pytest.raises(SweepError, match="1 trial runs"):
        start_parent_run(tiny(), settings)


def test_another_base_config_under_the_same_name_is_refused(tmp_path):
    settings = sweep_settings(tmp_path, "changed", write_space(tmp_path))
    start_parent_run(tiny(), settings)
    with pytest.raises(SweepError, match="another base config.*training.learning_rate"):
        start_parent_run(tiny("training.learning_rate=0.0123"), settings)


def test_unfinished_trials_are_counted_from_the_child_runs_not_from_tune(tmp_path):
    """After Ctrl-C Tune reports a trial it stopped as terminated; the child run that is still RUNNING says
    otherwise. (The count once asked MLflow for 100,000 runs at once, was refused, and fell back to Tune's.)"""
    from types import SimpleNamespace

    from orchestrator.sweeps.sweep import count_unfinished

    settings = sweep_settings(tmp_path, "stopped", write_space(tmp_path), trials=3)
    parent = RunLogger(settings.tracking_uri, settings.experiment, run_id=start_parent_run(tiny(), settings))
    tags = {"rlan.sweep": "stopped", "rlan.role": "trial"}
    children = [RunLogger(settings.tracking_uri, settings.experiment, tags=tags) for _ in range(3)]
    children[0].end("FINISHED")
    children[1].end("KILLED")
    tune_says = SimpleNamespace(num_terminated=3, num_errors=0)  # Tune's view after the interruption
    assert count_unfinished(parent, settings, tune_says) == 1


def test_resume_with_a_new_tracking_uri_rewrites_the_sweep_file_and_the_callback_reads_it(tmp_path):
    import shutil

    from orchestrator.sweeps.callback import MlflowSweepCallback
    from orchestrator.sweeps.settings import read_sweep_file, write_sweep_file
    from orchestrator.sweeps.sweep import retarget_sweep

    settings = sweep_settings(tmp_path, "moved", write_space(tmp_path))
    settings.parent_run_id = start_parent_run(tiny(), settings)
    write_sweep_file(settings, tiny())
    old_db = settings.tracking_uri.removeprefix("sqlite:///")
    shutil.copy(old_db, tmp_path / "moved.db")  # the same store behind a new address
    moved = f"sqlite:///{tmp_path}/moved.db"
    callback = MlflowSweepCallback(
        settings.tracking_uri, settings.experiment, "moved", settings.parent_run_id, tiny(), "score", 3,
        storage=settings.storage, echo=False,
    )  # fmt: skip
    with pytest.raises(SweepError, match="parent run .* is not there"):
        retarget_sweep(settings.sweep_dir, f"sqlite:///{tmp_path}/empty.db")
    assert read_sweep_file(settings.sweep_dir)[0].tracking_uri == settings.tracking_uri  # nothing changed
    retarget_sweep(settings.sweep_dir, moved)
    assert read_sweep_file(settings.sweep_dir)[0].tracking_uri == moved
    callback.setup()  # what Tune calls on the restored (pickled, old-URI) callback
    assert callback.tracking_uri == moved
