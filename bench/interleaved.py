"""One optimisation's gain measured in one process, batch by batch, so the machine's drift hits both sides.

    python -m bench.interleaved --variant "every step's logits"      # h128, the side-by-side's batch-max batches

Each of the side-by-side's 12 batches (bench.original_batches) is stepped with the variant (bench/variants.py)
off and on in turn, in ABBA order over two passes, after one warm-up step of each on the first two. On this
2-core machine the step time of separate processes drifts by 5-10% from minute to minute, more than most
single changes are worth; interleaving inside one process cancels that drift. Process-wide settings (the
allocator) and the optimizer (built once) cannot be toggled this way.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from bench import variants
from bench.original_batches import original_batches
from bench.workload import Shape, TrainStep, build_model


class Toggle:
    """Turns a variant on and off again by setting and restoring the attributes it replaces."""

    def __init__(self, name: str):
        self.changes = [(o, a, getattr(o, a), value) for o, a, value in variants.targets(name)]

    def set(self, on: bool) -> None:
        for owner, attribute, original, value in self.changes:
            setattr(owner, attribute, value if on else original)


def measure(name: str, canvas: str, hidden: int, count: int = 12, threads: int = 2) -> dict:
    torch.set_num_threads(threads)
    toggle = Toggle(name)
    batches = original_batches(8, count, canvas)
    step = TrainStep(build_model(Shape(hidden=hidden)))
    for batch in batches[:2]:
        for on in (False, True):
            toggle.set(on)
            step(batch)
    times: dict[bool, list[float]] = {False: [], True: []}
    for rnd in range(2):
        for batch in batches:
            for on in (False, True) if rnd == 0 else (True, False):
                toggle.set(on)
                start = time.perf_counter()
                step(batch)
                times[on].append(time.perf_counter() - start)
    toggle.set(False)
    without, with_ = sum(times[False]), sum(times[True])
    ratios = [a / b for a, b in zip(times[True], times[False], strict=True)]
    return {
        "variant": name,
        "canvas": canvas,
        "hidden": hidden,
        "steps_each": len(times[False]),
        "total_s_without": without,
        "total_s_with": with_,
        "variant_costs": with_ / without - 1,  # > 0: the variant is slower, the optimisation it undoes pays
        "median_batch_ratio": statistics.median(ratios),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.interleaved")
    p.add_argument("--variant", choices=[v for v in variants.VARIANTS if variants.VARIANTS[v]], required=True)
    p.add_argument("--canvas", choices=["fixed", "batch-max"], default="batch-max")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--batches", type=int, default=12)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    r = measure(args.variant, args.canvas, args.hidden, args.batches, args.threads)
    print(
        f"{r['variant']} ({r['canvas']}, h{r['hidden']}, {r['steps_each']} steps each): "
        f"{r['total_s_without']:.2f} s without, {r['total_s_with']:.2f} s with the variant: "
        f"{r['variant_costs']:+.1%} (median per batch {r['median_batch_ratio'] - 1:+.1%})"
    )
    print(json.dumps(r))


if __name__ == "__main__":
    main()
