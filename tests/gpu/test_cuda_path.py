"""The CUDA path, as `make gpu-check` runs it on a GPU machine (bench/gpu_check.py, part cuda_tests). Every
test runs on the CPU too (CPU bf16 autocast, a CPU checkpoint), so the code is tested before it meets a GPU;
the CUDA variants run wherever torch sees a device, and skip here."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from bench.workload import Shape, TrainStep, build_model, move_to, real_batches
from rlan import engine
from rlan.checkpoint import load_checkpoint, save_checkpoint
from rlan.model import fused
from tests.conftest import tiny

CUDA = torch.cuda.is_available()
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not CUDA, reason="needs a CUDA device"))]
SHAPE = Shape(hidden=32, clues=3, steps=3, batch=4)


@pytest.fixture(scope="module")
def batch() -> dict:
    return real_batches(SHAPE, 1, samples_per_task=2)[0]


@pytest.mark.parametrize("device", DEVICES)
def test_a_bf16_autocast_step_is_finite_and_within_tolerance_of_fp32(device, batch):
    data = move_to(batch, device)
    model = build_model(SHAPE, device)
    fp32 = TrainStep(model).loss(data).item()
    bf16 = TrainStep(model, amp_dtype=torch.bfloat16).loss(data).item()  # the same weights, the same batch
    assert math.isfinite(fp32) and math.isfinite(bf16)
    assert abs(bf16 - fp32) <= 0.05 * abs(fp32), (bf16, fp32)  # bf16 keeps 8 bits of mantissa
    before = [p.detach().clone() for p in model.parameters()]
    assert math.isfinite(TrainStep(model, amp_dtype=torch.bfloat16)(data))  # a whole step: backward, AdamW
    after = list(model.parameters())
    assert all(torch.isfinite(p).all() for p in after)
    assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=True))


@pytest.mark.parametrize("device", DEVICES)
def test_the_fused_cpu_ops_give_way_to_plain_ones_off_the_cpu_and_under_autocast(device):
    gate = torch.randn(2, 8, 5, 5, device=device, requires_grad=True)
    up = torch.randn(2, 8, 5, 5, device=device)
    plain = F.silu(gate) * up
    with torch.autocast(device, dtype=torch.bfloat16):
        under_autocast = fused.swiglu(gate, up)
    assert "SwiGLU" not in type(under_autocast.grad_fn).__name__  # the plain ops, autocast's dtypes
    eager = fused.swiglu(gate, up)
    fused_path = device == "cpu"  # fp32 on the CPU: the hand-written backward, same values
    assert ("SwiGLU" in type(eager.grad_fn).__name__) == fused_path
    torch.testing.assert_close(eager, plain)


@pytest.mark.parametrize("device", DEVICES)
def test_a_checkpoint_saved_on_the_device_loads_and_resumes_on_the_cpu(device, tmp_path):
    config = tiny()
    on_device = engine.build(config, device=torch.device(device))
    save_checkpoint(tmp_path, engine.state_dict(on_device))
    saved = load_checkpoint(tmp_path)
    assert all(t.device.type == "cpu" for t in saved["model"].values())
    on_cpu = engine.build(config, device=torch.device("cpu"))
    engine.resume(on_cpu, tmp_path)
    for name, value in on_cpu.core.state_dict().items():
        torch.testing.assert_close(value, on_device.core.state_dict()[name].cpu(), msg=name)
