"""docker/compose.yaml, checked without a Docker engine: services, localhost ports, token auth, shared storage,
health checks, and credentials only through variables."""

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker" / "compose.yaml"
RAY_SERVICES = ("ray-head", "ray-worker")
VARIABLE = re.compile(r"\$\{(\w+)(?::?[-?]([^}]*))?\}")
SECRET_KEY = re.compile(r"(PASSWORD|PASSWD|TOKEN|SECRET|API_KEY|ACCESS_KEY)", re.I)


@pytest.fixture(scope="module")
def compose() -> dict:
    documents = list(yaml.safe_load_all(COMPOSE_FILE.read_text()))
    assert len(documents) == 1 and isinstance(documents[0], dict)
    return documents[0]


def with_defaults(text: str) -> str:
    """${VAR:-default} -> default, as compose reads it with VAR unset."""
    return VARIABLE.sub(lambda m: m.group(2) or "", str(text))


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def test_services_are_head_worker_mlflow_and_postgres(compose):
    assert set(compose["services"]) == {"ray-head", "ray-worker", "mlflow", "postgres"}
    assert set(compose["volumes"]) >= {"ray-results", "mlflow-artifacts", "postgres-data"}


def test_head_and_workers_run_ray_start_blocking(compose):
    head = compose["services"]["ray-head"]["command"]
    worker = compose["services"]["ray-worker"]["command"]
    assert head[:3] == ["ray", "start", "--head"] and "--block" in head
    assert "--dashboard-host=0.0.0.0" in head  # inside the container; the host side is 127.0.0.1
    assert worker[:2] == ["ray", "start"] and "--address=ray-head:6379" in worker and "--block" in worker


def test_workers_can_be_scaled(compose):
    worker = compose["services"]["ray-worker"]
    for fixed in ("container_name", "ports", "hostname"):
        assert fixed not in worker, f"{fixed} would stop `--scale ray-worker=N`"
    assert worker["depends_on"]["ray-head"]["condition"] == "service_healthy"


def test_every_published_port_is_on_localhost_by_default(compose):
    published = []
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert isinstance(port, str), f"{name}: write ports as HOST_IP:HOST:CONTAINER strings"
            published.append(with_defaults(port))
    assert sorted(published) == ["127.0.0.1:5000:5000", "127.0.0.1:8265:8265"]
    for name, service in compose["services"].items():
        assert service.get("network_mode") != "host", name


def test_postgres_and_gcs_are_not_published(compose):
    assert "ports" not in compose["services"]["postgres"]
    head_ports = " ".join(compose["services"]["ray-head"]["ports"])
    assert "6379" not in head_ports and "10001" not in head_ports


def test_ray_token_auth_stays_on_with_the_token_from_the_env_file(compose):
    for name in RAY_SERVICES:
        env = environment(compose["services"][name])
        assert env["RAY_AUTH_MODE"] == "token", name
        match = VARIABLE.fullmatch(env["RAY_AUTH_TOKEN"])
        assert match and match.group(1) == "RAY_AUTH_TOKEN", env["RAY_AUTH_TOKEN"]
        assert ":?" in env["RAY_AUTH_TOKEN"], "compose must refuse to start without a token"


def test_ray_containers_log_to_the_mlflow_service_and_share_storage(compose):
    mounts = {}
    for name in RAY_SERVICES:
        service = compose["services"][name]
        env = environment(service)
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        mounts[name] = {volume.split(":")[1]: volume.split(":")[0] for volume in service["volumes"]}
        assert mounts[name].get(env["RLAN_STORAGE"]) == "ray-results", (name, mounts[name])
        assert service.get("shm_size"), f"{name}: Ray's object store needs a larger /dev/shm"
    assert mounts["ray-head"] == mounts["ray-worker"], "same volume at the same path on every node"


def test_mlflow_serves_artifacts_from_postgres_and_a_volume(compose):
    mlflow = compose["services"]["mlflow"]
    env = environment(mlflow)
    assert mlflow["command"][:2] == ["mlflow", "server"] and "--serve-artifacts" in mlflow["command"]
    assert env["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg2://")
    assert "@postgres:5432/" in env["MLFLOW_BACKEND_STORE_URI"]
    assert any(v.endswith(":" + env["MLFLOW_ARTIFACTS_DESTINATION"]) for v in mlflow["volumes"])
    allowed = with_defaults(env["MLFLOW_SERVER_ALLOWED_HOSTS"]).split(",")
    assert "mlflow:5000" in allowed, "MLflow 3 rejects the Host header the Ray containers send otherwise"
    assert mlflow["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_postgres_15_with_a_volume_and_pg_isready(compose):
    postgres = compose["services"]["postgres"]
    assert postgres["image"] == "postgres:15"
    assert any(v.endswith(":/var/lib/postgresql/data") for v in postgres["volumes"])
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])


def test_every_service_has_a_health_check(compose):
    for name, service in compose["services"].items():
        test = service.get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), name


def test_credentials_come_only_from_variables(compose):
    for name, service in compose["services"].items():
        for key, value in environment(service).items():
            if SECRET_KEY.search(key) and key != "RAY_AUTH_MODE":
                assert VARIABLE.fullmatch(value), f"{name}.{key} is a literal: {value!r}"
            for userinfo in re.findall(r"://([^/@\s]+)@", value):
                user, _, password = userinfo.partition(":")
                assert VARIABLE.fullmatch(user) and VARIABLE.fullmatch(password), f"{name}.{key}"
    text = COMPOSE_FILE.read_text()
    assert not re.search(r"(?i)(password|token)\s*[:=]\s*['\"]?(?!\$)[A-Za-z0-9]{6,}", text)


def test_env_example_holds_only_placeholders_and_env_is_ignored():
    example = (ROOT / "docker" / ".env.example").read_text()
    values = dict(
        line.split("=", 1) for line in example.splitlines() if line.strip() and not line.startswith("#")
    )
    assert {"RAY_AUTH_TOKEN", "POSTGRES_USER", "POSTGRES_PASSWORD"} <= set(values)
    assert values["RAY_AUTH_TOKEN"] == values["POSTGRES_PASSWORD"] == "change-me"
    ignored = (ROOT / "docker" / ".gitignore").read_text().split()
    assert ".env" in ignored


def test_every_variable_is_defaulted_or_required_and_documented(compose):
    """A variable that is neither defaulted nor required would silently become an empty string."""
    documented = (ROOT / "docker" / ".env.example").read_text()
    for match in VARIABLE.finditer(COMPOSE_FILE.read_text()):
        whole, name = match.group(0), match.group(1)
        assert ":-" in whole or ":?" in whole, whole
        assert name in documented, f"{name} is not described in docker/.env.example"
