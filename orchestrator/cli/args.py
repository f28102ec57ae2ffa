"""What `rlan` accepts on its command line: the argument parser, and the checks of flag values that Ray
would only reject (or hang on) after starting. orchestrator/cli/ runs the commands."""

from __future__ import annotations

import argparse

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


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


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit 2), like every other bad input."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="rlan", description="RLAN experiments: debug runs, Ray runs, sweeps.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    debug = sub.add_parser("debug", help="train in this process (no Ray) and log to MLflow")
    _add_config_args(debug)
    debug.add_argument("--run-name", help="MLflow run name (default: logging.run_name or 'debug')")
    debug.add_argument("--quiet", action="store_true", help="no progress bars or epoch lines")
    debug.add_argument(
        "--resume-from",
        metavar="CHECKPOINT",
        help="continue from a checkpoint (a folder with checkpoint.pt, or the file)",
    )

    train = sub.add_parser("train", help="one Ray Train run (DDP workers), logged to MLflow")
    _add_config_args(train)
    _add_ray_args(train)
    train.add_argument("--workers", type=int, default=1, help="Ray Train workers (DDP ranks)")
    train.add_argument("--gpu", action="store_true", help="one GPU per worker (NCCL)")
    train.add_argument("--name", help="Train run name (default: derived from the config, so a rerun resumes)")
    train.add_argument(
        "--max-failures", type=int, default=2, help="worker-group restarts from the checkpoint"
    )
    train.add_argument("--quiet", action="store_true")

    sweep = sub.add_parser("sweep", help="Ray Tune sweep: Optuna TPE + ASHA, one MLflow child run per trial")
    _add_config_args(sweep)
    _add_ray_args(sweep)
    sweep.add_argument("-s", "--search-space", required=True, help="YAML search space (see search_spaces/)")
    sweep.add_argument("--trials", type=int, default=8)
    sweep.add_argument("--concurrency", type=int, default=2, help="trials running at once")
    sweep.add_argument("--scheduler", choices=["asha", "fifo"], default="asha")
    sweep.add_argument(
        "--grace-period",
        type=int,
        help="epochs before ASHA's first stop decision (default: a quarter of training.max_epochs)",
    )
    sweep.add_argument("--name", help="sweep name (default: <experiment>-<start time>)")
    sweep.add_argument("--workers-per-trial", type=int, default=1)
    sweep.add_argument("--cpus-per-worker", type=float, default=1.0)
    sweep.add_argument("--gpus-per-trial", type=float, default=0.0, help="whole or fractional GPUs per trial")
    sweep.add_argument(
        "--metric", default="score", help="Tune metric (default: score, see rlan/diagnostics.py)"
    )
    sweep.add_argument("--mode", choices=["max", "min"], default="max")
    sweep.add_argument("--seed", type=int, default=0, help="Optuna TPE seed")
    sweep.add_argument("--log-checkpoints", action="store_true", help="log each trial's final checkpoint")
    sweep.add_argument("--quiet", action="store_true")
    _add_failure_args(sweep)

    resume = sub.add_parser("resume", help="finish an interrupted sweep")
    resume.add_argument("sweep", metavar="NAME|PATH")
    _add_ray_args(resume)
    _add_failure_args(resume, relaunch=False)
    resume.add_argument(
        "--out", default="ablation_report", help="an ablation's report folder (ablations only)"
    )

    ablate = sub.add_parser("ablate", help="each seed fix off vs on, side by side, with a report")
    _add_config_args(ablate)
    _add_ray_args(ablate)
    ablate.add_argument("--epochs", type=int, help="training.max_epochs for every arm")
    ablate.add_argument("--seeds", type=int, default=2, help="seeds per arm (training.seed, seed+1, ...)")
    ablate.add_argument("--tasks", type=int, help="data.max_tasks: ARC training tasks per trial")
    ablate.add_argument("--arms", nargs="+", help="a subset of the arms (default: all 8)")
    ablate.add_argument("--concurrency", type=int, default=2, help="trials running at once")
    ablate.add_argument("--name", help="ablation name (default: <experiment>-ablation-<start time>)")
    ablate.add_argument("--out", default="ablation_report", help="folder for ablation.md and its PNGs")
    ablate.add_argument("--quiet", action="store_true")
    _add_failure_args(ablate)

    compare = sub.add_parser("compare", help="trials of a sweep from MLflow: table, best config, plots")
    compare.add_argument("sweep", metavar="NAME")
    compare.add_argument("--tracking-uri")
    compare.add_argument("--experiment")
    compare.add_argument("--metric")
    compare.add_argument("--top", type=int, default=10)
    compare.add_argument("--format", choices=["table", "csv", "json"], default="table")
    compare.add_argument("--out", help="folder for comparison.csv, best_config.yaml and PNG plots")
    return parser


def _add_ray_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", help="Ray cluster address ('auto', host:port); default: a local Ray")
    parser.add_argument(
        "--storage",
        help="run/checkpoint storage: a path or s3://, gs:// URI "
        "(default: $RLAN_STORAGE or ./ray_results); shared storage on a multi-node cluster",
    )
    parser.add_argument(
        "--wait-for-resources",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="how long to wait for nodes an autoscaler adds before refusing a run the cluster cannot hold "
        "(default 0: refuse at once)",
    )


def _add_failure_args(parser: argparse.ArgumentParser, relaunch: bool = True) -> None:
    if relaunch:
        parser.add_argument(
            "--max-failures",
            type=int,
            default=1,
            help="times Tune re-launches a trial whose driver failed (default 1); Train restarts its workers too",
        )
    parser.add_argument(
        "--allow-partial",
        action="store_true",
        help="exit 0 when some trials failed but others finished (default: exit 1 if any trial failed)",
    )


def check_max_failures(args: argparse.Namespace) -> None:
    from rlan.config import ConfigError

    if args.max_failures < 0:
        raise ConfigError(f"--max-failures {args.max_failures}: expected a whole number >= 0")


def check_sweep_resources(args: argparse.Namespace) -> None:
    """Counts and GPU shares that Ray would only reject (or hang on) after starting."""
    from rlan.config import ConfigError

    for flag in ("trials", "concurrency", "workers_per_trial"):
        if getattr(args, flag) < 1:
            raise ConfigError(
                f"--{flag.replace('_', '-')} {getattr(args, flag)}: expected a whole number >= 1"
            )
    if args.cpus_per_worker <= 0:
        raise ConfigError(f"--cpus-per-worker {args.cpus_per_worker}: expected a number > 0")
    check_max_failures(args)
    check_wait(args)
    if getattr(args, "grace_period", None) is not None and args.grace_period < 1:
        raise ConfigError(f"--grace-period {args.grace_period}: expected a whole number of epochs >= 1")
    per_rank = args.gpus_per_trial / args.workers_per_trial
    if args.gpus_per_trial < 0 or (args.workers_per_trial > 1 and per_rank != int(per_rank)):
        raise ConfigError(
            f"--gpus-per-trial {args.gpus_per_trial} with --workers-per-trial {args.workers_per_trial}: "
            "expected whole GPUs per DDP rank; fractional GPUs need --workers-per-trial 1 (ray#48012)"
        )


def check_wait(args: argparse.Namespace) -> None:
    from rlan.config import ConfigError

    if getattr(args, "wait_for_resources", 0) < 0:
        raise ConfigError(f"--wait-for-resources {args.wait_for_resources}: expected seconds >= 0")
