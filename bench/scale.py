"""(e) The sweep machinery at scale: 1,000 trials of a stand-in trainable, MLflow on a real server on PostgreSQL.

    python -m bench.scale                  # 1,000 trials x 20 epochs, 8 at a time (about half an hour here)
    python -m bench.scale --trials 100     # a shorter run
    python -m bench --scale                # the same inside `python -m bench`, with its table

Everything but the training is the real sweep: `run_sweep` with its Optuna TPE searcher over
search_spaces/seed_fixes.yaml, ASHA, the health stopper and the MLflow callback, writing to a real
`mlflow server` on a throw-away PostgreSQL 15 (bench/mlflow_postgres.py). Each stand-in trial sleeps
--epoch-ms per epoch and reports the keys one real epoch of the base config reports (values synthetic;
the score a smooth function of the knobs plus noise, so that TPE and ASHA have something to act on).
It checkpoints nothing, so the figures leave out checkpoint uploads.

Measured: sweep wall time against the stand-in's own sleep, driver peak RSS and its growth, MLflow
requests per second by endpoint (from the server's access log), Tune's experiment-state saves (count,
mean, max, size), and `rlan compare` on the finished sweep. Prints a table; the last stdout line is JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "sweep.yaml"
SPACE = ROOT / "search_spaces" / "seed_fixes.yaml"
OPTIMUM = 0.3  # where, in each knob's normalised range, the stand-in score peaks
REQUEST = re.compile(r'^(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d) .*"(GET|POST|PUT|PATCH|DELETE) ([^ ?"]+)')
WRITES = {"POST", "PUT", "PATCH", "DELETE"}


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=1000, help="trials in the sweep (default 1000)")
    p.add_argument("--epochs", type=int, default=20, help="reported epochs per trial (default 20)")
    p.add_argument("--epoch-ms", type=float, default=5.0, help="stand-in work per epoch in ms (default 5)")
    p.add_argument("--concurrency", type=int, default=8, help="trials at once (default 8)")
    p.add_argument("--cpus", type=float, default=2.0, help="logical CPUs of the local Ray (default 2)")
    p.add_argument("--server-workers", type=int, default=1, help="`mlflow server --workers` (default 1)")
    p.add_argument("--threads", type=int, default=0, help="ignored (python -m bench passes it)")
    return p.parse_args(argv)


# ------------------------------------------------------------------------------------------ the stand-in
def real_epoch_keys() -> list[str]:
    """The metric keys one real epoch of the base config reports (a few seconds of real training)."""
    from rlan.config import load_config
    from rlan.engine import build, fit

    small = ["training.max_epochs=1", "data.samples_per_task=2", "logging.progress=false"]
    small += ["evaluation.max_tasks=1", "evaluation.heldout_max_tasks=1"]
    return sorted(fit(build(load_config(str(CONFIG), small))))


def normalised(knob, value) -> float:
    """Where `value` sits in the knob's range, 0..1 (log scale for loguniform; choices by index)."""
    if knob.type == "choice":
        return knob.values.index(value) / max(1, len(knob.values) - 1)
    low, high, value = float(knob.low), float(knob.high), float(value)
    if knob.type == "loguniform":
        low, high, value = math.log(low), math.log(high), math.log(value)
    return (value - low) / (high - low) if high > low else 0.0


def standin_trial(knobs: dict, space_knobs: dict, keys: list[str], epochs: int, epoch_s: float) -> None:
    """A trial that only reports: `epochs` results shaped like a real trial's, `epoch_s` apart."""
    from ray import tune

    rng = random.Random(zlib.crc32(tune.get_context().get_trial_id().encode()))
    distance = sum((normalised(space_knobs[k], v) - OPTIMUM) ** 2 for k, v in knobs.items())
    quality = math.exp(-distance / 0.2)
    for epoch in range(1, epochs + 1):
        time.sleep(epoch_s)  # stands in for an epoch of training
        score = quality * (1 - math.exp(-epoch / 6)) + rng.gauss(0, 0.02)
        metrics = {key: rng.random() for key in keys}
        metrics.update(epoch=epoch, score=score, nan_batches=0, epoch_aborted=0)
        metrics["train/loss"] = 1.0 - score
        tune.report(metrics)


# ------------------------------------------------------------------------------------------ instruments
class RssSampler(threading.Thread):
    """The driver's resident memory every `every_s` seconds, with the time it was read."""

    def __init__(self, every_s: float = 1.0):
        super().__init__(daemon=True)
        self.every_s, self.samples, self._done = every_s, [], threading.Event()

    def run(self) -> None:
        import psutil

        me, started = psutil.Process(), time.monotonic()
        while not self._done.is_set():
            self.samples.append((time.monotonic() - started, me.memory_info().rss))
            self._done.wait(self.every_s)

    def stop(self) -> list[tuple[float, int]]:
        self._done.set()
        self.join()
        return self.samples


