"""What an epoch of training costs the machine: CPU use, peak memory, FLOPs, and their share of the device's peak.

FLOPs are counted by torch.utils.flop_counter on the real training step (forward, losses, meta losses,
backward), once per distinct batch shape and stage: later batches of a shape add the counted figure scaled
by their `work` (the cells the model computes on, rlan.model.canvas.canvas_work: each sample on its own
canvas, with its real support pairs, neither of which the shape shows), so the counter's overhead falls on a
few batches of the epochs where a shape or stage is new (+0.25 s on the learnable config's first epoch of
1.2 s, ~0 from the third). The total is an estimate, within 2% of a count of every batch in the tests. The peak is this process's own measured
product rate (fp32, or bf16 under autocast; on the CPU the faster of a matmul and the same product as a 1x1
convolution) on the threads it trains with, measured once per process: "MFU" is then the achieved share of
what this device does on a plain product (`python -m bench` measures the same rates more carefully,
docs/performance.md).
"""

from __future__ import annotations

import resource
import statistics
import sys
import time
from contextlib import AbstractContextManager, nullcontext

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

_MATMUL_RATES: dict[tuple[str, torch.dtype], float] = {}


def matmul_rate(device: torch.device, dtype: torch.dtype = torch.float32) -> float:
    """FLOP/s of a square product on `device`: the median of 7 after a warm-up, n = 1024 on the CPU (about
    0.1 s) or 8192 on CUDA; measured once per process, so a machine busy at that moment skews every MFU.
    On the CPU the product is also timed as the 1x1 convolution it equals (oneDNN, which runs the model's
    convolutions) and the faster counts: on AMD CPUs MKL's matmul reaches about half of oneDNN's rate
    (bench/flops.py), so a matmul-only peak overstates MFU there."""
    key = (str(device), dtype)
    if key not in _MATMUL_RATES:
        n = 8192 if device.type == "cuda" else 1024
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        seconds = _median_seconds(lambda: a @ b, device)
        if device.type == "cpu":
            rows, kernel = a.view(1, 1, n, n).permute(0, 3, 1, 2), b.view(n, n, 1, 1)
            seconds = min(seconds, _median_seconds(lambda: F.conv2d(rows, kernel), device))
        _MATMUL_RATES[key] = 2 * n**3 / seconds
    return _MATMUL_RATES[key]


def _median_seconds(run, device: torch.device) -> float:
    times = []
    for _ in range(8):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])  # the first is the warm-up


def peak_rss_mib() -> float:
    """This process's peak resident memory so far (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


class EpochCost:
    """Counts one epoch's FLOPs batch by batch (`counting`) and turns them, with the CPU time, into metrics."""

    def __init__(self, device: torch.device, amp: bool):
        self.device, self.amp = device, amp
        # (batch shapes, stages, meta losses) -> (FLOPs of the counted step, that batch's work)
        self._flops_of: dict[tuple, tuple[int, float]] = {}
        self.flops = 0
        self._cpu = self._wall = 0.0
        self._just_counted: tuple | None = None

    def start(self) -> None:
        self.flops, self._cpu, self._wall = 0, time.process_time(), time.perf_counter()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def counting(self, batch: dict, signature: tuple, work: float = 1.0) -> AbstractContextManager:
        """Wrap one batch's forward, losses and backward: counted the first time its shape is seen; later
        batches of the shape add that count times their work over the counted batch's."""
        key = (*(tuple(v.shape) for v in batch.values() if torch.is_tensor(v)), *signature)
        self._just_counted = None
        if key in self._flops_of:
            flops, counted_work = self._flops_of[key]
            self.flops += round(flops * work / counted_work)
            return nullcontext()
        return _Count(self, key, work)

    def discard(self) -> None:
        """Forget the figure counted for the batch just done (its backward was skipped): its FLOPs stay in the
        epoch's total, which they were spent for, but are not the step of its shape."""
        if self._just_counted is not None:
            self._flops_of.pop(self._just_counted, None)

    def metrics(self) -> dict[str, float]:
        """system/* of the epoch so far (per process; rlan.engine reduces them over the workers)."""
        wall = max(time.perf_counter() - self._wall, 1e-9)
        threads = torch.get_num_threads() if self.device.type == "cpu" else 1
        out = {
            "system/cpu_util": (time.process_time() - self._cpu) / wall / threads,
            "system/peak_rss_mib": peak_rss_mib(),
            "system/flops": float(self.flops),
            "system/peak_flops": matmul_rate(self.device, torch.bfloat16 if self.amp else torch.float32),
        }
        if self.device.type == "cuda":
            out["system/gpu_peak_mem_mib"] = torch.cuda.max_memory_allocated(self.device) / 2**20
            try:
                out["system/gpu_util"] = float(torch.cuda.utilization(self.device)) / 100
            except Exception:  # needs NVML (pynvml); the memory figure does not
                pass
        return out


class _Count:
    def __init__(self, cost: EpochCost, key: tuple, work: float):
        self.cost, self.key, self.work, self.mode = cost, key, work, FlopCounterMode(display=False)

    def __enter__(self) -> None:
        self.mode.__enter__()

    def __exit__(self, *exc) -> None:
        self.mode.__exit__(*exc)
        if exc[0] is None:
            flops = self.mode.get_total_flops()
            self.cost._flops_of[self.key] = (flops, self.work)
            self.cost._just_counted = self.key
            self.cost.flops += flops
