"""The minimum SEV-SNP TCB per product, as data: which AMD bulletin each minimum comes from.

A genuine AMD-signed report can still come from a platform with known, fixed vulnerabilities
(CacheWarp, BadRAM, EntrySign...). The shipped table (`tcb_minimums.yaml`) records, per product
line, the SPL values and SEV firmware version each bulletin's fix needs, with its source and how
sure we are; users replace it with their own file when AMD publishes more. Loading validates the
file and names the row and field of any error.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from auditor.verify.amd import PRODUCTS, TcbVersion

DEFAULT_TABLE = Path(__file__).parent / "tcb_minimums.yaml"
SCHEMA_VERSION = 1
COMPONENTS = ("bootloader", "tee", "snp", "microcode", "fmc")
CONFIDENCE = ("confirmed", "unconfirmed")
_ROW_KEYS = {"bulletin", "cve", "title", "min", "min_firmware", "source", "confidence"}
_BULLETIN = re.compile(r"AMD-SB-\d{4,5}")
_CVE = re.compile(r"CVE-\d{4}-\d{4,}")
_FIRMWARE = re.compile(r"(\d{1,3})\.(\d{1,3})\.(\d{1,3})")


class TcbTableError(ValueError):
    """A TCB minimum table that cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class TcbMinimum:
    """One bulletin's fix for one product: SPL minimums and/or a minimum SEV firmware."""

    bulletin: str
    cve: str
    title: str
    min: dict[str, int]
    min_firmware: tuple[int, int, int] | None
    source: str
    confidence: str


@dataclass(frozen=True)
class TcbTable:
    schema_version: int
    table_version: str
    products: dict[str, tuple[TcbMinimum, ...]]
    path: str


@dataclass(frozen=True)
class TcbShortfall:
    """A component of a report below a bulletin's minimum."""

    component: str  # a TCB component, or "firmware"
    reported: int | str
    minimum: int | str
    bulletin: str
    cve: str
    confidence: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "component": self.component,
            "reported": self.reported,
            "minimum": self.minimum,
            "bulletin": self.bulletin,
            "cve": self.cve,
            "confidence": self.confidence,
        }


def format_firmware(version: tuple[int, int, int]) -> str:
    return ".".join(str(part) for part in version)


def _fail(path: Path, where: str, message: str) -> TcbTableError:
    return TcbTableError(f"{path}: {where}: {message}")


def _text(path: Path, where: str, value: Any, pattern: re.Pattern[str] | None = None) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(path, where, "must be a non-empty string")
    if pattern is not None and not pattern.fullmatch(value):
        raise _fail(path, where, f"{value!r} does not match {pattern.pattern}")
    return value


def _row(path: Path, product: str, where: str, raw: Any) -> TcbMinimum:
    if not isinstance(raw, dict):
        raise _fail(path, where, "each row must be a mapping")
    unknown = set(raw) - _ROW_KEYS
    if unknown:
        raise _fail(path, where, f"unknown field(s) {sorted(unknown)}; allowed {sorted(_ROW_KEYS)}")
    for key in ("bulletin", "cve", "title", "source", "confidence"):
        if key not in raw:
            raise _fail(path, where, f"missing field {key!r}")
    minimums = raw.get("min") or {}
    if not isinstance(minimums, dict):
        raise _fail(path, f"{where}.min", "must be a mapping of component to SPL")
    allowed = COMPONENTS if product == "Turin" else COMPONENTS[:4]
    checked: dict[str, int] = {}
    for component, value in minimums.items():
        if component not in allowed:
            raise _fail(path, f"{where}.min", f"unknown component {component!r} for {product}")
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
            raise _fail(path, f"{where}.min.{component}", f"{value!r} is not an SPL (0..255)")
        checked[str(component)] = value
    firmware: tuple[int, int, int] | None = None
    if raw.get("min_firmware") is not None:
        text = raw["min_firmware"]
        match = _FIRMWARE.fullmatch(text) if isinstance(text, str) else None
        if match is None:
            raise _fail(path, f"{where}.min_firmware", f"{text!r} is not 'major.minor.build'")
        firmware = (int(match[1]), int(match[2]), int(match[3]))
    if not checked and firmware is None:
        raise _fail(path, where, "a row needs 'min' or 'min_firmware'")
    confidence = _text(path, f"{where}.confidence", raw["confidence"])
    if confidence not in CONFIDENCE:
        raise _fail(path, f"{where}.confidence", f"{confidence!r} is not one of {CONFIDENCE}")
    return TcbMinimum(
        bulletin=_text(path, f"{where}.bulletin", raw["bulletin"], _BULLETIN),
        cve=_text(path, f"{where}.cve", raw["cve"], _CVE),
        title=_text(path, f"{where}.title", raw["title"]),
        min=checked,
        min_firmware=firmware,
        source=_text(path, f"{where}.source", raw["source"]),
        confidence=confidence,
    )


def load_tcb_table(path: Path | None = None) -> TcbTable:
    """The shipped table, or a user's file of the same schema; TcbTableError names any error."""
    path = path or DEFAULT_TABLE
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise TcbTableError(f"{path}: cannot read the TCB minimum table: {err}") from err
    except yaml.YAMLError as err:
        raise TcbTableError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise TcbTableError(f"{path}: the TCB minimum table must be a mapping")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise _fail(
            path, "schema_version", f"{data.get('schema_version')!r}, expected {SCHEMA_VERSION}"
        )
    version = data.get("table_version")
    if isinstance(version, dt.date):
        version = version.isoformat()
    table_version = _text(path, "table_version", version)
    products = data.get("products")
    if not isinstance(products, dict) or not products:
        raise _fail(path, "products", "must map product names to lists of rows")
    loaded: dict[str, tuple[TcbMinimum, ...]] = {}
    for product, rows in products.items():
        if product not in PRODUCTS:
            raise _fail(path, f"products.{product}", f"unknown product; expected one of {PRODUCTS}")
        if not isinstance(rows, list):
            raise _fail(path, f"products.{product}", "must be a list of rows")
        loaded[product] = tuple(
            _row(path, product, f"products.{product}[{i}]", row) for i, row in enumerate(rows)
        )
    return TcbTable(
        schema_version=SCHEMA_VERSION,
        table_version=table_version,
        products=loaded,
        path=str(path),
    )


def shortfalls(
    table: TcbTable,
    product: str,
    reported: TcbVersion,
    firmware: tuple[int, int, int],
) -> list[TcbShortfall]:
    """Every (row, component) where the report is below the table; empty when it meets all."""
    found: list[TcbShortfall] = []
    values = reported.as_dict()
    for row in table.products.get(product, ()):
        for component, minimum in row.min.items():
            value = values.get(component)
            if value is not None and value < minimum:
                found.append(
                    TcbShortfall(component, value, minimum, row.bulletin, row.cve, row.confidence)
                )
        if row.min_firmware is not None and firmware < row.min_firmware:
            found.append(
                TcbShortfall(
                    "firmware",
                    format_firmware(firmware),
                    format_firmware(row.min_firmware),
                    row.bulletin,
                    row.cve,
                    row.confidence,
                )
            )
    return found
