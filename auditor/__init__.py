"""cc-auditor: who can still read the data on a confidential VM.

The public surface is small: `scan` and `load_run`, and the model classes. Everything else is
internal and free to change.
"""

from auditor._version import __version__
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
