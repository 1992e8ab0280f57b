"""Resumable uploads over tus 1.0 at ``/v1/uploads/`` (docs/uploads.md).

A well-kept tus server for FastAPI exists (``tuspyserver``), but it keeps uploads in a local
directory of its own and hands the finished file to a hook: it cannot keep them on the S3
spool, so offsets would not be shared by gateways on several hosts, and its own checks stand
where the spool port, the upload policy and the confirmed publish of ``/v1/files`` must. This
package implements the protocol on those instead: :mod:`.headers` (the protocol's headers),
:mod:`.routes` (the endpoints), :mod:`.transfer` (chunks and completion), :mod:`.edge` (CORS,
``Tus-Resumable``, the cleaner); the uploads live in :mod:`shared.adapters.resumable`.
"""

from services.gateway.tus.edge import TusEdge, clean_periodically
from services.gateway.tus.routes import router

__all__ = ["TusEdge", "clean_periodically", "router"]
