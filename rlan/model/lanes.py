"""A batch's canvas groups computed side by side on the CPU, each on one intra-op thread of its own.

Each canvas group (rlan/model/canvas.py) is a whole forward and backward of its own, and most are one to
three samples: too small for torch's intra-op threads to share each kernel well (two threads ran the
step only 1.65x faster than one, docs/performance.md). Here the groups are spread over
`lanes` threads of one intra-op thread each (the largest first, onto the least loaded lane), the forward
and, through one autograd Function, the backward. `python -m bench.interleaved --variant "canvas groups
one after another"` measures it, and `python -m bench.lane_balance` how evenly it loads the two cores.

The result does not depend on the schedule: each group draws its dropout masks from a generator of its
own, seeded from the default generator in group order before the lanes start; each group's gradients are
returned by autograd.grad rather than accumulated, and summed in group order. RLAN_CANVAS_LANES=0 (or
one intra-op thread, a device other than the CPU, autocast or a dispatch mode such as FlopCounterMode,
which are per thread) runs the groups one after another.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch.utils._python_dispatch import _get_current_dispatch_mode

from rlan.model.canvas import CanvasGroup
from rlan.model.dropout import drawing_from

Outputs = tuple[torch.Tensor, ...]
GroupCall = Callable[[], Outputs]  # a group's whole forward; its graph reaches only the parameters

ENABLED = os.environ.get("RLAN_CANVAS_LANES", "1") != "0"
_pools: dict[int, ThreadPoolExecutor] = {}


# A group's cost in cells: its samples' canvas cells plus a fixed cost of about that many cells (the
# per-group kernels and Python of a whole forward and backward).
GROUP_COST_CELLS = 150
# Lanes only when the busiest lane has at most this multiple of an even share of the work: one thread per
# lane is slower than two on one group, so an unbalanced batch is faster one group after another.
MAX_LANE_LOAD = 1.12
MAX_SPLITS = 1


@dataclass
class LaneRecord:
    """One run of the lanes (a forward or a backward): the group indices per lane, each group's seconds,
    and the run's wall time."""

    schedule: list[list[int]]
    seconds: list[float]
    wall: float


@dataclass
class _Recorder:
    records: list[LaneRecord]
    alone_threads: int | None


_recorder: _Recorder | None = None


@contextmanager
def recording_lanes(alone_threads: int | None = None) -> Iterator[list[LaneRecord]]:
    """A LaneRecord for every run of the lanes inside the block (bench/lane_balance.py measures with it).

    alone_threads: run each lane's groups in the calling thread instead, one lane after the other, on this
    many intra-op threads: each group's time without a second lane beside it. On one thread the groups
    compute exactly what they compute in lanes (the same kernels, seeds and order of the gradient sums).
    """
    global _recorder
    previous, _recorder = _recorder, _Recorder([], alone_threads)
    try:
        yield _recorder.records
    finally:
        _recorder = previous


def _thread_local_state() -> bool:
    """True under state the lanes' threads would not see: autocast, or a dispatch mode (FlopCounterMode,
    which would then miss the lanes' FLOPs)."""
    return torch.is_autocast_enabled("cpu") or _get_current_dispatch_mode() is not None


def group_cost(group: CanvasGroup) -> float:
    return len(group.index) * group.side**2 + GROUP_COST_CELLS


def plan_lanes(groups: list[CanvasGroup], device: torch.device) -> tuple[list[CanvasGroup], int]:
    """(the groups to compute, the lanes to compute them in). One lane: the groups as they are, one after
    another. Lanes need the work spread evenly, so the costliest group of two or more samples is split in
    halves (samples are computed independently: the same result) until it is, or is given up on."""
    threads = torch.get_num_threads()
    if not ENABLED or len(groups) < 2 or threads < 2 or device.type != "cpu" or _thread_local_state():
        return groups, 1
    lanes, planned = min(len(groups), threads), list(groups)
    for _ in range(MAX_SPLITS + 1):
        costs = [group_cost(g) for g in planned]
        busiest = max(sum(costs[i] for i in lane) for lane in _schedule(costs, lanes))
        if busiest <= MAX_LANE_LOAD * sum(costs) / lanes:
            return planned, lanes
        splittable = [i for i, g in enumerate(planned) if len(g.index) > 1]
        if not splittable:
            break
        i = max(splittable, key=lambda i: costs[i])
        g, half = planned[i], len(planned[i].index) // 2
        planned[i : i + 1] = [CanvasGroup(g.side, g.index[:half]), CanvasGroup(g.side, g.index[half:])]
    return groups, 1


@dataclass
class _Plan:
    calls: Sequence[GroupCall]
    seeds: list[int]
    schedule: list[list[int]]
    counts: list[int] = field(default_factory=list)  # outputs per group, filled by the forward


