"""Parquet: the same three tables as the CSV format (`auditor.reports.tables`), typed.

One file per table under `parquet/`. The Arrow schema is fixed by `tables.COLUMNS`, not
inferred from the rows, so every run (including one without VMs or findings) has the same
schema: text as `string`, `gap_count` as `int64`, enumerations as dictionary-encoded strings
(pandas reads them back as categoricals), multi-valued columns as `list<string>`. The run id
and the tool version are stored in the file metadata. pandas and pyarrow are imported only
when this format is asked for.
"""

from __future__ import annotations

import io
from typing import Any

from auditor.model import AuditRun
from auditor.reports import tables

PARQUET_DIR = "parquet"


def arrow_schema(name: str, metadata: dict[str, str] | None = None) -> Any:
    """The pyarrow schema of one table."""
    import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]

    fields = []
    for col in tables.COLUMNS[name]:
        if col.kind == "text":
            typ = pa.string()
        elif col.kind == "int":
            typ = pa.int64()
        elif col.kind == "category":
            typ = pa.dictionary(pa.int32(), pa.string(), ordered=col.ordered)
        else:
            typ = pa.list_(pa.string())
        fields.append(pa.field(col.name, typ, nullable=col.kind not in ("int", "category")))
    return pa.schema(fields, metadata=metadata)


def to_parquet(name: str, frame: Any, metadata: dict[str, str]) -> bytes:
    """One DataFrame from `tables.frames` as Parquet bytes."""
    import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]
    import pyarrow.parquet as pq  # type: ignore[import-untyped,unused-ignore]

    schema = arrow_schema(name)
    table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    merged = dict(table.schema.metadata or {})
    merged.update({k.encode(): v.encode() for k, v in metadata.items()})
    table = table.replace_schema_metadata(merged)
    buf = io.BytesIO()
    pq.write_table(table, buf)  # snappy: what most readers (Spark, DuckDB, Power BI) expect
    return buf.getvalue()


def render(run: AuditRun) -> dict[str, bytes]:
    """`parquet/vms.parquet`, `parquet/parties.parquet`, `parquet/findings.parquet`."""
    metadata = {
        "cc-auditor.run_id": run.run_id,
        "cc-auditor.tool_version": run.tool.version,
        "cc-auditor.schema_version": run.schema_version,
    }
    # a table at a time: its rows, its frame and its file, then the next (not all three held)
    return {
        f"{PARQUET_DIR}/{name}.parquet": to_parquet(
            name, tables.frame(name, list(tables.table_rows(run, name))), metadata
        )
        for name in tables.TABLES
    }
