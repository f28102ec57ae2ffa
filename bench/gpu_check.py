"""`make gpu-check` (scripts/gpu_check.sh): the CUDA path of the project, in one command, on a GPU machine.

    python -m bench.gpu_check --out DIR                 # every part this machine can run
    python -m bench.gpu_check --out DIR --parts cuda_tests bench

Parts, each a subprocess with its own time limit, so one that fails or hangs does not stop the others:
  cuda_tests  tests/gpu/: a bf16-autocast training step against fp32 on the same batch, the fused CPU-only
              ops handing over to their plain versions, a checkpoint saved on the GPU loading on the CPU
              (on a CPU machine the CPU bf16 tests run and the CUDA ones skip)
  train       `rlan train --workers 1 --gpus-per-worker 1`, 2 epochs of configs/debug.yaml, to a local MLflow store
  sweep       `rlan sweep`, 2 trials sharing the one GPU (--gpus-per-worker 0.5), 2 epochs each
  learn       the learnability benchmark (configs/learnable.yaml), as on the CPU
  bench       `python -m bench --gpu-only`: hidden 256, batch 50, bf16, against the bf16 matmul rate
Without CUDA, train, sweep, learn and bench are skipped: they measure the GPU. DIR receives three files
(the GPU machine hands back at most eight): results.json (one entry per part, and the machine), summary.md
(a table), parts.log (the end of each part's output). Stores and Ray folders go to a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PARTS = ["cuda_tests", "train", "sweep", "learn", "bench"]
NEEDS_CUDA = {"train", "sweep", "learn", "bench"}
LIMIT_S = {"cuda_tests": 90, "train": 120, "sweep": 150, "learn": 300, "bench": 180}
BUDGET_S = 450.0  # the whole check: the GPU machine runs one command for 10 minutes at most
LOG_TAIL = 4000  # characters of each part's output kept in parts.log


def machine() -> dict:
    import torch

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "cpus": os.cpu_count(),
    }
    if torch.cuda.is_available():
        info["device"] = torch.cuda.get_device_name(0)
        info["capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
    for package in ("ray", "mlflow", "optuna", "pydantic"):
        try:
            info[package] = __import__(package).__version__
        except Exception as exc:  # reported, not fatal: the parts that need it fail on their own
            info[package] = f"missing ({type(exc).__name__})"
    return info


def commands(work: Path, out: Path) -> dict[str, list[str]]:
    """The command line of each part; everything it writes goes under `work`."""
    python = [sys.executable]
    cli = [*python, "-m", "orchestrator.cli"]
    store = ["--tracking-uri", f"sqlite:///{work}/mlruns.db", "--storage", str(work / "ray_results")]
    quick = ["training.max_epochs=2", "evaluation.eval_every=1"]
    return {
        "cuda_tests": [*python, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(ROOT / "tests" / "gpu")],
        "train": [
            *cli,
            "train",
            "-c",
            "configs/debug.yaml",
            "--workers",
            "1",
            "--gpus-per-worker",
            "1",
            *store,
            *quick,
        ],
        "sweep": [
            *cli,
            "sweep",
            "-c",
            "configs/debug.yaml",
            "-s",
            "search_spaces/quick.yaml",
            "--trials",
            "2",
        ]
        + ["--concurrency", "2", "--gpus-per-worker", "0.5", "--scheduler", "fifo", "--name", "gpu-sweep"]
        + [*store, "--quiet", *quick],
        "learn": [*python, "-m", "bench.learning", "--quiet", "--tracking-uri", f"sqlite:///{work}/mlruns.db"]
        + ["--run-name", "gpu-learn", "training.device=cuda"],
        "bench": [*python, "-m", "bench", "--gpu-only", "--out", str(work / "bench.json")],
    }


def run_part(name: str, command: list[str], work: Path, cuda: bool, left_s: float = BUDGET_S) -> dict:
    if name in NEEDS_CUDA and not cuda:
        return {"part": name, "status": "skipped", "reason": "no CUDA device"}
    if left_s < 20:
        return {"part": name, "status": "skipped", "reason": f"{left_s:.0f} s of the budget left"}
    env = dict(os.environ, PYTHONUNBUFFERED="1", RAY_USAGE_STATS_ENABLED="0")
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(ROOT), env.get("PYTHONPATH", "")] if p)
    env["RAY_TMPDIR"] = str(work / "ray_tmp")  # each part's Ray sessions under the work folder
    started = time.monotonic()
    try:
        done = subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=min(LIMIT_S[name], left_s)
        )
        status, rc, output = ("passed" if done.returncode == 0 else "failed"), done.returncode, done.stdout
        output += done.stderr
    except subprocess.TimeoutExpired as exc:
        status, rc = "timed out", None
        output = (exc.stdout or b"").decode(errors="replace") + (exc.stderr or b"").decode(errors="replace")
    result = {"part": name, "status": status, "rc": rc, "wall_s": round(time.monotonic() - started, 1)}
    result["command"] = " ".join(command)
    result["tail"] = output[-LOG_TAIL:]
    result.update(details(name, work, output))
    return result


def details(name: str, work: Path, output: str) -> dict:
    """What each part measured, read from where it wrote it (the pytest summary, MLflow, bench.json)."""
    try:
        if name == "cuda_tests":
            lines = [
                line
                for line in output.splitlines()
                if " in " in line and ("passed" in line or "failed" in line)
            ]
            return {"summary": lines[-1].strip("= ") if lines else ""}
        if name == "bench":
            rows = json.loads((work / "bench.json").read_text()).get("gpu", {})
            return {"gpu_rows": rows}
        if name in ("train", "sweep", "learn"):
            return {"runs": mlflow_runs(work / "mlruns.db", name)}
    except Exception as exc:  # a part that wrote nothing: its status and tail say why
        return {"details_error": f"{type(exc).__name__}: {exc}"}
    return {}


def mlflow_runs(db: Path, part: str) -> list[dict]:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{db}")
    keys = ("epoch", "train/loss", "score", "heldout/exact_match", "train/exact_match", "samples_per_s")
    rows = []
    for experiment in client.search_experiments():
        for run in client.search_runs([experiment.experiment_id]):
            command = run.data.tags.get("rlan.command", "")
            if part == "learn" and run.info.run_name != "gpu-learn":
                continue
            if part in ("train", "sweep") and command != part and run.data.tags.get("rlan.role") != "trial":
                continue
            metrics = {
                k: round(v, 4) for k, v in run.data.metrics.items() if k in keys or k.startswith("wall")
            }
            rows.append({"run": run.info.run_name, "status": run.info.status, **metrics})
    return rows


def _bench_row(row: dict) -> str:
    if "error" in row:
        return f"{row['label']}: {row['error']}"
    share = row.get("share_of_bf16_matmul") or 0
    return (
        f"{row['label']}: {row['train_samples_per_s']['median']:.1f} samples/s, {share:.0%} of the bf16 "
        f"matmul rate, {row['max_memory_allocated_mb'] or 0:.0f} MiB"
    )


def summary_markdown(info: dict, results: list[dict]) -> str:
    lines = ["# GPU check", "", ", ".join(f"{k} {v}" for k, v in info.items()), ""]
    lines += ["| part | status | wall s | what it measured |", "|---|---|---|---|"]
    for r in results:
        measured = r.get("summary") or r.get("reason") or ""
        if r.get("gpu_rows"):
            measured = "; ".join(_bench_row(row) for row in r["gpu_rows"].get("rows", []))
        elif r.get("runs"):
            measured = "; ".join(json.dumps(run, sort_keys=True) for run in r["runs"][:4])
        lines.append(f"| {r['part']} | {r['status']} | {r.get('wall_s', '')} | {measured} |")
    return "\n".join(lines) + "\n"


def write_results(out: Path, info: dict, results: list[dict]) -> str:
    log = "\n".join(f"===== {r['part']} ({r['status']})\n{r.get('tail', '')}" for r in results)
    (out / "parts.log").write_text(log)
    kept = [{k: v for k, v in r.items() if k != "tail"} for r in results]
    (out / "results.json").write_text(json.dumps({"machine": info, "parts": kept}, indent=2))
    text = summary_markdown(info, results)
    (out / "summary.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--out", type=Path, required=True, help="folder for results.json, summary.md, parts.log"
    )
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=PARTS, help="default: all")
    parser.add_argument("--budget-s", type=float, default=BUDGET_S, help="seconds for all parts together")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + args.budget_s
    info = machine()
    results: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="rlan-gpu-") as folder:
        work = Path(folder)
        every = commands(work, args.out)
        for name in args.parts:
            print(f"[gpu-check] {name} ...", flush=True)
            left = deadline - time.monotonic()
            results.append(run_part(name, every[name], work, bool(info["cuda_available"]), left))
            print(f"[gpu-check] {name}: {results[-1]['status']} {results[-1].get('wall_s', '')}", flush=True)
            text = write_results(args.out, info, results)  # after every part: a killed run keeps the rest
    print(text)
    return 0 if all(r["status"] in ("passed", "skipped") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
