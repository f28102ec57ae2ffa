import csv
import io
import json
import math
import random

import pytest
import yaml
from mlflow import MlflowClient

from orchestrator.comparison.chance import chance_check
from orchestrator.comparison.compare import CompareError, Trial, compare_sweep, format_comparison
from orchestrator.comparison.report import OPTUNA_PLOTS, parameter_importance
from orchestrator.sweeps.search_space import parse_search_space
from orchestrator.tracking.run_logger import RunLogger
from rlan.config import ConfigError, RunConfig, apply_flat, load_config
from rlan.diagnostics import SCORE_DEFINITION

SPACE = """\
training.clue_target_variance: {type: uniform, low: 0.1, high: 1.5}
training.learning_rate: {type: loguniform, low: 5.0e-4, high: 5.0e-3}
"""
BASE = apply_flat(RunConfig(), {"model.hidden_dim": 16, "training.max_epochs": 3})
# trial id -> (knobs, status, stop reason, per-epoch metrics); t1 ties t0 on the metric with a lower
# held-out NLL and a HIGHER training loss: the tie goes to the better held-out predictions.
TRIALS = {
    "t0": (
        {"training.clue_target_variance": 0.3, "training.learning_rate": 1e-3},
        "FINISHED",
        "completed",
        [
            {"heldout/exact_match": 0.1, "train/loss": 1.0, "nan_batches": 0, "clues/std": 0.2},
            {"heldout/exact_match": 0.3, "train/loss": 0.9, "nan_batches": 0, "clues/std": 0.3},
            {
                "heldout/exact_match": 0.5,
                "heldout/nll": 0.9,
                "train/loss": 0.5,
                "nan_batches": 1,
                "clues/std": 0.4,
            },
        ],
    ),
    "t1": (
        {"training.clue_target_variance": 0.9, "training.learning_rate": 2e-3},
        "FINISHED",
        "completed",
        [
            {"heldout/exact_match": 0.2, "train/loss": 0.9, "nan_batches": 0, "clues/std": 0.5},
            {"heldout/exact_match": 0.4, "train/loss": 0.7, "nan_batches": 0, "clues/std": 0.6},
            {
                "heldout/exact_match": 0.5,
                "heldout/nll": 0.7,
                "train/loss": 0.6,
                "nan_batches": 0,
                "eval/exact_match": 0.25,
            },
        ],
    ),
    "t2": (
        {"training.clue_target_variance": 1.2, "training.learning_rate": 4e-3},
        "KILLED",
        "asha",
        [
            {"heldout/exact_match": 0.3, "train/loss": 1.2, "nan_batches": 0},  # the last value counts
            {"heldout/exact_match": 0.25, "train/loss": 1.1, "nan_batches": 2, "eval/exact_match": 0.0},
        ],
    ),
    "t3": (
        {"training.clue_target_variance": 0.5, "training.learning_rate": 6e-4},
        "FAILED",
        "error",
        [{"train/loss": 1.5, "nan_batches": 9}],
    ),
}


def write_sweep(uri: str, name: str, space: str | None, trials: dict) -> str:
    """A parent run and one child per trial, laid out as the sweep writes them."""
    tags = {
        "rlan.sweep": name,
        "rlan.role": "sweep",
        "rlan.metric": "heldout/exact_match",
        "rlan.mode": "max",
    }
    if space is not None:
        tags |= {"rlan.search_space": space, "rlan.search_space_file": "space.yaml"}
    parent = RunLogger(uri, "sweeps", run_name=name, tags=tags)
    parent.log_params(BASE.to_flat_dict())
    for trial_id, (knobs, status, reason, epochs) in trials.items():
        child_tags = {"rlan.sweep": name, "rlan.role": "trial", "rlan.trial_id": trial_id}
        child = RunLogger(uri, "sweeps", f"{name}-{trial_id}", child_tags, parent_run_id=parent.run_id)
        child.log_params(apply_flat(BASE, knobs).to_flat_dict())
        for epoch, metrics in enumerate(epochs, start=1):
            child.log_metrics({**metrics, "epoch": epoch}, step=epoch)
        child.set_tags({"rlan.stop_reason": reason})
        child.end(status)
    parent.end("FINISHED")
    return parent.run_id


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{folder}/mlruns.db"
    parent_id = write_sweep(uri, "demo", SPACE, TRIALS)
    return uri, parent_id


@pytest.fixture(autouse=True)
def _no_env_uri(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)  # nothing may land in the cwd


@pytest.fixture(scope="module")
def comparison(sweep):
    return compare_sweep(sweep[0], "demo")


