"""The published JSON Schema of the result document (`result.json`, `--format json`)."""

from __future__ import annotations

import json
from typing import Any

from auditor.model import SCHEMA_VERSION, AuditRun


def result_schema() -> dict[str, Any]:
    schema = AuditRun.model_json_schema(mode="serialization")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://cc-auditor.dev/schema/audit-run-v{SCHEMA_VERSION}.json"
    return schema


def result_schema_text() -> str:
    return json.dumps(result_schema(), indent=2, sort_keys=True) + "\n"
