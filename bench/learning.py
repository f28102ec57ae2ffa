"""`python -m bench.learning` (= `make learn`): does RLAN learn ARC tasks on this machine, and how fast?

    python -m bench.learning                              # configs/learnable.yaml on the local-rule set
    python -m bench.learning --set local_wide             # the same config on tasks it was not tuned on
    python -m bench.learning --set global                 # ... and on whole-grid transforms
    python -m bench.learning --set first100 training.max_epochs=40
    python -m bench.learning data.tasks=[6150a2bd,67a3c6ac] training.seed=1

One in-process run (`rlan debug`'s code path, so it goes to MLflow like any run), then a table read back
from MLflow: wall time, samples seen, train / held-out / eval exact match and pixel accuracy at the
evaluated epochs. `rlan debug -c configs/learnable.yaml` runs the same training.

The task sets (each chosen by a stated rule over all 400 ARC-AGI-1 training tasks, not by what the model
solves; `bench.task_sets` computes the local ones):
  local      (the config's own) the 12 tasks, outside `global`, whose outputs keep the input size (at most
             10x10) and are a function of each cell's 3x3 input neighbourhood (consistent over all pairs),
             with at least 80% of the test inputs' neighbourhoods present in the demos
  local_wide the same rule loosened (sides up to 30, half of the test neighbourhoods seen), minus the
             two other sets: 10 tasks
  global     the 12 tasks whose output is one global transform of the whole input (rotation, flip,
             transpose, recolouring, gravity), as listed in shared/design/arc_learning_facts.md
  first100   the first 100 training tasks in sorted id order
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from bench import task_sets

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = ROOT / "configs" / "learnable.yaml"
COLUMNS = [
    ("epoch", "epoch", "{:.0f}"),
    ("wall_s", "wall s", "{:.0f}"),
    ("samples_seen", "samples", "{:.0f}"),
    ("train/exact_match", "train EM", "{:.3f}"),
    ("train/pixel_accuracy", "train PA", "{:.3f}"),
    ("heldout/exact_match", "held-out EM", "{:.3f}"),
    ("heldout/pixel_accuracy", "held-out PA", "{:.3f}"),
    ("heldout/nll", "held-out NLL", "{:.3f}"),
    ("eval/exact_match", "eval EM", "{:.3f}"),
    ("eval/pixel_accuracy", "eval PA", "{:.3f}"),
]


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.learning", description=__doc__.splitlines()[0])
    p.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. training.seed=1")
    p.add_argument("-c", "--config", default=str(DEFAULT_CONFIG), help="YAML config (default learnable)")
    p.add_argument("--set", choices=sorted(task_sets.SETS), help="replace data.tasks with a named set")
    p.add_argument("--tracking-uri", help="MLflow URI (default $MLFLOW_TRACKING_URI or sqlite:///mlruns.db)")
    p.add_argument("--experiment", default="rlan-learning", help="MLflow experiment (default rlan-learning)")
    p.add_argument("--run-name", help="MLflow run name (default: learning-<set or config>)")
    p.add_argument("--quiet", action="store_true", help="no per-epoch lines or progress bars")
    return p.parse_intermixed_args(argv)  # overrides may come before or after the options


def curve_rows(client, run_id: str) -> list[dict[str, float]]:
    """One row per evaluated epoch, from the run's metric history in MLflow."""
    by_step: dict[int, dict[str, float]] = {}
    for key, _, _ in COLUMNS:
        for point in client.get_metric_history(run_id, key):
            by_step.setdefault(point.step, {})[key] = point.value
    return [
        row for _, row in sorted(by_step.items()) if "heldout/exact_match" in row or "eval/exact_match" in row
    ]


def solved_by_task(client, run_id: str) -> list[str]:
    """'held-out solved: <task> k/n ...' per evaluation set, from the run's results/*_queries.json."""
    import tempfile

    lines = []
    with tempfile.TemporaryDirectory() as scratch:
        for name in ("heldout", "eval"):
            try:
                local = client.download_artifacts(run_id, f"results/{name}_queries.json", scratch)
            except Exception:  # an older run or an empty set: nothing to list
                continue
            per_task: dict[str, list[bool]] = {}
            for row in json.loads(Path(local).read_text()):
                per_task.setdefault(row["task_id"], []).append(row["exact"])
            solved = [f"{t} {sum(v)}/{len(v)}" for t, v in sorted(per_task.items()) if any(v)]
            lines.append(
                f"{name} solved ({len(solved)} of {len(per_task)} tasks): {', '.join(solved) or '-'}"
            )
    return lines


def format_table(rows: list[dict[str, float]]) -> str:
    header = [label for _, label, _ in COLUMNS]
    cells = [
        [fmt.format(row[key]) if key in row and math.isfinite(row[key]) else "-" for key, _, fmt in COLUMNS]
        for row in rows
    ]
    widths = [max(len(line[i]) for line in [header, *cells]) for i in range(len(header))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in [header, *cells])


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a clean table
    from mlflow import MlflowClient

    from orchestrator.runs.debug import run_debug
    from orchestrator.tracking.uri import check_reachable, resolve_tracking_uri
    from rlan.config import load_config
    from rlan.data import training_tasks
    from rlan.errors import BadInputError

    overrides = (task_sets.overrides(args.set) if args.set else []) + list(args.overrides)
    try:
        config = load_config(args.config, overrides)
        training_tasks(config)  # bad data or task ids fail here, before a run is created
        uri = resolve_tracking_uri(args.tracking_uri)
        check_reachable(uri)
    except BadInputError as exc:
        print(f"bench.learning: error: {exc}", file=sys.stderr)
        return 2
    name = args.run_name or f"learning-{args.set or Path(args.config).stem}"
    run_id, _ = run_debug(config, uri, args.experiment, name, echo=not args.quiet)
    client = MlflowClient(uri)
    print()
    print(format_table(curve_rows(client, run_id)))
    for line in solved_by_task(client, run_id):
        print(line)
    again = ["python -m bench.learning", *(sys.argv[1:] if argv is None else argv)]
    print(f"\nrepeat: {' '.join(again)}")
    print(f"MLflow: {uri}, experiment '{args.experiment}', run {run_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
