"""Storage reconciliation (seed 004): the database and the bucket checked against each other.

=======  =====================================================================================
module   what it holds
=======  =====================================================================================
report   what a run reports (:class:`ReconcileReport`, its findings and counters) and what it
         is asked to do (:class:`ReconcileOptions`)
scan     the run, :func:`reconcile`: a merge-join of the bucket listing and the expected keys,
         in bounded memory; orphans deleted only when asked
fix      ``--fix``, :func:`mark_corrupted`: each missing or damaged original's version marked
         ``corrupted`` by publishing ``file.corrupted`` (only the commit stage writes file state)
=======  =====================================================================================

``sluice reconcile`` (``services/cli/reconcile.py``) drives them; ``docs/reconciliation.md``
says what is checked and why.
"""

from shared.ops.reconcile.fix import FixOutcome, FixResult, mark_corrupted
from shared.ops.reconcile.report import (
    COUNTERS,
    ContentMismatch,
    Findings,
    ListingOrder,
    MissingObject,
    Orphan,
    ReconcileOptions,
    ReconcileReport,
)
from shared.ops.reconcile.scan import reconcile

__all__ = [
    "COUNTERS",
    "ContentMismatch",
    "Findings",
    "FixOutcome",
    "FixResult",
    "ListingOrder",
    "MissingObject",
    "Orphan",
    "ReconcileOptions",
    "ReconcileReport",
    "mark_corrupted",
    "reconcile",
]
