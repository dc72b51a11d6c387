"""cc-auditor: who can still read the data on a confidential VM.

The public surface is small: `scan`, `load_run` and `diff`, and the model classes. Everything
else is internal and free to change. `scan` and `load_run` return an `auditor.notebook.Run`: the
`AuditRun` (as `.model`) with pandas DataFrames `vms`, `parties`, `findings`, `evidence` and
rich HTML for notebooks; `auditor.api` has the same functions returning the `AuditRun` itself.

Names are resolved lazily (PEP 562) so that `auditor.guest`, the collector that runs inside a VM
with only the standard library and `cryptography`, can be imported without pydantic, the cloud
SDKs or anything else the auditor side needs.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from auditor._version import __version__

if TYPE_CHECKING:
    from auditor.api import ScanError
    from auditor.model import (
        PROVIDER_PARTIES,
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
    from auditor.notebook import Run, RunVM, demo, diff, load_run, scan
    from auditor.runs.drift import RunDiff

_LAZY: dict[str, str] = {
    "ScanError": "auditor.api",
    "load_run": "auditor.notebook",
    "scan": "auditor.notebook",
    "demo": "auditor.notebook",
    "diff": "auditor.notebook",
    "Run": "auditor.notebook",
    "RunVM": "auditor.notebook",
    "RunDiff": "auditor.runs.drift",
    **{
        name: "auditor.model"
        for name in (
            "VM",
            "PROVIDER_PARTIES",
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
    "PROVIDER_PARTIES",
    "VM",
    "Answer",
    "AuditRun",
    "Disk",
    "Evidence",
    "Finding",
    "Level",
    "Party",
    "PartyStatus",
    "Run",
    "RunDiff",
    "RunVM",
    "ScanError",
    "Source",
    "Status",
    "Technology",
    "VMResult",
    "__version__",
    "demo",
    "diff",
    "load_run",
    "scan",
]
