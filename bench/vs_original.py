"""`python -m bench --vs-original DIR`: this project's training step beside the original RLAN's, on the SAME
batches, in one sitting, as ratios.

DIR is the side-by-side folder that ../shared/tools/sidebyside/setup.sh prepares: `orig/` (the original's
sci_arc/, configs/ and scripts/ at affe1a2, extracted from a git mirror of the public repository; nothing of
it is in this project), `venv/` (its interpreter) and `orig_driver.py` (which runs the original's own
create_model / create_loss / create_optimizer step). Both sides take the batches that driver takes (see
bench/original_batches.py) with the same canvas rule: 30 x 30, and the batch's largest grid. Each side
warms up on the first batches, then times one step per batch; its figure is the median step. Every
measurement is its own process, and the order flips each round (ABBA), so a drift in machine load hits both.
Before the rounds each side's FLOPs are counted per batch by the same counter (torch.utils.flop_counter; the
original's through bench/original_flops.py under the folder's interpreter), so each run's FLOP/s is its
batches' FLOPs over its step times, and its share is of the fp32 product rate measured before and after.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

from bench.flops import fp32_rates
from bench.stats import load_average

ROOT = Path(__file__).resolve().parents[1]
BATCH = 8  # both sides' batch (the driver's default and bench.original_batches')
# label, the original's padding, our canvas, whether our model computes each sample on a canvas of its own
# (model.canvas_sides, the default) or on the batch's, as the original does (the same work on both sides).
# Rows with the same padding share that round's measurement of the original.
SHAPES = (
    ("fixed 30x30", "fixed", "fixed", True),
    ("fixed 30x30, ours on the batch's canvas", "fixed", "fixed", False),
    ("batch max", "dynamic", "batch-max", True),
    ("batch max, ours on the batch's canvas", "dynamic", "batch-max", False),
)


def check_folder(folder: Path) -> None:
    for need in ("venv/bin/python", "orig_driver.py", "orig/scripts/train_rlan.py"):
        if not (folder / need).exists():
            raise SystemExit(
                f"--vs-original {folder}: no {need} (prepare the folder with ../shared/tools/sidebyside/setup.sh)"
            )


def run_json(cmd: list[str], cwd: Path, timeout: float) -> dict:
    """A child's result: its JSON line on stdout (the original prints more lines after it)."""
    try:
        done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in done.stdout.splitlines():
        if line.startswith("{"):
            return json.loads(line)
    return {"error": (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]}


def original(
    folder: Path, padding: str, warmup: int, steps: int, hidden: int, threads: int, timeout: float
) -> dict:
    cmd = [
        str(folder / "venv/bin/python"), str(folder / "orig_driver.py"), "--orig", str(folder / "orig"),
        "--hidden", str(hidden), "--padding", padding, "--mode", "full", "--warmup", str(warmup),
        "--steps", str(steps), "--infer-steps", "0", "--threads", str(threads),
    ]  # fmt: skip
    result = run_json(cmd, folder, timeout)
    if "peak_rss_mb_after_train" in result:
        result["peak_rss_mb"] = result["peak_rss_mb_after_train"]
    return result


def ours(
    canvas: str, own_canvas: bool, warmup: int, steps: int, hidden: int, threads: int, timeout: float
) -> dict:
    cmd = [
        sys.executable, "-m", "bench.original_batches", "--canvas", canvas, "--hidden", str(hidden),
        "--warmup", str(warmup), "--steps", str(steps), "--threads", str(threads),
        *([] if own_canvas else ["--batch-canvas"]),
    ]  # fmt: skip
    return run_json(cmd, ROOT, timeout)


def original_flops(folder: Path, padding: str, count: int, hidden: int, threads: int, timeout: float) -> dict:
    """The original's FLOPs per batch (bench/original_flops.py, run by the folder's interpreter)."""
    cmd = [
        str(folder / "venv/bin/python"), str(ROOT / "bench" / "original_flops.py"), "--folder", str(folder),
        "--padding", padding, "--steps", str(count), "--hidden", str(hidden), "--threads", str(threads),
    ]  # fmt: skip
    return run_json(cmd, folder, timeout)


