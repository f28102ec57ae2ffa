"""FLOPs per sample (torch.utils.flop_counter) and this machine's measured fp32 / bf16 product rates.

A product is timed two ways on the CPU: as a matmul (torch sends it to MKL's sgemm) and as the 1x1
convolution it equals (oneDNN, which runs the step's convolutions). On Intel CPUs the two are close; on
AMD ones MKL takes its AVX2 kernels and oneDNN its AVX-512 ones, about twice as fast (`python -m bench
--quick` on 2026-12-06: 220 vs 406 GFLOP/s), so the step's share is taken of the faster: a matmul-only
peak made it read 126%.
"""

from __future__ import annotations

import time
from collections import Counter

import torch
import torch.nn.functional as F
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
    out = a @ b
    if device == "cpu":
        return _loop_rate(lambda: torch.mm(a, b, out=out), 2 * size**3, repeats, seconds)
    return _loop_rate(lambda: a @ b, 2 * size**3, repeats, seconds, torch.cuda.synchronize)


def conv_product_rate(
    dtype: torch.dtype = torch.float32, size: int = 2048, repeats: int = 7, seconds: float = 0.5
) -> dict:
    """GFLOP/s of the same size^3 product as a 1x1 convolution on the CPU (oneDNN): the rows of a
    (size, size) matrix are the pixels of a channels-last (1, size, 1, size) map."""
    rows = torch.randn(size, size, dtype=dtype).view(1, 1, size, size).permute(0, 3, 1, 2)
    kernel = torch.randn(size, size, 1, 1, dtype=dtype)
    return _loop_rate(lambda: F.conv2d(rows, kernel), 2 * size**3, repeats, seconds)


def fp32_rates() -> dict:
    """Both fp32 product rates now, and the faster as the peak: what an achieved FLOP/s is a share of."""
    rates = {"matmul_fp32_gflops": matmul_rate(), "conv1x1_fp32_gflops": conv_product_rate()}
    return {**rates, "peak_gflops": fp32_peak(rates)}


def fp32_peak(results: dict) -> float:
    """The faster of the run's two fp32 product rates (GFLOP/s medians; 0 when neither was measured)."""
    keys = ("matmul_fp32_gflops", "conv1x1_fp32_gflops")
    return max((results.get(k) or {}).get("median", 0.0) for k in keys)


def _loop_rate(run, flops: int, repeats: int, seconds: float, sync=lambda: None) -> dict:
    run()  # warm-up (and the library's first-call setup)
    sync()
    start = time.perf_counter()
    run()
    sync()
    per_loop = max(1, int(seconds / max(time.perf_counter() - start, 1e-6)))
    rates = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        for _ in range(per_loop):
            run()
        sync()
        rates.append(flops * per_loop / (time.perf_counter() - start) / 1e9)
    return summary(rates)
