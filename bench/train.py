"""(a) training-step throughput and peak memory, (b) inference throughput, (e) FLOPs and achieved FLOP/s.

Each shape runs in a child process (`python -m bench.train ...`), so its peak resident memory (ru_maxrss)
is its own. A pass over the batches first warms oneDNN's per-shape kernels, as an epoch does for the next.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from bench.flops import inference_flops, step_flops
from bench.stats import load_average, summary
from bench.workload import (
    Shape,
    TrainStep,
    area_share,
    batch_indices,
    build_model,
    forward_only,
    real_batches,
)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def timed_passes(fn, batches: list[dict], repeats: int, sync=lambda: None) -> list[float]:
    """samples/s of each of `repeats` passes over the batches (after one warm-up pass)."""
    for batch in batches:
        fn(batch)
    sync()
    samples = sum(b["query_inputs"].shape[0] for b in batches)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for batch in batches:
            fn(batch)
        sync()
        rates.append(samples / (time.perf_counter() - start))
    return rates


def measure(shape: Shape, batches: int, repeats: int, inference: bool, flops: bool) -> dict:
    data = real_batches(shape, batches)
    model = build_model(shape)
    step = TrainStep(model)
    result: dict = {
        "shape": shape.__dict__,
        "label": shape.label,
        "batches": batches,
        "canvas_sides": [int(b["query_inputs"].shape[-1]) for b in data],
        "area_share": 1.0 if shape.canvas == "fixed" else area_share(batch_indices(shape.batch, batches)),
        "threads": torch.get_num_threads(),
        "load_before": load_average(),
    }
    samples = batches * shape.batch
    rss_before = rss_mb()  # model, data and interpreter; the optimiser state comes with the first step
    train = summary(timed_passes(step, data, repeats))
    result["train_samples_per_s"] = train
    # Read before the FLOP count: FlopCounterMode's own bookkeeping raises the peak by ~100 MB.
    result["peak_rss_mb"] = peak_rss_mb()
    result["step_memory_mb"] = result["peak_rss_mb"] - rss_before
    if flops:
        result["gflop_per_sample"] = sum(step_flops(step, b) for b in data) / samples / 1e9
        result["train_gflops_per_s"] = result["gflop_per_sample"] * train["median"]
    if inference:
        model.eval()
        result["inference_samples_per_s"] = summary(
            timed_passes(lambda b: forward_only(model, b), data, repeats)
        )
        if flops:
            gflop = sum(inference_flops(model, b) for b in data) / samples / 1e9
            result["inference_gflop_per_sample"] = gflop
    result["load_after"] = load_average()
    return result


def run_child(module: str, args: list[str], label: str, timeout: float) -> dict:
    """`python -m <module> <args>` in a fresh interpreter; its last stdout line is JSON (else an error)."""
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", module, *args, "--threads", str(torch.get_num_threads())]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=root, env=env)
    except subprocess.TimeoutExpired:
        return {"label": label, "error": f"timed out after {timeout:.0f} s"}
    if done.returncode != 0:
        return {"label": label, "error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def shape_args(shape: Shape, batches: int, repeats: int) -> list[str]:
    return [
        *("--hidden", str(shape.hidden), "--canvas", shape.canvas, "--batch", str(shape.batch)),
        *("--clues", str(shape.clues), "--steps", str(shape.steps)),
        *("--batches", str(batches), "--repeats", str(repeats)),
        *(["--batch-canvas"] if shape.batch_canvas else []),
    ]


def run_isolated(
    shape: Shape, batches: int, repeats: int, inference: bool, flops: bool, timeout: float
) -> dict:
    """`measure` in a fresh interpreter, so that its peak memory is its own."""
    args = shape_args(shape, batches, repeats) + ["--inference"] * inference + ["--no-flops"] * (not flops)
    return run_child("bench.train", args, shape.label, timeout)


def shape_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--canvas", choices=["bucketed", "fixed"], default="bucketed")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--clues", type=int, default=7)
    parser.add_argument("--steps", type=int, default=7)
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument(
        "--batch-canvas",
        action="store_true",
        help="model.canvas_sides=null: every sample on its batch's canvas",
    )
    return parser


def parse_shape(parser: argparse.ArgumentParser, argv: list[str] | None) -> tuple[argparse.Namespace, Shape]:
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    return args, Shape(args.hidden, args.clues, args.steps, args.batch, args.canvas, args.batch_canvas)


def main(argv: list[str] | None = None) -> None:
    parser = shape_parser("python -m bench.train")
    parser.add_argument("--inference", action="store_true")
    parser.add_argument("--no-flops", action="store_true")
    args, shape = parse_shape(parser, argv)
    print(json.dumps(measure(shape, args.batches, args.repeats, args.inference, not args.no_flops)))


if __name__ == "__main__":
    main()
