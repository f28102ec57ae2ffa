"""Retries for MLflow calls: which failures may pass by themselves (an outage: retried with growing waits
for RLAN_MLFLOW_RETRY_S seconds, then TrackingUnavailable) and which never will (a refusal: 401, 403, a
login page; TrackingRefused at once). orchestrator/tracking/run_logger.py's docstring states the whole outage policy;
RunLogger there buffers metrics on top of this."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any, TypeVar

from mlflow.exceptions import MlflowException

from orchestrator.environment import configure_http_retries, env_number
from orchestrator.tracking.uri import TRANSIENT_STATUSES, TrackingError, TrackingRefused, refused_line

RETRY_ENV, BUFFER_ENV = "RLAN_MLFLOW_RETRY_S", "RLAN_MLFLOW_BUFFER_METRICS"
_T = TypeVar("_T")
_clock, _sleep = time.monotonic, time.sleep  # module names, so tests can run the waits without waiting


class TrackingUnavailable(TrackingError):
    """MLflow kept failing in a transient way (unreachable, timeout, overloaded) for the whole retry budget."""


# ------------------------------------------------------------------------------------------ outages
def retry_budget_s() -> float:
    return env_number(RETRY_ENV)


_ERROR_STATUS = re.compile(r"failed with error code (\d{3})")
_NOT_JSON = "response body was not in a valid JSON format"


def refusal_status(exc: BaseException) -> int | None | bool:
    """The HTTP status of an answer that waiting will not change (401, 403, a non-JSON error page such as a
    proxy's 404), None for a 200 page that is not JSON, False when exc is no refusal."""
    if not isinstance(exc, MlflowException):
        return False
    text = str(exc)
    if (
        match := _ERROR_STATUS.search(text)
    ) is not None:  # a non-JSON error page (JSON ones are RestException)
        status = int(match.group(1))
        return False if status in TRANSIENT_STATUSES else status
    if exc.error_code in ("UNAUTHENTICATED", "PERMISSION_DENIED"):  # MLflow's own auth app, JSON answer
        return 401 if exc.error_code == "UNAUTHENTICATED" else 403
    return None if _NOT_JSON in text else False


def is_transient(exc: BaseException) -> bool:
    """Whether `exc` may pass by itself: MLflow unreachable, slow, overloaded or locked, not a wrong request
    and not a refusal (credentials, permission, a login page)."""
    if isinstance(exc, MlflowException):
        text = str(exc)
        # The REST client wraps every transport failure (refused, reset, timeout, 5xx after its own retries)
        # as "API request to <url> failed with [timeout ]exception ..."; a non-JSON error page as
        # "... failed with error code <status>", transient only for the statuses MLflow itself retries.
        transport = text.startswith("API request to") and " failed with " in text
        if transport and refusal_status(exc) is not False:
            return False
        return transport or exc.error_code == "TEMPORARILY_UNAVAILABLE" or "database is locked" in text
    return isinstance(exc, ConnectionError | TimeoutError)


def with_retries(
    call: Callable[..., _T],
    *args: Any,
    what: str,
    budget_s: float | None = None,
    tracking_uri: str = "the tracking URI",
    **kwargs: Any,
) -> _T:
    """call(*args, **kwargs), retried with growing waits while it fails transiently, for budget_s seconds at most
    (default RLAN_MLFLOW_RETRY_S; 0 means one attempt); then TrackingUnavailable. A refusal (401, 403, a login
    page) raises TrackingRefused at once: no wait makes a missing credential appear."""
    configure_http_retries()  # before MLflow's first request in this process (it reads them per request)
    budget = retry_budget_s() if budget_s is None else budget_s
    deadline, delay = _clock() + budget, 1.0
    while True:
        try:
            return call(*args, **kwargs)
        except Exception as exc:
            status = refusal_status(exc)
            if status is not False:
                answer = "" if status is not None else "a page that is not MLflow's JSON"
                raise TrackingRefused(refused_line(tracking_uri, what, status, answer)) from exc
            if not is_transient(exc):
                raise
            if _clock() + delay > deadline:
                reason = " ".join(str(exc).split())[:300]
                raise TrackingUnavailable(
                    f"MLflow unavailable for {budget:.0f} s ({what}): {reason}"
                ) from exc
            _sleep(delay)
            delay = min(delay * 2, 15.0)
