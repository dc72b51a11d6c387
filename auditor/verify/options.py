"""Turn what the user names (files, flags, rule packs) into what the hardware verifiers trust.

Kept apart from the verifiers so they stay pure: here are the file reads and the clear errors
for unusable input (a key file without a key, a reference that is not 48 bytes of hex), before
any cloud call is made.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from auditor.verify.errors import EvidenceFormatError
from auditor.verify.evidence import EvidenceOptions, load_endorsement_root
from auditor.verify.key_release import BrokerKey, load_broker_keys

_HEX96 = re.compile(r"^[0-9a-fA-F]{96}$")


class HardwareOptionError(ValueError):
    """A hardware-evidence option names a file or value that cannot be used."""


def parse_reference(value: str | Mapping[str, Any] | tuple[str, str]) -> tuple[str, str]:
    """`NAME=HEX`, {"name", "measurement"} or (name, hex) -> (name, lower-case hex of 48 bytes)."""
    if isinstance(value, tuple):
        name, digest = value
    elif isinstance(value, Mapping):
        name, digest = str(value.get("name", "")), str(value.get("measurement", ""))
    else:
        name, sep, digest = value.partition("=")
        if not sep:
            name, digest = "reference", value
    digest = digest.strip()
    if not _HEX96.match(digest):
        raise HardwareOptionError(
            f"reference measurement {name!r}: expected 96 hex characters (48 bytes), "
            f"got {len(digest)} characters"
        )
    return name.strip() or "reference", digest.lower()


def build_evidence_options(
    *,
    reference_measurements: Iterable[str | Mapping[str, Any] | tuple[str, str]] = (),
    pack_references: Iterable[tuple[str, str]] = (),
    boot_references: Iterable[Mapping[str, Any]] = (),
    tcb_table: str | Path | None = None,
    key_broker_keys: Sequence[str | Path] = (),
    endorsement_root: str | Path | None = None,
    tdx_collateral: str | Path | None = None,
    offline: bool = True,
    cache_dir: Path | None = None,
    demo_trust_anchor: str | Path | None = None,
) -> EvidenceOptions:
    """Read and check every file once; raise HardwareOptionError naming the option."""
    refs = [*pack_references, *(parse_reference(r) for r in reference_measurements)]
    table = None
    if tcb_table is not None:
        from auditor.verify.snp import load_tcb_table

        try:
            table = load_tcb_table(Path(tcb_table))
        except (OSError, ValueError) as err:
            raise HardwareOptionError(f"--tcb-table {tcb_table}: {err}") from err
    keys: list[BrokerKey] = []
    for path in key_broker_keys:
        try:
            keys.extend(load_broker_keys(Path(path).read_bytes()))
        except (OSError, EvidenceFormatError) as err:
            raise HardwareOptionError(f"--key-broker-key {path}: {err}") from err
    root = None
    if endorsement_root is not None:
        try:
            root = load_endorsement_root(Path(endorsement_root))
        except EvidenceFormatError as err:
            raise HardwareOptionError(f"--endorsement-root: {err}") from err
    collateral = None
    if tdx_collateral is not None:
        from auditor.verify.tdx import load_collateral_dir

        try:
            collateral = load_collateral_dir(Path(tdx_collateral))
        except (OSError, ValueError) as err:
            raise HardwareOptionError(f"--tdx-collateral {tdx_collateral}: {err}") from err
    trust = vtpm_trust = None
    if demo_trust_anchor is not None:
        from auditor.verify.demo_anchor import DemoChain
        from auditor.verify.demo_tpm import load_vtpm_trust

        try:
            trust = DemoChain.load(Path(demo_trust_anchor)).trust()
            vtpm_trust = load_vtpm_trust(Path(demo_trust_anchor))
        except (OSError, ValueError) as err:
            raise HardwareOptionError(f"demo trust anchor {demo_trust_anchor}: {err}") from err
    return EvidenceOptions(
        demo_trust=trust,
        demo_vtpm_trust=vtpm_trust,
        reference_measurements=tuple(refs),
        reference_boot=tuple(dict(r) for r in boot_references),
        tcb_table=table,
        offline=offline,
        cache_dir=cache_dir,
        tdx_collateral=collateral,
        key_broker_keys=tuple(keys),
        endorsement_root=root,
    )
