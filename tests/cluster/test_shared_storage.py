"""Storage that is not shared: before any trial starts, every node must see what the driver writes under a
local --storage path (and the driver what each node writes), or the command refuses in one line naming
the node. The blind node is real: a Ray worker node started in its own mount namespace, with a tmpfs over
the storage folder, as a machine with its own local disk would be."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import ray
from ray.cluster_utils import Cluster

from orchestrator.cluster import ClusterError, check_shared_storage
from tests.cluster._util import free_port, wait_for

pytestmark = pytest.mark.slow
RAY = Path(sys.executable).parent / "ray"


def can_unshare_mounts() -> bool:
    try:
        return subprocess.run(["unshare", "-m", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def alive_nodes() -> list[dict]:
    return [node for node in ray.nodes() if node.get("Alive")]


@pytest.fixture(scope="module")
def cluster():
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "gcs_server_port": free_port()})
    try:
        ray.init(address=cluster.address, log_to_driver=False, logging_level="WARNING")
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_one_node_and_uris_pass_without_a_probe(cluster, tmp_path):
    check_shared_storage(str(tmp_path))  # one node: nothing to prove
    check_shared_storage("s3://bucket/runs")  # a URI is shared by construction
    assert list(tmp_path.iterdir()) == []


def test_nodes_that_share_the_disk_pass_and_leave_nothing_behind(cluster, tmp_path):
    node = cluster.add_node(num_cpus=1)
    try:
        cluster.wait_for_nodes()
        assert len(alive_nodes()) == 2
        check_shared_storage(str(tmp_path))
        assert list(tmp_path.iterdir()) == []  # probe files removed
    finally:
        cluster.remove_node(node)


def test_a_node_with_its_own_disk_under_the_storage_path_is_named(cluster, tmp_path):
    if not can_unshare_mounts():
        pytest.skip("no mount namespaces here (unshare -m)")
    storage = tmp_path / "runs"
    storage.mkdir()
    before = {node["NodeID"] for node in alive_nodes()}
    script = (
        f"mount -t tmpfs none {storage} && exec {RAY} start --address={cluster.address} "
        "--num-cpus=1 --block --disable-usage-stats"
    )
    blind = subprocess.Popen(
        ["unshare", "-m", "sh", "-c", script],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: len(alive_nodes()) == 2, 90, "the blind node to join", lambda: blind.poll() is None)
        (new,) = [node["NodeID"] for node in alive_nodes() if node["NodeID"] not in before]
        with pytest.raises(ClusterError) as info:
            check_shared_storage(str(storage))
        line = str(info.value)
        assert f"--storage '{storage}' is not shared" in line and f"node {new[:8]}" in line, line
        assert not any(f"node {nid[:8]}" in line for nid in before)  # the driver's own node sees it
        assert "s3://" in line and "\n" not in line
        assert list(storage.iterdir()) == []  # the driver's probe files are removed
    finally:
        os.killpg(blind.pid, signal.SIGTERM)
        blind.wait(60)
        wait_for(lambda: len(alive_nodes()) == 1, 90, "the blind node to leave")
