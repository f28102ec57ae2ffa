"""Named sets of ARC-AGI-1 training tasks for the learnability benchmark, each chosen by a stated rule.

`global` is the list in shared/design/arc_learning_facts.md: the 12 training tasks whose output is one
global transform of the whole input. `local` is computed by `local_rule_tasks()` (its docstring is the
rule) and frozen here, so the benchmark does not depend on re-running the selection. `local_wide` is the
same rule with its bounds loosened (sides up to 30, half of the test neighbourhoods seen), minus the first
two sets: tasks the benchmark's recipe was not tuned on, to check that it carries over.
"""

from __future__ import annotations

import numpy as np

GLOBAL = [  # rotation / flip / transpose, recolouring, gravity
    "3c9b0459", "6150a2bd", "67a3c6ac", "68b16354", "74dd1130", "9dfd6313", "ed36ccf7",
    "0d3d703e", "b1948b0a", "c8f0f002",
    "1e0a9b12", "3906de3d",
]  # fmt: skip
LOCAL = [
    "0ca9ddb6", "3618c87e", "4258a5f9", "6f8cd79b", "a699fb00", "a9f96cdd",
    "b60334d2", "b6afb2da", "bb43febb", "ce22a75a", "d364b489", "dc1df850",
]  # fmt: skip
LOCAL_WIDE = [
    "11852cab", "32597951", "3aa6fb7a", "4347f46a", "50cb2852",
    "54d9e175", "67a423a3", "913fb3ed", "95990924", "a79310a0",
]  # fmt: skip
LOCAL_WIDE_BOUNDS = {"max_side": 30, "min_seen": 0.5}
SETS = {"global": GLOBAL, "local": LOCAL, "local_wide": LOCAL_WIDE, "first100": None}


def overrides(name: str) -> list[str]:
    """Config overrides that select the set (the held-out set follows: all of the set's test pairs)."""
    if name == "first100":
        return ["data.tasks=null", "data.max_tasks=100", "evaluation.heldout_max_tasks=100"]
    ids = SETS[name]
    return [
        # quoted: an all-digit id such as 32597951 would otherwise be read as a YAML number
        "data.tasks=[" + ",".join(f"'{i}'" for i in ids) + "]",
        "data.max_tasks=null",
        f"evaluation.heldout_max_tasks={len(ids)}",
    ]


def _neighbourhoods(grid: np.ndarray) -> list[tuple[int, ...]]:
    padded = np.full((grid.shape[0] + 2, grid.shape[1] + 2), -1)
    padded[1:-1, 1:-1] = grid
    h, w = grid.shape
    return [tuple(padded[i : i + 3, j : j + 3].flatten()) for i in range(h) for j in range(w)]


def local_rule_tasks(tasks, exclude=(), max_side: int = 10, min_seen: float = 0.8) -> list[str]:
    """Ids of tasks (sorted) whose every pair keeps the input size, at most max_side, changes something,
    and whose output cell is one function of the input cell's 3x3 neighbourhood over all pairs (demo and
    test), with at least min_seen of the test inputs' neighbourhoods present in the demos."""
    chosen = []
    for task in sorted(tasks, key=lambda t: t.task_id):
        pairs = list(task.train) + list(task.test)
        if task.task_id in exclude or any(i.shape != o.shape or max(i.shape) > max_side for i, o in pairs):
            continue
        if not any((i != o).any() for i, o in pairs):
            continue
        table: dict[tuple[int, ...], int] = {}
        if any(
            table.setdefault(n, int(c)) != c for i, o in pairs for n, c in zip(_neighbourhoods(i), o.flat)
        ):
            continue
        demo = {n for i, _ in task.train for n in _neighbourhoods(i)}
        test = [n for i, _ in task.test for n in _neighbourhoods(i)]
        if np.mean([n in demo for n in test]) >= min_seen:
            chosen.append(task.task_id)
    return chosen
