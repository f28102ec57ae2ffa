"""Where a training step's time goes: torch.profiler over a few steps of the side-by-side's batches.

    python -m bench.profile_step --canvas batch-max --steps 4      # top ops by self CPU time, ops per step

Prints the operators that take the most self CPU time (with call counts and input shapes off), how many
operator calls one step makes, and the share of the step spent in the top rows: the figures issue 18 asks
for before any optimisation (small kernels, copies, the hand-written backwards, Python overhead).
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from bench.original_batches import original_batches
from bench.workload import Shape, TrainStep, build_model


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.profile_step")
    p.add_argument("--canvas", choices=["fixed", "batch-max"], default="batch-max")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--rows", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    batches = original_batches(8, args.warmup + args.steps, args.canvas)
    step = TrainStep(build_model(Shape(hidden=args.hidden)))
    for batch in batches[: args.warmup]:
        step(batch)
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for batch in batches[args.warmup :]:
            step(batch)
    wall = time.perf_counter() - start
    events = prof.key_averages()
    calls = sum(e.count for e in events)
    self_total = sum(e.self_cpu_time_total for e in events) / 1e6
    print(f"{args.steps} steps, {wall:.2f} s under the profiler; {calls / args.steps:,.0f} operator calls per "
          f"step; self CPU time {self_total:.2f} s")  # fmt: skip
    print(events.table(sort_by="self_cpu_time_total", row_limit=args.rows, max_name_column_width=60))


if __name__ == "__main__":
    main()