# ------------------------------------------------------------------------------------ ranking
def test_trials_rank_by_last_metric_ties_by_lower_heldout_nll_and_failed_last(comparison):
    assert [t.trial_id for t in comparison.trials] == ["t1", "t0", "t2", "t3"]
    assert [t.value for t in comparison.trials] == [0.5, 0.5, 0.25, None]
    assert [t.epochs for t in comparison.trials] == [3, 3, 2, 1]
    assert [t.stop_reason for t in comparison.trials] == ["completed", "completed", "asha", "error"]
    assert comparison.trials[3].status == "FAILED"
    assert (comparison.metric, comparison.mode) == ("heldout/exact_match", "max")
    assert comparison.knobs == ["training.clue_target_variance", "training.learning_rate"]
    assert comparison.trials[0].knobs == {
        "training.clue_target_variance": 0.9,
        "training.learning_rate": 2e-3,
    }
    assert comparison.trials[0].diagnostics["train/loss"] == 0.6


def test_a_loss_metric_ranks_ascending(sweep):
    by_loss = compare_sweep(sweep[0], "demo", metric="train/loss")
    assert by_loss.mode == "min"
    assert [t.trial_id for t in by_loss.trials] == ["t0", "t1", "t2", "t3"]
    assert [t.value for t in by_loss.trials] == [0.5, 0.6, 1.1, 1.5]


def test_best_config_loads_with_the_best_knobs_and_only_what_differs(comparison, tmp_path):
    path = tmp_path / "best.yaml"
    path.write_text(comparison.best_config_yaml)
    config = load_config(path)
    assert config.training.clue_target_variance == 0.9
    assert config.training.learning_rate == 2e-3
    assert config.model.hidden_dim == 16
    assert yaml.safe_load(comparison.best_config_yaml) == {
        "model": {"hidden_dim": 16},
        "training": {"max_epochs": 3, "learning_rate": 2e-3, "clue_target_variance": 0.9},
    }
    assert comparison.best_config_yaml.startswith("# Best trial t1 of sweep 'demo'")


# ------------------------------------------------------------------------------------ formats
def test_every_format_parses_back_with_one_row_per_trial(comparison):
    rows = list(csv.DictReader(io.StringIO(format_comparison(comparison, "csv"))))
    assert [r["trial_id"] for r in rows] == ["t1", "t0", "t2", "t3"]
    assert rows[0]["heldout/exact_match"] == "0.5" and rows[3]["heldout/exact_match"] == ""
    assert rows[0]["training.clue_target_variance"] == "0.9"
    assert {"train/loss", "nan_batches", "clues/std", "eval/exact_match"} <= set(rows[0])
    assert "meta/share" not in rows[0]  # no trial logged it

    data = json.loads(format_comparison(comparison, "json"))
    assert (data["sweep"], data["metric"], data["mode"]) == ("demo", "heldout/exact_match", "max")
    assert [t["trial_id"] for t in data["trials"]] == ["t1", "t0", "t2", "t3"]
    assert data["trials"][0]["knobs"]["training.learning_rate"] == 2e-3
    assert yaml.safe_load(data["best_config"])["training"]["clue_target_variance"] == 0.9
    assert set(data["importance"]) == set(comparison.knobs)

    table = format_comparison(comparison, "table").split("\n\n")[0].splitlines()
    header, body = table[0].split(), [line.split() for line in table[1:]]
    assert header[:5] == ["rank", "trial", "status", "heldout/exact_match", "epochs"]
    assert "clue_target_variance" in header
    assert [row[1] for row in body] == ["t1", "t0", "t2", "t3"]
    assert all(len(row) == len(header) for row in body)
    assert body[3][2:4] == ["FAILED/error", "-"]

    with pytest.raises(CompareError):
        format_comparison(comparison, "xml")


# ------------------------------------------------------------------------------------ files
def test_out_writes_files_and_logs_them_to_the_parent_which_keeps_its_status(sweep, tmp_path):
    uri, parent_id = sweep
    client = MlflowClient(tracking_uri=uri)
    before = client.get_run(parent_id).info
    out = tmp_path / "report"
    result = compare_sweep(uri, "demo", top=2, out=str(out))
    names = [*OPTUNA_PLOTS, "learning_curves_top2.png"]
    for name in names:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert load_config(out / "best_config.yaml").training.clue_target_variance == 0.9
    assert len(list(csv.DictReader((out / "comparison.csv").open()))) == 4
    assert len(result.files) == 7  # the CSV, the best config, four Optuna plots, the curves
    logged = {a.path for a in client.list_artifacts(parent_id, "compare")}
    assert logged == {f"compare/{n}" for n in [*names, "best_config.yaml"]}
    after = client.get_run(parent_id).info
    assert (after.status, after.end_time) == ("FINISHED", before.end_time)


