"""(d) Orchestration overhead: one short training run four ways, each a fresh process, wall clock.

- direct: rlan.engine.fit(build(config)) with no reporter (`python -m bench.orchestration --direct`)
- debug:  `rlan debug`                              (in-process, MLflow logging and artifacts)
- train:  `rlan train --workers 1`                  (local Ray, one TorchTrainer worker)
- sweep:  `rlan sweep --trials 1 --concurrency 1`   (local Ray, Tune + Optuna, one trial)
MLflow goes to a temporary SQLite store and Ray's storage to a temporary folder. The overhead of a mode is
its wall time minus the direct run's; set against a 5-minute trial it is overhead / 300 s.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.stats import summary

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "debug.yaml"
OVERRIDES = ["training.max_epochs=2", "logging.progress=false"]
TRIAL_S = 300.0
SPACE = "training.learning_rate: {type: loguniform, low: 1.0e-3, high: 1.01e-3}\n"


def commands(work: Path, rlan: str) -> dict[str, list[str]]:
    uri = f"sqlite:///{work / 'mlruns.db'}"
    common = ["-c", str(CONFIG), *OVERRIDES, "--tracking-uri", uri]
    space = work / "space.yaml"
    space.write_text(SPACE)
    storage = ["--storage", str(work / "ray_results")]
    return {
        "direct": [sys.executable, "-m", "bench.orchestration", "--direct"],
        "debug": [rlan, "debug", *common, "--quiet"],
        "train": [rlan, "train", *common, *storage, "--workers", "1", "--quiet"],
        "sweep": [rlan, "sweep", *common, *storage, "-s", str(space), "--trials", "1"]
        + ["--concurrency", "1", "--scheduler", "fifo", "--quiet"],
    }


def run_direct() -> None:
    from rlan.config import load_config
    from rlan.engine import build, fit

    fit(build(load_config(str(CONFIG), OVERRIDES)))


def measure(repeats: int = 1, timeout: float = 900.0) -> dict:
    rlan = str(Path(sys.executable).with_name("rlan"))
    walls: dict[str, list[float]] = {}
    errors: dict[str, str] = {}
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    for _ in range(repeats):
        for mode in ("direct", "debug", "train", "sweep"):
            with tempfile.TemporaryDirectory(prefix=f"rlan-bench-{mode}-") as tmp:
                cmd = commands(Path(tmp), rlan)[mode]
                start = time.perf_counter()
                try:
                    done = subprocess.run(
                        cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=timeout
                    )
                except subprocess.TimeoutExpired:
                    errors[mode] = f"timed out after {timeout:.0f} s"
                    continue
                wall = time.perf_counter() - start
                if done.returncode != 0:
                    errors[mode] = (done.stderr.strip().splitlines() or ["failed"])[-1]
                    continue
                walls.setdefault(mode, []).append(wall)
    result: dict = {"config": f"{CONFIG.name} {' '.join(OVERRIDES)}", "modes": {}, "errors": errors}
    direct = summary(walls["direct"])["median"] if "direct" in walls else None
    for mode, values in walls.items():
        entry = {"wall_s": summary(values)}
        if direct:
            overhead = entry["wall_s"]["median"] - direct
            entry.update(ratio=entry["wall_s"]["median"] / direct, overhead_s=overhead)
            entry["share_of_5min_trial"] = max(overhead, 0.0) / TRIAL_S
        result["modes"][mode] = entry
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.orchestration")
    parser.add_argument("--direct", action="store_true", help="run the training in this process")
    args = parser.parse_args(argv)
    if args.direct:
        run_direct()
    else:
        print(measure())


if __name__ == "__main__":
    main()
