"""JSON result: the AuditRun as a document, the contract CI pipelines and other tools read.

Top-level keys: `schema_version`, `tool`, `run_id`, `started_at`, `finished_at`, `scope`,
`rule_packs`, `coverage`, `vms`, `evidence`. Each VM carries `provider`, `account`, `region`,
`id`, `name`, `instance_type`, `technology`, `level`, `parties` (party id -> status),
`findings` and `gdpr.provider_can_access` with `blocking_parties`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import BinaryIO

from auditor.model import AuditRun, result_bytes, write_result

FILE = "result.json"


def render_json(run: AuditRun) -> str:
    """`run.model_dump_json(indent=2)` and a newline, made a VM at a time (model.result_chunks),
    so a run read from disk (auditor.runs.spool) is not held whole as objects to write it."""
    return result_bytes(run).decode("utf-8")


def render(run: AuditRun) -> dict[str, bytes]:
    return {FILE: result_bytes(run)}


def writers(run: AuditRun) -> dict[str, Callable[[BinaryIO], object]]:
    """The same bytes written a VM at a time, never whole in memory (`ccaudit scan --format
    json` of a large fleet; reports.writers)."""
    return {FILE: partial(write_result, run)}
