"""Checks of flag values that Ray would only reject (or hang on) after starting: one line each, exit 2."""

from __future__ import annotations

import argparse

from rlan.config import ConfigError


def check_max_failures(args: argparse.Namespace) -> None:
    if args.max_failures < 0:
        raise ConfigError(f"--max-failures {args.max_failures}: expected a whole number >= 0")


def check_resources_args(args: argparse.Namespace) -> None:
    """Worker counts and GPU shares that Ray would only reject (or hang on) after starting."""
    for flag in ("trials", "concurrency", "workers"):
        if hasattr(args, flag) and getattr(args, flag) < 1:
            raise ConfigError(
                f"--{flag.replace('_', '-')} {getattr(args, flag)}: expected a whole number >= 1"
            )
    if args.cpus_per_worker <= 0:
        raise ConfigError(f"--cpus-per-worker {args.cpus_per_worker}: expected a number > 0")
    gpus = args.gpus_per_worker
    if gpus < 0 or (args.workers > 1 and gpus != int(gpus)):
        raise ConfigError(
            f"--gpus-per-worker {gpus} with --workers {args.workers}: expected whole GPUs per DDP rank; "
            "fractional GPUs need --workers 1 (ray#48012)"
        )
    check_max_failures(args)
    check_wait(args)
    for flag in ("grace_period", "perturbation_interval"):
        value = getattr(args, flag, None)
        if value is not None and value < 1:
            raise ConfigError(f"--{flag.replace('_', '-')} {value}: expected a whole number of epochs >= 1")
    if getattr(args, "scheduler", None) == "pbt" and args.workers > 1:
        raise ConfigError(
            f"--scheduler pbt with --workers {args.workers}: a PBT trial trains in its own Tune trial "
            "process (PBT copies trials through Tune checkpoints), so --workers must be 1"
        )


def check_wait(args: argparse.Namespace) -> None:
    if getattr(args, "wait_for_resources", 0) < 0:
        raise ConfigError(f"--wait-for-resources {args.wait_for_resources}: expected seconds >= 0")
