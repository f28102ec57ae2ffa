"""Bad input through the `rlan` CLI as a user runs it, and earlier results survive every one of them.

First a real 1-epoch `rlan debug` run fills an MLflow store (./mlruns.db, ./mlartifacts). Then each case runs
`python -m orchestrator.cli ...` in its own working directory that holds a copy of that store's database,
two cases at a time (none may write, and each case's own copy proves it did not). The claims per case:
- it exits 2;
- stderr is exactly one line, `rlan <command>: error: ...`, naming the input and what was expected;
- no traceback is printed anywhere;
- Ray was never started (its temp dir, redirected by RAY_TMPDIR, stays absent);
- the store still opens with the same experiments and the same runs: status, metrics, params, tags and
  artifacts unchanged, and no new run.

Sweep cases must also fail fast, before Ray: under 15 s of the child's own CPU time (wall time is only
bounded loosely, for loaded machines). Checkpoints: `rlan debug --resume-from` is checked through the CLI;
the library calls that `rlan train` uses on resume (`load_checkpoint`, `rlan.engine.resume`) are checked directly.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from tests.e2e.bad_input_cases import (
    CASES,
    CONFIG,
    ROOT,
    SWEEP_CPU_LIMIT_S,
    TASK_FILES,
    TINY,
    WALL_LIMIT_S,
    YAML_FILES,
    Case,
    debug,
)


# ------------------------------------------------------------------------------------------ the store
def snapshot(uri: str) -> dict:
    """Everything a user would see of the store: experiments, and per run its status, data and artifacts."""
    client = MlflowClient(tracking_uri=uri)
    experiments = client.search_experiments(view_type=ViewType.ALL)
    runs = client.search_runs([e.experiment_id for e in experiments], run_view_type=ViewType.ALL)
    return {
        "experiments": sorted((e.experiment_id, e.name, e.lifecycle_stage) for e in experiments),
        "runs": {
            run.info.run_id: {
                "status": run.info.status,
                "end_time": run.info.end_time,
                "metrics": run.data.metrics,
                "params": run.data.params,
                "tags": run.data.tags,
                "artifacts": sorted(a.path for a in client.list_artifacts(run.info.run_id)),
            }
            for run in runs
        },
    }


def child_env(workdir: Path, extra: dict[str, str]) -> dict[str, str]:
    dropped = ("MLFLOW_TRACKING_URI", "RLAN_STORAGE", "RAY_ADDRESS", "RLAN_TRACEBACK")
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["RAY_TMPDIR"] = str(workdir / "ray_tmp")  # a started Ray would create its session folder here
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env.update(extra)
    return env


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str
    wall_s: float
    cpu_s: float  # this child's own user + system time, whatever else runs beside it


def rlan(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600) -> Result:
    """Run `python -m orchestrator.cli ARGS` in cwd; safe to call from several threads at once."""
    out, err = cwd / "stdout.txt", cwd / "stderr.txt"
    start = time.monotonic()
    with out.open("w") as stdout, err.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli", *args],
            cwd=cwd,
            env=child_env(cwd, env or {}),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
        )
        killer = threading.Timer(timeout, process.kill)
        killer.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)  # reaps this child only, with its own rusage
        finally:
            killer.cancel()
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - start
    cpu = usage.ru_utime + usage.ru_stime
    return Result(process.returncode, out.read_text(), err.read_text(), wall, cpu)


def write_inputs(workdir: Path) -> None:
    inputs = workdir / "inputs"
    inputs.mkdir()
    for name, text in YAML_FILES.items():
        (inputs / name).write_text(text)
    (inputs / "a_file").write_text("a regular file, so nothing can be created under it\n")
    for name, text in TASK_FILES.items():
        folder = workdir / "arc" / name
        folder.mkdir(parents=True)
        (folder / f"{name}.json").write_text(text)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict:
    """A folder with a finished 1-epoch `rlan debug` run in ./mlruns.db (artifacts in ./mlartifacts)."""
    workdir = tmp_path_factory.mktemp("store")
    done = rlan(*debug(), cwd=workdir)
    assert done.returncode == 0, done.stderr[-3000:]
    run_id = re.search(r"MLflow run (\w+) in (\S+)", done.stdout).group(1)
    uri = f"sqlite:///{workdir / 'mlruns.db'}"
    before = snapshot(uri)
    assert before["runs"][run_id]["status"] == "FINISHED"
    assert before["runs"][run_id]["metrics"] and "checkpoint" in before["runs"][run_id]["artifacts"]
    return {"workdir": workdir, "uri": uri, "run_id": run_id, "snapshot": before}


def assert_store_intact(uri: str, store: dict) -> None:
    assert snapshot(uri) == store["snapshot"], "an earlier result changed, or a run was created"


@pytest.fixture(scope="module")
def outcomes(store, request, tmp_path_factory) -> dict[str, tuple[Path, Result]]:
    """Run every selected case, two at a time. Each case gets its own working directory holding a copy of
    the store's database, so a case that wrote to its store is caught by its own check, never by another's;
    the runs' artifacts stay in the one store folder, which the last test checks after all cases."""
    selected = {
        item.callspec.params["case"].id
        for item in request.session.items
        if hasattr(item, "callspec") and isinstance(item.callspec.params.get("case"), Case)
    }
    cases = [case for case in CASES if case.id in selected]

    workdirs = {case.id: tmp_path_factory.mktemp(case.id) for case in cases}
    for workdir in workdirs.values():
        shutil.copy(store["workdir"] / "mlruns.db", workdir / "mlruns.db")
        write_inputs(workdir)

    def run(case: Case) -> tuple[str, tuple[Path, Result]]:
        workdir = workdirs[case.id]
        return case.id, (workdir, rlan(*case.args, cwd=workdir, env=case.env, timeout=300))

    with ThreadPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
        return dict(pool.map(run, cases))


