"""bench/lane_balance.py: the split bounds it reports, and one real batch measured end to end."""

from __future__ import annotations

import pytest
import torch

from bench.lane_balance import best_split, best_with_tail, measure, report


def test_the_best_split_is_the_busiest_lane_of_the_best_assignment():
    assert best_split([3.0, 3.0, 2.0, 2.0, 2.0]) == 6.0  # {3, 3} against {2, 2, 2}
    assert best_split([5.0, 1.0, 1.0]) == 5.0  # one group outweighs the rest
    assert best_split([4.0]) == 4.0


def test_a_tail_on_two_threads_helps_only_where_it_beats_one_thread_per_lane():
    one = [1.0, 1.0, 1.0]
    assert best_with_tail(one, [0.6, 0.6, 0.6]) == pytest.approx(1.6)  # {1}, {1}, then one group at 0.6
    assert best_with_tail(one, [1.5, 1.5, 1.5]) == pytest.approx(2.0)  # no tail: best split of three


@pytest.mark.skipif(torch.get_num_threads() < 2, reason="lanes need two intra-op threads")
def test_one_real_batch_is_measured_in_lanes_and_alone():
    result = measure(hidden=16, count=1, warmup=0)
    (row,) = result["rows"]
    assert row["groups"], "the first side-by-side batch has groups of four sides: the lanes run"
    assert len(row["group_s"]) == len(row["groups"]) == len(row["alone_one_thread_s"])
    assert row["even_split_s"] <= row["best_split_s"] <= row["busiest_lane_s"] + 1e-9
    assert row["best_with_tail_s"] <= row["best_split_alone_s"] <= sum(row["alone_one_thread_s"])
    summary = result["summary"]
    assert summary["batches_in_lanes"] == 1
    assert 0 < summary["lanes_speedup"] < 4 and 0 < summary["two_threads_speedup"] < 4  # two cores
    assert "the lanes ran on 1 of 1 batches" in report(result)
