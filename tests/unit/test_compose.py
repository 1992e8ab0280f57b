"""compose/docker-compose.yml describes a stack that can start in the right order.

There is no Docker engine where the tests run, so the file is checked as data: the services, their
health checks, the environment every Sluice process gets (anchors merged, then interpolated with
compose/.env.example and validated by ``shared.settings``), commands, start order and image.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from shared.settings import SETTINGS_GROUPS, Settings
from shared.topology import WORKERS as TOPOLOGY_WORKERS

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_DIR = ROOT / "compose"
SPOOL_DIR = "/var/lib/sluice/spool"

INFRA = ("rabbitmq", "postgres", "minio", "clamav")
ONE_SHOTS = ("minio-init", "migrate")
WORKERS = ("scan", "store", "thumbnail", "commit", "fallback")
SLUICE_LONG_RUNNING = ("gateway", *WORKERS)
SLUICE_SERVICES = ("migrate", *SLUICE_LONG_RUNNING)
SLUICE_ENV = (
    "SLUICE_AMQP_URL",
    "SLUICE_DATABASE_URL",
    "SLUICE_SPOOL_DIR",
    "SLUICE_CLAMD_HOST",
    "SLUICE_CLAMD_PORT",
    "S3_ENDPOINT",
    "S3_ACCESS_KEY",
    "S3_SECRET_KEY",
    "S3_BUCKET_NAME",
    "S3_REGION",
    "S3_FORCE_PATH_STYLE",
    "SLUICE_LOG_FORMAT",
)
_VARIABLE = re.compile(r"\$\{(?P<name>[A-Z0-9_]+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((COMPOSE_DIR / "docker-compose.yml").read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(compose["services"])


@pytest.fixture(scope="module")
def example_env() -> dict[str, str]:
    values = {}
    for line in (COMPOSE_DIR / ".env.example").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def _interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}``; ``$$`` is a literal $."""

    def substitute(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        if env.get(name):
            return env[name]
        if op in (":-", "-"):
            return str(arg)
        raise AssertionError(f"${{{name}}} is unset and has no default: {arg or ''}")

    return _VARIABLE.sub(substitute, text.replace("$$", "\0")).replace("\0", "$")


def _depends_on(service: dict[str, Any]) -> dict[str, str]:
    depends = service.get("depends_on", {})
    assert isinstance(depends, dict), "depends_on must use the long form with a condition"
    return {name: spec["condition"] for name, spec in depends.items()}


def _healthcheck_text(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    return " ".join(test) if isinstance(test, list) else str(test)


def test_every_expected_service_exists(services: dict[str, dict[str, Any]]) -> None:
    assert set(INFRA + ONE_SHOTS + SLUICE_LONG_RUNNING) <= set(services)


def test_every_pipeline_stage_has_a_worker(services: dict[str, dict[str, Any]]) -> None:
    assert set(TOPOLOGY_WORKERS) <= set(services), "a worker in shared.topology has no service"


@pytest.mark.parametrize("name", [*INFRA, "gateway", *TOPOLOGY_WORKERS])
def test_long_running_services_have_a_healthcheck(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    check = services[name].get("healthcheck")
    assert check and check.get("test"), f"{name} has no healthcheck"
    assert check["test"][0] in ("CMD", "CMD-SHELL")


def test_healthchecks_ask_the_right_question(services: dict[str, dict[str, Any]]) -> None:
    assert "rabbitmq-diagnostics -q ping" in _healthcheck_text(services["rabbitmq"])
    assert "pg_isready" in _healthcheck_text(services["postgres"])
    assert "mc ready local" in _healthcheck_text(services["minio"])
    assert "clamdcheck.sh" in _healthcheck_text(services["clamav"])
    assert "/healthz" in _healthcheck_text(services["gateway"])
    for stage in TOPOLOGY_WORKERS:  # the worker's /readyz: its consumer is connected and registered
        assert f"sluice health {stage} --port 8081" in _healthcheck_text(services[stage])


def test_images(services: dict[str, dict[str, Any]]) -> None:
    assert services["rabbitmq"]["image"] == "rabbitmq:3.13-management"
    assert services["postgres"]["image"] == "postgres:16"
    assert "minio/minio" in services["minio"]["image"]
    assert "minio/mc" in services["minio-init"]["image"]
    assert services["clamav"]["image"].startswith("clamav/clamav:")


@pytest.mark.parametrize("name", SLUICE_SERVICES)
def test_sluice_services_get_the_complete_environment(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    env = services[name]["environment"]
    assert isinstance(env, dict)
    missing = [variable for variable in SLUICE_ENV if variable not in env]
    assert missing == [], f"{name} lacks {missing}"
    assert env["SLUICE_LOG_FORMAT"] == "json"
    assert env["SLUICE_SPOOL_DIR"] == SPOOL_DIR
    assert env["SLUICE_CLAMD_HOST"] == "clamav"
    assert str(env["S3_FORCE_PATH_STYLE"]).lower() == "true"


@pytest.mark.parametrize("name", SLUICE_SERVICES)
def test_the_environment_passes_sluice_settings_validation(
    services: dict[str, dict[str, Any]],
    example_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    name: str,
) -> None:
    env = {k: _interpolate(str(v), example_env) for k, v in services[name]["environment"].items()}
    known = {
        (str(group.model_config.get("env_prefix", "")) + field).upper()
        for group in SETTINGS_GROUPS
        for field in group.model_fields
    }
    assert set(env) <= known, f"variables no setting reads: {set(env) - known}"
    for variable in known:
        monkeypatch.delenv(variable, raising=False)
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)

    settings = Settings.from_env()

    assert urlsplit(settings.amqp.url).hostname == "rabbitmq"
    assert urlsplit(settings.database.url).hostname == "postgres"
    assert urlsplit(settings.s3.endpoint).hostname == "minio"
    assert settings.s3.force_path_style is True
    assert str(settings.spool.dir) == SPOOL_DIR
    assert (settings.clamd.host, settings.clamd.port) == ("clamav", 3310)
    assert settings.s3.bucket_name == example_env["S3_BUCKET_NAME"]


def test_required_variables_are_in_the_example_env(example_env: dict[str, str]) -> None:
    text = (COMPOSE_DIR / "docker-compose.yml").read_text(encoding="utf-8").replace("$$", "")
    required = {m["name"] for m in _VARIABLE.finditer(text) if m["op"] in (":?", "?")}
    assert required, "secrets should be required (${VAR:?message}), not defaulted"
    assert required <= {k for k, v in example_env.items() if v}


@pytest.mark.parametrize("stage", WORKERS)
def test_worker_command(services: dict[str, dict[str, Any]], stage: str) -> None:
    assert services[stage]["command"] == ["sluice", "worker", stage]


def test_gateway_and_migrate_commands(services: dict[str, dict[str, Any]]) -> None:
    gateway = services["gateway"]
    assert gateway["command"] == ["sluice", "gateway"]
    assert gateway["environment"]["SLUICE_GATEWAY_HOST"] == "0.0.0.0"
    assert any(str(port).endswith(":8080") for port in gateway["ports"])
    assert services["migrate"]["command"] == ["sluice", "migrate"]


def test_depends_on_conditions_match_the_dependency(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for dependency, condition in _depends_on(service).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            if dependency in ONE_SHOTS:
                expected = "service_completed_successfully"
            else:
                assert "healthcheck" in services[dependency], f"{dependency} has no healthcheck"
                expected = "service_healthy"
            assert condition == expected, f"{name} → {dependency}: {condition}"


def test_start_order(services: dict[str, dict[str, Any]]) -> None:
    needs = {name: set(_depends_on(services[name])) for name in services}
    assert needs["minio-init"] == {"minio"}
    assert needs["migrate"] == {"postgres"}
    for name in SLUICE_LONG_RUNNING:
        assert "rabbitmq" in needs[name], name
    assert {"postgres", "migrate", "minio-init"} <= needs["gateway"]
    assert {"clamav"} <= needs["scan"]
    assert {"minio-init"} <= needs["store"]
    assert {"minio-init"} <= needs["thumbnail"]
    assert {"postgres", "migrate"} <= needs["commit"]


def test_one_shots_are_not_restarted(services: dict[str, dict[str, Any]]) -> None:
    for name in ONE_SHOTS:
        assert services[name].get("restart", "no") == "no"


@pytest.mark.parametrize("name", SLUICE_LONG_RUNNING)
def test_spool_volume_is_shared(
    compose: dict[str, Any], services: dict[str, dict[str, Any]], name: str
) -> None:
    mounts = [str(v).split(":") for v in services[name]["volumes"]]
    spool = [source for source, target, *_ in mounts if target == SPOOL_DIR]
    assert spool == ["spool"], f"{name} does not mount the spool volume at {SPOOL_DIR}"
    assert "spool" in compose["volumes"]


def test_one_image_built_from_the_dockerfile(services: dict[str, dict[str, Any]]) -> None:
    images = {services[name]["image"] for name in SLUICE_SERVICES}
    assert len(images) == 1
    for name in SLUICE_SERVICES:
        build = services[name]["build"]
        assert (COMPOSE_DIR / build["context"]).resolve() == ROOT
        assert (ROOT / build["dockerfile"]).resolve() == COMPOSE_DIR / "Dockerfile"


def test_dockerfile_installs_the_project() -> None:
    dockerfile = (COMPOSE_DIR / "Dockerfile").read_text(encoding="utf-8")
    instructions = [
        line.strip() for line in dockerfile.replace("\\\n", " ").splitlines() if line.strip()
    ]
    instructions = [line for line in instructions if not line.startswith("#")]
    assert instructions[0] == "FROM python:3.11-slim"
    assert any("apt-get install" in line and "libmagic1" in line for line in instructions)
    assert any(re.search(r"pip install (-e )?\.(\s|$)", line) for line in instructions)
    copied = [line.split()[1:-1] for line in instructions if line.startswith("COPY ")]
    sources = {source for sources in copied for source in sources}
    assert {"pyproject.toml", "shared", "services", "migrations"} <= sources
    for source in sources:
        assert (ROOT / source).exists(), f"the Dockerfile copies {source}, which does not exist"