# ------------------------------------------------------------------------------------ errors
def test_unknown_sweep_is_one_line_config_error(sweep):
    with pytest.raises(CompareError) as info:
        compare_sweep(sweep[0], "nope")
    assert str(info.value) == f"no sweep named 'nope' in {sweep[0]}"
    assert isinstance(info.value, ConfigError)
    with pytest.raises(CompareError, match="no experiment named 'other'"):
        compare_sweep(sweep[0], "demo", experiment="other")
    assert compare_sweep(sweep[0], "demo", experiment="sweeps").trials[0].trial_id == "t1"


# ------------------------------------------------------------------------------------ importance
def test_importance_rates_every_knob_when_three_trials_scored(comparison):
    assert comparison.importance_note == "PED-ANOVA over 3 trials"
    assert set(comparison.importance) == set(comparison.knobs)
    assert sum(comparison.importance.values()) == pytest.approx(1.0)


def test_importance_gives_a_reason_when_too_few_trials_scored(sweep, comparison):
    few = compare_sweep(sweep[0], "demo", metric="eval/exact_match")
    assert [t.trial_id for t in few.trials][:2] == ["t1", "t2"]
    assert few.importance is None
    assert few.importance_note == "unavailable: needs 3 trials with the metric, found 2"
    flat = comparison.trials[:2]  # both score 0.5
    distributions = parse_search_space(SPACE, "space").to_optuna()
    same = [*flat, type(flat[0])(**{**flat[0].__dict__, "trial_id": "copy"})]
    assert parameter_importance(same, distributions, "max") == (None, "unavailable: all 3 trials scored 0.5")


def test_without_a_search_space_tag_the_knobs_are_the_params_that_vary(sweep):
    trials = {
        f"s{i}": ({"training.seed": i}, "FINISHED", "completed", [{"heldout/exact_match": i / 4}])
        for i in range(3)
    }
    write_sweep(sweep[0], "seeds", None, trials)
    result = compare_sweep(sweep[0], "seeds")
    assert result.knobs == ["training.seed"]
    assert [t.trial_id for t in result.trials] == ["s2", "s1", "s0"]
    assert result.importance == {"training.seed": 1.0}  # Optuna's importances always sum to 1...
    assert "could be noise" in result.chance.note()  # ...which is why the chance check is there


def test_the_table_says_what_score_is(sweep):
    text = format_comparison(compare_sweep(sweep[0], "demo", metric="score"))
    assert SCORE_DEFINITION in text and "no training loss" in SCORE_DEFINITION
    assert SCORE_DEFINITION not in format_comparison(compare_sweep(sweep[0], "demo"))


# ------------------------------------------------------------------------------------ chance
def test_the_comparison_says_when_its_knob_ranking_could_be_noise(sweep, comparison):
    check = comparison.chance
    assert check.trials == 3 and check.knob in comparison.knobs
    assert check.note() in format_comparison(comparison)
    assert json.loads(format_comparison(comparison, "json"))["chance"]["p_value"] == check.p_value
    # three scores have six orderings, so no effect is rarer than 1 in 3: never "unlikely to be noise"
    assert check.p_value >= 1 / 3 - 1e-9 and "could be noise" in check.note()


def test_a_knob_that_sets_the_score_stands_out_and_unrelated_knobs_do_not():
    rng = random.Random(0)

    def trial(value, knobs):
        return Trial("run", "trial", "FINISHED", "completed", value, 3, knobs, {}, {})

    knobs = [{"lr": rng.uniform(1e-4, 1e-2), "arch": rng.choice(["a", "b"])} for _ in range(16)]
    noise = [trial(rng.gauss(0, 1), k) for k in knobs]
    by_lr = [trial(math.log(k["lr"]) + rng.gauss(0, 0.2), k) for k in knobs]
    by_arch = [trial(float(k["arch"] == "a") + rng.gauss(0, 0.1), k) for k in knobs]
    names = ["lr", "arch"]
    assert chance_check(noise, names).p_value >= 0.05
    assert "could be noise" in chance_check(noise, names).note()
    assert chance_check(noise, names) == chance_check(noise, names)  # seeded: the same p each time
    for trials, knob in ((by_lr, "lr"), (by_arch, "arch")):
        check = chance_check(trials, names)
        assert check.knob == knob and check.p_value < 0.01 and "unlikely to be noise" in check.note()
    assert chance_check(noise[:2], names) is None
    assert chance_check([trial(0.5, k) for k in knobs], names) is None  # all scores equal
