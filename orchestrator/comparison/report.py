"""What a ranked sweep yields beyond its table: the best config as YAML, parameter importance, and the
report files (CSV, best config, plots) that `rlan compare --out` writes and logs to the sweep's parent run."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
import yaml
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from rlan.config import RunConfig, all_keys, apply_flat

if TYPE_CHECKING:
    from orchestrator.comparison.records import SweepComparison, Trial

MIN_IMPORTANCE_TRIALS = 3


def parse_param(text: str | None) -> Any:
    """An MLflow param (str(value) of the flattened config) back to its value."""
    if text is None or text == "None":
        return None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def best_config_yaml(trial: Trial, sweep: str, metric: str, mode: str) -> str:
    """The trial's config as YAML for `-c`: only what differs from the schema defaults."""
    known = set(all_keys())
    flat = {k: parse_param(v) for k, v in trial.params.items() if k in known}
    config = apply_flat(RunConfig(), flat, where=f"trial {trial.trial_id} params")
    defaults = RunConfig().to_flat_dict()
    tree: dict[str, Any] = {}
    for key, value in config.to_flat_dict().items():
        if value != defaults[key]:
            *sections, leaf = key.split(".")
            node = tree
            for part in sections:
                node = node.setdefault(part, {})
            node[leaf] = value
    header = f"# Best trial {trial.trial_id} of sweep '{sweep}': {metric} = {trial.value:.4g} ({mode})\n"
    skipped = sorted(set(trial.params) - known)
    if skipped:
        header += f"# Params not in this schema, left out: {', '.join(skipped)}\n"
    return header + (yaml.safe_dump(tree, sort_keys=False) if tree else "{}\n")


def inferred_distributions(trials: list[Trial], knobs: list[str]) -> dict[str, Any]:
    # No usable search-space tag: a float range over numeric knobs, categories otherwise.
    distributions: dict[str, Any] = {}
    for key in knobs:
        values = [t.knobs.get(key) for t in trials if t.knobs.get(key) is not None]
        if values and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            if min(values) < max(values):
                distributions[key] = optuna.distributions.FloatDistribution(min(values), max(values))
        elif values and all(isinstance(v, bool | int | float | str) for v in values):
            distributions[key] = optuna.distributions.CategoricalDistribution(sorted(set(values), key=repr))
    return distributions


def scored_study(trials: list[Trial], distributions: dict[str, Any], mode: str) -> optuna.Study:
    """An in-memory Optuna study of the trials that have the metric, in the order they were created (Tune's
    trial ids end in their index), for Optuna's importance and plots. Trials Optuna cannot place (a knob
    outside the space, or missing) are left out."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" line
    try:
        study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    finally:
        optuna.logging.set_verbosity(verbosity)
    for t in sorted((t for t in trials if t.value is not None), key=lambda t: t.trial_id):
        params = {k: t.knobs.get(k) for k in distributions}
        try:
            study.add_trial(
                optuna.trial.create_trial(value=t.value, params=params, distributions=distributions)
            )
        except (ValueError, TypeError):
            continue
    return study


def parameter_importance(
    trials: list[Trial], distributions: dict[str, Any], mode: str, study: optuna.Study | None = None
) -> tuple[dict[str, float] | None, str]:
    """Optuna's importance (PED-ANOVA) over the trials that have the metric: of the sweep's own study when
    given, else of one rebuilt from the trials; (None, reason) when it cannot."""
    if not distributions:
        return None, "unavailable: no knobs to rate"
    study = study or scored_study(trials, distributions, mode)
    frozen = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(frozen) < MIN_IMPORTANCE_TRIALS:
        return None, f"unavailable: needs {MIN_IMPORTANCE_TRIALS} trials with the metric, found {len(frozen)}"
    if len({f.value for f in frozen}) == 1:
        return None, f"unavailable: all {len(frozen)} trials scored {frozen[0].value:.4g}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scores = optuna.importance.get_param_importances(study)
    except Exception as exc:  # the evaluator's own limits must not sink the whole comparison
        return None, f"unavailable: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return {k: float(v) for k, v in scores.items()}, f"PED-ANOVA over {len(frozen)} trials"


# Optuna's own matplotlib plots of a study (file name -> function); importance needs two scored trials.
OPTUNA_PLOTS = {
    "parallel_coordinates.png": "plot_parallel_coordinate",
    "slice.png": "plot_slice",
    "optimization_history.png": "plot_optimization_history",
    "param_importances.png": "plot_param_importances",
}


def optuna_figures(study: optuna.Study, metric: str, out: Path, notes: list[str]) -> list[Path]:
    """Optuna's plots of the sweep as PNGs under out; a plot Optuna cannot draw becomes a note."""
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as optuna_plots

    written = []
    for name, function in OPTUNA_PLOTS.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Optuna marks its matplotlib backend experimental
                drawn = getattr(optuna_plots, function)(study, target_name=metric)
        except Exception as exc:
            notes.append(f"{name} not drawn: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}")
            plt.close("all")
            continue
        axes = list(drawn.flat) if hasattr(drawn, "flat") else [drawn]  # plot_slice: one axis per knob
        if len(axes) > 1:  # side by side, full dotted keys overlap: the last part names the knob
            for ax in axes:
                ax.set_xlabel(ax.get_xlabel().rsplit(".", 1)[-1], fontsize=8)
        figure = axes[0].figure
        out.mkdir(parents=True, exist_ok=True)
        figure.savefig(out / name, format="png", dpi=100, bbox_inches="tight")  # Optuna's layout, uncut
        plt.close(figure)
        written.append(out / name)
    return written


# ------------------------------------------------------------------------------------------ files
def write_report(
    comparison: SweepComparison,
    client: MlflowClient,
    out: Path,
    top: int,
    csv_text: str,
    distributions: dict[str, Any],
    study: optuna.Study | None = None,
) -> None:
    """comparison.csv, best_config.yaml, Optuna's plots of the sweep (its own study when given) and the top
    trials' curves under out; the plots and the best config are also logged to the parent run under compare/
    (log_artifact only, so the parent keeps its status)."""
    from orchestrator.tracking import plots  # matplotlib only when files are asked for

    out.mkdir(parents=True, exist_ok=True)
    c, written = comparison, []
    (out / "comparison.csv").write_text(csv_text)
    if c.best_config_yaml:
        (out / "best_config.yaml").write_text(c.best_config_yaml)
        written.append(out / "best_config.yaml")
    scored = [t for t in c.trials if t.value is not None]
    study = study or scored_study(scored, distributions, c.mode)
    if study.trials and distributions:
        written += optuna_figures(study, c.metric, out, c.notes)
    elif not scored:
        c.notes.append(f"no trial has {c.metric}: no plots")
    history = {}
    for t in scored[:top]:
        points = client.get_metric_history(t.run_id, c.metric)
        history[f"{c.metric} [{t.trial_id}]"] = sorted((m.step, m.value) for m in points)
    if history:
        title = f"sweep '{c.sweep}': {c.metric} of the top {len(history)}"
        figure = plots.plot_learning_curves(history, title=title)
        written.append(plots.save_figure(figure, out / f"learning_curves_top{top}.png"))
    c.files = [str(out / "comparison.csv"), *map(str, written)]
    try:
        for path in written:
            client.log_artifact(c.parent_run_id, str(path), "compare")
    except (MlflowException, OSError) as exc:  # the files are on disk either way
        c.notes.append(f"not logged to the parent run: {str(exc).splitlines()[0] if str(exc) else exc}")
