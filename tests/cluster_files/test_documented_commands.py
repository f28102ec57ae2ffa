"""Every `rlan` command written in the cluster files and the docs is one the CLI accepts.

Sources: compose `command:` entries, the RayJob `entrypoint`, command examples in the YAML and Dockerfile
comments (lines written as `#   command`), and the fenced code blocks of docs/cluster.md and README.md.
Each command must name a real subcommand and only options its argparse parser knows, and its config,
overrides and search space must load.
"""

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest
import yaml

from orchestrator.cli.args import build_parser
from orchestrator.sweeps.search_space import load_search_space
from rlan.config import load_config

ROOT = Path(__file__).resolve().parents[2]
SEPARATORS = {"&&", "||", ";", "|", "&", "(", ")", "$(", "`"}


def rlan_commands(shell_text: str) -> list[list[str]]:
    """The argv (after `rlan`) of every rlan command in shell text; `\\` continuations joined and
    placeholders such as `<sweep-name>` read as plain words, not redirections."""
    commands = []
    text = re.sub(r"<([\w.-]+)>", r"\1", re.sub(r"\\\n", " ", shell_text))
    for line in text.splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split, lexer.commenters = True, "#"
        tokens = list(lexer)
        segment: list[str] = []
        for token in [*tokens, ";"]:
            if token in SEPARATORS:
                commands += _rlan_argv(segment)
                segment = []
            else:
                segment.append(token)
    return commands


def _rlan_argv(tokens: list[str]) -> list[list[str]]:
    for i, token in enumerate(tokens):
        if token == "rlan" or token.endswith("/rlan"):
            return [tokens[i + 1 :]]
    return []


def code_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```[^\n]*\n(.*?)^```", markdown, flags=re.M | re.S)


def comment_examples(text: str) -> str:
    """Command examples in `#` comments: lines written as '#   command' (hash, three spaces)."""
    lines = [line.strip()[1:] for line in text.splitlines() if line.strip().startswith("#   ")]
    return "\n".join(lines)


def _yaml_commands(path: Path) -> list[list[str]]:
    found = rlan_commands(comment_examples(path.read_text()))
    for doc in yaml.safe_load_all(path.read_text()):
        if not isinstance(doc, dict):
            continue
        for service in doc.get("services", {}).values():
            command = service.get("command")
            if isinstance(command, list):
                found += rlan_commands(shlex.join(str(part) for part in command))
            elif command:
                found += rlan_commands(str(command))
        if "entrypoint" in doc.get("spec", {}):
            found += rlan_commands(doc["spec"]["entrypoint"])
    return found


def sources() -> dict[str, list[list[str]]]:
    found = {}
    for name in ("docs/cluster.md", "README.md"):
        found[name] = [c for block in code_blocks((ROOT / name).read_text()) for c in rlan_commands(block)]
    for path in sorted((ROOT / "docker").rglob("*.yaml")):
        found[str(path.relative_to(ROOT))] = _yaml_commands(path)
    for path in sorted((ROOT / "docker").glob("Dockerfile*")):
        found[str(path.relative_to(ROOT))] = rlan_commands(comment_examples(path.read_text()))
    return found


SOURCES = sources()
COMMANDS = [(name, argv) for name, commands in SOURCES.items() for argv in commands]


def parse(argv: list[str]):
    """(namespace, unknown args) from the real parser; argparse's own error becomes a test failure."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            return build_parser().parse_known_args(argv)
    except SystemExit:
        pytest.fail(f"rlan {shlex.join(argv)}: {stderr.getvalue().strip().splitlines()[-1]}")


def test_commands_are_found_where_they_are_expected():
    assert len(SOURCES["README.md"]) >= 5
    assert len(SOURCES["docs/cluster.md"]) >= 5
    assert [argv[0] for argv in SOURCES["docker/kuberay/rayjob-sweep.yaml"]] == ["resume", "sweep"]
    assert {argv[0] for argv in SOURCES["docker/compose.yaml"]} == {"sweep"}


def test_the_extractor_finds_commands_behind_other_commands():
    text = (
        "docker compose exec ray-head \\\n  rlan sweep -c a.yaml -s b.yaml  # note\n"
        "ray job submit --address http://x:8265 -- rlan train -c a.yaml && .venv/bin/rlan compare s\n"
        "kubectl get secret rlan-cluster\n"
    )
    assert rlan_commands(text) == [
        ["sweep", "-c", "a.yaml", "-s", "b.yaml"],
        ["train", "-c", "a.yaml"],
        ["compare", "s"],
    ]


@pytest.mark.parametrize("source,argv", COMMANDS, ids=[f"{s}:{' '.join(a)[:60]}" for s, a in COMMANDS])
def test_documented_command_is_accepted_by_the_cli(source, argv):
    args, unknown = parse(argv)
    assert not unknown, f"{source}: rlan {shlex.join(argv)}: unknown {unknown}"
    config = getattr(args, "config", None)
    if config is not None:
        assert (ROOT / config).is_file(), f"{source}: config {config} is not in the repository"
        load_config(ROOT / config, args.overrides)  # raises ConfigError on a bad override
    space = getattr(args, "search_space", None)
    if space is not None:
        assert (ROOT / space).is_file(), f"{source}: search space {space} is not in the repository"
        load_search_space(ROOT / space)


def _shares_a_gpu_between_ranks(argv: list[str]) -> bool:
    args, _ = parse(argv)
    if args.command not in ("train", "sweep", "ablate") or args.workers <= 1:
        return False
    return args.gpus_per_worker != int(args.gpus_per_worker)


@pytest.mark.parametrize("source", SOURCES)
def test_no_documented_sweep_splits_a_gpu_between_ddp_ranks(source):
    """Fractional GPUs only with one worker per trial: two ranks on one GPU break NCCL (ray#48012)."""
    bad = [shlex.join(argv) for argv in SOURCES[source] if _shares_a_gpu_between_ranks(argv)]
    assert not bad, bad


def test_docker_paths_named_in_the_cluster_docs_exist():
    text = (ROOT / "docs" / "cluster.md").read_text()
    named = set(re.findall(r"docker/[\w./-]*\w", text))
    assert named, "docs/cluster.md names no docker/ file"
    missing = {
        path
        for path in named
        if not (ROOT / path).exists() and not list(ROOT.glob(path)) and path != "docker/.env"
    }
    assert not missing, missing
