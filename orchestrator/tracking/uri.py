"""Where MLflow lives and what every run is tagged with: tracking-URI resolution and checks, run tags.

The URI is `--tracking-uri`, else MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlruns.db; relative SQLite paths
are made absolute (Ray workers chdir) and the file store, which MLflow 3 refuses, is rejected up front.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from http import HTTPStatus
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlan.errors import BadInputError

if TYPE_CHECKING:
    from rlan.config import RunConfig

_SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
_EXPECTED = "expected sqlite:///path/to/mlruns.db or http(s)://host:port"


class TrackingError(BadInputError, RuntimeError):
    """A tracking problem, phrased as one line."""


def resolve_tracking_uri(cli_value: str | None) -> str:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlruns.db; SQLite paths absolute."""
    env_value = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if cli_value and cli_value.strip():
        value, origin = cli_value.strip(), "--tracking-uri"
    elif env_value:
        value, origin = env_value, "MLFLOW_TRACKING_URI"
    else:
        return _sqlite_uri(Path.cwd() / "mlruns.db")
    where = f"{origin} '{value}'"
    if value.startswith(("http://", "https://")):
        if not value.split("://", 1)[1].split("/", 1)[0]:
            raise TrackingError(f"{where}: no host; {_EXPECTED}")
        return value
    if value.startswith("file:"):
        raise _file_store_error(where, Path(urllib.parse.urlparse(value).path or "mlruns"))
    if value.startswith("sqlite:"):
        path, _, query = value.removeprefix("sqlite:").partition("?")
        if not path.startswith("///") or not path[3:] or path[3:] == ":memory:":
            raise TrackingError(f"{where}: no database file; {_EXPECTED}")
        return _sqlite_uri(Path(path[3:]), query)
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", value):
        raise TrackingError(f"{where}: unsupported scheme; {_EXPECTED}")
    path = Path(value).expanduser()
    if path.is_dir() or value.endswith("/") or (path.suffix not in _SQLITE_SUFFIXES and not path.is_file()):
        raise _file_store_error(where, path)  # a folder is how MLflow names a file store
    return _sqlite_uri(path)


def _file_store_error(where: str, folder: Path) -> TrackingError:
    suggestion = _sqlite_uri(folder.parent / f"{folder.name or 'mlruns'}.db")
    return TrackingError(f"{where}: MLflow 3 refuses the file store; use {suggestion}")


def _sqlite_uri(path: Path, query: str = "") -> str:
    # An absolute path gives four slashes (sqlite:////abs/x.db); Ray workers chdir, so never relative.
    absolute = os.path.abspath(path.expanduser())
    return f"sqlite:///{absolute}" + (f"?{query}" if query else "")


def _sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///").partition("?")[0])


def create_sqlite_store(uri: str, folder: Path) -> None:
    """Create (or migrate) the SQLite store while holding a lock on its folder. Two processes opening one
    new store at once race in MLflow's schema migration, and one dies with 'table _alembic_tmp_metrics
    already exists' (two `rlan debug` runs started together); the lock makes the second wait, then find
    the schema in place. A lock on the folder leaves no lock file behind."""
    import fcntl

    from mlflow.tracking import MlflowClient

    descriptor = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        MlflowClient(uri).search_experiments(max_results=1)  # builds the store: tables and migrations
    finally:
        os.close(descriptor)  # releases the lock


