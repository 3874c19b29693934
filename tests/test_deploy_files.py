"""The deployment files under deploy/ parse and point at things that exist."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dagster._core.instance.config import dagster_instance_config

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
VENV_BIN = Path(sys.executable).parent  # the environment running the tests
ENTRY_POINTS = {"dagster", "dagster-webserver", "dagster-daemon", "enrich", "sh"}
IMAGE = "enrichment-assets:latest"


def _compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yaml").read_text())


def _helm() -> dict:
    return yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())


def _module_exists(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def test_production_instance_config_is_valid_for_this_dagster(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DAGSTER_PG_URL", "postgresql://u@localhost:5432/dagster")
    config, _ = dagster_instance_config(str(DEPLOY))
    storage = config["storage"]["custom"]
    assert (storage["module"], storage["class"]) == (
        "enrichment_assets.instance_storage",
        "PostgresStorage",
    )
    assert storage["config"]["postgres_url"] == {"env": "DAGSTER_PG_URL"}
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert config["concurrency"]["runs"]["max_concurrent_runs"] > 0
    assert config["concurrency"]["pools"]["default_limit"] > 0
    assert config["run_monitoring"]["enabled"] is True


def test_dockerfile_copies_files_that_exist_and_runs_as_non_root() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    sources = [
        part
        for line in re.findall(r"^COPY (?!--from)(.+)$", dockerfile, flags=re.M)
        for part in line.split()[:-1]
    ]
    assert sources, "no COPY lines found"
    for source in sources:
        assert (REPO / source).exists(), f"Dockerfile copies missing {source}"
    assert re.search(r"^USER (?!root)\S+", dockerfile, flags=re.M)
    assert "enrichment_assets.definitions" in dockerfile
    assert "uv sync --frozen" in dockerfile
    # The image runs the wheel (sql/ and expectations/ inside it), not a copy of the checkout.
    assert "uv build --wheel" in dockerfile
    assert re.search(r"^RUN uv pip install .*--no-deps .*\.whl", dockerfile, flags=re.M)


def test_compose_services_build_the_repo_image_and_run_its_commands() -> None:
    compose = _compose()
    services = compose["services"]
    assert {"postgres", "code-server", "webserver", "daemon"} <= set(services)
    for name, service in services.items():
        if name == "postgres":
            assert service["image"].startswith("postgres:")
            continue
        if name.startswith("object-store"):  # SeaweedFS, the S3-compatible store
            assert service["image"].startswith("chrislusf/seaweedfs:")
            continue
        assert service["image"] == IMAGE
        build = service["build"]
        assert (DEPLOY / build["context"] / build["dockerfile"]).is_file()
        command = service["command"]
        assert command[0] in ENTRY_POINTS, f"{name}: unknown command {command[0]}"
        if command[0] != "sh":
            assert (VENV_BIN / command[0]).exists(), f"{name}: {command[0]} not installed"
        for flag in ("--module-name", "--workspace"):
            if flag in command:
                value = command[command.index(flag) + 1]
                if flag == "--module-name":
                    assert _module_exists(value)
                else:  # the path inside the image, copied from deploy/
                    assert (DEPLOY / Path(value).name).is_file()
    for mount in services["postgres"]["volumes"]:
        source = mount.split(":")[0]
        if source.startswith("."):
            assert (DEPLOY / source).is_file(), f"postgres mounts missing {source}"


def test_compose_shares_no_volume_and_takes_the_object_store_from_secrets() -> None:
    compose = _compose()
    services = compose["services"]
    mounts: dict[str, list[str]] = {}
    for name, service in services.items():
        for mount in service.get("volumes", []):
            mounts.setdefault(mount.split(":")[0], []).append(name)
    assert all(len(users) == 1 for users in mounts.values()), mounts
    secrets = compose["secrets"]
    for secret in secrets.values():
        assert (DEPLOY / secret["file"]).is_file()
    store = services["object-store"]["command"]
    assert not any(flag.startswith("-s3.port=") for flag in store)  # S3 on 8333
    config = next(flag.split("=", 1)[1] for flag in store if flag.startswith("-s3.config="))
    assert Path(config).name in services["object-store"]["secrets"]
    for name, service in services.items():
        if service.get("image") != IMAGE:
            continue
        env = service["environment"]
        assert env["ENRICH_LAKE_URI"].startswith("s3://"), name
        assert env["ENRICH_S3_ENDPOINT"] == "http://object-store:8333", name
        credentials = env["AWS_SHARED_CREDENTIALS_FILE"]
        assert credentials == f"/run/secrets/{Path(credentials).name}"
        assert Path(credentials).name in service["secrets"] and Path(credentials).name in secrets
        assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & set(env), name


def test_compose_workspace_points_at_the_code_server() -> None:
    workspace = yaml.safe_load((DEPLOY / "workspace.yaml").read_text())
    (location,) = workspace["load_from"]
    server = location["grpc_server"]
    code_server = _compose()["services"]["code-server"]["command"]
    assert server["host"] == "code-server"
    assert str(server["port"]) == code_server[code_server.index("--port") + 1]


def test_helm_values_use_the_k8s_run_launcher_and_the_llm_pool_limit() -> None:
    values = _helm()
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    args = deployment["codeServerArgs"]
    assert _module_exists(args[args.index("--module-name") + 1])
    assert deployment["image"]["repository"].endswith("enrichment-assets")
    (init,) = deployment["initContainers"]
    assert init["command"][0] in ENTRY_POINTS and (VENV_BIN / init["command"][0]).exists()
    assert values["dagsterDaemon"]["runCoordinator"]["type"] == "QueuedRunCoordinator"
    assert values["dagsterDaemon"]["runMonitoring"]["enabled"] is True
    assert values["concurrency"]["enabled"] is True
    assert values["concurrency"]["pools"]["defaultLimit"] > 0


def test_helm_values_mount_no_shared_volume_and_take_the_object_store_from_a_secret() -> None:
    values = _helm()
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    assert all("persistentVolumeClaim" not in volume for volume in deployment["volumes"])
    env = {item["name"] for item in deployment["env"]}
    assert not {"ENRICH_LAKE_URI", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & env
    run_pods = values["runLauncher"]["config"]["k8sRunLauncher"]
    for secrets in (deployment["envSecrets"], run_pods["envSecrets"]):
        assert {"name": "enrichment-object-store"} in secrets
    comment = (DEPLOY / "helm" / "values.yaml").read_text()
    for variable in ("ENRICH_LAKE_URI", "ENRICH_S3_ENDPOINT", "AWS_SECRET_ACCESS_KEY"):
        assert variable in comment  # the secret's keys are documented


def _docker_compose_available() -> str | None:
    """None when `docker compose` works here, else why not."""
    if shutil.which("docker") is None:
        return "no docker client installed"
    probe = subprocess.run(
        ["docker", "compose", "version"], capture_output=True, text=True, check=False
    )
    if probe.returncode != 0:
        first = ((probe.stderr or probe.stdout).strip().splitlines() or [""])[0]
        return f"`docker compose version` failed: {first}"
    return None


def test_docker_compose_config_accepts_the_compose_file() -> None:
    reason = _docker_compose_available()
    if reason is not None:
        pytest.skip(reason)
    result = subprocess.run(
        ["docker", "compose", "-f", str(DEPLOY / "docker-compose.yaml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
