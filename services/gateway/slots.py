"""A cap on the uploads each owner has in progress on one gateway process.

One key streaming many uploads at once holds as many spool files, connections and body reads;
past ``SLUICE_GATEWAY_MAX_CONCURRENT_UPLOADS_PER_OWNER`` its next upload is answered ``429
too_many_uploads`` with ``Retry-After`` as soon as the key is verified, before any of its body
is read. A slot is given back however the upload ends: 202, a refusal, a timeout, a client
that goes away, a cancelled request.

The count lives in the process: N gateway processes behind a load balancer let an owner have
up to N times the cap in progress.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from services.gateway.errors import RETRY_AFTER_S, ApiError


class OwnerSlots:
    """At most ``per_owner`` uploads (or ``what``: renders) in progress per owner (one event
    loop; no lock needed, since nothing awaits between the check and the count); past it 429
    ``too_many_{what}``."""

    def __init__(self, per_owner: int, what: str = "uploads") -> None:
        self.per_owner = per_owner
        self.what = what
        self._held: dict[str, int] = {}

    def held(self, owner: str) -> int:
        """Uploads of ``owner`` in progress now."""
        return self._held.get(owner, 0)

    @contextlib.contextmanager
    def hold(self, owner: str) -> Iterator[None]:
        """One of ``owner``'s slots for the duration of the block.

        Raises:
            ApiError: 429 ``too_many_uploads`` (``Retry-After``) when all are taken.
        """
        held = self.held(owner)
        if held >= self.per_owner:
            raise ApiError(
                429,
                f"too_many_{self.what}",
                f"{held} {self.what} of this owner are in progress, the most this gateway takes "
                "at once; retry when one has finished",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        self._held[owner] = held + 1
        try:
            yield
        finally:
            left = self._held[owner] - 1
            if left:
                self._held[owner] = left
            else:
                del self._held[owner]
