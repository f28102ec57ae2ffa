"""Where a training step's time goes: torch.profiler over a few steps of the side-by-side's batches.

    python -m bench.profile_step --canvas batch-max --steps 4      # top ops by self CPU time, ops per step
    python -m bench.profile_step --threads 1 --kinds               # + the time by kind, and the products' rate

Prints the operators that take the most self CPU time (with call counts and input shapes off), how many
operator calls one step makes, and the share of the step spent in the top rows: the figures issue 18 asks
for before any optimisation (small kernels, copies, the hand-written backwards, Python overhead).

`--kinds` splits the time three ways: the product operators (convolutions and matmuls, which hold every
FLOP the counter counts), the other operators (elementwise, norms, softmax, copies, draws), and the wall
time outside any operator (Python, the autograd engine, the profiler's own cost). It then divides the same
steps' FLOPs by the products' time: the rate the product kernels run at, against this thread count's fp32
product peak. The step's share of the peak is about (products' share of the time) x (their rate / peak).
The profiler costs time per operator call, so the same steps are timed again without it.
On one thread the split is exact (the canvas lanes are off there, and every operator runs on the thread
the profiler watches); on two the lanes' threads are not profiled, so use --threads 1.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from bench.flops import fp32_rates, step_flops
from bench.original_batches import original_batches
from bench.workload import Shape, TrainStep, build_model

# The operators that do the counted FLOPs (torch.utils.flop_counter counts only these), by their names in
# the profiler; the backward of a convolution is one operator, its forward mkldnn's or the slow path's.
PRODUCT_OPS = frozenset({
    "aten::mkldnn_convolution", "aten::convolution_backward", "aten::_slow_conv2d_forward",
    "aten::_slow_conv2d_backward", "aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm", "aten::addbmm",
})  # fmt: skip


def kinds(events, wall_s: float) -> dict[str, float]:
    """Seconds of self CPU time in product operators and in the others, and the wall time outside both."""
    products = sum(e.self_cpu_time_total for e in events if e.key in PRODUCT_OPS) / 1e6
    others = sum(e.self_cpu_time_total for e in events if e.key not in PRODUCT_OPS) / 1e6
    return {
        "products": products,
        "other operators": others,
        "outside operators": max(wall_s - products - others, 0.0),
    }


LANES_NOTE = ("the canvas lanes ran, on threads the profiler does not see: for the split by kind, --threads 1 "
              "or RLAN_CANVAS_LANES=0")  # fmt: skip


def kinds_lines(
    split: dict[str, float] | None, flops: int, peak: float, threads: int, plain_s: float, profiled_s: float = 0.0
) -> list[str]:  # fmt: skip
    """The report of --kinds; split None when the lanes ran (their operators were not profiled)."""
    if split is None:
        lines = [LANES_NOTE]
    else:
        profiled_s = sum(split.values())
        rate = flops / split["products"] / 1e9 if split["products"] else 0.0
        share = split["products"] / profiled_s if profiled_s else 0.0
        lines = [
            "time by kind: "
            + "; ".join(f"{k} {v:.2f} s ({100 * v / profiled_s:.0f}%)" for k, v in split.items()),
            f"the products ran at {rate:.0f} GFLOP/s ({flops / 1e9:.0f} GFLOP), {100 * rate / peak:.0f}% of the "
            f"{peak:.0f} GFLOP/s fp32 product peak on {threads} thread(s); so the step's share of that peak is "
            f"about {100 * share:.0f}% x {100 * rate / peak:.0f}% = {100 * share * rate / peak:.0f}%",
        ]
    # The profiler's own cost per operator call lands mostly outside the operators: the same steps
    # without it give the step's real share.
    achieved = flops / plain_s / 1e9 if plain_s else 0.0
    line = (
        f"without the profiler the same steps took {plain_s:.2f} s (profiled {profiled_s:.2f} s): "
        f"{achieved:.0f} GFLOP/s, {100 * achieved / peak:.0f}% of the peak"
    )
    if split is not None and split["products"] and plain_s:
        line += f"; the products' time is then at most {min(100 * split['products'] / plain_s, 100):.0f}% of the step"
    return [*lines, line]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.profile_step")
    p.add_argument("--canvas", choices=["fixed", "batch-max"], default="batch-max")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--rows", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--kinds", action="store_true", help="the time by kind and the product kernels' rate")
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
    if args.kinds:
        flops = sum(step_flops(step, batch) for batch in batches[args.warmup :])
        peak = fp32_rates()["peak_gflops"]
        start = time.perf_counter()
        for batch in batches[args.warmup :]:
            step(batch)
        plain = time.perf_counter() - start
        laned = any(e.key == "_GroupsInLanes" for e in events)
        split = None if laned else kinds(events, wall)
        print("\n".join(kinds_lines(split, flops, peak, args.threads, plain, profiled_s=wall)))


if __name__ == "__main__":
    main()
