"""Small helpers shared by the cluster tests: free ports and condition waits (from bench/mlflow_postgres.py,
which the scale benchmark shares), fit in a thread."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from bench.mlflow_postgres import free_port, wait_for  # noqa: F401  (re-exported for the tests)


class Background(threading.Thread):
    """Runs fn() in a daemon thread (so the main thread stays free for Cluster.add_node) and keeps its outcome."""

    def __init__(self, fn: Callable[[], Any]):
        super().__init__(daemon=True)
        self.fn, self.result, self.error = fn, None, None

    def run(self) -> None:
        try:
            self.result = self.fn()
        except BaseException as exc:  # handed to the test, which re-raises it
            self.error = exc

    def outcome(self, timeout_s: float) -> Any:
        self.join(timeout_s)
        if self.is_alive():
            raise AssertionError(f"still running after {timeout_s:.0f} s")
        if self.error is not None:
            raise self.error
        return self.result
