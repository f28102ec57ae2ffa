"""How well the canvas lanes (rlan/model/lanes.py) use two cores, batch by batch.

    python -m bench.lane_balance                  # h128, the side-by-side's 12 batch-max batches, ~1 minute

Each batch is stepped three ways (after two warm-up steps), the order flipped every other batch: in lanes,
as training runs; with each lane's groups one after another in the main thread on one intra-op thread
("alone"), which computes exactly what the lanes compute; and the same on two threads. Every group's
forward and backward is timed. The table shows, per batch, the groups the lanes computed, the busiest
lane's seconds, the best split of those groups over two lanes (exhaustive), an even split (half the sum)
and how much slower a group ran beside a second lane than alone. The summary bounds what a better schedule
could give: the best split of the same groups, an even split, and (on the times alone, against the best
split of those) one more phase after the lanes in which the groups left over run on both threads (the
"2-thread tail").
"""

from __future__ import annotations

import argparse
import json
import time
from itertools import product

import torch

from bench.original_batches import original_batches
from bench.workload import Shape, TrainStep, build_model
from rlan.model.lanes import LaneRecord, recording_lanes


def group_seconds(records: list[LaneRecord]) -> list[float]:
    """Each group's forward plus backward seconds over one step's lane runs."""
    if not records:
        return []
    return [sum(r.seconds[i] for r in records) for i in range(len(records[0].seconds))]


def best_split(seconds: list[float]) -> float:
    """The busiest of two lanes under the best assignment of the groups (exhaustive: a batch has <= 8)."""
    total = sum(seconds)
    best = total
    for mask in range(1 << max(len(seconds) - 1, 0)):  # the last group's lane fixed: halves the search
        one = sum(s for i, s in enumerate(seconds[:-1]) if mask >> i & 1)
        best = min(best, max(one, total - one))
    return best


def best_with_tail(alone_one: list[float], alone_two: list[float]) -> float:
    """The best time when each group goes to lane A, lane B, or a phase after both on two threads."""
    best = float("inf")
    for choice in product(range(3), repeat=len(alone_one)):
        lanes = [sum(s for s, c in zip(alone_one, choice, strict=True) if c == k) for k in (0, 1)]
        tail = sum(s for s, c in zip(alone_two, choice, strict=True) if c == 2)
        best = min(best, max(lanes) + tail)
    return best


def planned_groups(model, batch: dict) -> list[str]:
    """The groups the lanes compute, as "side x samples" (the model's own plan)."""
    _, groups, lanes = model.canvas_plan(
        batch["support_inputs"], batch["support_outputs"], batch["query_inputs"]
    )
    return [f"{g.side}x{len(g.index)}" for g in groups] if lanes > 1 else []


def timed_step(step: TrainStep, batch: dict, alone_threads: int | None) -> tuple[float, list[LaneRecord]]:
    with recording_lanes(alone_threads) as records:
        start = time.perf_counter()
        step(batch)
        return time.perf_counter() - start, records


def measure(hidden: int = 128, count: int = 12, warmup: int = 2) -> dict:
    torch.set_num_threads(2)
    batches = original_batches(8, count, "batch-max")
    step = TrainStep(build_model(Shape(hidden=hidden)))
    for batch in batches[:warmup]:
        step(batch)
    rows = []
    for number, batch in enumerate(batches):
        # the three ways in turn, the order flipped every other batch so that a drift hits all of them
        ways = (None, 1, 2) if number % 2 == 0 else (2, 1, None)
        timed = {way: timed_step(step, batch, way) for way in ways}
        (wall, in_lanes), alone, alone_two = timed[None], timed[1][1], timed[2][1]
        row = {"batch": number, "groups": planned_groups(step.model, batch), "step_s": wall}
        if in_lanes:
            seconds = group_seconds(in_lanes)
            loads = [sum(seconds[i] for i in lane) for lane in in_lanes[0].schedule]
            one, two = group_seconds(alone), group_seconds(alone_two)
            row |= {
                "lanes_wall_s": sum(r.wall for r in in_lanes),
                "group_s": seconds,
                "busiest_lane_s": max(loads),
                "best_split_s": best_split(seconds),
                "even_split_s": sum(seconds) / 2,
                "alone_one_thread_s": one,
                "alone_two_threads_s": two,
                "best_split_alone_s": best_split(one),
                "best_with_tail_s": best_with_tail(one, two),
                "beside_over_alone": sum(seconds) / sum(one),
            }
        rows.append(row)
    return {"hidden": hidden, "warmup": warmup, "rows": rows, "summary": summarize(rows)}


