"""What an epoch costs (rlan/epoch_cost.py): FLOPs counted once per batch shape and within 2% of a count of
every batch, and the system/* metrics of a real epoch."""

import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from rlan import engine
from rlan.epoch_cost import EpochCost
from rlan.model.canvas import canvas_work
from rlan.schedule import stages_at
from tests.conftest import tiny

META = [
    "training.loo_training.enabled=true",
    "training.equivariance_training.enabled=true",
    "training.output_equivariance_training.enabled=true",
]


def test_flops_counted_once_per_shape_are_within_2_percent_of_a_count_of_every_batch():
    config = tiny("training.max_epochs=1", "data.samples_per_task=6", "training.batch_size=2", *META)
    cached, exact = engine.build(config), engine.build(config)  # the same seed: the same batches
    stages = stages_at(config, 0)
    metrics = engine.train_epoch(cached, 0, stages)
    with FlopCounterMode(display=False) as every_op:
        engine.train_epoch(exact, 0, stages)
    assert len(cached.cost._flops_of) < len(cached.loader)  # some shapes came back and were not re-counted
    # Later batches of a shape are scaled by their cells (own canvases, real pairs): an estimate.
    assert cached.cost.flops == pytest.approx(every_op.get_total_flops(), rel=0.02) and cached.cost.flops > 0
    assert metrics["system/gflop_per_sample"] * 1e9 * metrics["samples"] == pytest.approx(cached.cost.flops)


def test_an_epoch_reports_what_it_cost_the_machine():
    state = engine.build(tiny("training.max_epochs=1"))
    metrics = engine.train_epoch(state, 0, stages_at(state.config, 0))
    for key in ("cpu_util", "peak_rss_mib", "gflops_per_s", "mfu", "matmul_gflops_per_s", "gflop_per_sample"):
        assert math.isfinite(metrics[f"system/{key}"]) and metrics[f"system/{key}"] > 0, key
    assert metrics["system/mfu"] < 1  # a training step does not beat a plain large matmul
    ratio = metrics["system/gflops_per_s"] / metrics["system/matmul_gflops_per_s"]
    assert abs(metrics["system/mfu"] - ratio) < 1e-9


def test_a_skipped_batch_is_not_taken_as_its_shapes_cost():
    cost = EpochCost(torch.device("cpu"), amp=False)
    cost.start()
    batch = {"x": torch.ones(2, 3), "support_mask": torch.ones(2, 1, dtype=torch.bool)}
    with cost.counting(batch, ("stages",)):
        torch.ones(4, 4) @ torch.ones(4, 4)
    cost.discard()  # e.g. its loss was NaN, so no backward ran
    assert cost.flops == 2 * 4**3 and not cost._flops_of
    with cost.counting(batch, ("stages",)):
        torch.ones(4, 4) @ torch.ones(4, 4)
    assert cost._flops_of and cost.flops == 4 * 4**3


def test_later_batches_of_a_shape_add_the_count_scaled_by_their_work():
    cost = EpochCost(torch.device("cpu"), amp=False)
    cost.start()
    batch = {"x": torch.ones(2, 3)}
    with cost.counting(batch, ("stages",), work=2.0):
        torch.ones(4, 4) @ torch.ones(4, 4)
    with cost.counting(batch, ("stages",), work=3.0):  # not counted: 1.5 times the first
        torch.ones(4, 4) @ torch.ones(4, 4)
    assert cost.flops == 2 * 4**3 + 3 * 4**3


def test_canvas_work_counts_each_sample_on_its_canvas_or_the_batch_s():
    batch = {
        "support_mask": torch.tensor([[True, True, False], [True, False, False]]),
        "canvas_sizes": torch.tensor([3, 5]),
        "query_inputs": torch.zeros(2, 5, 5),
    }
    assert canvas_work(batch, list(range(1, 31))) == 9 * 3 + 25 * 2
    assert canvas_work(batch, [4, 30]) == 16 * 3 + 30 * 30 * 2  # canvases 4 and 30
    assert canvas_work(batch, None) == 25 * 3 + 25 * 2


def test_the_cpu_peak_is_the_faster_of_the_matmul_and_the_same_product_as_a_convolution(monkeypatch):
    import rlan.epoch_cost as epoch_cost

    convolved, conv2d = [], torch.nn.functional.conv2d

    def counted_conv2d(*args, **kwargs):
        convolved.append(args[0].shape)
        return conv2d(*args, **kwargs)

    monkeypatch.setattr(epoch_cost, "_MATMUL_RATES", {})
    monkeypatch.setattr(epoch_cost.F, "conv2d", counted_conv2d)
    rate = epoch_cost.matmul_rate(torch.device("cpu"))
    assert rate > 0 and convolved and convolved[0] == (1, 1024, 1, 1024)
