"""The time-to-accuracy row: a real (tiny) learnability run into a throw-away MLflow store, read back."""

from __future__ import annotations

import pytest

from bench.report import time_to_accuracy_line
from bench.time_to_accuracy import first_reach, measure
from tests.conftest import TINY_MODEL

TINY = [
    *TINY_MODEL, "training.max_epochs=2",
    "data.tasks=[a699fb00]", "data.samples_per_task=2", "evaluation.eval_every=1", "evaluation.max_tasks=1",
    "evaluation.heldout_max_tasks=1", "training.output_equivariance_training.enabled=false",
    "training.loo_training.enabled=false",
]  # fmt: skip


def test_first_reach_is_the_first_evaluated_epoch_at_or_over_the_target():
    rows = [{"epoch": 10, "heldout/exact_match": 0.25}, {"epoch": 20, "heldout/exact_match": 0.5},
            {"epoch": 30, "heldout/exact_match": 0.75}, {"epoch": 35, "eval/exact_match": 1.0}]  # fmt: skip
    assert first_reach(rows, 0.5)["epoch"] == 20
    assert first_reach(rows, 0.8) is None


@pytest.mark.timeout(180)
def test_a_run_reports_when_it_reached_the_target_and_where_it_ended(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    reached = measure(0.0, 3, TINY)
    assert reached["reached"] and reached["epoch"] == 1 and reached["wall_s"] > 0
    assert reached["final_epoch"] == 2 and reached["final_wall_s"] >= reached["wall_s"]
    assert reached["tasks"] == 1 and reached["eval_every"] == 1
    assert list(tmp_path.iterdir()) == []  # the MLflow store was thrown away
    line = time_to_accuracy_line(reached)
    assert "time to held-out EM 0" in line and "(epoch 1," in line and "at epoch 2" in line
    missed = time_to_accuracy_line({**reached, "reached": False})
    assert "not reached; final held-out EM" in missed


def test_make_learn_refuses_an_unknown_task_in_one_line(capsys):
    from bench import learning

    assert learning.main(["data.tasks=[not-a-task]", "--tracking-uri", "sqlite:///:memory:"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bench.learning: error:") and "not-a-task" in err[0]
