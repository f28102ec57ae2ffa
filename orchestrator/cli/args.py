"""What `rlan` accepts on its command line: the argument parser (checks.py checks the values that Ray would
only reject after starting). orchestrator/cli/ runs the commands.

One vocabulary: a flag means the same on every command that takes it (--workers, --cpus-per-worker and
--gpus-per-worker size each Train run, whether it is `rlan train`'s one run or a sweep's trial), every command
that touches MLflow or Ray's storage takes --tracking-uri and --storage, and every option's help says what it
does and its default (tests/orchestrator/test_cli_vocabulary.py)."""

from __future__ import annotations

import argparse

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", required=True, help="YAML run config (see configs/)")
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. training.seed=3"
    )
    _add_tracking_arg(parser, "$MLFLOW_TRACKING_URI, else sqlite:///mlruns.db in the working directory")
    parser.add_argument("--experiment", help="MLflow experiment (default: logging.experiment_name)")


def _add_tracking_arg(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument("--tracking-uri", help=f"MLflow tracking URI (default: {default})")


def _add_resource_args(parser: argparse.ArgumentParser, each: str, inherited: bool = False) -> None:
    """inherited: the defaults are what the sweep was started with (`rlan extend`)."""
    default = {"workers": 1, "cpus": 1.0, "gpus": 0.0}
    shown = (
        {k: "the sweep's" for k in default} if inherited else {"workers": 1, "cpus": 1, "gpus": "0, the CPU"}
    )
    pick = (lambda key: None) if inherited else default.get
    parser.add_argument(
        "--workers",
        type=int,
        default=pick("workers"),
        help=f"Ray Train workers (DDP ranks) of {each} (default: {shown['workers']})",
    )
    parser.add_argument(
        "--cpus-per-worker",
        type=float,
        default=pick("cpus"),
        help=f"CPUs each worker holds (default: {shown['cpus']})",
    )
    parser.add_argument(
        "--gpus-per-worker",
        type=float,
        default=pick("gpus"),
        help="GPUs each worker holds: whole GPUs (NCCL), or a fraction with --workers 1 so runs share a GPU "
        f"(default: {shown['gpus']})",
    )


def _add_register_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--register",
        metavar="MODEL",
        help="register the best trial's checkpoint as a new version of this MLflow registered model "
        "(default: none); `rlan evaluate models:/MODEL/latest` loads it",
    )


