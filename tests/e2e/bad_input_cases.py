"""The bad inputs of test_bad_input.py: broken task files, broken YAML, and the CLI cases that use them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import TINY_MODEL

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "configs" / "debug.yaml")
QUICK_SPACE = str(ROOT / "search_spaces" / "quick.yaml")
TINY = [
    *TINY_MODEL,
    "data.max_tasks=2",
    "data.samples_per_task=1",
    "evaluation.max_tasks=1",
    "evaluation.heldout_max_tasks=1",
    "training.max_epochs=1",
]
DEAD_RAY = "127.0.0.1:1"  # nothing listens on port 1
DEAD_MLFLOW = "http://127.0.0.1:9"
SWEEP_CPU_LIMIT_S = 15.0
WALL_LIMIT_S = 90.0


# ------------------------------------------------------------------------------------------ inputs
def task(train_input, test=None) -> dict:
    """One ARC task whose first demo input is `train_input`; a valid 1x1 test pair unless given."""
    pairs = [{"input": [[1]], "output": [[1]]}] if test is None else test
    return {"train": [{"input": train_input, "output": [[1]]}], "test": pairs}


TASK_FILES = {
    "colour12": json.dumps(task([[1, 12], [3, 4]])),
    "ragged": json.dumps(task([[1, 2], [3]])),
    "grid31": json.dumps(task([[0] * 31 for _ in range(31)])),
    "no_test_key": json.dumps({"train": [{"input": [[1]], "output": [[1]]}]}),
    "empty_test": json.dumps(task([[1]], test=[])),
    "not_json": '{"train": [oops',
}
YAML_FILES = {
    "malformed.yaml": "model:\n  hidden_dim: [16\n",
    "unknown_key.yaml": "training:\n  max_epoch: 3\n",
    "wrong_type.yaml": "model:\n  use_hyperlora: maybe\n",
    "ss_unknown_key.yaml": "training.lerning_rate: {type: loguniform, low: 1.0e-4, high: 1.0e-2}\n",
    "ss_low_above_high.yaml": "training.clue_target_variance: {type: uniform, low: 1.5, high: 0.1}\n",
    "ss_loguniform_zero.yaml": "training.learning_rate: {type: loguniform, low: 0.0, high: 0.01}\n",
    "ss_empty_choice.yaml": "model.hyperlora_pooling: {type: choice, values: []}\n",
    "ss_uniform_on_str.yaml": "model.hyperlora_pooling: {type: uniform, low: 0.0, high: 1.0}\n",
    "ss_uniform_on_int.yaml": "training.max_epochs: {type: uniform, low: 1.0, high: 3.0}\n",
}


# ------------------------------------------------------------------------------------------ cases
@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]
    expect: tuple[str, ...]  # substrings of the one stderr line: the input named, and what is expected
    env: dict[str, str] = field(default_factory=dict)
    xfail: str = ""  # a known CLI gap: the strict xfail's reason

    @property
    def command(self) -> str:
        return self.args[0]


def debug(*extra: str) -> tuple[str, ...]:
    return ("debug", "-c", CONFIG, *TINY, *extra, "--quiet")


def folder_data(name: str) -> tuple[str, ...]:
    return debug("data.source=folder", f"data.path=arc/{name}")


def sweep(space: str, *extra: str) -> tuple[str, ...]:
    return ("sweep", "-c", CONFIG, "-s", space, *TINY, *extra, "--quiet")


def train(*extra: str) -> tuple[str, ...]:
    return ("train", "-c", CONFIG, *TINY, *extra, "--quiet")


CASES = [
    # config files and overrides
    Case(
        "malformed_yaml",
        ("debug", "-c", "inputs/malformed.yaml"),
        ("inputs/malformed.yaml", "not valid YAML at line"),
    ),
    Case(
        "unknown_key_in_file",
        ("debug", "-c", "inputs/unknown_key.yaml"),
        ("unknown key 'training.max_epoch'", "did you mean 'training.max_epochs'?"),
    ),
    Case(
        "unknown_key_in_override",
        debug("training.lerning_rate=0.1"),
        ("override 'training.lerning_rate=0.1'", "did you mean 'training.learning_rate'?"),
    ),
    Case(
        "wrong_type_in_file",
        ("debug", "-c", "inputs/wrong_type.yaml"),
        ("'model.use_hyperlora'", "valid boolean"),
    ),
    Case(
        "wrong_type_in_override", debug("training.batch_size=abc"), ("'training.batch_size'", "valid integer")
    ),
    Case(
        "cap_ratio_not_below_1",
        debug("training.meta_escalation.meta_loss_cap_ratio=1.0"),
        ("'training.meta_escalation.meta_loss_cap_ratio' = 1.0", "less than 1"),
    ),
    Case(
        "negative_weight",
        debug("training.clue_variance_weight=-0.5"),
        ("'training.clue_variance_weight' = -0.5", "greater than or equal to 0"),
    ),
    Case(
        "zero_epochs",
        debug("training.max_epochs=0"),
        ("'training.max_epochs' = 0", "greater than or equal to 1"),
    ),
    Case(
        "override_without_value",
        debug("training.seed"),
        ("override 'training.seed'", "expected dotted.key=value"),
    ),
    Case(
        "missing_config_file",
        ("debug", "-c", "inputs/nowhere.yaml"),
        ("inputs/nowhere.yaml", "config file not found"),
    ),
    # search spaces: `rlan sweep` must refuse them before Ray starts
    Case(
        "space_unknown_key",
        sweep("inputs/ss_unknown_key.yaml"),
        ("inputs/ss_unknown_key.yaml", "unknown key 'training.lerning_rate'", "did you mean"),
    ),
    Case(
        "space_low_above_high",
        sweep("inputs/ss_low_above_high.yaml"),
        ("'training.clue_target_variance'", "low 1.5 must be below high 0.1"),
    ),
    Case(
        "space_loguniform_not_positive",
        sweep("inputs/ss_loguniform_zero.yaml"),
        ("'training.learning_rate'", "loguniform needs low > 0"),
    ),
    Case(
        "space_empty_choice",
        sweep("inputs/ss_empty_choice.yaml"),
        ("'model.hyperlora_pooling'", "non-empty list of values"),
    ),
    Case(
        "space_uniform_on_a_str_key",
        sweep("inputs/ss_uniform_on_str.yaml"),
        ("'model.hyperlora_pooling'", "does not fit a str key", "use type choice"),
    ),
    Case(
        "space_uniform_on_an_int_key",
        sweep("inputs/ss_uniform_on_int.yaml"),
        ("'training.max_epochs'", "does not fit an int key", "use type int"),
    ),
    Case(
        "space_file_missing", sweep("inputs/nowhere_space.yaml"), ("inputs/nowhere_space.yaml", "not found")
    ),
    # ARC task files (data.source=folder)
    Case(
        "arc_colour_12", folder_data("colour12"), ("arc/colour12/colour12.json", "colour 12", "outside 0-9")
    ),
    Case("arc_ragged_rows", folder_data("ragged"), ("arc/ragged/ragged.json", "ragged rows")),
    Case("arc_grid_31x31", folder_data("grid31"), ("arc/grid31/grid31.json", "31x31", "sides must be 1-30")),
    Case(
        "arc_no_test_pair", folder_data("no_test_key"), ("arc/no_test_key/no_test_key.json", "missing 'test'")
    ),
    Case(
        "arc_empty_test_list",
        folder_data("empty_test"),
        ("arc/empty_test/empty_test.json", "test: expected a non-empty list of pairs"),
    ),
    Case("arc_not_json", folder_data("not_json"), ("arc/not_json/not_json.json", "not JSON")),
    # Ray
    Case(
        "sweep_unreachable_ray",
        sweep(QUICK_SPACE, "--address", DEAD_RAY),
        (f"cannot reach Ray at {DEAD_RAY}",),
    ),
    Case("train_unreachable_ray", train("--address", DEAD_RAY), (f"cannot reach Ray at {DEAD_RAY}",)),
    Case(
        "train_malformed_ray_address", train("--address", "not-an-address"), ("'not-an-address'", "host:port")
    ),
    # MLflow
    Case(
        "unreachable_mlflow",
        debug("--tracking-uri", DEAD_MLFLOW),
        (f"cannot reach MLflow at {DEAD_MLFLOW}", "refused"),
    ),
    Case(
        "unsupported_tracking_scheme",
        debug("--tracking-uri", "ftp://x"),
        ("--tracking-uri 'ftp://x'", "unsupported scheme", "expected sqlite:///"),
    ),
    Case(
        "file_store_tracking_uri",
        debug("--tracking-uri", "file:///tmp/x"),
        ("--tracking-uri 'file:///tmp/x'", "refuses the file store", "sqlite:////tmp/x.db"),
    ),
    Case(
        "tracking_uri_from_env",
        debug(),
        ("MLFLOW_TRACKING_URI 'ftp://x'", "unsupported scheme"),
        env={"MLFLOW_TRACKING_URI": "ftp://x"},
    ),
    Case(
        "malformed_retry_budget_from_env",
        debug(),
        ("RLAN_MLFLOW_RETRY_S='soon'", "expected a number >= 0"),
        env={"RLAN_MLFLOW_RETRY_S": "soon"},
    ),
    Case(
        "sqlite_folder_missing",
        debug("--tracking-uri", "sqlite:///no_such_folder/runs.db"),
        ("no_such_folder", "does not exist"),
    ),
    # storage, resume, compare
    Case(
        "sweep_storage_under_a_file",
        sweep(QUICK_SPACE, "--storage", "inputs/a_file/runs"),
        ("--storage 'inputs/a_file/runs'", "cannot write there"),
    ),
    Case(
        "train_storage_under_a_file",
        train("--storage", "inputs/a_file/runs", "--address", DEAD_RAY),
        ("--storage 'inputs/a_file/runs'", "cannot write there"),
    ),
    Case(
        "resume_unknown_sweep",
        ("resume", "no-such-sweep", "--storage", "sweeps"),
        ("no sweep 'no-such-sweep' found",),
    ),
    Case(
        "extend_unknown_sweep",
        ("extend", "no-such-sweep", "--trials", "2", "--storage", "sweeps"),
        ("no sweep 'no-such-sweep' found",),
    ),
    Case(
        "sweep_unopenable_study_storage",
        sweep(QUICK_SPACE, "--study-storage", "nosuchdialect://db/optuna", "--address", DEAD_RAY),
        ("--study-storage nosuchdialect://db/optuna", "cannot open it as an Optuna database"),
    ),
    Case("compare_unknown_sweep", ("compare", "no-such-sweep"), ("no sweep named 'no-such-sweep'",)),
    Case("compare_top_zero", ("compare", "no-such-sweep", "--top", "0"), ("--top 0", "positive")),
    # option values checked before Ray starts, naming the option
    Case(
        "sweep_zero_trials",
        sweep(QUICK_SPACE, "--trials", "0", "--address", DEAD_RAY),
        ("--trials",),
    ),
    Case(
        "sweep_zero_grace_period",
        sweep(QUICK_SPACE, "--grace-period", "0", "--address", DEAD_RAY),
        ("--grace-period 0", "epochs >= 1"),
    ),
    Case(
        "sweep_negative_wait_for_resources",
        sweep(QUICK_SPACE, "--wait-for-resources", "-5", "--address", DEAD_RAY),
        ("--wait-for-resources -5", "seconds >= 0"),
    ),
    Case(
        "sweep_negative_max_failures",
        sweep(QUICK_SPACE, "--max-failures", "-1", "--address", DEAD_RAY),
        ("--max-failures -1", ">= 0"),
    ),
    Case(
        "sweep_gpu_shared_by_ranks",
        sweep(QUICK_SPACE, "--workers", "2", "--gpus-per-worker", "0.5", "--address", DEAD_RAY),
        ("--gpus-per-worker 0.5 with --workers 2", "whole GPUs per DDP rank"),
    ),
    Case(
        "pbt_with_two_workers",
        sweep(QUICK_SPACE, "--scheduler", "pbt", "--workers", "2", "--address", DEAD_RAY),
        ("--scheduler pbt with --workers 2", "--workers must be 1"),
    ),
    Case(
        "pbt_zero_perturbation_interval",
        sweep(QUICK_SPACE, "--scheduler", "pbt", "--perturbation-interval", "0", "--address", DEAD_RAY),
        ("--perturbation-interval 0", "epochs >= 1"),
    ),
    Case(
        "train_zero_workers",
        train("--workers", "0", "--address", DEAD_RAY),
        ("--workers",),
    ),
]
