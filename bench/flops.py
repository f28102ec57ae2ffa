"""FLOPs per sample (torch.utils.flop_counter) and this machine's measured fp32 / bf16 matmul rate."""

from __future__ import annotations

import time
from collections import Counter

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.stats import summary
from bench.workload import TrainStep, forward_only


def step_flops(step: TrainStep, batch: dict) -> int:
    """Matmul/conv FLOPs of one training step's forward + loss + backward (the optimiser adds ~0)."""
    counter = FlopCounterMode(display=False)
    with counter:
        step.loss(batch).backward()
    step.optimizer.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def inference_flops(model, batch: dict) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        forward_only(model, batch)
    return counter.get_total_flops()


def flops_by_module(step: TrainStep, batch: dict, depth: int = 2) -> dict[str, float]:
    """Forward FLOPs per module (top `depth` levels of RLAN), in GFLOP per sample."""
    counter = FlopCounterMode(display=False, depth=depth + 1)
    with counter:
        step.loss(batch)
    n = batch["query_inputs"].shape[0]
    out: Counter = Counter()
    for name, ops in counter.get_flop_counts().items():
        if name.startswith("RLAN.") and name.count(".") <= depth:
            out[name[len("RLAN.") :]] = sum(ops.values()) / n / 1e9
    return dict(out.most_common())


def matmul_rate(
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
    size: int = 2048,
    repeats: int = 7,
    seconds: float = 0.5,
) -> dict:
    """GFLOP/s of a size^3 matmul loop: median and spread over `repeats` timed loops of ~`seconds`."""
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    out = a @ b  # warm-up (and the library's first-call setup)
    sync()
    start = time.perf_counter()
    out = a @ b
    sync()
    one = max(time.perf_counter() - start, 1e-6)
    per_loop = max(1, int(seconds / one))
    rates = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        for _ in range(per_loop):
            out = torch.mm(a, b, out=out) if device == "cpu" else a @ b
        sync()
        rates.append(2 * size**3 * per_loop / (time.perf_counter() - start) / 1e9)
    return summary(rates)
