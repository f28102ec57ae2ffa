"""`--gpu`: the training step on CUDA with bf16 autocast (hidden 256, batch 50, as stable_dev trains).

Timings are bracketed by torch.cuda.synchronize; memory is torch.cuda.max_memory_allocated over the timed
passes; the reference rate is a bf16 matmul loop on the same GPU. device="cpu" runs the same code with
CPU bf16 autocast (the smoke test uses it, as this machine has no GPU).
"""

from __future__ import annotations

import torch

from bench.flops import matmul_rate, step_flops
from bench.stats import summary
from bench.train import timed_passes
from bench.workload import Shape, TrainStep, build_model, forward_only, move_to, real_batches


def _row(shape: Shape, device: str, batches: int, repeats: int, peak_tflops: float) -> dict:
    cuda = device == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    label = f"{shape.label} b{shape.batch} bf16"
    data = [move_to(b, device) for b in real_batches(shape, batches, samples_per_task=8)]
    model = build_model(shape, device)
    step = TrainStep(model, amp_dtype=torch.bfloat16)
    samples = sum(b["query_inputs"].shape[0] for b in data)
    gflop = sum(step_flops(step, b) for b in data) / samples / 1e9
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    train = summary(timed_passes(step, data, repeats, sync))
    memory = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
    model.eval()

    def infer(batch):
        with torch.autocast(device, dtype=torch.bfloat16):
            return forward_only(model, batch)

    inference = summary(timed_passes(infer, data, repeats, sync))
    achieved = gflop * train["median"] / 1e3
    return {
        "label": label,
        "canvas_sides": [int(b["query_inputs"].shape[-1]) for b in data],
        "gflop_per_sample": gflop,
        "train_samples_per_s": train,
        "inference_samples_per_s": inference,
        "train_tflops_per_s": achieved,
        "share_of_bf16_matmul": achieved / peak_tflops if peak_tflops else None,
        "max_memory_allocated_mb": memory,
    }


def measure(
    hidden: int = 256,
    batch: int = 50,
    batches: int = 6,
    repeats: int = 5,
    canvases: tuple[str, ...] = ("bucketed", "fixed"),
    device: str = "cuda",
    matmul_size: int = 8192,
) -> dict:
    if device == "cuda" and not torch.cuda.is_available():
        return {"error": "CUDA is not available"}
    rate = matmul_rate(torch.bfloat16, device, size=matmul_size, repeats=5)
    result: dict = {
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu (bf16 autocast)",
        "bf16_matmul_tflops": {k: v / 1e3 if k in ("median", "min", "max") else v for k, v in rate.items()},
        "rows": [],
    }
    for canvas in canvases:
        shape = Shape.row(hidden, canvas, batch=batch)
        try:
            row = _row(shape, device, batches, repeats, result["bf16_matmul_tflops"]["median"])
        except (RuntimeError, torch.cuda.OutOfMemoryError) as exc:  # one bad row must not lose the rest
            row = {"label": f"{shape.label} b{batch} bf16", "error": str(exc).splitlines()[0]}
        result["rows"].append(row)
        if device == "cuda":
            torch.cuda.empty_cache()
    return result
