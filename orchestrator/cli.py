"""The `rlan` command. Bad input exits 2 with one line; a training failure exits 1; no tracebacks."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", required=True, help="YAML run config (see configs/)")
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. training.seed=3"
    )
    parser.add_argument(
        "--tracking-uri",
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, "
        "else sqlite:///mlruns.db in the working directory)",
    )
    parser.add_argument("--experiment", help="MLflow experiment (default: logging.experiment_name)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlan", description="RLAN experiments: debug runs, Ray runs, sweeps."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    debug = sub.add_parser("debug", help="train in this process (no Ray) and log to MLflow")
    _add_config_args(debug)
    debug.add_argument("--run-name", help="MLflow run name (default: logging.run_name or 'debug')")
    debug.add_argument("--quiet", action="store_true", help="no progress bars or epoch lines")
    return parser


def cmd_debug(args: argparse.Namespace) -> int:
    from orchestrator.debug_run import run_debug
    from orchestrator.tracking import check_reachable, resolve_tracking_uri
    from rlan.config import load_config
    from rlan.data import training_tasks

    config = load_config(args.config, args.overrides)
    training_tasks(config)  # bad data fails here, before a run is created
    uri = resolve_tracking_uri(args.tracking_uri)
    check_reachable(uri)
    run_id, _ = run_debug(config, uri, args.experiment, args.run_name, echo=not args.quiet)
    print(f"MLflow run {run_id} in {uri}")
    print(f"Browse: mlflow ui --backend-store-uri {uri}")
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"debug": cmd_debug}


def _bad_input_errors() -> tuple[type[BaseException], ...]:
    from orchestrator.tracking import TrackingError
    from rlan.checkpoint import CheckpointError
    from rlan.config import ConfigError
    from rlan.data import DataError

    return ConfigError, DataError, TrackingError, CheckpointError


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        return COMMANDS[args.command](args)
    except _bad_input_errors() as exc:
        print(f"rlan {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"rlan {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a training failure: one line, details in the MLflow run's status
        first = str(exc).splitlines()[0] if str(exc) else ""
        print(f"rlan {args.command}: failed: {type(exc).__name__}: {first}", file=sys.stderr)
        if os.environ.get("RLAN_TRACEBACK"):
            raise
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