@contextmanager
def timed_state_saves():
    """Times each TuneController.save_to_dir (Tune's experiment-state snapshot) while the block runs.

    Written here because Tune reports only a warning when a save is slow; wrapping the method in this
    process is the one way to read every save's duration."""
    from ray.tune.execution.tune_controller import TuneController

    durations: list[float] = []
    original = TuneController.save_to_dir

    def save_to_dir(self):
        started = time.perf_counter()
        try:
            return original(self)
        finally:
            durations.append(time.perf_counter() - started)

    TuneController.save_to_dir = save_to_dir
    try:
        yield durations
    finally:
        TuneController.save_to_dir = original


def server_requests(log_text: str) -> dict:
    """Requests in an `mlflow server` access log: by endpoint, writes, and the busiest 10 s of writes."""
    by_endpoint: Counter = Counter()
    writes_per_second: Counter = Counter()
    for line in log_text.splitlines():
        match = REQUEST.match(line)
        if not match:
            continue
        stamp, method, path = match.groups()
        by_endpoint[f"{method} {re.sub(r'/artifacts/.*', '/artifacts/...', path)}"] += 1
        if method in WRITES:
            writes_per_second[stamp] += 1
    seconds = sorted(writes_per_second)
    stamps = [time.mktime(time.strptime(s, "%Y/%m/%d %H:%M:%S")) for s in seconds]
    busiest = 0
    for i, start in enumerate(stamps):  # the largest number of writes in any 10 s window
        j = i
        window = 0
        while j < len(stamps) and stamps[j] < start + 10:
            window += writes_per_second[seconds[j]]
            j += 1
        busiest = max(busiest, window)
    return {
        "total": sum(by_endpoint.values()),
        "writes": sum(n for k, n in by_endpoint.items() if k.split()[0] in WRITES),
        "busiest_10s_writes": busiest,
        "by_endpoint": dict(by_endpoint.most_common()),
    }


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.iterdir() if f.is_file())


# ------------------------------------------------------------------------------------------ the run
def run_sweep_at_scale(args: argparse.Namespace, work: Path, uri: str) -> dict:
    import ray
    from ray import tune

    from orchestrator.sweeps.search_space import load_search_space
    from orchestrator.sweeps.sweep import SweepSettings, run_sweep
    from rlan.config import load_config

    keys = real_epoch_keys()
    base = load_config(str(CONFIG), [f"training.max_epochs={args.epochs}"])
    space = load_search_space(SPACE)
    settings = SweepSettings(
        name="scale",
        storage=str(work / "ray_results"),
        tracking_uri=uri,
        experiment="rlan-scale",
        trials=args.trials,
        concurrency=args.concurrency,
        search_space_file=str(SPACE),
        search_space_text=space.text,
        echo=False,
    )
    standin = tune.with_parameters(
        standin_trial, space_knobs=space.knobs, keys=keys, epochs=args.epochs, epoch_s=args.epoch_ms / 1000
    )
    standin = tune.with_resources(standin, {"CPU": args.cpus / args.concurrency})
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=args.cpus, log_to_driver=False, logging_level="WARNING")
    sampler = RssSampler()
    try:
        sampler.start()
        started = time.monotonic()
        with timed_state_saves() as saves:
            summary = run_sweep(base, space, settings, trainable=standin)
        wall = time.monotonic() - started
    finally:
        samples = sampler.stop()
        ray.shutdown()
    return {
        "keys": len(keys),
        "wall_s": wall,
        "summary": {k: v for k, v in summary.items() if k != "results"},
        "rss": samples,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "state_saves_s": saves,
        "state_bytes": folder_bytes(Path(settings.sweep_dir)),
    }


def trial_record(uri: str) -> dict:
    """What MLflow holds of the sweep: child runs by stop reason, epochs logged, and when each ended."""
    from mlflow import MlflowClient

    from orchestrator.tracking.experiments import search_all_runs

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("rlan-scale")
    children = search_all_runs(client, [experiment.experiment_id], "tags.`rlan.role` = 'trial'")
    return {
        "children": len(children),
        "stop_reasons": dict(Counter(r.data.tags.get("rlan.stop_reason", "none") for r in children)),
        "epochs_logged": int(sum(r.data.metrics.get("epoch", 0) for r in children)),
        "ended_ms": sorted(r.info.end_time or 0 for r in children),
        "started_ms": min(r.info.start_time for r in children) if children else 0,
    }


