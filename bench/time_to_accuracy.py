"""`python -m bench --time-to-accuracy` (part of `make bench`): how long `make learn` takes to reach its
held-out target, the figure a researcher feels.

    python -m bench.time_to_accuracy                     # configs/learnable.yaml, seed 42, target 0.5
    python -m bench.time_to_accuracy --seed 1 --target 0.6 training.max_epochs=80

One run of the learnability benchmark's config (bench/learning.py, `rlan debug`'s code path) into a
throw-away MLflow store; the answer is the first evaluated epoch whose held-out exact match reaches the
target, with the run's own wall clock at that epoch. The resolution is the config's `evaluation.eval_every`
(10 epochs). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile

import torch

from bench.learning import DEFAULT_CONFIG, curve_rows
from bench.stats import load_average

HELDOUT = "heldout/exact_match"


def first_reach(rows: list[dict[str, float]], target: float) -> dict[str, float] | None:
    """The first evaluated row whose held-out exact match is at least target."""
    return next((r for r in rows if r.get(HELDOUT, -1.0) >= target), None)


def measure(target: float, seed: int, overrides: list[str], config_path: str = str(DEFAULT_CONFIG)) -> dict:
    from mlflow import MlflowClient

    from orchestrator.runs.debug import run_debug
    from rlan.config import load_config

    config = load_config(config_path, [f"training.seed={seed}", *overrides])
    load_before = load_average()
    home = os.getcwd()
    with tempfile.TemporaryDirectory() as scratch:
        os.chdir(scratch)  # MLflow's artifacts land beside its throw-away database
        try:
            uri = f"sqlite:///{scratch}/mlflow.db"
            # stdout carries the JSON line only: the run's epoch lines go to stderr
            with contextlib.redirect_stdout(sys.stderr):
                run_id, _ = run_debug(config, uri, "time-to-accuracy", "time-to-accuracy")
            rows = curve_rows(MlflowClient(uri), run_id)
        finally:
            os.chdir(home)
    reached = first_reach(rows, target)
    last = rows[-1] if rows else {}
    return {
        "label": f"time to held-out EM {target:g}",
        "config": os.path.relpath(config_path),
        "tasks": len(config.data.tasks or []),
        "seed": seed,
        "target": target,
        "overrides": overrides,
        "eval_every": config.evaluation.eval_every,
        "reached": reached is not None,
        "epoch": reached and reached["epoch"],
        "wall_s": reached and reached.get("wall_s"),
        "samples_seen": reached and reached.get("samples_seen"),
        "final_epoch": last.get("epoch"),
        "final_wall_s": last.get("wall_s"),
        "final_heldout_em": last.get(HELDOUT),
        "final_train_em": last.get("train/exact_match"),
        "threads": torch.get_num_threads(),
        "load_before": load_before,
        "load_after": load_average(),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.time_to_accuracy", description=__doc__.splitlines()[0])
    p.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. training.max_epochs=80")
    p.add_argument("--target", type=float, default=0.5, help="held-out exact match to reach (default 0.5)")
    p.add_argument("--seed", type=int, default=42, help="training seed (default 42)")
    p.add_argument(
        "--config", default=str(DEFAULT_CONFIG), help="YAML config (default configs/learnable.yaml)"
    )
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    args = p.parse_intermixed_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(json.dumps(measure(args.target, args.seed, args.overrides, args.config)))


if __name__ == "__main__":
    main()
