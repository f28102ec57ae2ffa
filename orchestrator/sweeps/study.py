"""A sweep's Optuna study, kept in a database (Optuna's RDB storage) so that it outlives the sweep:
`rlan extend` adds trials to it with the sampler warm-started from every earlier result, and `rlan compare`
reads it back. Ray's OptunaSearch takes the storage and study name and opens the study with
load_if_exists, so this module only chooses where the study lives and links its trials to Tune's."""

from __future__ import annotations

from pathlib import Path

import optuna
from ray.tune.search.optuna import OptunaSearch

from orchestrator.sweeps.search_space import SearchSpace
from orchestrator.sweeps.settings import SweepError, SweepSettings
from rlan.config import RunConfig

STUDY_FILE = "optuna.db"
TRIAL_ID_ATTR = "tune_trial_id"  # the user attribute that names a study trial's Tune trial (and MLflow child)


def default_study_storage(tracking_uri: str, storage: str) -> str:
    """A SQLite file beside MLflow's SQLite store, else in the local storage root. With both a server MLflow
    and cloud storage no local file belongs to the sweep: the user names a database (--study-storage)."""
    if tracking_uri.startswith("sqlite:///"):
        folder = Path(tracking_uri.removeprefix("sqlite:///")).expanduser().resolve().parent
    elif "://" not in storage:
        folder = Path(storage).resolve()
    else:
        raise SweepError(
            f"--study-storage: MLflow is at {tracking_uri} and the storage is {storage}, so no local file can "
            "keep the Optuna study; pass a database URL (e.g. postgresql://user@host/optuna)"
        )
    return f"sqlite:///{folder / STUDY_FILE}"


def public_url(url: str) -> str:
    """The storage URL without its password: what MLflow tags and messages may show."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage at url (tables created on first use); one line when it cannot be opened."""
    try:
        return optuna.storages.RDBStorage(url)
    except Exception as exc:
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise SweepError(
            f"--study-storage {public_url(url)}: cannot open it as an Optuna database ({reason})"
        ) from None


def load_study(url: str, name: str) -> optuna.Study:
    """The sweep's study as the sampler left it (compare reads it)."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.load_study(study_name=name, storage=open_storage(url))
    except KeyError:
        raise SweepError(f"no Optuna study '{name}' in {public_url(url)}") from None
    finally:
        optuna.logging.set_verbosity(verbosity)


class SweepSearch(OptunaSearch):
    """Ray's OptunaSearch, plus two things it lacks: each study trial records its Tune trial id (so the study
    and MLflow's children can be joined), and results from the epochs between evaluations
    (evaluation.eval_every > 1) are skipped: they carry no objective, and OptunaSearch indexes the metric in
    every result. The last epoch always evaluates."""

    def suggest(self, trial_id: str):
        params = super().suggest(trial_id)
        self._ot_trials[trial_id].set_user_attr(TRIAL_ID_ATTR, trial_id)
        return params

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if self.metric in result:
            super().on_trial_result(trial_id, result)


def make_searcher(space: SearchSpace, base: RunConfig, settings: SweepSettings) -> SweepSearch:
    # metric and mode go to OptunaSearch itself: with an explicit space Tune never passes them on.
    return SweepSearch(
        space=space.to_optuna(),
        metric=settings.metric,
        mode=settings.mode,
        # Every sweep contains its baseline; an extension's study already holds it.
        points_to_evaluate=None if settings.part else [space.base_point(base)],
        # Each part draws its own stream: while the study is small TPE samples at random, and the first
        # part's seed would propose the first part's points again.
        sampler=optuna.samplers.TPESampler(seed=settings.seed + settings.part),
        study_name=settings.name,
        storage=open_storage(settings.study_storage) if settings.study_storage else None,
    )
