"""The HTTP ingest gateway: authenticated uploads into the spool, published as ``file.received``.

Endpoints (see ``docs/gateway.md``): ``POST /v1/files``, ``GET /v1/files``,
``GET /v1/files/{file_id}``, ``GET /v1/files/{file_id}/content``, ``GET /healthz``,
``GET /readyz``, ``GET /openapi.json``.
"""
