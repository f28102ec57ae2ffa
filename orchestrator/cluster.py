"""Ray connection and storage: an embedded local Ray by default, or an existing cluster at an address."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path
from urllib.parse import urlparse


class ClusterError(RuntimeError):
    """An unreachable Ray address or unusable storage, phrased as one line."""


def _probe_tcp(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast on a dead address: ray.init would otherwise retry for a minute or more."""
    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(f"--address '{address}': expected host:port, 'auto' or 'local'")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        raise ClusterError(f"cannot reach Ray at {address}: {exc.strerror or exc}") from None


def start_ray(address: str | None = None, num_cpus: int | None = None, quiet: bool = True):
    """Connect to `address` ('auto', host:port, ray://host:port) or start a local Ray sized to this machine.

    The dashboard stays on: Ray Train's placement-group cleaner needs the State API it serves, or the
    placement groups of trials stopped by ASHA leak and later trials hang (ray-project/ray#54305).
    """
    import ray

    if ray.is_initialized():
        return ray.get_runtime_context()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    kwargs = {"log_to_driver": not quiet, "configure_logging": True, "logging_level": "WARNING"}
    if address and address not in ("auto", "local"):
        _probe_tcp(address)
        kwargs["address"] = address
    elif address == "auto":
        kwargs["address"] = "auto"
    else:
        # 'local' always starts a new Ray: a bare ray.init() would join whatever cluster was last started
        # on this machine (`ray start`, another test's Cluster), with other resources and other owners.
        kwargs["address"] = "local"
        kwargs["num_cpus"] = num_cpus or os.cpu_count() or 1
        kwargs["include_dashboard"] = True
    try:
        return ray.init(**kwargs)
    except ConnectionError as exc:
        raise ClusterError(f"cannot connect to Ray at {address}: {str(exc).splitlines()[0]}") from None


def resolve_storage(storage: str | None) -> str:
    """Where Ray keeps runs and checkpoints: a URI (s3://, gs://, ...) as given, a local path made absolute.

    On a multi-node cluster this must be shared storage (S3, GCS or NFS mounted at the same path on every
    node): Ray no longer syncs checkpoints to the head node.
    """
    value = storage or os.environ.get("RLAN_STORAGE") or "ray_results"
    scheme = urlparse(value).scheme
    if scheme and scheme != "file" and len(scheme) > 1:
        return value
    path = Path(value.removeprefix("file://")).expanduser().resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-probe-{uuid.uuid4().hex}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise ClusterError(f"--storage '{value}': cannot write there ({exc.strerror or exc})") from None
    return str(path)
