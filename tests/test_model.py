"""The model contract: JSON Schema published in docs, round trips, evidence hashing."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import jsonschema
import pytest

from auditor.api import scan
from auditor.model import AuditRun, Evidence, Level, Source, canonical_json
from auditor.run import load_run
from auditor.schema import result_schema, result_schema_text
from tests.conftest import DEMO_FLEET, REPO


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[AuditRun, Path]:
    run_dir = tmp_path_factory.mktemp("run")
    return scan(replay=DEMO_FLEET, run_dir=run_dir), run_dir


def test_published_schema_is_current() -> None:
    published = (REPO / "docs" / "audit-run.schema.json").read_text()
    assert published == result_schema_text(), "regenerate with `ccaudit schema`"


def test_result_validates_against_schema(demo_run: tuple[AuditRun, Path]) -> None:
    _, run_dir = demo_run
    data = json.loads((run_dir / "result.json").read_text())
    jsonschema.validate(data, result_schema())
    data["vms"][0]["level"] = "L7"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, result_schema())


def test_stored_run_round_trips(demo_run: tuple[AuditRun, Path]) -> None:
    run, run_dir = demo_run
    loaded = load_run(run_dir)
    assert loaded == run
    assert loaded.vms[0].level in Level
    assert loaded.level_counts() == run.level_counts()


def test_evidence_hashes_are_recomputable() -> None:
    ev = Evidence.from_json(
        {"b": 1, "a": [True, None]}, kind="api_resource", source=Source.CONTROL_PLANE
    )
    assert ev.sha256 == hashlib.sha256(b'{"a":[true,null],"b":1}').hexdigest()
    blob = bytes(range(256))
    bev = Evidence.from_bytes(blob, kind="snp_report", source=Source.GUEST)
    assert bev.encoding == "base64" and base64.b64decode(bev.raw) == blob
    assert bev.sha256 == hashlib.sha256(blob).hexdigest()
    assert canonical_json({"é": 1}) == '{"é":1}'.encode()


def test_every_evidence_reference_resolves(demo_run: tuple[AuditRun, Path]) -> None:
    run, run_dir = demo_run
    for vm in run.vms:
        for shas in vm.evidence.values():
            for sha in shas:
                ev = run.evidence[sha]
                assert ev.ref and (run_dir / "raw" / ev.ref).is_file(), ev.ref
