"""`rlan compare`: a sweep read back from MLflow alone, ranked, with its best config and what mattered.

The layout read here (the sweep writes it):
  parent run  tags rlan.sweep=NAME, rlan.role=sweep, rlan.metric, rlan.mode (max|min), rlan.search_space
              (the YAML text), rlan.search_space_file; params = the base config, flattened
  child runs  tags mlflow.parentRunId, rlan.sweep=NAME, rlan.role=trial, rlan.trial_id, rlan.stop_reason;
              params = the trial's flattened config; metrics per epoch with step = epoch (1-based)
A trial's score is the LAST value of the metric (an ASHA-stopped trial's early value, as Optuna saw it).
"""

from __future__ import annotations

import math
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Run, ViewType

from orchestrator.comparison.chance import chance_check
from orchestrator.comparison.records import (  # noqa: F401  (re-exported: compare's public API)
    DEFAULT_METRIC,
    DEFAULT_MODE,
    DIAGNOSTICS,
    FORMATS,
    CompareError,
    SweepComparison,
    Trial,
    _finite,
    format_comparison,
)
from orchestrator.comparison.report import (
    best_config_yaml,
    inferred_distributions,
    parameter_importance,
    parse_param,
    write_report,
)
from orchestrator.sweeps.search_space import SearchSpaceError, parse_search_space
from orchestrator.tracking.experiments import search_all_runs
from orchestrator.tracking.names import sanitize_key
from orchestrator.tracking.run_logger import PARENT_TAG
from rlan.config import ConfigError


# ------------------------------------------------------------------------------------------ reading
def compare_sweep(
    tracking_uri: str,
    name: str,
    experiment: str | None = None,
    metric: str | None = None,
    top: int = 10,
    out: str | None = None,
    mode: str | None = None,
    study_storage: str | None = None,
) -> SweepComparison:
    """Rank the trials of sweep `name`; with `out`, write the tables and plots there and log them to the
    parent run under compare/. `mode` defaults to the sweep's for its own metric, else min for a loss.
    Importance and plots come from the sweep's Optuna study (study_storage, default the one its parent run
    records) when it can be read and ranks by the swept metric; else from a study rebuilt from MLflow."""
    if top < 1:
        raise CompareError(f"--top {top}: expected a positive number of trials")
    client = MlflowClient(tracking_uri=tracking_uri)
    ids = _experiment_ids(client, tracking_uri, experiment)
    where = tracking_uri + (f" (experiment '{experiment}')" if experiment else "")
    filter_string = f"tags.`rlan.sweep` = {_quoted(name)} and tags.`rlan.role` = 'sweep'"
    parents = search_all_runs(client, ids, filter_string, ["attributes.start_time DESC"])
    if not parents:
        raise CompareError(f"no sweep named '{name}' in {where}")
    parent, tags, notes = parents[0], parents[0].data.tags, []
    if len(parents) > 1:
        notes.append(f"{len(parents)} sweeps are named '{name}'; this is the latest ({parent.info.run_id})")
    swept_metric = sanitize_key(tags.get("rlan.metric") or DEFAULT_METRIC)
    metric = sanitize_key(metric) if metric else swept_metric
    if mode is None:
        mode = tags.get("rlan.mode", DEFAULT_MODE) if metric == swept_metric else _guess_mode(metric)
    if mode not in ("max", "min"):
        raise CompareError(f"mode '{mode}' of sweep '{name}': expected max or min")

    space = None
    if tags.get("rlan.search_space"):
        try:
            space = parse_search_space(tags["rlan.search_space"], f"sweep '{name}' search space")
        except SearchSpaceError as exc:  # a past sweep under an older schema: still worth comparing
            notes.append(f"search space not usable ({exc}); knobs are the params that vary")
    trial_filter = f"tags.`{PARENT_TAG}` = '{parent.info.run_id}' and tags.`rlan.role` = 'trial'"
    children = search_all_runs(client, ids, trial_filter)
    params = [run.data.params for run in children]
    knobs = list(space.knobs) if space else _varying(params)
    trials = [_trial(run, knobs, metric) for run in children]
    trials.sort(key=lambda t: _rank_key(t, mode))

    comparison = SweepComparison(
        name, tracking_uri, parent.info.run_id, metric, mode, knobs, trials, None, None, "", notes=notes
    )
    if comparison.best is not None:
        try:
            comparison.best_config_yaml = best_config_yaml(comparison.best, name, metric, mode)
        except ConfigError as exc:
            notes.append(f"best config not rebuilt: {exc}")
    distributions = space.to_optuna() if space else inferred_distributions(trials, knobs)
    study = _sweep_study(tags, name, study_storage, notes) if metric == swept_metric else None
    comparison.importance, comparison.importance_note = parameter_importance(
        trials, distributions, mode, study
    )
    if study is not None and comparison.importance is not None:
        comparison.importance_note += " of the sweep's Optuna study"
    comparison.chance = chance_check(trials, knobs)
    if out is not None:
        csv_text = format_comparison(comparison, "csv")
        write_report(comparison, client, Path(out), top, csv_text, distributions, study)
    return comparison