def run_groups(
    calls: Sequence[GroupCall],
    costs: Sequence[float],
    lanes: int,
    params: Sequence[torch.nn.Parameter],
    random: bool,
) -> list[Outputs]:
    """[calls[i]() for every group], in `lanes` threads; the outputs carry gradients back to `params`
    (every parameter the calls may use) when grad mode is on. random: the calls draw dropout masks
    (training), so each group gets a seed from the default generator, in group order."""
    seeds = torch.randint(0, 2**62, (len(calls),)).tolist() if random else [0] * len(calls)
    schedule = _schedule(costs, lanes)
    trainable = [p for p in params if p.requires_grad]
    grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()
    if not grad or not trainable:

        def job(i):  # the caller's modes, which threads do not inherit
            with torch.inference_mode(inference), torch.set_grad_enabled(grad):
                return _forward(calls[i], seeds[i])

        return _in_lanes(schedule, job)
    plan = _Plan(calls, seeds, schedule)
    out = _GroupsInLanes.apply(plan, *trainable)
    bounds = [sum(plan.counts[:i]) for i in range(len(plan.counts) + 1)]
    return [tuple(out[bounds[i] : bounds[i + 1]]) for i in range(len(plan.counts))]


def _schedule(costs: Sequence[float], lanes: int) -> list[list[int]]:
    """Group indices per lane: the largest first, each onto the lane with the least cost so far."""
    schedule: list[list[int]] = [[] for _ in range(lanes)]
    load = [0.0] * lanes
    for i in sorted(range(len(costs)), key=lambda i: -costs[i]):
        lane = load.index(min(load))
        schedule[lane].append(i)
        load[lane] += costs[i]
    return [lane for lane in schedule if lane]


def _in_lanes(schedule: list[list[int]], job: Callable[[int], object]) -> list:
    """[job(i) for every group i], each lane's groups in turn in a thread of one intra-op thread."""
    threads = torch.get_num_threads()
    pool = _pools.get(len(schedule))
    if pool is None:
        pool = _pools[len(schedule)] = ThreadPoolExecutor(len(schedule), thread_name_prefix="rlan-lane")

    recorder, seconds = _recorder, {}

    def timed(i: int) -> object:
        start = time.perf_counter()
        out = job(i)
        seconds[i] = time.perf_counter() - start
        return out

    run = job if recorder is None else timed

    def lane(indices: list[int], intra_op: int = 1) -> list[tuple[int, object]]:
        torch.set_num_threads(intra_op)  # this thread's OpenMP and MKL threads
        return [(i, run(i)) for i in indices]

    results: dict[int, object] = {}
    start = time.perf_counter()
    try:
        if recorder is not None and recorder.alone_threads:
            for indices in schedule:
                results.update(lane(indices, recorder.alone_threads))
        else:
            for future in [pool.submit(lane, indices) for indices in schedule]:
                results.update(future.result())
    finally:
        torch.set_num_threads(threads)  # and the process-wide default as it was
    if recorder is not None:
        wall = time.perf_counter() - start
        recorder.records.append(LaneRecord(schedule, [seconds[i] for i in range(len(seconds))], wall))
    return [results[i] for i in range(len(results))]


def _forward(call: GroupCall, seed: int) -> Outputs:
    """The group's outputs, its masks drawn from a generator of its own."""
    with drawing_from(torch.Generator().manual_seed(seed)):
        return tuple(call())


class _GroupsInLanes(torch.autograd.Function):
    """The groups' forwards in lanes, each building a graph of its own in its thread; the backward runs
    those graphs in the lanes again and hands on the parameters' gradients, summed in group order."""

    @staticmethod
    def forward(ctx, plan: _Plan, *params):
        def job(i):
            with torch.enable_grad():
                return _forward(plan.calls[i], plan.seeds[i])

        ctx.groups, ctx.plan, ctx.params = _in_lanes(plan.schedule, job), plan, params
        ctx.set_materialize_grads(False)
        plan.counts = [len(outs) for outs in ctx.groups]
        return tuple(o.detach() for outs in ctx.groups for o in outs)

    @staticmethod
    def backward(ctx, *grads):
        plan, params, groups = ctx.plan, list(ctx.params), ctx.groups
        ctx.groups = None  # each group's graph goes once its gradients are out
        bounds = [sum(plan.counts[:i]) for i in range(len(plan.counts) + 1)]

        def job(i):
            pairs = [
                (o, g)
                for o, g in zip(groups[i], grads[bounds[i] : bounds[i + 1]], strict=True)
                if g is not None and o.requires_grad
            ]
            if not pairs:
                return [None] * len(params)
            outputs, grad_outputs = zip(*pairs, strict=True)
            return list(torch.autograd.grad(outputs, params, grad_outputs, allow_unused=True))

        summed: list[torch.Tensor | None] = [None] * len(params)
        for found in _in_lanes(plan.schedule, job):  # in group order: the same sums whatever the schedule
            for k, g in enumerate(found):
                if g is not None:
                    summed[k] = g if summed[k] is None else summed[k] + g
        return (None, *summed)
