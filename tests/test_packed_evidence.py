"""JSON evidence is held as its canonical bytes during a scan, and behaves as the parsed value.

A fleet's evidence is ten times smaller packed than as Python objects (benchmarks/RESULTS.md);
nothing that reads, compares, copies, pickles, hashes or writes evidence may tell the difference.
"""

from __future__ import annotations

import copy
import hashlib
import json
import pickle

from auditor.model import Evidence, PackedJson, Source, canonical_json

RAW = {"b": [1, 1.5, True, None, "é\u2028"], "a": {"z": "x", "y": 0}}


def _evidence() -> Evidence:
    return Evidence.from_json(RAW, kind="instance", source=Source.CONTROL_PLANE, call="c")


def test_from_json_packs_and_reads_back_the_parsed_value() -> None:
    ev = _evidence()
    assert isinstance(ev.__dict__["raw"], PackedJson)  # held packed
    assert ev.raw == RAW and isinstance(ev.raw, dict)  # read parsed
    assert ev.sha256 == hashlib.sha256(canonical_json(RAW)).hexdigest()
    assert ev.raw is not ev.raw  # parsed per read: a caller's change does not stick
    ev.raw["a"] = "changed"
    assert ev.raw == RAW


def test_packed_evidence_serialises_as_the_parsed_value() -> None:
    ev = _evidence()
    parsed = ev.model_copy(update={"raw": ev.raw})
    assert not isinstance(parsed.__dict__["raw"], PackedJson)
    assert ev.model_dump_json(indent=2) == parsed.model_dump_json(indent=2)
    assert ev.model_dump() == parsed.model_dump()
    assert json.loads(ev.model_dump_json())["raw"] == RAW


def test_packed_and_parsed_evidence_compare_equal_and_survive_copies() -> None:
    ev = _evidence()
    loaded = Evidence.model_validate_json(ev.model_dump_json())  # as load_run reads it
    assert not isinstance(loaded.__dict__["raw"], PackedJson)
    assert ev == loaded and loaded == ev
    assert pickle.loads(pickle.dumps(ev)) == ev  # how collection workers send it back
    assert copy.deepcopy(ev) == ev
    other = Evidence.from_json({**RAW, "c": 1}, kind="instance", source=Source.CONTROL_PLANE)
    assert other != ev and other.model_copy(update={"sha256": ev.sha256}) != ev


def test_assigning_raw_replaces_the_packed_value() -> None:
    ev = _evidence()
    ev.raw = {"new": True}
    assert ev.raw == {"new": True} and ev.__dict__["raw"] == {"new": True}
    assert json.loads(ev.model_dump_json())["raw"] == {"new": True}
