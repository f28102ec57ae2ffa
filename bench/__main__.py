"""`python -m bench` (= `make bench`): RLAN training/inference/data/orchestration throughput.

    python -m bench                  # h128 and h256, bucketed and 30x30 canvases, data pipeline
    python -m bench --quick          # h128 only, few batches and repeats (a smoke test, ~1 minute)
    python -m bench --orchestration  # also rlan debug / train / sweep overheads (several minutes)
    python -m bench --gpu            # also CUDA bf16 rows (hidden 256, batch 50) when a GPU is present
    python -m bench --gpu-only       # the CUDA rows alone
    python -m bench --compile        # also torch.compile of the solver step vs eager (minutes to compile)
    python -m bench --variants       # also each CPU optimisation turned off in turn (leave-one-out)
    python -m bench --scale          # also the sweep machinery at 1,000 stand-in trials (bench/scale.py)
    python -m bench --time-to-accuracy  # also make learn's wall time to its held-out target (~5 minutes)
    python -m bench --vs-original DIR   # only: the original RLAN's step beside ours, same batches (bench/vs_original.py)

Prints a table and writes bench/results.json (see docs/performance.md for the method).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from bench import data, report
from bench.flops import conv_product_rate, fp32_peak, matmul_rate
from bench.stats import machine
from bench.train import run_child, run_isolated, shape_args
from bench.workload import Shape

DEFAULT_OUT = Path(__file__).resolve().parent / "results.json"


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="hidden 128 only, 2+1 batches, 2 repeats")
    p.add_argument("--hidden", type=int, nargs="+", help="hidden sizes (default 128 256; quick: 128)")
    p.add_argument("--canvas", nargs="+", choices=["bucketed", "fixed"], default=["bucketed", "fixed"])
    p.add_argument("--batches", type=int, help="bucketed batches per pass (default 8; quick 2)")
    p.add_argument("--fixed-batches", type=int, help="30x30 batches per pass (default 3; quick 1)")
    p.add_argument("--repeats", type=int, help="timed passes per shape (default 3; quick 2)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's, here 2)")
    p.add_argument("--no-inference", action="store_true", help="skip (b) inference timing")
    p.add_argument("--no-data", action="store_true", help="skip (c) the data pipeline")
    p.add_argument("--orchestration", action="store_true", help="(d) rlan debug/train/sweep (minutes)")
    p.add_argument("--gpu", action="store_true", help="CUDA bf16 rows when CUDA is available")
    p.add_argument("--gpu-only", action="store_true", help="only the CUDA rows (no CPU rows, no data)")
    p.add_argument("--compile", action="store_true", help="torch.compile'd solver step vs eager, bucketed")
    p.add_argument("--variants", action="store_true", help="each CPU optimisation turned off in turn")
    p.add_argument("--scale", action="store_true", help="(e) 1,000 stand-in trials on MLflow+PostgreSQL")
    p.add_argument(
        "--time-to-accuracy",
        action="store_true",
        help="(f) configs/learnable.yaml's wall time to held-out exact match 0.5 (about 5 minutes)",
    )
    p.add_argument(
        "--vs-original",
        type=Path,
        metavar="DIR",
        help="only the side-by-side with the original RLAN (DIR: ../shared/tools/sidebyside after setup.sh)",
    )
    p.add_argument("--rounds", type=int, default=3, help="ABBA rounds of --vs-original (default 3; quick 1)")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per shape before giving up")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results (default bench/results.json)")
    args = p.parse_args(argv)
    args.hidden = args.hidden or ([128] if args.quick else [128, 256])
    args.batches = args.batches or (2 if args.quick else 8)
    args.fixed_batches = args.fixed_batches or (1 if args.quick else 3)
    args.repeats = args.repeats or (2 if args.quick else 3)
    return args


def run_cpu(args: argparse.Namespace, results: dict) -> None:
    results["matmul_fp32_gflops"] = matmul_rate(repeats=3 if args.quick else 7)
    results["conv1x1_fp32_gflops"] = conv_product_rate(repeats=3 if args.quick else 7)
    for hidden in args.hidden:
        for canvas in args.canvas:
            batches = args.batches if canvas == "bucketed" else args.fixed_batches
            shape = Shape.row(hidden, canvas)
            row = run_isolated(shape, batches, args.repeats, not args.no_inference, True, args.timeout)
            results["train"].append(row)
            print(report.train_table([row], fp32_peak(results))[-1], flush=True)
    # The reference rate again at the end: the two bracket the training rows (a busy machine shows here).
    results["matmul_fp32_gflops_after"] = matmul_rate(repeats=3 if args.quick else 7)
    if args.compile:
        results["compile"] = []
        for hidden in args.hidden:
            child_args = shape_args(Shape(hidden=hidden), args.batches, args.repeats)
            results["compile"].append(run_child("bench.compiled", child_args, f"h{hidden}", args.timeout))
    if args.variants:
        results["variants"] = measure_variants(args)
    if not args.no_data:
        results["data"] = data.measure(repeats=1 if args.quick else 3, max_batches=50 if args.quick else None)


def measure_variants(args: argparse.Namespace) -> list[dict]:
    from bench.variants import VARIANTS

    rows = []
    for hidden in args.hidden:
        for canvas in args.canvas:
            shape = Shape.row(hidden, canvas)
            batches = args.batches if canvas == "bucketed" else args.fixed_batches
            for name in VARIANTS:
                child_args = shape_args(shape, batches, args.repeats) + ["--variant", name]
                row = run_child("bench.variants", child_args, shape.label, args.timeout)
                rows.append({**row, "variant": name})
                print(report.variant_line(rows[-1]), flush=True)
    return rows


def side_by_side(args: argparse.Namespace, started: float) -> dict:
    from bench import vs_original

    steps = (1, 1) if args.quick else (2, 10)  # warm-up, timed steps per measurement
    results = {"machine": machine(), "vs_original": vs_original.measure(
        args.vs_original.resolve(), 1 if args.quick else args.rounds, *steps, threads=args.threads or 2
    )}  # fmt: skip
    results["wall_s"] = time.perf_counter() - started
    print("\n".join(vs_original.table(results["vs_original"])))
    out = args.out.with_name("vs_original.json") if args.out == DEFAULT_OUT else args.out
    out.write_text(json.dumps(results, indent=1))
    print(f"\nwrote {out}")
    return results


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    if args.vs_original:
        return side_by_side(args, started)
    results: dict = {"machine": machine(), "mode": "quick" if args.quick else "full", "train": []}
    if not args.gpu_only:
        run_cpu(args, results)
    if args.orchestration:
        from bench import orchestration

        results["orchestration"] = orchestration.measure(repeats=1 if args.quick else 3)
    if args.scale:
        from bench import scale

        results["scale"] = run_child("bench.scale", [], "scale", max(args.timeout, 7200))
        if "error" not in results["scale"]:
            print("\n".join(scale.table(results["scale"])), flush=True)
    if args.time_to_accuracy:
        results["time_to_accuracy"] = run_child(
            "bench.time_to_accuracy", [], "time to accuracy", args.timeout
        )
        print(report.time_to_accuracy_line(results["time_to_accuracy"]), flush=True)
    if args.gpu or args.gpu_only:
        from bench import gpu

        results["gpu"] = gpu.measure(batches=2 if args.quick else 6, repeats=2 if args.quick else 5)
    results["targets"] = report.targets(results)
    results["wall_s"] = time.perf_counter() - started
    print()
    print(report.render(results))
    report.write(results, args.out)
    print(f"\nwrote {args.out}")
    return results


if __name__ == "__main__":
    main()
