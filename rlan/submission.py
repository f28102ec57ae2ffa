"""ARC Prize submissions: two attempts per test input from the TTA vote, the submission file, and its score.

The file is the ARC Prize format: {task_id: [{"attempt_1": grid, "attempt_2": grid}, ...]}, one entry per
test input in the task's order, grids as lists of rows of ints 0-9. Scoring follows the ARC Prize: a test
output counts as solved when either attempt equals it; a task scores the share of its test outputs solved,
and the submission the mean over tasks. Tasks whose test outputs are not known are predicted, not scored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from rlan.data import Augmentation, evaluation_queries
from rlan.data.tasks import ArcTask
from rlan.evaluation import QueryResult, evaluate_queries, model_predictor, same_grid
from rlan.model.output import ModelStages

Attempts = tuple[np.ndarray, np.ndarray]


@dataclass
class Score:
    score: float  # the ARC Prize score: mean over tasks of the share of their test outputs solved
    solved: int  # test outputs solved by attempt_1 or attempt_2
    outputs: int  # test outputs scored
    tasks: int  # tasks scored


def predict_attempts(
    model: torch.nn.Module,
    tasks: Sequence[ArcTask],
    stages: ModelStages,
    views: Sequence[Augmentation],
    batch_size: int,
    device: torch.device | str = "cpu",
) -> dict[str, list[Attempts]]:
    """{task_id: [(attempt_1, attempt_2) per test input, in order]}: the vote's two most voted answers (the
    top one twice when every view agreed)."""
    results, _ = evaluate_queries(
        model_predictor(model, stages), evaluation_queries(tasks), views, batch_size, device
    )
    out: dict[str, list[Attempts]] = {task.task_id: [] for task in tasks}
    for result in sorted(results, key=lambda r: (r.spec.task.task_id, r.spec.query_index)):
        out[result.spec.task.task_id].append(_two_attempts(result))
    return out


def _two_attempts(result: QueryResult) -> Attempts:
    grids = [grid for _, grid, _ in result.ranked] or [result.plain]
    return grids[0], grids[1] if len(grids) > 1 else grids[0]


def submission_file(attempts: dict[str, list[Attempts]]) -> dict[str, list[dict[str, list[list[int]]]]]:
    return {
        task_id: [
            {"attempt_1": a.astype(int).tolist(), "attempt_2": b.astype(int).tolist()} for a, b in pairs
        ]
        for task_id, pairs in attempts.items()
    }


def score_attempts(attempts: dict[str, list[Attempts]], tasks: Sequence[ArcTask]) -> Score | None:
    """The ARC Prize score over the tasks whose every test output is known; None when there is none."""
    shares, solved, outputs = [], 0, 0
    for task in tasks:
        truths = [output for _, output in task.test]
        if not truths or any(t is None for t in truths):
            continue
        hits = [any(same_grid(a, truth) for a in pair) for pair, truth in zip(attempts[task.task_id], truths)]
        shares.append(sum(hits) / len(truths))
        solved, outputs = solved + sum(hits), outputs + len(truths)
    if not shares:
        return None
    return Score(float(np.mean(shares)), solved, outputs, len(shares))