def check_reachable(uri: str, timeout_s: float = 5) -> None:
    """Fail early, in one line, when the tracking store cannot be used (before any run starts)."""
    sqlite_path = _sqlite_path(uri)
    if sqlite_path is not None:
        folder = sqlite_path.parent
        if not folder.is_dir():
            raise TrackingError(f"cannot reach MLflow at {uri}: folder {folder} does not exist")
        if not os.access(folder, os.W_OK) or (sqlite_path.exists() and not os.access(sqlite_path, os.W_OK)):
            raise TrackingError(f"cannot reach MLflow at {uri}: {sqlite_path} is not writable")
        create_sqlite_store(uri, folder)
        return
    if not uri.startswith(("http://", "https://")):
        raise TrackingError(f"cannot reach MLflow at {uri}: {_EXPECTED}")
    # The REST API itself, with the run's credentials: a proxy may answer /health without them and refuse
    # every real call, and an answer that is not JSON is a login page, not MLflow.
    request = urllib.request.Request(f"{uri.rstrip('/')}{API_PROBE}", headers=auth_headers())
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            body, kind = response.read(1 << 16), response.headers.get_content_type()
    except urllib.error.HTTPError as exc:
        if exc.code in TRANSIENT_STATUSES:
            raise TrackingError(f"cannot reach MLflow at {uri}: HTTP {exc.code} {exc.reason}") from None
        raise TrackingRefused(refused_line(uri, "the API probe", exc.code)) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = str(getattr(exc, "reason", exc))
        raise TrackingError(f"cannot reach MLflow at {uri}: {' '.join(reason.split())}") from None
    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise TrackingRefused(
            refused_line(uri, "the API probe", None, f"a {kind} page that is not MLflow's JSON")
        )


class TrackingRefused(TrackingError):
    """MLflow, or a proxy in front of it, refused a request for a reason that waiting does not cure: missing
    or wrong credentials, no permission, or a page that is not MLflow's REST API (a login form)."""


API_PROBE = "/api/2.0/mlflow/experiments/search?max_results=1"
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})  # the statuses MLflow's own client retries
_CREDENTIALS = "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or MLFLOW_TRACKING_TOKEN"


def auth_headers() -> dict[str, str]:
    """The Authorization header MLflow's REST client sends for the same environment (basic auth before a
    bearer token, as mlflow.utils.rest_utils orders them). Written here because the probe runs before any
    MlflowClient exists and must not go through MLflow's minute of retries."""
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else {}


def refused_line(uri: str, what: str, status: int | None, answer: str = "") -> str:
    """One line for a refused request: the URI, the HTTP status and what to do about it."""
    if status is not None:
        try:
            answer = answer or f"HTTP {status} {HTTPStatus(status).phrase}"
        except ValueError:
            answer = answer or f"HTTP {status}"
    if status == 401:
        advice = f"set {_CREDENTIALS}"
    elif status == 403:
        advice = f"the credentials in {_CREDENTIALS} lack permission for this"
    else:
        advice = f"is a proxy in front of MLflow asking to log in? ({_CREDENTIALS})"
    return f"MLflow at {uri} refused {what}: {answer}; {advice}"


def default_artifact_root(uri: str) -> str | None:
    """For a SQLite store: <db folder>/mlartifacts as a file:// URI (else MLflow would use <cwd>/mlruns)."""
    sqlite_path = _sqlite_path(uri)
    return (sqlite_path.parent / "mlartifacts").as_uri() if sqlite_path is not None else None


def git_commit(cwd: str | Path | None = None) -> str | None:
    """HEAD of the repository holding cwd (default: this package's folder); None outside a repository."""
    folder = Path(cwd) if cwd is not None else Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and re.fullmatch(r"[0-9a-f]{40,64}", commit) else None


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "missing"


def run_tags(config: RunConfig, extra: dict[str, Any] | None = None) -> dict[str, str]:
    """Provenance tags of a run: config hash, git commit and library versions; extra wins on a clash."""
    tags = {"rlan.config_hash": config.config_hash()}
    for package in ("torch", "ray", "mlflow"):  # from metadata: no import of ray (slow) here
        tags[f"rlan.version.{package}"] = _version(package)
    commit = git_commit()
    if commit:
        tags["rlan.git_commit"] = commit
        tags["mlflow.source.git.commit"] = commit  # shown by the MLflow UI
    tags.update(extra or {})
    return {str(k): str(v) for k, v in tags.items()}  # RunLogger cuts values to MLflow's tag limit
