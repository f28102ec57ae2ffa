"""The original RLAN's FLOPs per training step, counted by the counter that counts ours.

Run by the side-by-side folder's interpreter (its venv has the original's dependencies, not this project's):

    DIR/venv/bin/python bench/original_flops.py --folder DIR --padding dynamic --steps 12

It runs DIR/orig_driver.py's own step (the original's model, loss and AdamW; nothing of it is patched)
under torch.utils.flop_counter.FlopCounterMode, the counter of bench/flops.py, and reads the running total
after each optimizer step, so each batch gets its own count. The driver's output goes to stderr; stdout
gets one JSON line: {"impl": "original", "padding": ..., "step_flops": [one per batch, in batch order]}.
Only torch and the standard library are imported here, so the script needs nothing from this project.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import sys
from pathlib import Path

from torch.optim.optimizer import register_optimizer_step_post_hook
from torch.utils.flop_counter import FlopCounterMode


def load_driver(folder: Path):
    spec = importlib.util.spec_from_file_location("orig_driver", folder / "orig_driver.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def count(folder: Path, padding: str, steps: int, hidden: int, threads: int) -> list[int]:
    driver = load_driver(folder)
    counter = FlopCounterMode(display=False)
    totals: list[int] = []
    # The driver's step is a closure inside its main(); a global optimizer hook sees each step end
    # without touching the driver (the original's AdamW is a torch Optimizer).
    hook = register_optimizer_step_post_hook(lambda *_: totals.append(counter.get_total_flops()))
    argv = [
        "orig_driver.py", "--orig", str(folder / "orig"), "--hidden", str(hidden), "--padding", padding,
        "--mode", "full", "--warmup", "0", "--steps", str(steps), "--infer-steps", "0",
        "--threads", str(threads),
    ]  # fmt: skip
    saved_argv, sys.argv = sys.argv, argv
    try:
        with counter, contextlib.redirect_stdout(sys.stderr):
            driver.main()
    finally:
        sys.argv = saved_argv
        hook.remove()
    if len(totals) != steps:
        raise SystemExit(f"original_flops: counted {len(totals)} optimizer steps, expected {steps}")
    return [b - a for a, b in zip([0, *totals[:-1]], totals, strict=True)]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="bench/original_flops.py")
    p.add_argument("--folder", type=Path, required=True, help="the side-by-side folder (setup.sh)")
    p.add_argument("--padding", choices=["fixed", "dynamic"], default="fixed")
    p.add_argument("--steps", type=int, default=12, help="batches counted, from the first")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    folder = args.folder.resolve()
    flops = count(folder, args.padding, args.steps, args.hidden, args.threads)
    print(json.dumps({"impl": "original", "padding": args.padding, "step_flops": flops}), flush=True)


if __name__ == "__main__":
    main()
