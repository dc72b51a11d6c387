"""The run as three tables (vms, parties, findings), and the CSV format built from them.

`frames(run)` gives pandas DataFrames shared by CSV, Parquet and notebooks:

* `vms`: one row per VM: provider, account, region, zone, id, name, instance_type, technology,
  level, provider_can_access, blocking_parties, gap_count, run_id.
* `parties`: one row per VM x party: the VM key (provider, account, region, id), party, status,
  reason, rules, evidence (sha256 of each evidence item).
* `findings`: one row per finding: the VM key, rule_id, party, status, severity, title, reason,
  remediation, references, evidence.

Columns come in a fixed order (`COLUMNS`) with fixed types: text as pandas `string`,
`gap_count` as int64, enumerations (technology, level, provider_can_access, party, status,
severity) as categoricals whose categories are the whole enumeration in its own order (level
and severity ordered), so two runs give the same schema. Multi-valued columns (blocking_parties,
rules, evidence, references) hold lists of strings. Rows are sorted by VM key
(provider, account, region, id), then party in `Party` order, then rule id.

CSV (`render`): UTF-8 without BOM, a header row, RFC 4180 quoting and CRLF line ends. Lists
are joined with "," (identifiers: parties, rule ids, sha256s) or "; " (references, which are
free text). Missing values are empty cells. VM names, tags and ids come from the cloud and are
untrusted: any text cell starting with =, +, -, @, tab or carriage return gets a leading single
quote so a spreadsheet shows it as text instead of running it as a formula.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import partial
from typing import TYPE_CHECKING, Any, BinaryIO, Literal

from auditor.model import (
    Answer,
    AuditRun,
    Finding,
    Level,
    Party,
    PartyStatus,
    Severity,
    Status,
    Technology,
    VMResult,
)

if TYPE_CHECKING:
    import pandas  # type: ignore[import-untyped,unused-ignore]

Kind = Literal["text", "int", "category", "list"]

#: Columns that identify a VM in every table (`VM.key` is these joined with "/").
KEY: tuple[str, ...] = ("provider", "account", "region", "id")
#: The key, plus the VM's name: every row of `parties` and `findings` says which VM it is about
#: in words too (a notebook filter on `name` needs no join with `vms`).
TABLES: tuple[str, ...] = ("vms", "parties", "findings")
CSV_DIR = "csv"
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class Column:
    """One column: its name, type and, for categoricals, the categories in order."""

    name: str
    kind: Kind = "text"
    categories: tuple[str, ...] = ()
    ordered: bool = False
    csv_separator: str = ","


def _enum(name: str, enum: type[StrEnum], ordered: bool = False) -> Column:
    return Column(name, "category", tuple(m.value for m in enum), ordered)


_KEY_COLUMNS = (*(Column(name) for name in KEY), Column("name"))

COLUMNS: dict[str, tuple[Column, ...]] = {
    "vms": (
        Column("provider"),
        Column("account"),
        Column("region"),
        Column("zone"),
        Column("id"),
        Column("name"),
        Column("instance_type"),
        Column("cluster"),
        Column("node_pool"),
        _enum("technology", Technology),
        _enum("level", Level, ordered=True),
        _enum("provider_can_access", Answer),
        Column("blocking_parties", "list"),
        Column("gap_count", "int"),
        Column("run_id"),
    ),
    "parties": (
        *_KEY_COLUMNS,
        _enum("party", Party),
        _enum("status", Status),
        Column("reason"),
        Column("rules", "list"),
        Column("evidence", "list"),
    ),
    "findings": (
        *_KEY_COLUMNS,
        Column("rule_id"),
        _enum("party", Party),
        _enum("status", Status),
        _enum("severity", Severity, ordered=True),
        Column("title"),
        Column("reason"),
        Column("remediation"),
        Column("references", "list", csv_separator="; "),
        Column("evidence", "list"),
    ),
}

_PARTY_ORDER = {p: i for i, p in enumerate(Party)}


def sorted_vms(run: AuditRun) -> Sequence[VMResult]:
    """The run's VMs in report order: by provider, account, region, id. A stored run whose VMs
    are already in that order (`runs.spool.StoredVMs.in_run_order`: as a scan writes them) is
    given as it is, so a report reads its VMs one at a time instead of holding them all."""
    if getattr(run.vms, "in_run_order", False):
        return run.vms
    return sorted(run.vms, key=lambda vm: (vm.provider, vm.account, vm.region, vm.id))


def places_by_account(vms: Iterable[VMResult]) -> dict[tuple[str, str], list[int]]:
    """Where each (provider, account)'s VMs are in `vms`: one pass, keeping only places, so a
    report can then read one account's VMs at a time (`vms_at`)."""
    places: dict[tuple[str, str], list[int]] = {}
    for n, vm in enumerate(vms):
        places.setdefault((vm.provider, vm.account), []).append(n)
    return places


