"""The `rlan` command. Bad input exits 2 with one line; a training failure exits 1; no tracebacks."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from orchestrator.cli_args import (
    EXIT_BAD_INPUT,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    build_parser,
    check_max_failures,
    check_sweep_resources,
    check_wait,
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
    check_wait(args)
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
        wait_for_resources=args.wait_for_resources,
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


def cmd_sweep(args: argparse.Namespace) -> int:
    from orchestrator.cluster import check_resources, check_shared_storage, resolve_storage, start_ray
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
    check_resources(
        args.workers_per_trial,
        args.cpus_per_worker,
        args.gpus_per_trial / args.workers_per_trial,
        args.wait_for_resources,
    )
    check_shared_storage(storage)
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
    from orchestrator.cluster import check_resources, check_shared_storage, resolve_storage, start_ray
    from orchestrator.sweep import locate_sweep, read_sweep_file, resume_sweep
    from orchestrator.trial_config import ARM_KEY

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    check_wait(args)
    sweep_dir = locate_sweep(args.sweep, resolve_storage(args.storage))
    start_ray(args.address)
    saved = read_sweep_file(sweep_dir)[0]
    check_resources(
        saved.workers_per_trial,
        saved.cpus_per_worker,
        saved.gpus_per_trial / saved.workers_per_trial,
        args.wait_for_resources,
    )
    check_shared_storage(saved.storage)
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
    from orchestrator.cluster import check_resources, check_shared_storage, resolve_storage, start_ray
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
    check_wait(args)
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
    check_resources(settings.workers_per_trial, settings.cpus_per_worker, 0.0, args.wait_for_resources)
    check_shared_storage(settings.storage)
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
