"""Single source of the tool version, recorded in every AuditRun."""

__version__ = "0.1.0"