def vms_at(vms: Sequence[VMResult], places: list[int]) -> list[VMResult]:
    """The VMs at these places, read again (a report that needs one account's VMs together
    holds only those); a slice when they follow each other: one read of a stored run's file."""
    if places and places[-1] - places[0] == len(places) - 1:
        return list(vms[places[0] : places[-1] + 1])
    return [vms[n] for n in places]


def sorted_findings(vm: VMResult) -> list[Finding]:
    """A VM's findings in report order: by party (in `Party` order), then rule id."""
    return sorted(vm.findings, key=lambda f: (_PARTY_ORDER[f.party], f.rule_id))


#: Findings the findings exports carry (SARIF, OCSF, ASFF): a party can reach the plaintext, or
#: the evidence to decide is missing. EXCLUDED and CLAIMED_EXCLUDED findings are not exported.
FAILING = (Status.CAN_ACCESS, Status.UNDETERMINED)


def failing_findings(run: AuditRun) -> Iterator[tuple[VMResult, Finding]]:
    """Every failing finding of the run, in report order (VMs, then party and rule)."""
    for vm in sorted_vms(run):
        for finding in sorted_findings(vm):
            if finding.status in FAILING:
                yield vm, finding


def party_rows(vm: VMResult) -> list[PartyStatus]:
    """One status per party in `Party` order; a party with a bare status gets no reason."""
    rows: list[PartyStatus] = []
    for party in Party:
        ps = vm.party_status.get(party)
        if ps is None and party in vm.parties:
            ps = PartyStatus(party=party, status=vm.parties[party], reason="")
        if ps is not None:
            rows.append(ps)
    return rows


def _key(vm: VMResult) -> list[Any]:
    return [vm.provider, vm.account, vm.region, vm.id, vm.name]


def rows(run: AuditRun) -> dict[str, list[list[Any]]]:
    """The three tables as plain Python rows (enum values as strings), columns as `COLUMNS`."""
    return {name: list(table_rows(run, name)) for name in TABLES}


def table_rows(run: AuditRun, name: str) -> Iterator[list[Any]]:
    """One table's rows, a VM at a time (CSV is written so: a large run is never held)."""
    for vm in sorted_vms(run):
        if name == "vms":
            yield vm_row(run, vm)
        elif name == "parties":
            yield from vm_party_rows(vm)
        else:
            yield from vm_finding_rows(vm)


def vm_row(run: AuditRun, vm: VMResult) -> list[Any]:
    """One VM's row of the `vms` table."""
    blocking = sorted(set(vm.gdpr.blocking_parties), key=_PARTY_ORDER.__getitem__)
    return [
        vm.provider,
        vm.account,
        vm.region,
        vm.zone,
        vm.id,
        vm.name,
        vm.instance_type,
        vm.cluster,
        vm.node_pool,
        vm.technology.value,
        vm.level.value,
        vm.gdpr.provider_can_access.value,
        [p.value for p in blocking],
        len(vm.gaps),
        run.run_id,
    ]