# ------------------------------------------------------------------------------------------ CLI cases
def _params() -> list:
    return [
        pytest.param(
            case, id=case.id, marks=[pytest.mark.xfail(strict=True, reason=case.xfail)] * bool(case.xfail)
        )
        for case in CASES
    ]


@pytest.mark.slow
@pytest.mark.parametrize("case", _params())
def test_bad_input_exits_2_with_one_line_and_keeps_earlier_results(store, outcomes, case):
    workdir, done = outcomes[case.id]

    assert "Traceback" not in done.stderr + done.stdout, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr[-3000:]
    line = lines[0]
    assert done.returncode == 2, line
    assert line.startswith(f"rlan {case.command}: error: "), line
    for expected in case.expect:
        assert expected in line, f"{expected!r} not in {line!r}"
    assert not (workdir / "ray_tmp").exists(), "Ray was started for a bad input"
    assert done.wall_s < WALL_LIMIT_S, f"{done.wall_s:.1f}s"
    if case.command == "sweep":
        assert done.cpu_s < SWEEP_CPU_LIMIT_S, f"sweep spent {done.cpu_s:.1f}s of CPU before refusing"
    assert_store_intact(f"sqlite:///{workdir / 'mlruns.db'}", store)


@pytest.mark.slow
def test_the_original_store_is_intact_after_every_case(store, outcomes):
    assert outcomes, "no case ran"
    assert_store_intact(store["uri"], store)


def test_there_are_at_least_25_cli_cases():
    assert len([case for case in CASES if not case.xfail]) >= 25
    assert len({case.id for case in CASES}) == len(CASES)


# ------------------------------------------------------------------------------------------ checkpoints
@pytest.fixture(scope="module")
def saved_checkpoint(store, tmp_path_factory) -> Path:
    """A copy of the finished run's final checkpoint (the store's own file is never touched)."""
    folder = tmp_path_factory.mktemp("checkpoint")
    MlflowClient(tracking_uri=store["uri"]).download_artifacts(store["run_id"], "checkpoint", str(folder))
    path = folder / "checkpoint" / "checkpoint.pt"
    assert path.stat().st_size > 1000
    return path


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and "Traceback" not in text, text
    return text


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncated", "corrupted"])
def test_damaged_checkpoint_is_one_line_checkpoint_error(store, saved_checkpoint, tmp_path, damage):
    from rlan.checkpoint import CheckpointError, load_checkpoint

    data = saved_checkpoint.read_bytes()
    damaged = tmp_path / "checkpoint.pt"
    if damage == "truncated":
        damaged.write_bytes(data[: len(data) // 2])
    else:
        damaged.write_bytes(data[:64] + bytes(b ^ 0x5A for b in data[64:4096]) + data[4096:])
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(tmp_path)
    line = _one_line(error.value)
    assert str(damaged) in line and "not a readable checkpoint" in line
    assert_store_intact(store["uri"], store)


@pytest.mark.slow
def test_checkpoint_from_an_incompatible_config_is_refused(store, saved_checkpoint, tmp_path):
    from rlan import engine
    from rlan.checkpoint import CheckpointError
    from rlan.config import load_config

    shutil.copy(saved_checkpoint, tmp_path / "checkpoint.pt")
    wider = load_config(CONFIG, [*TINY, "model.hidden_dim=24", "logging.progress=false"])
    state = engine.build(wider)
    with pytest.raises(CheckpointError) as error:
        engine.resume(state, tmp_path)
    line = _one_line(error.value)
    assert str(tmp_path) in line and "another model config (differs in model.hidden_dim:" in line
    assert state.epoch == 0, "nothing was loaded"
    assert_store_intact(store["uri"], store)


def test_a_foreign_torch_file_is_not_an_rlan_checkpoint(tmp_path):
    import torch

    from rlan.checkpoint import CheckpointError, load_checkpoint

    torch.save({"weights": torch.zeros(2)}, tmp_path / "checkpoint.pt")
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(tmp_path)
    assert "not an rlan checkpoint (missing ['config', 'epoch', 'model', 'optimizer'])" in _one_line(
        error.value
    )


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncated", "incompatible"])
def test_a_bad_checkpoint_through_the_cli_is_one_line_and_creates_no_run(
    store, saved_checkpoint, tmp_path, damage
):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    data = saved_checkpoint.read_bytes()
    (folder / "checkpoint.pt").write_bytes(data[: len(data) // 2] if damage == "truncated" else data)
    shutil.copy(store["workdir"] / "mlruns.db", tmp_path / "mlruns.db")
    extra = ["model.hidden_dim=24"] if damage == "incompatible" else []
    done = rlan(*debug(*extra, "--resume-from", str(folder)), cwd=tmp_path, env={})
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-2000:]
    expected = (
        "not a readable checkpoint"
        if damage == "truncated"
        else "differs in model.hidden_dim: 16 there, 24 here"
    )
    assert str(folder) in lines[0] and expected in lines[0], lines[0]
    assert_store_intact(f"sqlite:///{tmp_path / 'mlruns.db'}", store)
