"""One CLI vocabulary: the same resource flags wherever runs are sized, MLflow and storage flags wherever a
command touches them, one meaning per flag name, and every option's help with its default."""

import argparse

import pytest

from orchestrator.cli.args import build_parser

RESOURCES = ("--workers", "--cpus-per-worker", "--gpus-per-worker")


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def options(command: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {s: a for a in command._actions for s in a.option_strings if s.startswith("--") and s != "--help"}


COMMANDS = ["debug", "train", "sweep", "resume", "extend", "ablate", "compare", "evaluate"]


@pytest.mark.parametrize("name", COMMANDS)
def test_every_option_says_what_it_does_and_its_default(name):
    for flag, action in options(subcommands()[name]).items():
        assert action.help and len(action.help) > 10, f"rlan {name} {flag}: no help"
        assert action.required or "default" in action.help, f"rlan {name} {flag}: no default in its help"


def test_the_resource_flags_are_the_same_on_every_command_that_sizes_runs():
    commands = subcommands()
    for flag in RESOURCES:
        seen = {
            (type(a).__name__, a.type, a.default)
            for n in ("train", "sweep", "ablate")
            for a in [options(commands[n])[flag]]
        }
        assert len(seen) == 1, (flag, seen)
        # `rlan extend` takes them too, each unset by default: the new trials are sized like the sweep's
        extend = options(commands["extend"])[flag]
        assert (extend.type, extend.default) == (options(commands["sweep"])[flag].type, None)
        assert "the sweep's" in extend.help
    for name, command in commands.items():
        if name not in ("train", "sweep", "ablate", "extend"):
            assert not set(RESOURCES) & set(options(command)), name


def test_mlflow_and_storage_flags_wherever_a_command_touches_them():
    commands = subcommands()
    for name in COMMANDS:
        assert "--tracking-uri" in options(commands[name]), name
    for name in ("train", "sweep", "resume", "extend", "ablate", "evaluate", "compare"):
        assert "--storage" in options(commands[name]), name
    for name in ("sweep", "compare"):  # the Optuna study: where a sweep keeps it, where compare reads it
        assert "--study-storage" in options(commands[name]), name


def test_no_flag_name_means_two_things():
    flags = {flag for command in subcommands().values() for flag in options(command)}
    assert "--seed" not in flags  # the sampler's seed is --sampler-seed; --seeds counts an ablation's seeds
    assert not {"--gpu", "--workers-per-trial", "--gpus-per-trial"} & flags