def our_flops(canvas: str, own_canvas: bool, count: int, hidden: int, timeout: float) -> dict:
    cmd = [
        sys.executable, "-m", "bench.original_batches", "--canvas", canvas, "--hidden", str(hidden),
        "--warmup", "0", "--steps", str(count), "--count-flops", *([] if own_canvas else ["--batch-canvas"]),
    ]  # fmt: skip
    return run_json(cmd, ROOT, timeout)


def measure(folder: Path, rounds: int = 3, warmup: int = 2, steps: int = 10, hidden: int = 128,
            threads: int = 2, timeout: float = 1800.0) -> dict:  # fmt: skip
    check_folder(folder)
    count = warmup + steps
    # FLOPs depend only on the batch, so each side counts them once, outside the timed rounds.
    flops: dict[str, dict[str, dict]] = {}
    counted_original: dict[str, dict] = {}
    for label, padding, canvas, own_canvas in SHAPES:
        if padding not in counted_original:
            counted_original[padding] = original_flops(folder, padding, count, hidden, threads, timeout)
        flops[label] = {"original": counted_original[padding],
                        "ours": our_flops(canvas, own_canvas, count, hidden, timeout)}  # fmt: skip
    print("[vs-original] FLOPs counted; timing", file=sys.stderr, flush=True)
    rates_before = fp32_rates()
    runs: dict[str, dict[str, list[dict]]] = {label: {"original": [], "ours": []} for label, *_ in SHAPES}
    for r in range(rounds):
        original_now: dict[str, dict] = {}  # this round's original measurement per padding
        for label, padding, canvas, own_canvas in SHAPES:
            sides = [
                ("original", original, (folder, padding, warmup, steps, hidden, threads, timeout)),
                ("ours", ours, (canvas, own_canvas, warmup, steps, hidden, threads, timeout)),
            ]
            for side, run, run_args in sides if r % 2 == 0 else sides[::-1]:
                if side == "original" and padding in original_now:
                    runs[label][side].append(original_now[padding])
                    continue
                result = run(*run_args)
                if side == "original":
                    original_now[padding] = result
                runs[label][side].append(result)
                rate = result.get("train_samples_per_s")
                shown = f"{rate:.2f} samples/s" if rate else result.get("error", "?")
                print(f"[vs-original] round {r + 1} {label} {side}: {shown}", file=sys.stderr, flush=True)
    rates = {"before": rates_before, "after": fp32_rates()}
    peak = max(rates["before"]["peak_gflops"], rates["after"]["peak_gflops"])
    rows = [row(label, runs[label], flops[label], warmup, peak) for label, *_ in SHAPES]
    return {"rounds": rounds, "warmup": warmup, "steps": steps, "hidden": hidden, "threads": threads,
            "load_after": load_average(), "product_rates": rates, "peak_gflops": peak, "rows": rows,
            "runs": runs, "flops": flops}  # fmt: skip


def achieved_gflops(run: dict, step_flops: list[int] | None, warmup: int) -> float | None:
    """A run's FLOP/s over its timed steps: their batches' FLOPs over their summed times, in GFLOP/s."""
    times = run.get("step_times_s")
    if not times or not step_flops or len(step_flops) < warmup + len(times):
        return None
    return sum(step_flops[warmup : warmup + len(times)]) / sum(times) / 1e9


