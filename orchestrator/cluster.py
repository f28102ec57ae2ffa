"""Ray connection and storage: an embedded local Ray by default, or an existing cluster at an address."""

from __future__ import annotations

import math
import os
import socket
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse

from rlan.errors import BadInputError


class ClusterError(BadInputError, RuntimeError):
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


def placeable(nodes: list[dict[str, float]], cpus: float, gpus: float) -> int:
    """How many {CPU: cpus, GPU: gpus} worker bundles the nodes hold at most (a bundle sits on one node)."""
    total = 0
    for node in nodes:
        fits = [node.get("CPU", 0.0) / cpus] if cpus > 0 else []
        fits += [node.get("GPU", 0.0) / gpus] if gpus > 0 else []
        total += math.floor(min(fits) + 1e-9) if fits else 0
    return total


def check_resources(
    workers: int, cpus_per_worker: float, gpus_per_worker: float, wait_s: float = 0, what: str = "each trial"
) -> None:
    """Refuse, in one line, a run the connected cluster cannot place: Ray would queue it forever. Nodes that
    join within wait_s seconds (an autoscaler at work, --wait-for-resources) count; alive nodes only."""
    import ray

    deadline, announced = time.monotonic() + wait_s, False
    while True:
        nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
        if placeable(nodes, cpus_per_worker, gpus_per_worker) >= workers:
            return
        if time.monotonic() >= deadline:
            break
        if not announced:
            print(
                f"[rlan] waiting up to {wait_s:.0f} s for nodes with the resources {what} needs", flush=True
            )
            announced = True
        time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))
    need = f"{cpus_per_worker:g} CPU" + (f" and {gpus_per_worker:g} GPU" if gpus_per_worker else "")
    largest_first = sorted(
        nodes, key=lambda n: (-n.get("CPU", 0), -n.get("GPU", 0))
    )  # ray.nodes() has no order
    have = ", ".join(f"{n.get('CPU', 0):g} CPU/{n.get('GPU', 0):g} GPU" for n in largest_first) or "none"
    raise ClusterError(
        f"{what} needs {workers} worker(s) of {need} each, which the cluster's nodes ({have}) cannot hold; "
        "ask for less (--cpus-per-worker, --gpus-per-worker, --workers) or add nodes"
        + ("" if wait_s else " (--wait-for-resources S waits for an autoscaler)")
    )


def _sees_probe(path: str, expected: str, reply: str) -> bool:
    """On one node: does the driver's file read back, and can this node write beside it?"""
    try:
        if Path(path).read_text() != expected:
            return False
        Path(reply).write_text(expected)
        return True
    except OSError:
        return False


def check_shared_storage(storage: str, timeout_s: float = 60) -> None:
    """Prove that every alive node sees what the driver writes under a local --storage path, and the driver
    what each node writes, before any trial starts: Ray no longer syncs checkpoints to the head, so on
    unshared disks every node would keep its own half of the results. URIs (s3://, gs://) and single-node
    clusters pass at once."""
    if "://" in storage:
        return
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [node for node in ray.nodes() if node.get("Alive")]
    if len(nodes) <= 1:
        return
    token = uuid.uuid4().hex
    probe = Path(storage) / f".shared-probe-{token}"
    probe.write_text(token)
    replies = {
        node["NodeID"]: Path(storage) / f".shared-probe-{token}-{node['NodeID'][:12]}" for node in nodes
    }
    sees = ray.remote(num_cpus=0)(_sees_probe)
    pending = {
        node["NodeID"]: sees.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
        ).remote(str(probe), token, str(replies[node["NodeID"]]))
        for node in nodes
    }
    try:
        ready, _ = ray.wait(list(pending.values()), num_returns=len(pending), timeout=timeout_s)
        answers = {nid: ref in ready and ray.get(ref) for nid, ref in pending.items()}
        blind = [
            node for node in nodes if not answers[node["NodeID"]] or not replies[node["NodeID"]].exists()
        ]
    finally:
        for path in [probe, *replies.values()]:
            path.unlink(missing_ok=True)
    if blind:
        names = ", ".join(f"{n['NodeManagerAddress']} (node {n['NodeID'][:8]})" for n in blind)
        raise ClusterError(
            f"--storage '{storage}' is not shared: {names} cannot see what this driver writes there, or this "
            "driver what it writes; pass a path mounted at the same place on every node (NFS), or s3://..., "
            "gs://..."
        )


def join_cluster(
    address: str | None,
    storage: str,
    workers: int,
    cpus_per_worker: float,
    gpus_per_worker: float,
    wait_s: float = 0,
    what: str = "each trial",
) -> None:
    """Start or connect to Ray, then refuse in one line what it cannot place or a storage its nodes do not share:
    every command that runs on the cluster takes these three steps, in this order."""
    start_ray(address)
    check_resources(workers, cpus_per_worker, gpus_per_worker, wait_s, what=what)
    check_shared_storage(storage)
