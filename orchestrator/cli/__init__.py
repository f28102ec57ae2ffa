"""The `rlan` command. Bad input exits 2 with one line; a training failure exits 1; no tracebacks.

args.py builds the parser and checks flag values; runs.py runs `debug` and `train`; sweeps.py runs `sweep`,
`resume`, `extend`, `ablate` and `compare`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from orchestrator.cli.args import EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_INTERRUPTED, build_parser
from orchestrator.cli.runs import cmd_debug, cmd_evaluate, cmd_train
from orchestrator.cli.sweeps import cmd_ablate, cmd_compare, cmd_extend, cmd_resume, cmd_sweep
from orchestrator.environment import check_environment, configure_http_retries
from rlan.errors import BadInputError

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "debug": cmd_debug,
    "train": cmd_train,
    "sweep": cmd_sweep,
    "resume": cmd_resume,
    "extend": cmd_extend,
    "compare": cmd_compare,
    "evaluate": cmd_evaluate,
    "ablate": cmd_ablate,
}


def cause_line(exc: BaseException, limit: int = 400) -> str:
    """The line of an error message that names the cause: Tune wraps a trial's error in the whole
    traceback text, whose first line says only 'Traceback (most recent call last):'."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return ""
    line = lines[-1] if lines[0].startswith("Traceback") else lines[0]
    return line if len(line) <= limit else line[: limit - 3] + "..."


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        check_environment()
        configure_http_retries()  # MLflow's own HTTP retries, shortened for every client this command opens
        return COMMANDS[args.command](args)
    except BadInputError as exc:  # config, data, checkpoint, tracking, cluster: see rlan/errors.py
        print(f"rlan {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"rlan {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # a training failure: one line, details in the MLflow run's status
        print(f"rlan {args.command}: failed: {type(exc).__name__}: {cause_line(exc)}", file=sys.stderr)
        if os.environ.get("RLAN_TRACEBACK"):
            raise
        return EXIT_FAILURE
