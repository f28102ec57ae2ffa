"""One background thread that runs submitted calls in order: MLflow writes off Tune's event loop.

Written here because neither Tune nor MLflow offers it: MLflow's async logging (`log_batch(synchronous=False)`)
covers metrics, params and tags but not run creation, searches, artifacts or ending a run, and it keeps its
own queue whose failures surface only when a future is awaited, so the retry, buffering and refusal rules of
orchestrator/tracking/run_logger.py could not apply. A plain thread and a bounded queue keep every rule and the order of
calls; a full queue makes the submitter wait, so a slow server slows the sweep instead of filling memory.
"""

from __future__ import annotations

import queue
import sys
import threading
from collections.abc import Callable
from typing import Any

_STOP = object()


class SerialWriter:
    """Runs `submit`ted calls one after another on a daemon thread; `tick` runs after each call and whenever
    the queue has been empty for `tick_every_s`. A call that raises is reported on stderr and the thread goes
    on (callers handle the errors they expect inside the call)."""

    def __init__(
        self,
        tick: Callable[[bool], None],
        tick_every_s: float = 1.0,
        max_queued: int = 1000,
        name: str = "rlan-mlflow-writer",
    ):
        self._tick, self._tick_every_s = tick, tick_every_s
        self._queue: queue.Queue = queue.Queue(maxsize=max_queued)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, call: Callable[..., Any], *args: Any) -> None:
        self._queue.put((call, args))

    def wait_idle(self) -> None:
        """Return once every call submitted so far has run."""
        self._queue.join()

    def close(self) -> None:
        """Run what is queued, a last tick, and stop the thread."""
        self._queue.put(_STOP)
        self._thread.join()

    def _run(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=self._tick_every_s)
            except queue.Empty:
                self._safely(self._tick, True)  # idle: everything waiting may go now
                continue
            try:
                if item is _STOP:
                    self._safely(self._tick, True)
                    return
                call, args = item
                self._safely(call, *args)
                self._safely(self._tick, False)
            finally:
                self._queue.task_done()

    @staticmethod
    def _safely(call: Callable[..., Any], *args: Any) -> None:
        try:
            call(*args)
        except Exception as exc:  # the writer must outlive one bad call, or every later write is lost
            line = " ".join(str(exc).split())[:300]
            print(f"[rlan] MLflow writer: {type(exc).__name__}: {line}", file=sys.stderr, flush=True)