def row(
    label: str, sides: dict[str, list[dict]], flops: dict[str, dict] | None = None, warmup: int = 0,
    peak: float | None = None,
) -> dict:  # fmt: skip
    def median(side: str, key: str) -> float | None:
        values = [r[key] for r in sides[side] if isinstance(r.get(key), int | float)]
        return statistics.median(values) if values else None

    first = {side: next((r for r in sides[side] if "canvas_sides" in r), {}) for side in sides}
    same = first["original"].get("canvas_sides") == first["ours"].get("canvas_sides")
    result = {
        "shape": label,
        "original": median("original", "train_samples_per_s"),
        "ours": median("ours", "train_samples_per_s"),
        "original_rss_mb": median("original", "peak_rss_mb"),
        "ours_rss_mb": median("ours", "peak_rss_mb"),
        "same_canvases": same and bool(first["ours"]),
        "canvas_sides": first["ours"].get("canvas_sides"),
        "computed_sides": first["ours"].get("computed_sides"),
        "errors": [r["error"] for side in sides.values() for r in side if "error" in r],
    }
    if result["original"] and result["ours"]:
        result["ratio"] = result["ours"] / result["original"]
    for side in sides:
        count = (flops or {}).get(side, {})
        if "error" in count:
            result["errors"].append(f"{side} FLOP count: {count['error']}")
        counted = count.get("step_flops")
        if not counted:
            continue
        result[f"{side}_gflop_per_sample"] = statistics.mean(counted[warmup:]) / BATCH / 1e9
        rates = [g for r in sides[side] if (g := achieved_gflops(r, counted, warmup)) is not None]
        if rates:
            result[f"{side}_gflops"] = statistics.median(rates)
            if peak:
                result[f"{side}_peak_share"] = result[f"{side}_gflops"] / peak
    return result


def rms_side(sides: list | None) -> float | None:
    """The root-mean-square side over every sample (the FLOPs go with the area): per-sample lists, or one
    side per batch."""
    if not sides:
        return None
    flat = [s for entry in sides for s in (entry if isinstance(entry, list) else [entry])]
    return statistics.mean(s * s for s in flat) ** 0.5


def table(results: dict) -> list[str]:
    lines = [
        f"vs the original, same batches, {results['rounds']} ABBA rounds, h{results['hidden']}, "
        f"{results['warmup']} warm-up + {results['steps']} timed steps, {results['threads']} threads",
        "| shape | original samples/s | this project | ratio | original RSS | this project RSS | same canvases "
        "| our step's rms side |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        computed = rms_side(r.get("computed_sides") or r.get("canvas_sides"))

        def f(v, spec=".2f"):
            return "n/a" if v is None else format(v, spec)

        lines.append(
            f"| {r['shape']} | {f(r['original'])} | {f(r['ours'])} | {f(r.get('ratio'))}x | "
            f"{f(r['original_rss_mb'] and r['original_rss_mb'] / 1024)} GiB | "
            f"{f(r['ours_rss_mb'] and r['ours_rss_mb'] / 1024)} GiB | {'yes' if r['same_canvases'] else 'NO'} | "
            f"{f(computed, '.1f')} |"
        )
        if r["errors"]:
            lines.append(f"  errors: {'; '.join(r['errors'])}")
    if any("ours_gflops" in r or "original_gflops" in r for r in results["rows"]):
        lines += ["", *flops_table(results)]
    return lines


def flops_table(results: dict) -> list[str]:
    """Each side's FLOPs (torch.utils.flop_counter, the same counter) and their share of this machine's
    fp32 product rate, measured before and after the rounds (the higher of the two is the peak)."""

    def f(v, spec=".1f"):
        return "n/a" if v is None else format(v, spec)

    rates = results.get("product_rates", {})
    measured = "; ".join(
        f"{when}: matmul (MKL) {f(r['matmul_fp32_gflops']['median'], '.0f')}, as a 1x1 convolution (oneDNN) "
        f"{f(r['conv1x1_fp32_gflops']['median'], '.0f')}"
        for when, r in rates.items()
    )
    lines = [
        f"FLOPs and the fp32 product rate (GFLOP/s, 2048^3; {measured or 'not measured'}): peak "
        f"{f(results.get('peak_gflops'), '.0f')}",
        "| shape | original GFLOP/sample | this project | original GFLOP/s | this project | original % peak "
        "| this project % peak |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        share = {side: r.get(f"{side}_peak_share") for side in ("original", "ours")}
        lines.append(
            f"| {r['shape']} | {f(r.get('original_gflop_per_sample'))} | {f(r.get('ours_gflop_per_sample'))} | "
            f"{f(r.get('original_gflops'), '.0f')} | {f(r.get('ours_gflops'), '.0f')} | "
            f"{f(share['original'] and 100 * share['original'], '.0f')}% | "
            f"{f(share['ours'] and 100 * share['ours'], '.0f')}% |"
        )
    return lines
