"""A throw-away PostgreSQL 15 and a real `mlflow server` on it, for the cluster tests and `python -m bench --scale`.

PostgreSQL refuses to run as root, so as root initdb and postgres run as the `postgres` user (runuser), with a
data folder in a temporary folder owned by it. Set RLAN_PG_BIN to the folder of the PostgreSQL binaries when
they are not in /usr/lib/postgresql/15/bin.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

PG_BIN = Path(os.environ.get("RLAN_PG_BIN", "/usr/lib/postgresql/15/bin"))


class PostgresUnavailable(RuntimeError):
    """This machine cannot run a throw-away PostgreSQL (no binaries, or root without a `postgres` user)."""


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


def _as_postgres() -> list[str]:
    """The command prefix that runs a PostgreSQL server binary: as the `postgres` user when we are root."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise PostgresUnavailable(
            "running as root and there is no `postgres` user to run PostgreSQL as"
        ) from None
    return ["runuser", "-u", "postgres", "--"]


@contextmanager
def throwaway_postgres() -> Iterator[str]:
    """PostgreSQL 15 on a free 127.0.0.1 port with database `mlflow`; yields its SQLAlchemy URI, then removes it."""
    if not (PG_BIN / "postgres").exists() or not (PG_BIN / "initdb").exists():
        raise PostgresUnavailable(
            f"PostgreSQL binaries not found in {PG_BIN} (set RLAN_PG_BIN to their folder)"
        )
    as_postgres = _as_postgres()
    root = Path(tempfile.mkdtemp(prefix="rlan-pg-"))
    password, port = secrets.token_hex(12), free_port()
    (root / "pw").write_text(password + "\n")
    if as_postgres:
        shutil.chown(root, "postgres", "postgres")
        shutil.chown(root / "pw", "postgres", "postgres")
    run = lambda *cmd, **kw: subprocess.run(
        [*as_postgres, *map(str, cmd)], check=True, capture_output=True, **kw
    )
    data = root / "data"
    pg_ctl = [PG_BIN / "pg_ctl", "-D", data]
    try:
        pw_file = f"--pwfile={root / 'pw'}"
        run(PG_BIN / "initdb", "-D", data, "-U", "rlan", pw_file, "-A", "scram-sha-256", "--no-sync")
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
        run(*pg_ctl, "-o", options, "-l", root / "server.log", "-w", "-t", "60", "start")
        env = dict(os.environ, PGPASSWORD=password)
        createdb = [PG_BIN / "createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "rlan", "mlflow"]
        subprocess.run(createdb, check=True, capture_output=True, env=env)
        yield f"postgresql://rlan:{password}@127.0.0.1:{port}/mlflow"
    except subprocess.CalledProcessError as exc:
        log = (root / "server.log").read_text() if (root / "server.log").exists() else ""
        raise AssertionError(f"{exc.cmd[len(as_postgres)]} failed: {exc.stderr.decode()}{log}") from None
    finally:
        subprocess.run([*as_postgres, *map(str, pg_ctl), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


class MlflowServer:
    """`mlflow server` on a database, on a fixed port so that it can be killed and started again at one URI."""

    def __init__(self, backend: str, artifacts: Path, log: Path, workers: int = 1):
        self.backend, self.artifacts, self.log, self.workers = backend, artifacts, log, workers
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 120) -> float:
        """Start it and wait for /health; returns the seconds that took."""
        started = time.monotonic()
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING")}
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # no job runner processes beside the server
        command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", self.backend]
        command += ["--host", "127.0.0.1", "--port", str(self.port), "--workers", str(self.workers)]
        command += ["--artifacts-destination", str(self.artifacts)]
        with open(self.log, "a") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        wait_for(self.healthy, timeout_s, f"MLflow at {self.uri}/health", lambda: self.process.poll() is None)
        return time.monotonic() - started

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL to the server and its uvicorn worker (its own process group), as a crash would."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None