def vm_party_rows(vm: VMResult) -> list[list[Any]]:
    """One VM's rows of the `parties` table."""
    return [
        [*_key(vm), ps.party.value, ps.status.value, ps.reason, list(ps.rules), list(ps.evidence)]
        for ps in party_rows(vm)
    ]


def vm_finding_rows(vm: VMResult) -> list[list[Any]]:
    """One VM's rows of the `findings` table."""
    return [
        [
            *_key(vm),
            f.rule_id,
            f.party.value,
            f.status.value,
            f.severity.value,
            f.title,
            f.reason,
            f.remediation,
            list(f.references),
            list(f.evidence),
        ]
        for f in sorted_findings(vm)
    ]


def _series(col: Column, values: list[Any]) -> Any:
    import pandas as pd  # type: ignore[import-untyped,unused-ignore]

    if col.kind == "text":
        return pd.Series(values, dtype="string", name=col.name)
    if col.kind == "int":
        return pd.Series(values, dtype="int64", name=col.name)
    if col.kind == "category":
        dtype = pd.CategoricalDtype(categories=list(col.categories), ordered=col.ordered)
        return pd.Series(values, dtype=dtype, name=col.name)
    return pd.Series(values, dtype="object", name=col.name)


def frame(name: str, table: Sequence[Sequence[Any]]) -> pandas.DataFrame:
    """One table as a typed DataFrame (see `COLUMNS`)."""
    import pandas as pd  # type: ignore[import-untyped,unused-ignore]

    columns = COLUMNS[name]
    data = {col.name: _series(col, [row[i] for row in table]) for i, col in enumerate(columns)}
    df: pandas.DataFrame = pd.DataFrame(data, columns=[c.name for c in columns])
    return df


def frames(run: AuditRun) -> dict[str, pandas.DataFrame]:
    """`vms`, `parties` and `findings` as typed pandas DataFrames."""
    return {name: frame(name, table) for name, table in rows(run).items()}


def neutralise(text: str) -> str:
    """Text a spreadsheet will not evaluate: formula-like cells get a leading quote."""
    return "'" + text if text.startswith(_FORMULA_START) else text


def _cell(col: Column, value: Any) -> str:
    if value is None:
        return ""
    if col.kind == "int":
        return str(int(value))
    if col.kind == "list":
        return neutralise(col.csv_separator.join(str(v) for v in value))
    return neutralise(str(value))


def to_csv(name: str, table: Iterable[Sequence[Any]]) -> bytes:
    """One table as RFC 4180 CSV bytes (UTF-8, header row, CRLF)."""
    out = io.BytesIO()
    write_csv(name, table, out)
    return out.getvalue()


def write_csv(name: str, table: Iterable[Sequence[Any]], out: BinaryIO) -> None:
    """One table as RFC 4180 CSV (UTF-8, header row, CRLF) into `out`, a row at a time."""
    columns = COLUMNS[name]
    text = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=False)
    try:
        writer = csv.writer(text, dialect="excel", lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
        writer.writerow([c.name for c in columns])
        for row in table:
            writer.writerow([_cell(col, value) for col, value in zip(columns, row, strict=True)])
        text.flush()
    finally:
        text.detach()  # `out` stays open: it is the caller's


def render(run: AuditRun) -> dict[str, bytes]:
    """`csv/vms.csv`, `csv/parties.csv`, `csv/findings.csv`."""
    return {f"{CSV_DIR}/{name}.csv": to_csv(name, table_rows(run, name)) for name in TABLES}


def writers(run: AuditRun) -> dict[str, Callable[[BinaryIO], object]]:
    """The same files written a row at a time (reports.writers): a stored run's VMs are read
    one at a time, once per table, and no table is held whole."""
    return {f"{CSV_DIR}/{name}.csv": partial(_write_table, run, name) for name in TABLES}


def _write_table(run: AuditRun, name: str, out: BinaryIO) -> None:
    write_csv(name, table_rows(run, name), out)
