from pathlib import Path

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from orchestrator.sweeps.search_space import SearchSpaceError, load_search_space, parse_search_space
from rlan.config import ConfigError, RunConfig, apply_flat, load_config

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------------ shipped files
@pytest.mark.parametrize("name", ["seed_fixes.yaml", "quick.yaml"])
def test_shipped_search_spaces_load_and_hold_the_stable_dev_baseline(name):
    space = load_search_space(ROOT / "search_spaces" / name)
    base = load_config(ROOT / "configs" / "rlan_stable_dev.yaml")
    point = space.base_point(base)
    assert space.contains(point)
    assert point["training.clue_target_variance"] == 0.5  # the schema default lies inside the range
    assert space.text == (ROOT / "search_spaces" / name).read_text()


def test_seed_fixes_space_searches_weights_on_a_log_scale():
    space = load_search_space(ROOT / "search_spaces" / "seed_fixes.yaml")
    dists = space.to_optuna()
    assert len(dists) == 5
    assert dists["training.clue_variance_weight"] == FloatDistribution(0.01, 3.0, log=True)
    assert dists["training.meta_escalation.meta_loss_cap_ratio"] == FloatDistribution(0.05, 0.5)


# ------------------------------------------------------------------------------------ bad spaces
BAD_SPACES = [
    (
        "training.learning_rte: {type: uniform, low: 0.1, high: 0.2}",
        "training.learning_rte",
        "did you mean 'training.learning_rate'",
    ),
    ("training.clue_target_variance: {type: uniform, low: 1.5, high: 0.1}", "", "must be below high"),
    ("training.clue_target_variance: {type: uniform, low: 0.5, high: 0.5}", "", "must be below high"),
    ("training.learning_rate: {type: loguniform, low: 0.0, high: 0.01}", "", "loguniform needs low > 0"),
    ("model.hyperlora_pooling: {type: choice, values: []}", "", "non-empty list"),
    ("training.learning_rate: {type: normal, low: 0.1, high: 0.2}", "", "type 'normal' is not one of"),
    ("training.learning_rate: {type: uniform, low: 0.1}", "", "uniform needs 'high'"),
    ("model.use_hyperlora: {type: int, low: 0, high: 1}", "", "does not fit a bool key"),
    ("training.lr_schedule: {type: uniform, low: 0.1, high: 0.2}", "", "does not fit a str key"),
    ("model.hidden_dim: {type: uniform, low: 16, high: 64}", "", "(use type int)"),
    ("model.hyperlora_pooling: {type: choice, values: [simple, d5]}", "", "'d5' is refused by the schema"),
    (
        "training.meta_escalation.meta_loss_cap_ratio: {type: uniform, low: 0.1, high: 1.5}",
        "",
        "high 1.5 is refused by the schema: Input should be less than 1",
    ),
    ("training.learning_rate: {type: uniform, low: 0.1, hgih: 0.2}", "", "did you mean 'high'"),
    ("model.max_clues: {type: int, low: 2.5, high: 8}", "", "2.5 is not an integer"),
    ("model.max_clues: {type: int, low: 2, high: 8, step: 4}", "", "must be positive and divide"),
    ("training.seed: 3", "", "expected a mapping like"),
    ("training: {type: uniform, low: 0.1, high: 0.2}", "training", "is a section"),
    ("data.bucket_boundaries: {type: choice, values: [[5, 10]]}", "", "is not a scalar"),
    ("training.learning_rate: {type: loguniform, low: 0.001, high: 0.01, step: 0.001}", "", "no step"),
]


@pytest.mark.parametrize(("text", "key", "expected"), BAD_SPACES)
def test_bad_space_is_refused_in_one_line_naming_file_and_key(tmp_path, text, key, expected):
    path = write(tmp_path, text)
    with pytest.raises(SearchSpaceError) as info:
        load_search_space(path)
    message = str(info.value)
    key = key or text.split(":", 1)[0]
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert f"'{key}'" in message
    assert expected in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, "search space file not found"),
        ("a: [1, 2", "not valid YAML at line"),
        ("- training.seed", "found a list"),
        ("", "found no knobs"),
    ],
)
def test_bad_file_is_refused_in_one_line_naming_the_file(tmp_path, text, expected):
    path = tmp_path / "missing.yaml" if text is None else write(tmp_path, text)
    with pytest.raises(SearchSpaceError) as info:
        load_search_space(path)
    assert str(info.value).startswith(f"{path}: ")
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_search_space_error_is_a_config_error_carrying_the_key(tmp_path):
    path = write(tmp_path, "training.learning_rate: {type: uniform, low: 0.2, high: 0.1}")
    with pytest.raises(ConfigError) as info:
        load_search_space(path)
    assert info.value.key == "training.learning_rate"


# ------------------------------------------------------------------------------------ distributions
MIXED = """
training.learning_rate: {type: loguniform, low: 5e-4, high: 5e-3}
training.clue_target_variance: {type: uniform, low: 0.1, high: 1.5, step: 0.1}
model.num_solver_steps: {type: int, low: 3, high: 9, step: 2}
training.stop_saturation_threshold: {type: int, low: 2, high: 10}
model.hyperlora_pooling: {type: choice, values: [d4, simple]}
model.use_hyperlora: {type: choice, values: [true, false]}
"""


