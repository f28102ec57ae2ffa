"""docker/kuberay/*.yaml, checked without a Kubernetes cluster: kinds, Ray version, token auth, resources, and
storage shared by the head and every worker at the path the sweep writes to."""

import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
KUBERAY = ROOT / "docker" / "kuberay"
PVC = "rlan-shared"


def load(name: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all((KUBERAY / name).read_text()) if doc is not None]


@pytest.fixture(scope="module")
def raycluster() -> dict:
    (doc,) = load("raycluster.yaml")
    return doc


@pytest.fixture(scope="module")
def rayjob() -> dict:
    (doc,) = load("rayjob-sweep.yaml")
    return doc


def cluster_specs(raycluster: dict, rayjob: dict) -> dict[str, dict]:
    return {"raycluster.yaml": raycluster["spec"], "rayjob-sweep.yaml": rayjob["spec"]["rayClusterSpec"]}


def pod_specs(cluster_spec: dict) -> list[dict]:
    groups = [cluster_spec["headGroupSpec"], *cluster_spec["workerGroupSpecs"]]
    return [group["template"]["spec"] for group in groups]


def test_every_manifest_parses_with_known_kinds():
    kinds = {path.name: [doc["kind"] for doc in load(path.name)] for path in KUBERAY.glob("*.yaml")}
    assert kinds == {
        "raycluster.yaml": ["RayCluster"],
        "rayjob-sweep.yaml": ["RayJob"],
        "shared-pvc.yaml": ["PersistentVolumeClaim"],
    }
    for path in KUBERAY.glob("ray*.yaml"):
        assert load(path.name)[0]["apiVersion"] == "ray.io/v1"


def test_clusters_run_ray_2_60_with_token_auth(raycluster, rayjob):
    for name, spec in cluster_specs(raycluster, rayjob).items():
        assert spec["rayVersion"] == "2.60.0", name
        assert spec["authOptions"]["mode"] == "token", name


def test_rayjob_deletes_its_cluster_when_the_sweep_ends(rayjob):
    spec = rayjob["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["ttlSecondsAfterFinished"] >= 0
    assert spec["submissionMode"] in ("K8sJobMode", "HTTPMode", "SidecarMode")


def test_every_ray_container_has_cpu_and_memory_requests_and_limits(raycluster, rayjob):
    for name, spec in cluster_specs(raycluster, rayjob).items():
        for pod in pod_specs(spec):
            for container in pod["containers"]:
                resources = container["resources"]
                for kind in ("requests", "limits"):
                    assert {"cpu", "memory"} <= set(resources[kind]), (name, container["name"], kind)


def test_rayjob_workers_get_whole_gpus_and_use_the_gpu_image(rayjob):
    (workers,) = rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    (container,) = workers["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["image"].endswith(":gpu")


def test_pods_run_as_the_non_root_ray_user(raycluster, rayjob):
    for name, spec in cluster_specs(raycluster, rayjob).items():
        for pod in pod_specs(spec):
            context = pod["securityContext"]
            assert context["runAsNonRoot"] is True and context["runAsUser"] == 1000, name


def test_head_and_workers_mount_the_same_shared_volume_at_the_same_path(raycluster, rayjob):
    for name, spec in cluster_specs(raycluster, rayjob).items():
        paths = set()
        for pod in pod_specs(spec):
            claims = {
                volume["name"]: volume["persistentVolumeClaim"]["claimName"]
                for volume in pod["volumes"]
                if "persistentVolumeClaim" in volume
            }
            assert set(claims.values()) == {PVC}, name
            (container,) = pod["containers"]
            mounts = [m["mountPath"] for m in container["volumeMounts"] if m["name"] in claims]
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            assert mounts == [env["RLAN_STORAGE"]], (name, container["name"])
            paths.update(mounts)
        assert paths == {"/shared/ray_results"}, name


def test_shared_claim_is_read_write_many():
    (claim,) = load("shared-pvc.yaml")
    assert claim["metadata"]["name"] == PVC
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]


def test_sweep_entrypoint_writes_to_the_shared_volume_and_an_mlflow_server(rayjob):
    argv = shlex.split(rayjob["spec"]["entrypoint"])
    assert argv[:2] == ["rlan", "sweep"]
    option = {argv[i]: argv[i + 1] for i in range(len(argv) - 1) if argv[i].startswith("--")}
    assert option["--storage"] == "/shared/ray_results"
    assert option["--address"] == "auto"
    assert option["--tracking-uri"].startswith(("http://", "https://"))


def test_entrypoints_relative_paths_resolve_in_the_containers_working_directory(raycluster, rayjob):
    """`ray job submit` runs the entrypoint where `ray start --head` ran: the head's working directory."""
    for name, spec in cluster_specs(raycluster, rayjob).items():
        (head,) = spec["headGroupSpec"]["template"]["spec"]["containers"]
        assert head["workingDir"] == "/home/ray/rlan-sweep", name
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert "WORKDIR /home/ray/rlan-sweep" in dockerfile


def test_no_token_or_password_literal_in_the_manifests():
    for path in KUBERAY.glob("*.yaml"):
        for doc in load(path.name):
            for text in _strings(doc):
                assert "RAY_AUTH_TOKEN" not in text, f"{path.name}: let KubeRay manage the token"


def _strings(node) -> list[str]:
    if isinstance(node, dict):
        return [s for key, value in node.items() for s in (str(key), *_strings(value))]
    if isinstance(node, list):
        return [s for item in node for s in _strings(item)]
    return [str(node)]