def _add_quiet_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quiet", action="store_true", help="no progress bars or per-epoch lines (default: off)"
    )


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
    _add_quiet_arg(debug)
    debug.add_argument(
        "--resume-from",
        metavar="CHECKPOINT",
        help="continue from a checkpoint (a folder with checkpoint.pt, or the file; default: a fresh start)",
    )

    train = sub.add_parser("train", help="one Ray Train run (DDP workers), logged to MLflow")
    _add_config_args(train)
    _add_ray_args(train)
    _add_resource_args(train, "the run")
    train.add_argument("--name", help="Train run name (default: derived from the config, so a rerun resumes)")
    train.add_argument(
        "--max-failures", type=int, default=2, help="worker-group restarts from the checkpoint (default: 2)"
    )
    _add_quiet_arg(train)

    sweep = sub.add_parser("sweep", help="Ray Tune sweep: Optuna TPE + ASHA, one MLflow child run per trial")
    _add_config_args(sweep)
    _add_ray_args(sweep)
    sweep.add_argument("-s", "--search-space", required=True, help="YAML search space (see search_spaces/)")
    sweep.add_argument("--trials", type=int, default=8, help="trials Optuna proposes (default: 8)")
    sweep.add_argument("--concurrency", type=int, default=2, help="trials running at once (default: 2)")
    sweep.add_argument(
        "--scheduler",
        choices=["asha", "fifo", "pbt"],
        default="asha",
        help="asha stops weak trials early, fifo runs every trial to its end, pbt (Population Based "
        "Training) has the weak copy the strong and perturbs the continuous knobs (default: asha)",
    )
    sweep.add_argument(
        "--perturbation-interval",
        type=int,
        help="epochs between PBT's exploits (default: a quarter of training.max_epochs)",
    )
    sweep.add_argument(
        "--grace-period",
        type=int,
        help="epochs before ASHA's first stop decision (default: a quarter of training.max_epochs)",
    )
    sweep.add_argument("--name", help="sweep name (default: <experiment>-<start time>)")
    _add_resource_args(sweep, "each trial")
    sweep.add_argument(
        "--metric", default="score", help="Tune metric (default: score, see rlan/diagnostics.py)"
    )
    sweep.add_argument(
        "--mode",
        choices=["max", "min"],
        default="max",
        help="whether a higher metric is better (default: max)",
    )
    sweep.add_argument(
        "--sampler-seed", type=int, default=0, help="seed of Optuna's TPE sampler (default: 0)"
    )
    sweep.add_argument(
        "--log-checkpoints",
        action="store_true",
        help="log each trial's final checkpoint to its MLflow run (default: off, plots and tables only)",
    )
    sweep.add_argument(
        "--study-storage",
        metavar="URL",
        help="database that keeps the Optuna study, for `rlan extend` and `rlan compare` (default: "
        "sqlite optuna.db beside MLflow's SQLite file, else in --storage)",
    )
    _add_quiet_arg(sweep)
    _add_register_arg(sweep)
    _add_failure_args(sweep)

    extend = sub.add_parser(
        "extend",
        help="more trials for a sweep, proposed by its own Optuna study, under the same MLflow parent",
    )
    extend.add_argument("sweep", metavar="NAME|PATH", help="the sweep's name under --storage, or its folder")
    extend.add_argument("--trials", type=int, required=True, help="trials to add (required)")
    extend.add_argument("--concurrency", type=int, help="trials running at once (default: the sweep's)")
    _add_resource_args(extend, "each trial", inherited=True)
    _add_tracking_arg(extend, "the sweep's own, saved beside its Tune state")
    _add_ray_args(extend)
    _add_quiet_arg(extend)
    _add_register_arg(extend)
    _add_failure_args(extend, relaunch=False)

    resume = sub.add_parser("resume", help="finish an interrupted sweep")
    resume.add_argument("sweep", metavar="NAME|PATH", help="the sweep's name under --storage, or its folder")
    _add_tracking_arg(resume, "the sweep's own, saved beside its Tune state")
    _add_ray_args(resume)
    _add_failure_args(resume, relaunch=False)
    resume.add_argument(
        "--out",
        default="ablation_report",
        help="an ablation's report folder (ablations only; default: ablation_report)",
    )

    ablate = sub.add_parser("ablate", help="each seed fix off vs on, side by side, with a report")
    _add_config_args(ablate)
    _add_ray_args(ablate)
    _add_resource_args(ablate, "each trial")
    ablate.add_argument(
        "--epochs", type=int, help="training.max_epochs for every arm (default: the config's)"
    )
    ablate.add_argument(
        "--seeds", type=int, default=2, help="how many seeds per arm: training.seed, seed+1, ... (default: 2)"
    )
    ablate.add_argument(
        "--tasks", type=int, help="data.max_tasks: ARC training tasks per trial (default: the config's)"
    )
    ablate.add_argument("--arms", nargs="+", help="a subset of the arms (default: all 8)")
    ablate.add_argument("--concurrency", type=int, default=2, help="trials running at once (default: 2)")
    ablate.add_argument("--name", help="ablation name (default: <experiment>-ablation-<start time>)")
    ablate.add_argument(
        "--out",
        default="ablation_report",
        help="folder for ablation.md and its PNGs (default: ablation_report)",
    )
    _add_quiet_arg(ablate)
    _add_failure_args(ablate)

    evaluate = sub.add_parser(
        "evaluate", help="an ARC Prize submission from a trained model, scored where outputs are known"
    )
    evaluate.add_argument(
        "source",
        metavar="SOURCE",
        help="a checkpoint (folder or checkpoint.pt), an MLflow run id, or a sweep name",
    )
    evaluate.add_argument("--out", required=True, help="the submission JSON to write")
    evaluate.add_argument(
        "--version",
        choices=["arc-agi-1", "arc-agi-2"],
        default="arc-agi-1",
        help="ARC version (default: arc-agi-1)",
    )
    evaluate.add_argument(
        "--split",
        choices=["training", "evaluation"],
        default="evaluation",
        help="ARC split (default: evaluation)",
    )
    evaluate.add_argument(
        "--folder",
        help="a folder of <task_id>.json task files instead, test outputs optional (default: none)",
    )
    evaluate.add_argument("--max-tasks", type=int, help="the first N tasks by id (default: every task)")
    _add_tracking_arg(evaluate, "$MLFLOW_TRACKING_URI, else sqlite:///mlruns.db in the working directory")
    evaluate.add_argument(
        "--experiment", help="MLflow experiment (default: the checkpoint's logging.experiment_name)"
    )
    evaluate.add_argument(
        "--storage",
        help="where a sweep named as SOURCE keeps its Train checkpoints (default: $RLAN_STORAGE or ./ray_results)",
    )

    compare = sub.add_parser("compare", help="trials of a sweep from MLflow: table, best config, plots")
    compare.add_argument("sweep", metavar="NAME", help="the sweep's name (its parent run's rlan.sweep tag)")
    _add_tracking_arg(compare, "$MLFLOW_TRACKING_URI, else sqlite:///mlruns.db in the working directory")
    compare.add_argument("--experiment", help="MLflow experiment to search (default: every experiment)")
    compare.add_argument("--metric", help="the metric to rank by (default: the sweep's own)")
    compare.add_argument(
        "--top", type=int, default=10, help="trials whose curves are plotted with --out (default: 10)"
    )
    compare.add_argument(
        "--format", choices=["table", "csv", "json"], default="table", help="what is printed (default: table)"
    )
    compare.add_argument(
        "--out", help="folder for comparison.csv, best_config.yaml and PNG plots (default: none, print only)"
    )
    _add_register_arg(compare)
    compare.add_argument(
        "--study-storage",
        metavar="URL",
        help="the sweep's Optuna study database, when it moved or its URL needs a password (default: the "
        "one the sweep recorded on its parent run)",
    )
    compare.add_argument(
        "--storage",
        help="where the sweep keeps its Train checkpoints, for --register (default: $RLAN_STORAGE or ./ray_results)",
    )
    return parser


def _add_ray_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", help="Ray cluster address ('auto', host:port) (default: a local Ray)")
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
        "(default: 0, refuse at once)",
    )


def _add_failure_args(parser: argparse.ArgumentParser, relaunch: bool = True) -> None:
    if relaunch:
        parser.add_argument(
            "--max-failures",
            type=int,
            default=1,
            help="times Tune re-launches a trial whose driver failed; Train restarts its workers too (default: 1)",
        )
    parser.add_argument(
        "--allow-partial",
        action="store_true",
        help="exit 0 when some trials failed but others finished (default: exit 1 if any trial failed)",
    )
