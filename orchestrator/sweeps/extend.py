"""`rlan extend NAME --trials N`: more trials for a finished or interrupted sweep, under the same MLflow parent,
proposed by the same Optuna study, so every earlier result warm-starts the sampler.

Tune cannot add samples to an experiment it has finished, so each extension is a Tune experiment of its own,
in extend-K inside the sweep's folder, with its own sweep file (`rlan resume NAME` continues every part).
The root sweep file records what each extension added. ASHA's rungs start empty in an extension: its early
stops compare the new trials with each other, not with the earlier ones (Optuna, though, sees them all).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from orchestrator.sweeps.parent import finish_parent
from orchestrator.sweeps.search_space import parse_search_space
from orchestrator.sweeps.settings import SweepError, SweepSettings, read_sweep_file, write_sweep_file
from orchestrator.sweeps.study import load_study
from orchestrator.sweeps.sweep import allow_unevaluated_epochs, fit_tuner, search_tuner
from orchestrator.tracking.run_logger import RunLogger


def extension_settings(sweep_dir: str, trials: int, **overrides: Any) -> SweepSettings:
    """The next part of the sweep at sweep_dir (its root folder): the sweep's settings with `trials` new ones
    and any resource or concurrency overrides; refuses a sweep with no stored study."""
    root, _ = read_sweep_file(sweep_dir)
    if trials < 1:
        raise SweepError(f"--trials {trials}: expected a whole number >= 1")
    if not root.study_storage:
        raise SweepError(
            f"sweep '{root.name}' kept no Optuna study in a database (an ablation, a PBT sweep, or one "
            "started before studies were stored), so no sampler can be warm-started; start a new sweep"
        )
    load_study(root.study_storage, root.name)  # there, and readable: else one line now, not mid-sweep
    given = {k: v for k, v in overrides.items() if v is not None}
    return replace(root, part=len(root.extended_by) + 1, trials=trials, extended_by=[], **given)


def extend_sweep(sweep_dir: str, part: SweepSettings, trainable=None) -> dict[str, Any]:
    """Run the extension `part` (from extension_settings) to its end; the summary counts its own trials."""
    root, base = read_sweep_file(sweep_dir)
    space = parse_search_space(root.search_space_text, f"sweep '{root.name}' search space")
    write_sweep_file(part, base)  # the part's file first: a root that lists a part always finds its file
    root.extended_by.append(part.trials)
    write_sweep_file(root, base)
    RunLogger(part.tracking_uri, part.experiment, run_id=part.parent_run_id)  # the parent RUNNING again
    allow_unevaluated_epochs(base)
    results = fit_tuner(search_tuner(base, space, part, trainable), part)
    return finish_parent(results, part, root.planned_trials)