def _sweep_study(tags: dict[str, str], name: str, given: str | None, notes: list[str]):
    """The study the sampler kept (Optuna RDB storage), or None with a note saying why not."""
    from orchestrator.sweeps.study import load_study

    url = given or tags.get("rlan.study_storage")
    if not url:
        return None  # kept in memory (grids, ablations, sweeps from before studies were stored)
    if "***" in url and not given:
        notes.append(f"Optuna study at {url}: its password is not recorded; pass --study-storage")
        return None
    try:
        return load_study(url, name)
    except ConfigError as exc:
        notes.append(f"Optuna study not read ({exc}); importance and plots from MLflow's trials")
        return None


def _experiment_ids(client: MlflowClient, uri: str, experiment: str | None) -> list[str]:
    if experiment is not None:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            raise CompareError(f"no experiment named '{experiment}' in {uri}")
        return [found.experiment_id]
    ids, token = [], None
    while True:
        page = client.search_experiments(view_type=ViewType.ACTIVE_ONLY, page_token=token)
        ids += [e.experiment_id for e in page]
        token = page.token
        if not token:
            return ids


def _quoted(value: str) -> str:
    for quote in ("'", '"'):
        if quote not in value:
            return f"{quote}{value}{quote}"
    raise CompareError(f"sweep name {value!r}: cannot hold both ' and \"")


def _guess_mode(metric: str) -> str:
    return "min" if any(word in metric.lower() for word in ("loss", "nan", "error")) else "max"


def _varying(params: list[dict[str, str]]) -> list[str]:
    keys = sorted({k for p in params for k in p})
    return [k for k in keys if len({p.get(k) for p in params}) > 1]


def _trial(run: Run, knobs: list[str], metric: str) -> Trial:
    metrics, tags = run.data.metrics, run.data.tags
    epoch = _finite(metrics.get("epoch"))
    return Trial(
        run_id=run.info.run_id,
        trial_id=tags.get("rlan.trial_id") or run.info.run_name or run.info.run_id,
        status=run.info.status,
        stop_reason=tags.get("rlan.stop_reason", ""),
        value=_finite(metrics.get(metric)),
        epochs=int(epoch) if epoch is not None else None,
        knobs={k: parse_param(run.data.params.get(k)) for k in knobs},
        diagnostics={k: metrics[k] for k in DIAGNOSTICS if k in metrics},
        params=dict(run.data.params),
    )


def _rank_key(trial: Trial, mode: str) -> tuple:
    # Best metric first; a tie goes to the lower held-out NLL (never the training loss, which holds the
    # regulariser weights a sweep searches); trials without the metric go last.
    value = trial.value if trial.value is not None else 0.0
    nll = _finite(trial.diagnostics.get("heldout/nll"))
    return (trial.value is None, -value if mode == "max" else value, math.inf if nll is None else nll)
