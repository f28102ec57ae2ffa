"""`--gpu`: the training step on CUDA with bf16 autocast (hidden 256, batch 50, as stable_dev trains).

Timings are bracketed by torch.cuda.synchronize; memory is torch.cuda.max_memory_allocated over the timed
passes; the reference rate is a bf16 matmul loop on the same GPU.
"""

from __future__ import annotations

import torch

from bench.flops import matmul_rate, step_flops
from bench.stats import summary
from bench.train import timed_passes
from bench.workload import Shape, TrainStep, build_model, forward_only, move_to, real_batches


def measure(
    hidden: int = 256, batch: int = 50, batches: int = 6, repeats: int = 5, canvases=("bucketed", "fixed")
) -> dict:
    if not torch.cuda.is_available():
        return {"error": "CUDA is not available"}
    device = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    result: dict = {
        "device": torch.cuda.get_device_name(0),
        "bf16_matmul_tflops": {k: v / 1e3 if k != "n" and k != "spread" else v for k, v in
                               matmul_rate(torch.bfloat16, "cuda", size=8192, repeats=5).items()},
        "rows": [],
    }  # fmt: skip
    peak = result["bf16_matmul_tflops"]["median"]
    for canvas in canvases:
        shape = Shape(hidden=hidden, batch=batch, canvas=canvas)
        data = [move_to(b, device) for b in real_batches(shape, batches, samples_per_task=8)]
        model = build_model(shape, device)
        step = TrainStep(model, amp_dtype=torch.bfloat16)
        samples = sum(b["query_inputs"].shape[0] for b in data)
        gflop = sum(step_flops(step, b) for b in data) / samples / 1e9
        torch.cuda.reset_peak_memory_stats()
        train = summary(timed_passes(step, data, repeats, torch.cuda.synchronize))
        memory = torch.cuda.max_memory_allocated() / 2**20
        model.eval()

        def infer(b, model=model):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                return forward_only(model, b)

        inference = summary(timed_passes(infer, data, repeats, torch.cuda.synchronize))
        achieved = gflop * train["median"] / 1e3
        result["rows"].append(
            {
                "label": f"{shape.label} b{batch} bf16",
                "canvas_sides": [int(b["query_inputs"].shape[-1]) for b in data],
                "gflop_per_sample": gflop,
                "train_samples_per_s": train,
                "inference_samples_per_s": inference,
                "train_tflops_per_s": achieved,
                "share_of_bf16_matmul": achieved / peak if peak else None,
                "max_memory_allocated_mb": memory,
            }
        )
        del model, step, data
        torch.cuda.empty_cache()
    return result
