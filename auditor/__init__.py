"""cc-auditor: who can still read the data on a confidential VM.

The public surface is small: `scan` and `load_run`, and the model classes. Everything else is
internal and free to change.

Names are resolved lazily (PEP 562) so that `auditor.guest`, the collector that runs inside a VM
with only the standard library and `cryptography`, can be imported without pydantic, the cloud
SDKs or anything else the auditor side needs.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from auditor._version import __version__

if TYPE_CHECKING:
    from auditor.api import ScanError, load_run, scan
    from auditor.model import (
        VM,
        Answer,
        AuditRun,
        Disk,
        Evidence,
        Finding,
        Level,
        Party,
        PartyStatus,
        Source,
        Status,
        Technology,
        VMResult,
    )

_LAZY: dict[str, str] = {
    "ScanError": "auditor.api",
    "load_run": "auditor.api",
    "scan": "auditor.api",
    **{
        name: "auditor.model"
        for name in (
            "VM",
            "Answer",
            "AuditRun",
            "Disk",
            "Evidence",
            "Finding",
            "Level",
            "Party",
            "PartyStatus",
            "Source",
            "Status",
            "Technology",
            "VMResult",
        )
    },
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'auditor' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "VM",
    "Answer",
    "AuditRun",
    "Disk",
    "Evidence",
    "Finding",
    "Level",
    "Party",
    "PartyStatus",
    "ScanError",
    "Source",
    "Status",
    "Technology",
    "VMResult",
    "__version__",
    "load_run",
    "scan",
]
