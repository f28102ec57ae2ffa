"""The sweep's Optuna study in a database: where it lives, how it is opened, and how an extension's sampler
is warm-started from it (real Optuna, real SQLite; the searcher is driven as Tune drives it)."""

from __future__ import annotations

import optuna
import pytest

from orchestrator.sweeps.settings import SweepError
from orchestrator.sweeps.study import (
    STUDY_FILE,
    TRIAL_ID_ATTR,
    default_study_storage,
    load_study,
    make_searcher,
    open_storage,
    public_url,
)
from tests.conftest import sweep_settings, tiny, write_space

SPACE = "training.learning_rate: {type: loguniform, low: 1.0e-4, high: 1.0e-2}\n"


def test_the_study_lives_beside_mlflow_s_sqlite_file_else_in_local_storage(tmp_path):
    beside = default_study_storage(f"sqlite:///{tmp_path}/db/runs.db", "s3://bucket/ray")
    assert beside == f"sqlite:///{tmp_path}/db/{STUDY_FILE}"
    local = default_study_storage("http://mlflow:5000", str(tmp_path / "ray"))
    assert local == f"sqlite:///{tmp_path}/ray/{STUDY_FILE}"
    with pytest.raises(SweepError, match="--study-storage: MLflow is at http://mlflow:5000 and the storage"):
        default_study_storage("http://mlflow:5000", "s3://bucket/ray")


def test_a_storage_url_is_shown_without_its_password_and_a_bad_one_is_one_line():
    assert public_url("postgresql://rlan:secret@db:5432/optuna") == "postgresql://rlan:***@db:5432/optuna"
    with pytest.raises(SweepError) as error:
        open_storage("nosuchdialect://db/optuna")
    assert str(error.value).startswith("--study-storage nosuchdialect://db/optuna: cannot open it")
    assert "\n" not in str(error.value)


def _run_part(searcher, trial_ids, value_of):
    """Propose and complete trials as Tune does: suggest, one result, complete."""
    proposed = []
    for trial_id in trial_ids:
        knobs = searcher.suggest(trial_id)
        lr = knobs["training.learning_rate"]  # flat keys: unflatten_dict leaves dotted names whole
        searcher.on_trial_result(trial_id, {"score": value_of(lr), "training_iteration": 1})
        searcher.on_trial_complete(trial_id, {"score": value_of(lr)})
        proposed.append(lr)
    return proposed


def test_an_extension_is_warm_started_from_every_earlier_trial_and_proposes_new_points(tmp_path):
    space = write_space(tmp_path, SPACE)
    url = f"sqlite:///{tmp_path}/{STUDY_FILE}"
    base = tiny()
    first = sweep_settings(tmp_path, "lives-on", space, study_storage=url, seed=0)
    earlier = _run_part(make_searcher(space, base, first), ["a_0", "a_1", "a_2"], lambda lr: lr * 100)
    assert earlier[0] == base.training.learning_rate  # the baseline comes first in the first part only

    extension = sweep_settings(tmp_path, "lives-on", space, study_storage=url, seed=0, part=1)
    searcher = make_searcher(space, base, extension)
    seen = searcher._ot_study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert sorted(t.user_attrs[TRIAL_ID_ATTR] for t in seen) == ["a_0", "a_1", "a_2"]
    added = _run_part(searcher, ["b_0", "b_1"], lambda lr: lr * 100)
    assert not set(added) & set(earlier)  # an extension on the first part's seed would repeat a_1, a_2

    study = load_study(url, "lives-on")
    assert [t.user_attrs[TRIAL_ID_ATTR] for t in study.trials] == ["a_0", "a_1", "a_2", "b_0", "b_1"]
    assert [t.params["training.learning_rate"] for t in study.trials] == earlier + added


def test_a_missing_study_is_one_line(tmp_path):
    with pytest.raises(SweepError, match="no Optuna study 'absent' in sqlite:///"):
        load_study(f"sqlite:///{tmp_path}/{STUDY_FILE}", "absent")
