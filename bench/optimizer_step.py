"""The AdamW step alone, per-op against fused, at the benchmark's model sizes.

    python -m bench.optimizer_step          # ms per optimizer step, h128 and h32, 2 threads

Every parameter gets a random gradient; 5 warm-up and 50 timed steps each. rlan/train_state.make_optimizer
uses the fused one on the CPU too.
"""

from __future__ import annotations

import time

import torch

from bench.workload import Shape, build_model
from rlan.train_state import param_groups


def step_ms(hidden: int, fused: bool, steps: int = 50) -> float:
    model = build_model(Shape(hidden=hidden))
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    optimizer = torch.optim.AdamW(param_groups(model, 0.01), lr=1e-4, fused=fused)
    for _ in range(5):
        optimizer.step()
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.step()
    return (time.perf_counter() - start) / steps * 1e3


def main() -> None:
    torch.set_num_threads(2)
    for hidden in (128, 32):
        plain, fused = step_ms(hidden, False), step_ms(hidden, True)
        print(f"h{hidden}: per-op AdamW {plain:.2f} ms, fused {fused:.2f} ms per step")


if __name__ == "__main__":
    main()
