"""compose/docker-compose.yml describes a stack that can start in the right order, and its
dashboards (RabbitMQ plugins, Prometheus scrape config, Grafana provisioning) fit together.

There is no Docker engine where the tests run, so the file is checked as data: the services, their
health checks, the environment every Sluice process gets (anchors merged, then interpolated with
compose/.env.example and validated by ``shared.settings``), commands, start order and image.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from shared.devservices.clamd import scan_limits
from shared.settings import SETTINGS_GROUPS, Settings
from shared.topology import MIRROR, TRANSFORMS
from shared.topology import WORKERS as TOPOLOGY_WORKERS

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_DIR = ROOT / "compose"
SPOOL_DIR = "/var/lib/sluice/spool"

INFRA = ("rabbitmq", "postgres", "minio", "clamav")
RABBITMQ_NODES = ("rabbitmq", "rabbitmq-2", "rabbitmq-3")
ONE_SHOTS = ("minio-init", "migrate")
WORKERS = ("scan", "store", "thumbnail", "commit", "fallback")
SLUICE_LONG_RUNNING = ("gateway", *WORKERS)
SLUICE_SERVICES = ("migrate", *SLUICE_LONG_RUNNING, *TRANSFORMS)
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


def test_clamav_gets_the_scan_limits_and_alerts_of_the_development_clamd(
    services: dict[str, dict[str, Any]],
) -> None:
    environment = services["clamav"]["environment"]
    written = [
        f"{key.removeprefix('CLAMD_CONF_')} {value}"
        for key, value in environment.items()
        if key.startswith("CLAMD_CONF_")
    ]
    assert written == scan_limits()


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


@pytest.mark.parametrize("stage", TRANSFORMS)
def test_each_transform_has_a_worker_started_by_its_profile(
    services: dict[str, dict[str, Any]],
    example_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    stage: str,
) -> None:
    service = services[stage]
    assert service["command"] == ["sluice", "worker", stage]
    assert service["profiles"] == [stage]  # off unless COMPOSE_PROFILES names it
    assert f"sluice health {stage} --port 8081" in _healthcheck_text(service)
    assert _depends_on(service) == {
        "rabbitmq": "service_healthy",
        "postgres": "service_healthy",
        "minio": "service_healthy",
        "migrate": "service_completed_successfully",
    }
    variable = f"SLUICE_{stage.upper()}_ENABLED"
    assert service["environment"][variable] == "true"  # its worker refuses to start otherwise
    # The gateway reads the same flag (pending vs not applicable), off by default.
    gateway = services["gateway"]["environment"]
    assert _interpolate(str(gateway[variable]), example_env) == "false"
    assert variable in example_env and f"SLUICE_{stage.upper()}_REPLICAS" in example_env
    for name, value in service["environment"].items():
        monkeypatch.setenv(name, _interpolate(str(value), example_env))
    assert getattr(Settings.from_env(), stage).enabled is True


def test_the_image_has_the_transforms_programs() -> None:
    dockerfile = (COMPOSE_DIR / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    (install,) = [line for line in dockerfile.splitlines() if "apt-get install" in line]
    for package in ("tesseract-ocr", "tesseract-ocr-eng", "tesseract-ocr-fra", "ffmpeg"):
        assert package in install.split(), package


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
    # The runtime dependencies at the versions of requirements.lock (as constraints).
    assert any(
        re.search(r"pip install -c requirements\.lock (-e )?\.(\s|$)", line)
        for line in instructions
    )
    copied = [line.split()[1:-1] for line in instructions if line.startswith("COPY ")]
    sources = {source for sources in copied for source in sources}
    assert {"pyproject.toml", "requirements.lock", "shared", "services", "migrations"} <= sources
    for source in sources:
        assert (ROOT / source).exists(), f"the Dockerfile copies {source}, which does not exist"


# -- dashboards: RabbitMQ plugins, Prometheus, Grafana -----------------------------------------

#: Queue metrics of rabbitmq_prometheus with per-object metrics on (label ``queue``), as served
#: by RabbitMQ 3.10's /metrics/per-object and 3.13's /metrics with return_per_object_metrics.
RABBITMQ_QUEUE_METRICS = {
    "rabbitmq_queue_messages",
    "rabbitmq_queue_messages_ready",
    "rabbitmq_queue_messages_unacked",
    "rabbitmq_queue_consumers",
    "rabbitmq_queue_messages_published_total",
}
_METRIC = re.compile(r"\b(?:sluice|rabbitmq|http)_[a-z0-9_]+")
_HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")


def _load_build_dashboard() -> Any:
    spec = importlib.util.spec_from_file_location(
        "build_dashboard", COMPOSE_DIR / "grafana" / "build_dashboard.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded = json.loads((COMPOSE_DIR / "grafana" / "dashboards" / "sluice.json").read_text())
    assert isinstance(loaded, dict)
    return loaded


def _yaml(relative: str) -> dict[str, Any]:
    loaded = yaml.safe_load((COMPOSE_DIR / relative).read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path → host path (relative to compose/) of a service's bind mounts."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target, *_ = str(volume).split(":")
        if source.startswith("./"):
            mounts[target] = source
    return mounts


def _host_file(service: dict[str, Any], container_path: str) -> Path:
    """The host file a service sees at ``container_path`` through a bind mount (file or dir)."""
    for target, source in _mounts(service).items():
        if container_path == target or container_path.startswith(target.rstrip("/") + "/"):
            return COMPOSE_DIR / source / container_path[len(target) :].lstrip("/")
    raise AssertionError(f"{container_path} is not bind-mounted")


def _listening_ports(name: str, services: dict[str, dict[str, Any]]) -> set[int]:
    """The container ports a service listens on, as its configuration says."""
    service = services[name]
    env = service.get("environment") or {}
    ports = {int(str(p).rsplit(":", 1)[-1]) for p in service.get("ports", [])}
    if (
        name in (*TOPOLOGY_WORKERS, *TRANSFORMS)
        and env.get("SLUICE_WORKER_HEALTH_HOST") == "0.0.0.0"
    ):
        ports.add(int(env["SLUICE_WORKER_HEALTH_PORT"]))  # /healthz, /readyz, /metrics, /stats
    if name == "gateway" and env.get("SLUICE_GATEWAY_HOST") == "0.0.0.0":
        ports.add(int(env["SLUICE_GATEWAY_PORT"]))
    if name == "gateway" and env.get("SLUICE_GATEWAY_METRICS_HOST") == "0.0.0.0":
        ports.add(int(env["SLUICE_GATEWAY_METRICS_PORT"]))  # /metrics, off the public port
    if name in RABBITMQ_NODES:
        plugins = _host_file(service, "/etc/rabbitmq/enabled_plugins").read_text()
        ports.add(5672)
        if "rabbitmq_prometheus" in plugins:
            ports.add(15692)
    return ports


def _dashboard_metrics(dashboard: dict[str, Any]) -> set[str]:
    return {
        name
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        for name in _METRIC.findall(target["expr"])
    }


def _exported_sluice_metrics() -> set[str]:
    """Series names of every metric Sluice exports: the workers' (shared.telemetry.metrics) and the
    gateway's (its uploads, and prometheus-fastapi-instrumentator's ``http_*``)."""
    import prometheus_client

    import services.gateway.app  # noqa: F401  (registers the gateway's metrics)
    import shared.telemetry.metrics  # noqa: F401  (registers the workers' metrics)

    kinds: dict[str, str] = {}
    for metric in prometheus_client.REGISTRY.collect():
        if metric.name.startswith(("sluice_", "http_")):
            suffix = "_total" if metric.type == "counter" else ""
            kinds[metric.name + suffix] = metric.type
    names = set()
    for name, kind in kinds.items():
        names.add(name)
        if kind == "histogram":
            names.update(name + series for series in _HISTOGRAM_SERIES)
    return names


def test_rabbitmq_enables_management_and_per_object_prometheus_metrics(
    services: dict[str, dict[str, Any]],
) -> None:
    rabbitmq = services["rabbitmq"]
    plugins = _host_file(rabbitmq, "/etc/rabbitmq/enabled_plugins").read_text().strip()
    assert re.fullmatch(r"\[[a-z_, ]+\]\.", plugins), plugins
    assert {"rabbitmq_management", "rabbitmq_prometheus"} <= set(
        plugins.strip("[].").replace(" ", "").split(",")
    )
    conf = _host_file(rabbitmq, "/etc/rabbitmq/conf.d/20-sluice.conf").read_text()
    assert "prometheus.return_per_object_metrics = true" in conf.splitlines()


def test_every_scrape_target_is_a_service_listening_on_that_port(
    services: dict[str, dict[str, Any]],
) -> None:
    config = _yaml("prometheus/prometheus.yml")
    targets: set[tuple[str, int]] = set()
    for job in config["scrape_configs"]:
        assert job.get("metrics_path", "/metrics") == "/metrics", job["job_name"]
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                targets.add((host, int(port)))
        for dns in job.get("dns_sd_configs", []):
            assert dns["type"] == "A"
            targets.update((name, int(dns["port"])) for name in dns["names"])
    aliases = {
        alias: name
        for name, service in services.items()
        for alias in (service.get("networks") or {}).get("default", {}).get("aliases", [])
        if alias != "rabbitmq"  # the cluster's shared name: any node
    }
    targets = {(aliases.get(host, host), port) for host, port in targets}
    for host, port in targets:
        assert host in services, f"scrape target {host} is no compose service"
        assert port in _listening_ports(host, services), f"{host} does not listen on {port}"
    scraped = {host for host, _ in targets}
    assert {"gateway", *RABBITMQ_NODES, *TOPOLOGY_WORKERS} <= scraped
    gateway_env = services["gateway"]["environment"]
    assert ("gateway", int(gateway_env["SLUICE_GATEWAY_PORT"])) not in targets  # no /metrics
    assert ("gateway", int(gateway_env["SLUICE_GATEWAY_METRICS_PORT"])) in targets
    assert ("rabbitmq", 15692) in targets


def test_every_metric_a_panel_queries_is_exported(dashboard: dict[str, Any]) -> None:
    queried = _dashboard_metrics(dashboard)
    known = _exported_sluice_metrics() | RABBITMQ_QUEUE_METRICS
    assert queried - known == set()
    # shared/telemetry/metrics.py's gauges are on the dashboard too.
    assert {"sluice_fallback_versions", "sluice_corrupted_versions"} <= queried


def test_dashboard_has_a_row_of_panels_per_stage(dashboard: dict[str, Any]) -> None:
    rows: dict[str, list[dict[str, Any]]] = {}
    current: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            current = rows.setdefault(panel["title"], [])
        else:
            current.append(panel)
    stages = (*TOPOLOGY_WORKERS, *TRANSFORMS, MIRROR)  # the optional stages' rows last
    assert list(rows) == ["Pipeline", *(f"Stage: {stage}" for stage in stages)]
    for stage in stages:
        panels = rows[f"Stage: {stage}"]
        assert len(panels) >= 5
        titles = [panel["title"] for panel in panels]
        assert all(title.startswith(f"{stage}: ") for title in titles), titles
        exprs = " ".join(t["expr"] for panel in panels for t in panel["targets"])
        assert f'queue="${{prefix}}.{stage}"' in exprs  # depth, consumers, rate in
        assert f'stage="{stage}"' in exprs  # handled, failed, p50/p95
        assert "sluice_handling_duration_seconds_bucket" in exprs
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["description"] and panel["targets"], panel["title"]


def test_dashboard_json_is_generated_from_its_builder() -> None:
    builder = _load_build_dashboard()
    text = (COMPOSE_DIR / "grafana" / "dashboards" / "sluice.json").read_text(encoding="utf-8")
    assert text == builder.render(), "run python compose/grafana/build_dashboard.py"


def test_grafana_provisioning_matches_the_mounts(
    services: dict[str, dict[str, Any]], dashboard: dict[str, Any]
) -> None:
    grafana = services["grafana"]
    datasources = _yaml("grafana/provisioning/datasources/prometheus.yml")["datasources"]
    assert _host_file(grafana, "/etc/grafana/provisioning/datasources/prometheus.yml").is_file()
    (datasource,) = datasources
    url = urlsplit(datasource["url"])
    assert url.hostname == "prometheus" and url.port in _listening_ports("prometheus", services)
    uids = {panel["datasource"]["uid"] for panel in dashboard["panels"] if "datasource" in panel}
    assert uids == {datasource["uid"]}

    (provider,) = _yaml("grafana/provisioning/dashboards/sluice.yml")["providers"]
    assert _host_file(grafana, "/etc/grafana/provisioning/dashboards/sluice.yml").is_file()
    dashboards_dir = provider["options"]["path"]
    assert (_host_file(grafana, dashboards_dir) / "sluice.json").is_file()
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert _host_file(grafana, home).is_file()

    prometheus = services["prometheus"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    assert _host_file(prometheus, "/etc/prometheus/prometheus.yml").is_file()
    assert _depends_on(grafana) == {"prometheus": "service_healthy"}


@pytest.mark.parametrize("name", ["rabbitmq", "prometheus", "grafana"])
def test_dashboard_ports_are_bound_to_the_host_only(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    ports = services[name].get("ports", [])
    assert ports, f"{name} publishes nothing"
    assert all(str(port).startswith("127.0.0.1:") for port in ports), ports
    assert "healthcheck" in services[name]


def test_grafana_admin_password_comes_from_the_env_file(
    services: dict[str, dict[str, Any]],
) -> None:
    password = services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
    assert password.startswith("${GRAFANA_ADMIN_PASSWORD:?")


# -- scale: a RabbitMQ cluster, replicas per stage ---------------------------------------------


def test_rabbitmq_is_a_cluster_of_three_nodes_behind_one_name(
    services: dict[str, dict[str, Any]],
) -> None:
    conf = _host_file(services["rabbitmq"], "/etc/rabbitmq/conf.d/10-cluster.conf").read_text()
    listed = re.findall(r"^cluster_formation\.classic_config\.nodes\.\d+ = (\S+)$", conf, re.M)
    assert "cluster_formation.peer_discovery_backend = classic_config" in conf.splitlines()
    hostnames = [services[name]["hostname"] for name in RABBITMQ_NODES]
    assert sorted(listed) == sorted(f"rabbit@{host}" for host in hostnames)
    cookies = {services[name]["environment"]["RABBITMQ_ERLANG_COOKIE"] for name in RABBITMQ_NODES}
    assert len(cookies) == 1
    for name in RABBITMQ_NODES:
        node = services[name]
        assert "rabbitmq" in node["networks"]["default"]["aliases"], name
        assert _host_file(node, "/etc/rabbitmq/conf.d/10-cluster.conf") == _host_file(
            services["rabbitmq"], "/etc/rabbitmq/conf.d/10-cluster.conf"
        )
        data = [str(v).split(":")[0] for v in node["volumes"] if ":/var/lib/rabbitmq" in str(v)]
        assert len(data) == 1, name
    data_volumes = {
        str(v).split(":")[0]
        for name in RABBITMQ_NODES
        for v in services[name]["volumes"]
        if str(v).endswith(":/var/lib/rabbitmq")
    }
    assert len(data_volumes) == 3, "each node needs its own data volume"


@pytest.mark.parametrize(("stage", "at_least"), [("scan", 2), ("store", 2), ("thumbnail", 3)])
def test_stages_run_several_replicas_by_default(
    services: dict[str, dict[str, Any]], example_env: dict[str, str], stage: str, at_least: int
) -> None:
    replicas = _interpolate(str(services[stage]["deploy"]["replicas"]), {})
    assert int(replicas) >= at_least
    with_env = _interpolate(str(services[stage]["deploy"]["replicas"]), example_env)
    assert int(with_env) >= 1