def summarize(rows: list[dict]) -> dict:
    laned = [r for r in rows if "busiest_lane_s" in r]
    step_s = sum(r["step_s"] for r in rows)

    def total(key: str) -> float:
        return sum(r[key] for r in laned)

    busiest = total("busiest_lane_s")
    alone_one = sum(sum(r["alone_one_thread_s"]) for r in laned)
    alone_two = sum(sum(r["alone_two_threads_s"]) for r in laned)
    return {
        "batches": len(rows),
        "batches_in_lanes": len(laned),
        "step_s": step_s,
        "lanes_wall_s": total("lanes_wall_s"),
        "busiest_lane_s": busiest,
        # each figure: the seconds a schedule would save, as a share of all the steps' time
        "best_split_saves": (busiest - total("best_split_s")) / step_s,
        "even_split_saves": (busiest - total("even_split_s")) / step_s,
        # the tail against the best split, both of the times alone (beside a second lane they are slower)
        "tail_saves": (total("best_split_alone_s") - total("best_with_tail_s")) / step_s,
        # the lanes' groups on one thread, one after another, against: the lanes; the same on two threads
        "lanes_speedup": alone_one / total("lanes_wall_s") if laned else float("nan"),
        "two_threads_speedup": alone_one / alone_two if laned else float("nan"),
        "beside_over_alone": sum(sum(r["group_s"]) for r in laned) / alone_one if laned else float("nan"),
    }


def report(result: dict) -> str:
    lines = [
        f"h{result['hidden']}, the side-by-side's batch-max batches, 2 threads "
        "(seconds: forward + backward of each group)",
        "| batch | groups (side x samples) | step | busiest lane | best split | even split | beside / alone |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        if "busiest_lane_s" not in r:
            lines.append(f"| {r['batch']} | one after another (no even plan) | {r['step_s']:.3f} | | | | |")
            continue
        lines.append(
            f"| {r['batch']} | {', '.join(r['groups'])} | {r['step_s']:.3f} | {r['busiest_lane_s']:.3f} | "
            f"{r['best_split_s']:.3f} | {r['even_split_s']:.3f} | {r['beside_over_alone']:.3f} |"
        )
    s = result["summary"]
    lines += [
        f"the lanes ran on {s['batches_in_lanes']} of {s['batches']} batches: {s['lanes_wall_s']:.2f} s of "
        f"{s['step_s']:.2f} s; against their groups one after another on one thread they ran "
        f"{s['lanes_speedup']:.2f}x as fast (the groups one after another on two threads: "
        f"{s['two_threads_speedup']:.2f}x); a group ran {100 * (s['beside_over_alone'] - 1):+.1f}% slower "
        "beside a second lane than alone",
        f"of all the steps' time, the best split of the same groups would save {100 * s['best_split_saves']:.1f}%, "
        f"a perfectly even split (not reachable with these groups) {100 * s['even_split_saves']:.1f}%; "
        f"on the times alone, a 2-thread tail after the best split {100 * s['tail_saves']:.1f}%",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.lane_balance")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--batches", type=int, default=12)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--json", action="store_true", help="the rows as JSON too")
    args = p.parse_args(argv)
    result = measure(args.hidden, args.batches, args.warmup)
    print(report(result))
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
