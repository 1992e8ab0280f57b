"""Where ``sluice status`` looks: management credentials and virtual host from the AMQP URL,
worker URLs from the settings."""

from __future__ import annotations

import pytest

from shared.errors import ConfigError
from shared.ops.pipeline import _amqp_parts, default_worker_urls
from shared.settings import AmqpSettings, Settings, StatusSettings, WorkerSettings, load


def settings(**groups: object) -> Settings:
    """Default settings with the given groups replaced (``amqp=AmqpSettings(...)``, ...)."""
    result = Settings.from_env()
    for name, group in groups.items():
        setattr(result, name, group)
    return result


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("amqp://guest:guest@127.0.0.1:5672/", ("guest", "guest", "/")),
        ("amqp://127.0.0.1", ("guest", "guest", "/")),
        ("amqp://ops%40x:p%2Fw@rabbit:5672/prod", ("ops@x", "p/w", "prod")),
        ("amqp://u:p@rabbit/%2Fteam", ("u", "p", "/team")),
    ],
)
def test_credentials_and_vhost_come_from_the_amqp_url(
    url: str, expected: tuple[str, str, str]
) -> None:
    assert _amqp_parts(settings(amqp=AmqpSettings(url=url))) == expected


def test_worker_urls_default_to_the_local_health_port() -> None:
    assert default_worker_urls(settings(worker=WorkerSettings(health_port=8081))) == [
        "http://127.0.0.1:8081"
    ]
    assert default_worker_urls(settings(worker=WorkerSettings(health_port=None))) == []
    explicit = StatusSettings(worker_urls=("http://scan:8081/", "http://store:8081"))
    assert default_worker_urls(settings(status=explicit, worker=WorkerSettings(health_port=1))) == [
        "http://scan:8081",
        "http://store:8081",
    ]


def test_worker_urls_must_be_http(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLUICE_STATUS_WORKER_URLS", '["scan:8081"]')
    with pytest.raises(ConfigError, match="SLUICE_STATUS_WORKER_URLS"):
        load(StatusSettings)
