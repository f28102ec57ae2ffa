import os
from pathlib import Path

import pytest
import yaml

from rlan.config import ConfigError, RunConfig, apply_flat, config_from_dict, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


SHIPPED = sorted(path.name for path in CONFIGS.glob("*.yaml"))


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_load_and_round_trip_through_yaml(name, tmp_path):
    config = load_config(CONFIGS / name)
    copy = tmp_path / "copy.yaml"
    copy.write_text(config.to_yaml())
    assert load_config(copy) == config
    assert config_from_dict(yaml.safe_load(config.to_yaml())) == config


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_set_only_what_differs_from_the_defaults(name):
    defaults = RunConfig().to_flat_dict()
    from rlan.config import flatten

    written = flatten(yaml.safe_load((CONFIGS / name).read_text()))
    same = [k for k, v in written.items() if defaults[k] == v]
    assert same == [], f"{name} repeats defaults: {same}"


def test_stable_dev_carries_the_seed_values():
    t = load_config(CONFIGS / "rlan_stable_dev.yaml").training
    assert (t.meta_escalation.meta_loss_cap_enabled, t.meta_escalation.meta_loss_cap_ratio) == (True, 0.25)
    assert (t.clue_variance_weight, t.clue_target_variance) == (1.0, 0.5)
    assert (t.stop_saturation_weight, t.stop_saturation_threshold) == (0.5, 5.0)


def test_seed_defaults_keep_the_old_behaviour():
    t = RunConfig().training
    assert t.logit_clamp_max == 50.0 and t.clue_variance_weight == 0.0 and t.stop_saturation_weight == 0.0
    assert t.meta_escalation.meta_loss_cap_enabled is False


def test_overrides_are_typed_by_the_schema():
    config = load_config(
        CONFIGS / "debug.yaml",
        [
            "training.clue_target_variance=0.7",
            "training.meta_escalation.meta_loss_cap_enabled=true",
            "data.tasks=[007bbfb7, 00d62c1b]",
            "model.hidden_dim=64",
        ],
    )
    assert config.training.clue_target_variance == 0.7
    assert config.training.meta_escalation.meta_loss_cap_enabled is True
    assert config.data.tasks == ["007bbfb7", "00d62c1b"]
    assert config.model.hidden_dim == 64
    assert config.training.max_epochs == 3  # untouched keys keep the file's values


def test_flat_dict_round_trips_through_apply_flat():
    config = load_config(CONFIGS / "rlan_stable_dev.yaml")
    flat = config.to_flat_dict()
    assert flat["training.meta_escalation.meta_loss_cap_ratio"] == 0.25
    assert apply_flat(RunConfig(), flat) == config
    changed = apply_flat(config, {"training.clue_target_variance": 1.2})
    assert changed.training.clue_target_variance == 1.2 and config.training.clue_target_variance == 0.5
    assert changed.config_hash() != config.config_hash()


def _write(tmp_path, text):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "overrides", "message"),
    [
        (
            "training:\n  clue_targt_variance: 0.5\n",
            [],
            "unknown key 'training.clue_targt_variance' (did you mean 'training.clue_target_variance'?)",
        ),
        ("trainng:\n  seed: 1\n", [], "unknown key 'trainng' (did you mean 'training'?)"),
        (
            "training:\n  meta_escalation:\n    meta_loss_cap_ratio: 1.0\n",
            [],
            "'training.meta_escalation.meta_loss_cap_ratio' = 1.0: Input should be less than 1",
        ),
        (
            "training:\n  max_epochs: 0\n",
            [],
            "'training.max_epochs' = 0: Input should be greater than or equal",
        ),
        ("training:\n  clue_variance_weight: -1\n", [], "'training.clue_variance_weight' = -1"),
        ("model:\n  hidden_dim: many\n", [], "'model.hidden_dim' = 'many': Input should be a valid integer"),
        ("model:\n  hidden_dim: 30\n", [], "hidden_dim must be a multiple of 8"),
        ("training: [1, 2\n", [], "not valid YAML at line"),
        ("- just\n- a list\n", [], "expected a mapping of sections at the top"),
        ("data:\n  source: folder\n", [], "source 'folder' needs data.path"),
        ("", ["training.batch_sz=4"], "override 'training.batch_sz=4': unknown key 'training.batch_sz'"),
        ("", ["training.seed"], "override 'training.seed': expected dotted.key=value"),
        ("", ["training.seed.x=1"], "unknown key 'training.seed.x'"),
        ("", ["training.loss_mode=softmax"], "'training.loss_mode' = 'softmax': Input should be"),
    ],
)
def test_bad_configs_name_the_file_key_and_expectation(tmp_path, text, overrides, message):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    text = str(info.value)
    assert message in text
    assert "\n" not in text
    assert str(path) in text or text.startswith("override")


def test_missing_file_is_one_clear_line(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_relative_data_paths_are_made_absolute_for_every_command(tmp_path, monkeypatch):
    # Ray workers run in their own working directories, where "tasks" would name nothing: every command
    # loads its config through load_config, which resolves the paths against the driver's directory.
    from rlan.config import apply_flat, load_config

    monkeypatch.chdir(tmp_path)
    config = load_config(
        None, ["data.source=folder", "data.path=tasks", "evaluation.path=~/ev", "evaluation.source=folder"]
    )
    assert config.data.path == str(tmp_path / "tasks")
    assert config.evaluation.path == os.path.expanduser("~/ev")
    trial = apply_flat(config, {"training.learning_rate": 0.01})  # how a sweep trial gets its config
    assert trial.data.path == str(tmp_path / "tasks")
    assert load_config(None, []).data.path is None
