"""`--compile`: the training step with the solver's ConvGRU step under torch.compile, against eager.

Both run in one process on the same batches, alternating batch by batch (interleaved A/B), so a busy
machine slows both alike; the compile time (first pass) is reported on its own.
"""

from __future__ import annotations

import json
import statistics
import time

from bench.stats import load_average, summary
from bench.train import parse_shape, shape_parser
from bench.workload import Shape, TrainStep, build_model, real_batches
from rlan.model.compile import compile_solver_cell


def measure(shape: Shape, batches: int, repeats: int) -> dict:
    data = real_batches(shape, batches)
    eager = TrainStep(build_model(shape))
    compiled = TrainStep(compile_solver_cell(build_model(shape)))
    start = time.perf_counter()
    for batch in data:
        compiled(batch)
    compile_s = time.perf_counter() - start
    for batch in data:
        eager(batch)
    times: dict[str, list[float]] = {"eager": [], "compiled": []}
    for r in range(repeats):
        for j, batch in enumerate(data):
            order = [("eager", eager), ("compiled", compiled)]
            for name, step in order if (r + j) % 2 == 0 else order[::-1]:
                start = time.perf_counter()
                step(batch)
                times[name].append(time.perf_counter() - start)
    n = len(data)
    rates = {
        name: summary([shape.batch * n / sum(ts[r * n : (r + 1) * n]) for r in range(repeats)])
        for name, ts in times.items()
    }
    ratios = [a / b for a, b in zip(times["eager"], times["compiled"])]
    return {
        "label": f"{shape.label} compiled cell",
        "compile_and_first_pass_s": compile_s,
        "eager_samples_per_s": rates["eager"],
        "compiled_samples_per_s": rates["compiled"],
        "speedup_median_of_pairs": statistics.median(ratios),
        "load": load_average(),
    }


def main(argv: list[str] | None = None) -> None:
    args, shape = parse_shape(shape_parser("python -m bench.compiled"), argv)
    print(json.dumps(measure(shape, args.batches, args.repeats)))


if __name__ == "__main__":
    main()
