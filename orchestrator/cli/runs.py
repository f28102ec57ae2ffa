"""`rlan debug` and `rlan train`: one training run, in this process or on Ray Train workers."""

from __future__ import annotations

import argparse

from orchestrator.cli.args import EXIT_OK
from orchestrator.cli.checks import check_resources_args


def reachable_tracking_uri(args: argparse.Namespace) -> str:
    """The tracking URI of --tracking-uri (or the default), refused early when it cannot be reached."""
    from orchestrator.tracking.uri import check_reachable, resolve_tracking_uri

    uri = resolve_tracking_uri(args.tracking_uri)
    check_reachable(uri)
    return uri


def cmd_debug(args: argparse.Namespace) -> int:
    from rlan.config import load_config

    config = load_config(
        args.config, args.overrides
    )  # before torch and MLflow are imported: bad YAML is quick
    from rlan.checkpoint import check_compatible, load_checkpoint
    from rlan.data import training_tasks

    training_tasks(config)  # bad data fails here, before a run is created
    if args.resume_from:  # a bad checkpoint fails here too
        check_compatible(load_checkpoint(args.resume_from), config.model, args.resume_from)
    uri = reachable_tracking_uri(args)
    from orchestrator.runs.debug import run_debug

    run_id, _ = run_debug(
        config, uri, args.experiment, args.run_name, echo=not args.quiet, resume_from=args.resume_from
    )
    print(f"MLflow run {run_id} in {uri}")
    print(f"Browse: mlflow ui --backend-store-uri {uri}")
    return EXIT_OK


def cmd_train(args: argparse.Namespace) -> int:
    from rlan.config import load_config

    check_resources_args(args)
    config = load_config(args.config, args.overrides)
    from rlan.data import training_tasks

    training_tasks(config)
    uri = reachable_tracking_uri(args)
    from orchestrator.runs.train import run_train

    run_id, _ = run_train(
        config,
        tracking_uri=uri,
        experiment=args.experiment,
        workers=args.workers,
        cpus_per_worker=args.cpus_per_worker,
        gpus_per_worker=args.gpus_per_worker,
        address=args.address,
        wait_for_resources=args.wait_for_resources,
        storage=args.storage,
        name=args.name,
        max_failures=args.max_failures,
        echo=not args.quiet,
    )
    print(f"MLflow run {run_id} in {uri}")
    return EXIT_OK


def cmd_evaluate(args: argparse.Namespace) -> int:
    from orchestrator.cluster import resolve_storage
    from orchestrator.runs.evaluate import run_evaluate
    from rlan.config import ConfigError

    if args.max_tasks is not None and args.max_tasks < 1:
        raise ConfigError(f"--max-tasks {args.max_tasks}: expected a whole number >= 1")
    uri = reachable_tracking_uri(args)
    run_id, score, submission = run_evaluate(
        args.source,
        tracking_uri=uri,
        out=args.out,
        storage=resolve_storage(args.storage),
        version=args.version,
        split=args.split,
        folder=args.folder,
        max_tasks=args.max_tasks,
        experiment=args.experiment,
    )
    inputs = sum(len(entries) for entries in submission.values())
    print(f"submission: {len(submission)} tasks, {inputs} test inputs -> {args.out}")
    if score is None:
        print("not scored: no task's test outputs are known")
    else:
        print(
            f"score (ARC Prize, top-2): {score.score:.4f} over {score.tasks} tasks "
            f"({score.solved} of {score.outputs} test outputs solved)"
        )
    print(f"MLflow run {run_id} in {uri}")
    return EXIT_OK
