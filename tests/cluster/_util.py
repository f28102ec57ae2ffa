"""Small helpers shared by the cluster tests: free ports, condition waits with a deadline, fit in a thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any


def free_port() -> int:
    """A TCP port nobody listens on right now (127.0.0.1)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(
    condition: Callable[[], Any], timeout_s: float, what: str, alive: Callable[[], bool] | None = None
):
    """Poll `condition` until it returns something truthy (returned); fail after timeout_s or once `alive` is False."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if alive is not None and not alive():
            value = condition()  # it may have happened just before the end
            if value:
                return value
            raise AssertionError(f"stopped before {what}")
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


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