def timed_compare(uri: str, work: Path) -> dict:
    """`rlan compare scale` as a user runs it: the table, then the report with plots (--out)."""
    rlan = str(Path(sys.executable).with_name("rlan"))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    walls = {}
    for label, extra in (("table", []), ("report", ["--out", str(work / "compare")])):
        started = time.monotonic()
        done = subprocess.run(
            [rlan, "compare", "scale", "--tracking-uri", uri, *extra], capture_output=True, text=True, env=env
        )
        walls[label] = time.monotonic() - started
        if done.returncode != 0:
            walls[f"{label}_error"] = (done.stderr.strip().splitlines() or ["failed"])[-1]
    return walls


def measure(args: argparse.Namespace) -> dict:
    from bench.mlflow_postgres import MlflowServer, throwaway_postgres
    from bench.stats import machine

    with tempfile.TemporaryDirectory(prefix="rlan-scale-") as tmp, throwaway_postgres() as backend:
        work = Path(tmp)
        server = MlflowServer(backend, work / "artifacts", work / "server.log", workers=args.server_workers)
        try:
            server.start()
            offset = len((work / "server.log").read_text())
            sweep = run_sweep_at_scale(args, work, server.uri)
            log = (work / "server.log").read_text()
            during_sweep, offset = log[offset:], len(log)
            record = trial_record(server.uri)
            compare = timed_compare(server.uri, work)
            during_compare = (work / "server.log").read_text()[offset:]
        finally:
            server.kill()
    return {
        "machine": machine(),
        "args": {k: v for k, v in vars(args).items() if k != "threads"},
        **sweep,
        "record": record,
        "requests": server_requests(during_sweep),
        "compare_requests": server_requests(during_compare)["total"],
        "compare_s": compare,
    }


# ------------------------------------------------------------------------------------------ the table
def rss_at_share(result: dict, share: float) -> float:
    """Driver RSS (MiB) when `share` of the trials had ended (trial end times from MLflow)."""
    ended, started = result["record"]["ended_ms"], result["record"]["started_ms"]
    if not ended or not result["rss"]:
        return float("nan")
    at_s = (ended[min(len(ended) - 1, int(share * len(ended)))] - started) / 1000
    before = [rss for t, rss in result["rss"] if t <= at_s] or [result["rss"][0][1]]
    return before[-1] / 2**20


def table(result: dict) -> list[str]:
    a, rec, req = result["args"], result["record"], result["requests"]
    saves = result["state_saves_s"] or [0.0]
    ideal = rec["epochs_logged"] * a["epoch_ms"] / 1000 / a["concurrency"]
    rows = [
        f"(e) sweep at scale: {a['trials']} stand-in trials x {a['epochs']} epochs of {a['epoch_ms']:g} ms, "
        f"{a['concurrency']} at a time, {result['keys']} metrics per epoch; MLflow server "
        f"({a['server_workers']} worker) on PostgreSQL",
        f"  sweep wall                       {result['wall_s']:8.1f} s  ({result['wall_s'] / max(1, rec['children']):.2f} s "
        f"per trial; the stand-ins' own sleep {ideal:.1f} s)",
        f"  trials in MLflow                 {rec['children']:8d}    stop reasons {rec['stop_reasons']}",
        f"  epochs logged                    {rec['epochs_logged']:8d}    ({rec['epochs_logged'] / result['wall_s']:.1f} per s)",
        f"  MLflow requests                  {req['total']:8d}    ({req['total'] / result['wall_s']:.1f} per s; "
        f"writes {req['writes'] / result['wall_s']:.1f} per s, busiest 10 s {req['busiest_10s_writes'] / 10:.1f} per s)",
        f"  driver peak RSS                  {result['peak_rss_bytes'] / 2**20:8.0f} MiB  (at 10% / 50% / 100% of "
        f"trials ended: {rss_at_share(result, 0.1):.0f} / {rss_at_share(result, 0.5):.0f} / "
        f"{rss_at_share(result, 1.0):.0f} MiB)",
        f"  Tune state saves                 {len(result['state_saves_s']):8d}    (mean {sum(saves) / len(saves) * 1000:.0f} ms, "
        f"max {max(saves) * 1000:.0f} ms, last {saves[-1] * 1000:.0f} ms; state {result['state_bytes'] / 2**20:.1f} MiB)",
        f"  rlan compare (table)             {result['compare_s']['table']:8.1f} s",
        f"  rlan compare --out (report)      {result['compare_s']['report']:8.1f} s",
        "  requests by endpoint: " + ", ".join(f"{k} {n}" for k, n in list(req["by_endpoint"].items())[:8]),
    ]
    rows += [f"  {k}: {v}" for k, v in result["compare_s"].items() if k.endswith("_error")]
    return rows


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    result = measure(args)
    print("\n".join(table(result)), flush=True)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
