"""Settings: the source documents' S3 names work as written; bad values name their variable."""

from __future__ import annotations

import pytest

from shared.errors import ConfigError
from shared.settings import AmqpSettings, S3Settings, Settings, ThumbnailSettings, load


def test_s3_names_from_seed_000(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S3_ENDPOINT", "http://minio:9000")
    monkeypatch.setenv("S3_ACCESS_KEY", "ak")
    monkeypatch.setenv("S3_SECRET_KEY", "sk")
    monkeypatch.setenv("S3_BUCKET_NAME", "photos-prod")
    monkeypatch.setenv("S3_REGION", "eu-west-3")
    monkeypatch.setenv("S3_FORCE_PATH_STYLE", "false")
    s3 = load(S3Settings)
    assert (s3.endpoint, s3.access_key, s3.secret_key) == ("http://minio:9000", "ak", "sk")
    assert (s3.bucket_name, s3.region, s3.force_path_style) == ("photos-prod", "eu-west-3", False)


def test_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLUICE_AMQP_PREFETCH_COUNT", "0")
    with pytest.raises(ConfigError, match="SLUICE_AMQP_PREFETCH_COUNT"):
        load(AmqpSettings)


def test_all_groups_load_with_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLUICE_THUMBNAIL_SIZES_PX", "[1024, 256, 256]")
    settings = Settings.from_env()
    assert settings.thumbnail.sizes_px == (256, 1024)
    assert settings.gateway.max_image_bytes == 10 * 1024 * 1024
    assert settings.gateway.max_pdf_bytes == 5 * 1024 * 1024


def test_thumbnail_sizes_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLUICE_THUMBNAIL_SIZES_PX", "[0]")
    with pytest.raises(ConfigError, match="SLUICE_THUMBNAIL_SIZES_PX"):
        load(ThumbnailSettings)


def test_configuration_doc_lists_every_variable() -> None:
    from pathlib import Path

    from shared.settings import environment_reference

    doc = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    assert environment_reference() in doc, "docs/configuration.md is stale"
