"""`rlan sweep`, `rlan resume`, `rlan ablate` and `rlan compare`: many trials through Ray Tune, and their results."""

from __future__ import annotations

import argparse
import os
import sys

from orchestrator.cli.args import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK
from orchestrator.cli.checks import check_resources_args, check_wait
from orchestrator.cli.runs import reachable_tracking_uri


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


def _print_compare(
    uri: str, name: str, experiment: str | None, register: str | None = None, storage: str = ""
) -> None:
    from orchestrator.comparison.compare import compare_sweep, format_comparison

    comparison = compare_sweep(uri, name, experiment)
    print(format_comparison(comparison, "table"))
    if register:
        _register(comparison, register, storage)


def _register(comparison, model: str, storage: str) -> None:
    from orchestrator.comparison.registry import register_best

    version = register_best(comparison, model, storage)
    print(
        f"registered {model} version {version.version}: trial {comparison.best.trial_id}, "
        f"{comparison.metric} {comparison.best.value:.4g} (rlan evaluate models:/{model}/{version.version})"
    )


def cmd_sweep(args: argparse.Namespace) -> int:
    from orchestrator.sweeps.search_space import load_search_space
    from rlan.config import load_config

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the compact trial table with our columns
    check_resources_args(args)
    config = load_config(args.config, args.overrides)  # the inputs first, before torch, MLflow and Ray
    space = load_search_space(args.search_space)
    from rlan.data import training_tasks

    training_tasks(config)
    uri = reachable_tracking_uri(args)
    from orchestrator.cluster import join_cluster, resolve_storage
    from orchestrator.sweeps.study import default_study_storage, open_storage
    from orchestrator.sweeps.sweep import SweepSettings, run_sweep, sweep_name

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
        perturbation_interval=args.perturbation_interval,
        workers_per_trial=args.workers,
        cpus_per_worker=args.cpus_per_worker,
        gpus_per_trial=args.gpus_per_worker * args.workers,
        seed=args.sampler_seed,
        search_space_file=str(args.search_space),
        search_space_text=space.text,
        log_checkpoints=args.log_checkpoints,
        max_failures=args.max_failures,
        echo=not args.quiet,
    )
    if args.scheduler != "pbt":  # PBT proposes no trials after the first draw: no Optuna study to keep
        settings.study_storage = args.study_storage or default_study_storage(uri, storage)
        open_storage(settings.study_storage)  # a bad URL is one line now, not a failed Tune start
    join_cluster(
        args.address,
        storage,
        args.workers,
        args.cpus_per_worker,
        args.gpus_per_worker,
        args.wait_for_resources,
    )
    print(
        f"sweep {settings.name}: {settings.trials} trials, {settings.concurrency} at a time, "
        f"storage {settings.sweep_dir}, MLflow {uri}",
        flush=True,
    )
    summary = run_sweep(config, space, settings)
    if interrupted("sweep", summary, settings.name):
        return EXIT_INTERRUPTED
    _print_compare(uri, settings.name, settings.experiment, args.register, settings.storage)
    print(
        f"{summary['trials']} trials, {summary['errors']} errors. Resume an interrupted sweep with: "
        f"rlan resume {settings.name}"
    )
    print(f"Browse: mlflow ui --backend-store-uri {uri}")
    return trials_exit_status("sweep", summary, args.allow_partial)


def cmd_resume(args: argparse.Namespace) -> int:
    from orchestrator.cluster import join_cluster, resolve_storage
    from orchestrator.sweeps.sweep import locate_sweep, read_sweep_file, resume_sweep, retarget_sweep
    from orchestrator.sweeps.trial_config import ARM_KEY

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    check_wait(args)
    sweep_dir = locate_sweep(args.sweep, resolve_storage(args.storage))
    if args.tracking_uri:  # MLflow moved since the sweep started: the sweep file says where it is now
        retarget_sweep(sweep_dir, reachable_tracking_uri(args))
    saved = read_sweep_file(sweep_dir)[0]
    join_cluster(
        args.address,
        saved.storage,
        saved.workers_per_trial,
        saved.cpus_per_worker,
        saved.gpus_per_trial / saved.workers_per_trial,
        args.wait_for_resources,
    )
    settings, summary = resume_sweep(sweep_dir)
    if interrupted("resume", summary, settings.name):
        return EXIT_INTERRUPTED
    if ARM_KEY in settings.knobs:  # an ablation: its report needs every arm, so it is written now
        from orchestrator.ablation.run import write_ablation_report

        report = write_ablation_report(settings, args.out, f"rlan resume {args.sweep}")
        print(report.read_text())
        print(f"report: {report} (also in the MLflow parent run {settings.parent_run_id}, under ablation/)")
    else:
        _print_compare(settings.tracking_uri, settings.name, settings.experiment)
    print(f"{summary['trials']} trials, {summary['errors']} errors")
    return trials_exit_status("resume", summary, args.allow_partial)


