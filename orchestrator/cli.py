"""The `rlan` command. Bad input exits 2 with one line; a training failure exits 1; no tracebacks."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

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


def interrupted(command: str, summary: dict, name: str) -> bool:
    """After Ctrl-C: one line saying what is left and how to go on."""
    if not summary.get("unfinished"):
        return False
    print(
        f"rlan {command}: interrupted ({summary['unfinished']} trials unfinished); `rlan resume {name}` continues",
        file=sys.stderr,
    )
    return True


def trials_exit_status(command: str, summary: dict, allow_partial: bool) -> int:
    """0 when every trial finished; with failures, one line on stderr and 1 (0 with --allow-partial while
    any trial finished), so a script or CI job never takes a half-failed sweep for a result."""
    errors, trials = summary["errors"], summary["trials"]
    if errors == 0:
        return EXIT_OK
    accepted = allow_partial and errors < trials
    advice = "accepted (--allow-partial)" if accepted else "pass --allow-partial to accept partial results"
    if errors == trials:
        advice = "no trial finished"
    print(
        f"rlan {command}: {errors} of {trials} trials failed (their MLflow runs are FAILED); {advice}",
        file=sys.stderr,
    )
    return EXIT_OK if accepted else EXIT_FAILURE


def cmd_debug(args: argparse.Namespace) -> int:
    from orchestrator.debug_run import run_debug
    from rlan.checkpoint import check_compatible, load_checkpoint
    from rlan.config import load_config
    from rlan.data import training_tasks

    config = load_config(args.config, args.overrides)
    training_tasks(config)  # bad data fails here, before a run is created
    if args.resume_from:  # a bad checkpoint fails here too
        check_compatible(load_checkpoint(args.resume_from), config.model, args.resume_from)
    uri = _tracking(args)
    run_id, _ = run_debug(
        config, uri, args.experiment, args.run_name, echo=not args.quiet, resume_from=args.resume_from
    )
    print(f"MLflow run {run_id} in {uri}")
    print(f"Browse: mlflow ui --backend-store-uri {uri}")
    return EXIT_OK


def _tracking(args: argparse.Namespace) -> str:
    from orchestrator.tracking import check_reachable, resolve_tracking_uri

    uri = resolve_tracking_uri(args.tracking_uri)
    check_reachable(uri)
    return uri


def cmd_train(args: argparse.Namespace) -> int:
    from orchestrator.train_run import run_train
    from rlan.config import ConfigError, load_config
    from rlan.data import training_tasks

    if args.workers < 1:
        raise ConfigError(f"--workers {args.workers}: expected a whole number >= 1")
    config = load_config(args.config, args.overrides)
    training_tasks(config)
    uri = _tracking(args)
    run_id, _ = run_train(
        config,
        tracking_uri=uri,
        experiment=args.experiment,
        workers=args.workers,
        use_gpu=args.gpu,
        address=args.address,
        storage=args.storage,
        name=args.name,
        max_failures=args.max_failures,
        echo=not args.quiet,
    )
    print(f"MLflow run {run_id} in {uri}")
    return EXIT_OK


def _print_compare(uri: str, name: str, experiment: str | None) -> None:
    from orchestrator.compare import compare_sweep, format_comparison

    print(format_comparison(compare_sweep(uri, name, experiment), "table"))


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
    if getattr(args, "grace_period", None) is not None and args.grace_period < 1:
        raise ConfigError(f"--grace-period {args.grace_period}: expected a whole number of epochs >= 1")
    per_rank = args.gpus_per_trial / args.workers_per_trial
    if args.gpus_per_trial < 0 or (args.workers_per_trial > 1 and per_rank != int(per_rank)):
        raise ConfigError(
            f"--gpus-per-trial {args.gpus_per_trial} with --workers-per-trial {args.workers_per_trial}: "
            "expected whole GPUs per DDP rank; fractional GPUs need --workers-per-trial 1 (ray#48012)"
        )


def cmd_sweep(args: argparse.Namespace) -> int:
    from orchestrator.cluster import resolve_storage, start_ray
    from orchestrator.search_space import load_search_space
    from orchestrator.sweep import SweepSettings, run_sweep, sweep_name
    from rlan.config import load_config
    from rlan.data import training_tasks

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the compact trial table with our columns
    check_sweep_resources(args)
    config = load_config(args.config, args.overrides)
    space = load_search_space(args.search_space)
    training_tasks(config)
    uri = _tracking(args)
    storage = resolve_storage(args.storage)
    settings = SweepSettings(
        name=sweep_name(config, args.name),
        storage=storage,
        tracking_uri=uri,
        experiment=args.experiment or config.logging.experiment_name,
        metric=args.metric,
        mode=args.mode,
        trials=args.trials,
        concurrency=args.concurrency,
        scheduler=args.scheduler,
        grace_period=args.grace_period,
        workers_per_trial=args.workers_per_trial,
        cpus_per_worker=args.cpus_per_worker,
        gpus_per_trial=args.gpus_per_trial,
        seed=args.seed,
        search_space_file=str(args.search_space),
        search_space_text=space.text,
        log_checkpoints=args.log_checkpoints,
        max_failures=args.max_failures,
        echo=not args.quiet,
    )
    start_ray(args.address)
    print(
        f"sweep {settings.name}: {settings.trials} trials, {settings.concurrency} at a time, "
        f"storage {settings.sweep_dir}, MLflow {uri}",
        flush=True,
    )
    summary = run_sweep(config, space, settings)
    if interrupted("sweep", summary, settings.name):
        return EXIT_INTERRUPTED
    _print_compare(uri, settings.name, settings.experiment)
    print(
        f"{summary['trials']} trials, {summary['errors']} errors. Resume an interrupted sweep with: "
        f"rlan resume {settings.name}"
    )
    print(f"Browse: mlflow ui --backend-store-uri {uri}")
    return trials_exit_status("sweep", summary, args.allow_partial)


def cmd_resume(args: argparse.Namespace) -> int:
    from orchestrator.cluster import resolve_storage, start_ray
    from orchestrator.sweep import locate_sweep, resume_sweep
    from orchestrator.trial_config import ARM_KEY

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    sweep_dir = locate_sweep(args.sweep, resolve_storage(args.storage))
    start_ray(args.address)
    settings, summary = resume_sweep(sweep_dir)
    if interrupted("resume", summary, settings.name):
        return EXIT_INTERRUPTED
    if ARM_KEY in settings.knobs:  # an ablation: its report needs every arm, so it is written now
        from orchestrator.ablation import write_ablation_report

        report = write_ablation_report(settings, args.out, f"rlan resume {args.sweep}")
        print(report.read_text())
        print(f"report: {report} (also in the MLflow parent run {settings.parent_run_id}, under ablation/)")
    else:
        _print_compare(settings.tracking_uri, settings.name, settings.experiment)
    print(f"{summary['trials']} trials, {summary['errors']} errors")
    return trials_exit_status("resume", summary, args.allow_partial)


def cmd_ablate(args: argparse.Namespace) -> int:
    from orchestrator.ablation import run_ablation, write_ablation_report
    from orchestrator.cluster import resolve_storage, start_ray
    from orchestrator.sweep import SweepSettings, sweep_name
    from orchestrator.trial_config import ARMS
    from rlan.config import ConfigError, load_config
    from rlan.data import training_tasks

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    overrides = list(args.overrides)
    overrides += [f"training.max_epochs={args.epochs}"] if args.epochs else []
    overrides += [f"data.max_tasks={args.tasks}"] if args.tasks else []
    config = load_config(args.config, overrides)
    check_max_failures(args)
    unknown = sorted(set(args.arms or []) - set(ARMS))
    if unknown or args.seeds < 1:
        raise ConfigError(
            f"--arms: unknown arm {unknown[0]} (arms: {', '.join(ARMS)})"
            if unknown
            else "--seeds: expected at least 1"
        )
    training_tasks(config)
    uri = _tracking(args)
    experiment = args.experiment or config.logging.experiment_name
    settings = SweepSettings(
        name=args.name or sweep_name(config, None).replace(experiment, f"{experiment}-ablation", 1),
        storage=resolve_storage(args.storage),
        tracking_uri=uri,
        experiment=experiment,
        concurrency=args.concurrency,
        max_failures=args.max_failures,
        echo=not args.quiet,
    )
    seeds = [config.training.seed + i for i in range(args.seeds)]
    start_ray(args.address)
    print(
        f"ablation {settings.name}: {len(args.arms or ARMS)} arms x {len(seeds)} seeds, MLflow {uri}",
        flush=True,
    )
    summary = run_ablation(config, settings, seeds, args.arms)
    if interrupted("ablate", summary, settings.name):  # no report from some of the arms
        return EXIT_INTERRUPTED
    command = (
        "rlan " + " ".join(sys.argv[1:]) if sys.argv[0].endswith("rlan") else f"rlan ablate -c {args.config}"
    )
    report = write_ablation_report(settings, args.out, command)
    print(report.read_text())
    print(f"report: {report} (also in the MLflow parent run {settings.parent_run_id}, under ablation/)")
    return trials_exit_status("ablate", summary, args.allow_partial)


def cmd_compare(args: argparse.Namespace) -> int:
    from orchestrator.compare import compare_sweep, format_comparison
    from orchestrator.tracking import resolve_tracking_uri

    uri = resolve_tracking_uri(args.tracking_uri)
    comparison = compare_sweep(uri, args.sweep, args.experiment, args.metric, args.top, args.out)
    print(format_comparison(comparison, args.format))
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "debug": cmd_debug,
    "train": cmd_train,
    "sweep": cmd_sweep,
    "resume": cmd_resume,
    "compare": cmd_compare,
    "ablate": cmd_ablate,
}


def bad_input_errors() -> tuple[type[BaseException], ...]:
    from orchestrator.cluster import ClusterError
    from orchestrator.tracking import TrackingError
    from rlan.checkpoint import CheckpointError
    from rlan.config import ConfigError
    from rlan.data import DataError

    return ConfigError, DataError, TrackingError, CheckpointError, ClusterError


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
        return COMMANDS[args.command](args)
    except bad_input_errors() as exc:
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


if __name__ == "__main__":
    sys.exit(main())
