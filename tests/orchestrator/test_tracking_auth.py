"""An authenticating proxy in front of MLflow: a 401, a 403 or a login page is a refusal, said at once in one
line naming the URI and the status, never retried for a minute like an outage. The endpoints are real HTTP
servers on 127.0.0.1 that answer as such proxies do."""

from __future__ import annotations

import base64
import json
import subprocess
import sys

import pytest
from mlflow import MlflowClient

from orchestrator.tracking.retries import TrackingUnavailable, is_transient
from orchestrator.tracking.run_logger import RunLogger
from orchestrator.tracking.uri import TrackingError, TrackingRefused, check_reachable
from tests.http_endpoint import Endpoint as Proxy

EMPTY_SEARCH = json.dumps({"experiments": []}).encode()


def unauthorised(_request):
    return 401, "text/html", b"<html><body>Please log in</body></html>"


def forbidden(_request):
    return 403, "text/plain", b"Forbidden"


def login_page(_request):
    return 200, "text/html", b"<html><form>user / password</form></html>"


def overloaded(_request):
    return 503, "text/html", b"<html>try later</html>"


def basic_user_pw(request):
    expected = "Basic " + base64.b64encode(b"alice:s3cret").decode()
    return (
        (200, "application/json", EMPTY_SEARCH)
        if request.authorization == expected
        else unauthorised(request)
    )


@pytest.fixture
def no_credentials(monkeypatch):
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    ("answer", "status"), [(unauthorised, "HTTP 401 Unauthorized"), (forbidden, "HTTP 403 Forbidden")]
)
def test_the_start_check_names_the_uri_and_the_status_after_one_request(answer, status, no_credentials):
    with Proxy(answer) as proxy:
        with pytest.raises(TrackingRefused) as info:
            check_reachable(proxy.uri, timeout_s=5)
    line = str(info.value)
    assert proxy.uri in line and status in line and "MLFLOW_TRACKING_" in line and "\n" not in line
    assert len(proxy.requests) == 1


def test_a_login_page_answered_with_200_is_not_mlflow(no_credentials):
    with Proxy(login_page) as proxy:
        with pytest.raises(TrackingRefused, match="text/html page that is not MLflow's JSON"):
            check_reachable(proxy.uri, timeout_s=5)


def test_the_start_check_sends_the_credentials_mlflow_would_send(monkeypatch, no_credentials):
    with Proxy(basic_user_pw) as proxy:
        with pytest.raises(TrackingRefused, match="401"):
            check_reachable(proxy.uri, timeout_s=5)
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "s3cret")
        check_reachable(proxy.uri, timeout_s=5)  # passes: the same header MLflow's client sends
        assert proxy.requests[-1].authorization.startswith("Basic ")


def test_an_overloaded_server_is_still_an_outage(no_credentials):
    with Proxy(overloaded) as proxy:
        with pytest.raises(TrackingError, match="cannot reach MLflow.*HTTP 503") as info:
            check_reachable(proxy.uri, timeout_s=5)
    assert not isinstance(info.value, TrackingRefused)


@pytest.mark.parametrize("answer", [unauthorised, forbidden, login_page])
def test_mlflows_own_client_error_is_a_refusal_not_a_transient_failure(answer, no_credentials):
    with Proxy(answer) as proxy:
        with pytest.raises(Exception) as info:
            MlflowClient(proxy.uri).search_experiments(max_results=1)
    assert not is_transient(info.value)


def test_a_run_logger_refused_mid_way_stops_at_once(monkeypatch, no_credentials):
    monkeypatch.setenv(
        "RLAN_MLFLOW_RETRY_S", "20"
    )  # an outage would be retried for 20 s, a refusal not at all
    with Proxy(unauthorised) as proxy:
        with pytest.raises(TrackingRefused) as info:
            RunLogger(proxy.uri, "refused", run_name="r")
    assert proxy.uri in str(info.value) and "HTTP 401" in str(info.value)
    assert len(proxy.requests) == 1  # neither MLflow nor RunLogger asked again


def test_an_overloaded_server_is_retried_by_the_run_logger(monkeypatch, no_credentials):
    monkeypatch.setenv("RLAN_MLFLOW_RETRY_S", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with Proxy(overloaded) as proxy:
        with pytest.raises(TrackingUnavailable):
            RunLogger(proxy.uri, "overloaded", run_name="r")


def test_rlan_debug_against_a_refusing_proxy_exits_2_with_one_line(tmp_path, no_credentials):
    with Proxy(forbidden) as proxy:
        done = subprocess.run(
            [sys.executable, "-m", "orchestrator.cli", "debug", "-c", "configs/debug.yaml"]
            + ["--tracking-uri", proxy.uri, "training.max_epochs=1"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and proxy.uri in lines[0] and "HTTP 403" in lines[0], done.stderr
    assert "Traceback" not in done.stderr