def cmd_extend(args: argparse.Namespace) -> int:
    from orchestrator.cluster import join_cluster, resolve_storage
    from orchestrator.sweeps.extend import extend_sweep, extension_settings
    from orchestrator.sweeps.sweep import locate_sweep, read_sweep_file, retarget_sweep
    from orchestrator.tracking.uri import check_reachable

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    sweep_dir = locate_sweep(args.sweep, resolve_storage(args.storage))
    if args.tracking_uri:
        retarget_sweep(sweep_dir, reachable_tracking_uri(args))
    saved = read_sweep_file(sweep_dir)[0]
    check_reachable(saved.tracking_uri)
    # Unset resource flags keep the sweep's own, so the new trials are sized like the earlier ones.
    sized = argparse.Namespace(
        trials=args.trials,
        concurrency=args.concurrency or saved.concurrency,
        workers=args.workers or saved.workers_per_trial,
        cpus_per_worker=args.cpus_per_worker or saved.cpus_per_worker,
        gpus_per_worker=saved.gpus_per_trial / saved.workers_per_trial
        if args.gpus_per_worker is None
        else args.gpus_per_worker,
        max_failures=saved.max_failures,
        wait_for_resources=args.wait_for_resources,
    )
    check_resources_args(sized)
    part = extension_settings(
        sweep_dir,
        args.trials,
        concurrency=sized.concurrency,
        workers_per_trial=sized.workers,
        cpus_per_worker=sized.cpus_per_worker,
        gpus_per_trial=sized.gpus_per_worker * sized.workers,
        echo=not args.quiet,
    )
    join_cluster(
        args.address,
        saved.storage,
        sized.workers,
        sized.cpus_per_worker,
        sized.gpus_per_worker,
        args.wait_for_resources,
    )
    print(
        f"extend {saved.name}: {args.trials} more trials after {saved.planned_trials}, "
        f"{sized.concurrency} at a time, storage {part.sweep_dir}, MLflow {part.tracking_uri}",
        flush=True,
    )
    summary = extend_sweep(sweep_dir, part)
    if interrupted("extend", summary, saved.name):
        return EXIT_INTERRUPTED
    _print_compare(part.tracking_uri, saved.name, saved.experiment, args.register, saved.storage)
    print(f"{summary['trials']} trials added, {summary['errors']} errors")
    return trials_exit_status("extend", summary, args.allow_partial)


def cmd_ablate(args: argparse.Namespace) -> int:
    from orchestrator.sweeps.trial_config import ARMS
    from rlan.config import ConfigError, load_config

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    overrides = list(args.overrides)
    overrides += [f"training.max_epochs={args.epochs}"] if args.epochs else []
    overrides += [f"data.max_tasks={args.tasks}"] if args.tasks else []
    config = load_config(args.config, overrides)
    check_resources_args(args)
    unknown = sorted(set(args.arms or []) - set(ARMS))
    if unknown or args.seeds < 1:
        raise ConfigError(
            f"--arms: unknown arm {unknown[0]} (arms: {', '.join(ARMS)})"
            if unknown
            else "--seeds: expected at least 1"
        )
    from rlan.data import training_tasks

    training_tasks(config)
    uri = reachable_tracking_uri(args)
    from orchestrator.ablation.run import run_ablation, write_ablation_report
    from orchestrator.cluster import join_cluster, resolve_storage
    from orchestrator.sweeps.sweep import SweepSettings, sweep_name

    experiment = args.experiment or config.logging.experiment_name
    settings = SweepSettings(
        name=args.name or sweep_name(config, None).replace(experiment, f"{experiment}-ablation", 1),
        storage=resolve_storage(args.storage),
        tracking_uri=uri,
        experiment=experiment,
        concurrency=args.concurrency,
        workers_per_trial=args.workers,
        cpus_per_worker=args.cpus_per_worker,
        gpus_per_trial=args.gpus_per_worker * args.workers,
        max_failures=args.max_failures,
        echo=not args.quiet,
    )
    seeds = [config.training.seed + i for i in range(args.seeds)]
    join_cluster(
        args.address,
        settings.storage,
        args.workers,
        args.cpus_per_worker,
        args.gpus_per_worker,
        args.wait_for_resources,
    )
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
    from orchestrator.comparison.compare import compare_sweep, format_comparison
    from orchestrator.tracking.uri import resolve_tracking_uri

    uri = resolve_tracking_uri(args.tracking_uri)
    comparison = compare_sweep(
        uri, args.sweep, args.experiment, args.metric, args.top, args.out, study_storage=args.study_storage
    )
    print(format_comparison(comparison, args.format))
    if args.register:
        from orchestrator.cluster import resolve_storage

        _register(comparison, args.register, resolve_storage(args.storage))
    return EXIT_OK
