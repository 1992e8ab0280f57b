"""GDPR operations on an owner (seed 000: deletion, export, minimisation; docs/gdpr.md):
:func:`erase_owner` (``sluice gdpr erase``, ``POST /ops/v1/gdpr/erasures``) and
:func:`export_owner` (``sluice gdpr export``)."""

from shared.ops.gdpr.erase import ErasureReceipt, check_owner_name, erase_owner
from shared.ops.gdpr.export import ExportSummary, export_owner

__all__ = ["ErasureReceipt", "ExportSummary", "check_owner_name", "erase_owner", "export_owner"]