def test_to_optuna_gives_one_distribution_of_the_right_type_per_knob():
    dists = parse_search_space(MIXED, "mixed.yaml").to_optuna()
    assert dists["training.learning_rate"] == FloatDistribution(
        5e-4, 5e-3, log=True
    )  # "5e-4" read as a number
    assert dists["training.clue_target_variance"] == FloatDistribution(0.1, 1.5, step=0.1)
    assert dists["model.num_solver_steps"] == IntDistribution(3, 9, step=2)
    assert dists["training.stop_saturation_threshold"] == IntDistribution(2, 10)  # int on a float key
    assert dists["model.hyperlora_pooling"] == CategoricalDistribution(["d4", "simple"])
    assert dists["model.use_hyperlora"] == CategoricalDistribution([True, False])


def test_base_point_is_inside_the_space_and_the_schema():
    space = parse_search_space(MIXED, "mixed.yaml")
    point = space.base_point(RunConfig())
    assert point == {
        "training.learning_rate": 5e-4,
        "training.clue_target_variance": 0.5,
        "model.num_solver_steps": 7,
        "training.stop_saturation_threshold": 5,
        "model.hyperlora_pooling": "simple",
        "model.use_hyperlora": True,
    }
    assert space.contains(point)
    apply_flat(RunConfig(), point)  # the baseline trial's config is valid


def test_base_point_clips_outside_values_to_the_bounds_or_the_first_choice():
    space = parse_search_space(MIXED, "mixed.yaml")
    base = apply_flat(
        RunConfig(),
        {
            "training.learning_rate": 0.1,
            "training.clue_target_variance": 0.04,
            "model.num_solver_steps": 8,
            "model.hyperlora_pooling": "d4",
            "model.use_hyperlora": False,
        },
    )
    point = space.base_point(base)
    assert point["training.learning_rate"] == 5e-3
    assert point["training.clue_target_variance"] == 0.1
    assert point["model.num_solver_steps"] in (7, 9)  # snapped onto the step grid 3, 5, 7, 9
    assert point["model.hyperlora_pooling"] == "d4"
    assert point["model.use_hyperlora"] is False
    assert space.contains(point)
    zero_weight = parse_search_space(
        "training.clue_variance_weight: {type: loguniform, low: 0.01, high: 3}", "w"
    )
    assert zero_weight.base_point(RunConfig()) == {"training.clue_variance_weight": 0.01}  # default 0.0
    pooling = parse_search_space("model.hyperlora_pooling: {type: choice, values: [d4]}", "p")
    assert pooling.base_point(RunConfig()) == {"model.hyperlora_pooling": "d4"}


def test_contains_refuses_points_outside_or_with_other_keys():
    space = parse_search_space(MIXED, "mixed.yaml")
    point = space.base_point(RunConfig())
    assert not space.contains({**point, "training.learning_rate": 1e-2})
    assert not space.contains({**point, "model.num_solver_steps": 4})  # off the step grid
    assert not space.contains({**point, "model.use_hyperlora": 1})  # a bool knob takes bools only
    assert not space.contains({k: v for k, v in point.items() if k != "model.use_hyperlora"})
    assert not space.contains({**point, "training.seed": 3})


def test_asha_waits_a_quarter_of_the_budget_before_its_first_stop():
    from orchestrator.sweeps.schedulers import make_scheduler
    from orchestrator.sweeps.sweep import SweepSettings

    base = RunConfig().model_copy(
        update={"training": RunConfig().training.model_copy(update={"max_epochs": 60})}
    )
    settings = SweepSettings(name="n", storage="s", tracking_uri="sqlite:///x.db", experiment="e")

    def milestones(scheduler) -> list[int]:  # Ray keeps the rungs privately: (milestone, recorded)
        return sorted(rung[0] for rung in scheduler._brackets[0]._rungs)

    assert milestones(make_scheduler(base, settings)) == [15, 30, 60]  # epoch 1 would rank trials on noise
    settings.grace_period = 5
    assert milestones(make_scheduler(base, settings))[0] == 5


def test_the_largest_swept_budget_is_asha_top_rung(tmp_path):
    from orchestrator.sweeps.schedulers import largest_budget
    from tests.conftest import tiny

    base = tiny("training.max_epochs=4")
    assert largest_budget(base, None) == 4
    assert (
        largest_budget(
            base, parse_search_space("training.learning_rate: {type: uniform, low: 0.001, high: 0.01}", "s")
        )
        == 4
    )
    assert (
        largest_budget(base, parse_search_space("training.max_epochs: {type: choice, values: [2, 3]}", "s"))
        == 3
    )
    assert (
        largest_budget(base, parse_search_space("training.max_epochs: {type: int, low: 5, high: 9}", "s"))
        == 9
    )
    assert largest_budget(base, None, {"training.max_epochs": [6, 2]}) == 6
