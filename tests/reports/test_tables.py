"""CSV and Parquet: the three tables parse back with the same rows, typed, and injection-safe."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from auditor import reports
from auditor.api import scan
from auditor.model import AuditRun, Party
from auditor.reports import parquet, tables

DEMO_FLEET = Path(__file__).resolve().parents[2] / "examples" / "demo-fleet"
UNTRUSTED_NAMES = [
    '=HYPERLINK("x")',
    "+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(A1:A2)",
    "\t=1+1",
]


@pytest.fixture(scope="module")
def demo_run() -> AuditRun:
    return scan(replay=DEMO_FLEET)


def _csv_rows(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8"), newline="")))


def _counts(run: AuditRun) -> dict[str, int]:
    return {
        "vms": len(run.vms),
        "parties": len(run.vms) * len(Party),
        "findings": sum(len(vm.findings) for vm in run.vms),
    }


def test_frames_have_one_row_per_vm_party_and_finding(demo_run: AuditRun) -> None:
    frames = tables.frames(demo_run)
    assert list(frames) == list(tables.TABLES)
    for name, expected in _counts(demo_run).items():
        df = frames[name]
        assert len(df) == expected, name
        assert list(df.columns) == [c.name for c in tables.COLUMNS[name]]
    assert frames["parties"]["party"].value_counts().to_dict() == dict.fromkeys(
        (p.value for p in Party), len(demo_run.vms)
    )


def test_frames_are_typed(demo_run: AuditRun) -> None:
    frames = tables.frames(demo_run)
    vms = frames["vms"]
    assert isinstance(vms["level"].dtype, pd.CategoricalDtype)
    assert vms["level"].dtype.ordered
    assert list(vms["level"].cat.categories) == ["L0", "L1", "L2", "L3", "L4"]
    assert vms["gap_count"].dtype == "int64"
    assert pd.api.types.is_string_dtype(vms["name"].dtype)
    findings = frames["findings"]
    assert list(findings["severity"].cat.categories) == [
        "info",
        "low",
        "medium",
        "high",
        "critical",
    ]
    assert findings["severity"].max() in {"high", "critical"}  # ordered: comparisons work
    assert all(isinstance(v, list) for v in findings["references"])
    assert vms["blocking_parties"].map(len).sum() > 0


def test_row_order_is_stable(demo_run: AuditRun) -> None:
    vms = tables.frames(demo_run)["vms"]
    keys = list(zip(*(vms[k] for k in tables.KEY), strict=True))
    assert keys == sorted(keys)
    shuffled = demo_run.model_copy(update={"vms": list(reversed(demo_run.vms))})
    assert tables.render(shuffled) == tables.render(demo_run)
    assert tables.rows(shuffled) == tables.rows(demo_run)


def test_csv_parses_back_with_csv_and_pandas(demo_run: AuditRun) -> None:
    files = reports.render(demo_run, "csv")
    assert sorted(files) == ["csv/findings.csv", "csv/parties.csv", "csv/vms.csv"]
    for name, expected in _counts(demo_run).items():
        data = files[f"csv/{name}.csv"]
        assert not data.startswith(b"\xef\xbb\xbf")
        assert b"\r\n" in data and b"\n" not in data.replace(b"\r\n", b"")
        header = [c.name for c in tables.COLUMNS[name]]
        parsed = _csv_rows(data)
        assert len(parsed) == expected
        assert parsed and list(parsed[0]) == header
        df = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
        assert len(df) == expected
        assert list(df.columns) == header
    vms = _csv_rows(files["csv/vms.csv"])
    first = tables.sorted_vms(demo_run)[0]
    assert vms[0]["id"] == first.id
    assert vms[0]["run_id"] == demo_run.run_id
    assert vms[0]["blocking_parties"] == ",".join(p.value for p in first.gdpr.blocking_parties)
    findings = _csv_rows(files["csv/findings.csv"])
    assert any("; " in row["references"] for row in findings)


def _renamed(run: AuditRun, names: list[str]) -> AuditRun:
    vms = [
        vm.model_copy(update={"name": names[i]}) if i < len(names) else vm
        for i, vm in enumerate(tables.sorted_vms(run))
    ]
    return run.model_copy(update={"vms": vms})


def test_csv_neutralises_formula_injection_in_vm_names(demo_run: AuditRun) -> None:
    run = _renamed(demo_run, UNTRUSTED_NAMES)
    data = tables.render(run)["csv/vms.csv"]
    by_id = {row["id"]: row["name"] for row in _csv_rows(data)}
    for vm, name in zip(tables.sorted_vms(run), UNTRUSTED_NAMES, strict=False):
        assert by_id[vm.id] == "'" + name
    df = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
    assert '\'=HYPERLINK("x")' in set(df["name"])
    assert not any(
        str(cell).startswith(tables._FORMULA_START) for col in df.columns for cell in df[col]
    )
    # The typed frames keep the name as the cloud gave it; only the CSV cell is neutralised.
    assert '=HYPERLINK("x")' in set(tables.frames(run)["vms"]["name"])


def test_csv_quotes_commas_quotes_and_newlines(demo_run: AuditRun) -> None:
    name = 'a, "quoted"\nname'
    run = _renamed(demo_run, [name])
    rows = _csv_rows(tables.render(run)["csv/vms.csv"])
    assert rows[0]["name"] == name


def test_parquet_reads_back_with_the_same_rows(demo_run: AuditRun) -> None:
    files = reports.render(demo_run, "parquet")
    assert sorted(files) == [
        "parquet/findings.parquet",
        "parquet/parties.parquet",
        "parquet/vms.parquet",
    ]
    rows = tables.rows(demo_run)
    for name, expected in _counts(demo_run).items():
        table = pq.read_table(io.BytesIO(files[f"parquet/{name}.parquet"]))
        assert table.num_rows == expected
        assert table.column_names == [c.name for c in tables.COLUMNS[name]]
        assert table.schema.metadata[b"cc-auditor.run_id"] == demo_run.run_id.encode()
        back = [list(r.values()) for r in table.to_pylist()]
        assert back == rows[name]
    vms = pq.read_table(io.BytesIO(files["parquet/vms.parquet"]))
    assert pa.types.is_dictionary(vms.schema.field("level").type)
    assert pa.types.is_list(vms.schema.field("blocking_parties").type)
    df = vms.to_pandas()
    assert list(df["level"].cat.categories) == ["L0", "L1", "L2", "L3", "L4"]


def test_parquet_schema_is_fixed_even_without_rows(demo_run: AuditRun) -> None:
    empty = demo_run.model_copy(update={"vms": []})
    files = parquet.render(empty)
    for name in tables.TABLES:
        table = pq.read_table(io.BytesIO(files[f"parquet/{name}.parquet"]))
        assert table.num_rows == 0
        assert table.schema.remove_metadata() == parquet.arrow_schema(name)
    full = pq.read_table(io.BytesIO(parquet.render(demo_run)["parquet/findings.parquet"]))
    assert full.schema.remove_metadata() == parquet.arrow_schema("findings")
    assert tables.render(empty)["csv/vms.csv"].count(b"\r\n") == 1


def test_renders_are_deterministic(demo_run: AuditRun) -> None:
    assert tables.render(demo_run) == tables.render(demo_run)
    assert parquet.render(demo_run) == parquet.render(demo_run)
