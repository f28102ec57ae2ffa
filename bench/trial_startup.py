"""What a sweep spends between trials: a real `run_sweep` of N short trials, one at a time, on a local Ray.

Each trial is bench.orchestration's short run (configs/debug.yaml, 2 epochs).

Per trial: the gap from the previous trial's last report (the first trial: from Ray's start) to this trial's
training start (its first report's time less the worker's own `wall_s`), its training time (`wall_s`), and
from its training start to its last report. `--reuse` runs the same sweep with Tune's reuse_actors (a
finished trial's process runs the next trial; not what sweeps do, see orchestrator/sweeps/sweep.py
REUSE_ACTORS), for what it would buy; `--poll-s 0.5` sets the controller's polling interval. Tune's report timestamps are whole seconds, so each gap is good to about 1 s; the mean over
trials 2..N is the figure to compare.

    python -m bench.trial_startup [--trials 3] [--reuse] [--poll-s 0.5]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

SPACE = "training.learning_rate: {type: loguniform, low: 0.0005, high: 0.005}\n"


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.trial_startup", description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--reuse", action="store_true", help="a finished trial's process runs the next trial")
    p.add_argument(
        "--poll-s", type=float, default=None,
        help="RAY_TRAIN_HEALTH_CHECK_INTERVAL_S, how often Train's controller polls its workers (Ray: 2 s)",
    )  # fmt: skip
    return p.parse_args(argv)


def timeline(trials: int, reuse: bool) -> tuple[float, list[tuple[float, float, float]]]:
    """(Ray's start time, [(training start, last report, wall_s) per trial, in start order])."""
    import ray

    import orchestrator.sweeps.sweep as sweep
    from bench.orchestration import CONFIG, OVERRIDES
    from orchestrator.sweeps.search_space import load_search_space
    from rlan.config import load_config

    sweep.REUSE_ACTORS = reuse
    with tempfile.TemporaryDirectory(prefix="rlan-trial-startup-") as tmp:
        work = Path(tmp)
        (work / "space.yaml").write_text(SPACE)
        space = load_search_space(work / "space.yaml")
        settings = sweep.SweepSettings(
            name="startup", storage=str(work / "ray_results"), tracking_uri=f"sqlite:///{work}/runs.db",
            experiment="rlan-trial-startup", trials=trials, concurrency=1, scheduler="fifo",
            search_space_file=space.path, search_space_text=space.text, echo=False,
        )  # fmt: skip
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        ray.init(num_cpus=2, log_to_driver=False, logging_level="WARNING")
        started = time.time()
        try:
            summary = sweep.run_sweep(load_config(str(CONFIG), OVERRIDES), space, settings)
        finally:
            ray.shutdown()
    rows = []
    for result in summary["results"]:
        frame = result.metrics_dataframe
        first, last = frame.iloc[0], frame.iloc[-1]
        rows.append((first["timestamp"] - first["wall_s"], float(last["timestamp"]), float(last["wall_s"])))
    return started, sorted(rows)


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    if args.poll_s is not None:  # before Ray starts: its workers inherit the environment
        os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = str(args.poll_s)
    started, rows = timeline(args.trials, reuse=args.reuse)
    poll = os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "2 (Ray's default)")
    print(f"{args.trials} trials, one at a time, reuse_actors={args.reuse}, controller polls every {poll} s")
    print("| trial | gap before training (s) | training wall_s (s) | training start to last report (s) |")
    print("|---|---|---|---|")
    previous, gaps = started, []
    for i, (start, end, wall) in enumerate(rows, 1):
        gaps.append(start - previous)
        print(f"| {i} | {start - previous:.1f} | {wall:.1f} | {end - start:.1f} |")
        previous = end
    later = gaps[1:] or gaps
    print(f"mean gap between trials (trials 2..{len(rows)}): {sum(later) / len(later):.1f} s")
    return {"gaps_s": gaps, "rows": rows}


if __name__ == "__main__":
    main()
