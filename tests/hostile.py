"""A lab for hostile-input tests: evidence files a hostile guest could send, signed for real.

It makes a demo-style AMD chain it trusts (`trusted`) and one it does not (`rogue`), a key
broker, an audit state with nonces, and writes guest evidence files in either format version,
with any claims, bound or not. Scans run through the real SDKs against the demo fleet's AWS
replay, judged at its recording time (2026-11-22), so nothing depends on today's date.
"""

from __future__ import annotations

import base64
import copy
import json
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from auditor.api import scan
from auditor.guest.format import (
    FORMAT,
    FORMAT_V1,
    binding_report_data,
    claims_digest,
    identity_string,
)
from auditor.guest.nonces import STORE_FILE, NonceStore
from auditor.model import AuditRun, VMResult
from auditor.verify.demo_anchor import DemoChain, make_demo_chain, sign_demo_report
from auditor.verify.key_release import sign_key_release
from tests.conftest import DEMO_FLEET

HR_DB = "i-0d83016e1898302ed"
ROOT_VOL = "vol-08283332e32f3ee67"
DATA_VOL = "vol-0f9c66838520d768e"
ISSUED_AT = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
JUDGED_AT = datetime(2026, 11, 22, tzinfo=UTC)  # the demo fleet's replay.json
REFERENCES = DEMO_FLEET / "reference-measurements.yaml"
REFERENCE = bytes.fromhex(
    yaml.safe_load(REFERENCES.read_text())["reference_measurements"][0]["measurement"]
)


def luks(name: str, disk: str, volume: str, holds_root: bool) -> dict[str, Any]:
    """A LUKS2 device on an EBS volume as the collector reports it (NVMe serial = volume id)."""
    serial = volume.replace("-", "")
    return {
        "name": name,
        "uuid": f"CRYPT-LUKS2-{name.replace('-', '')}00ff-{'root' if holds_root else 'data'}",
        "type": "LUKS2",
        "holds_root": holds_root,
        "backing": [{"name": disk, "serial": serial}],
        "tpm_tokens": 0,
    }


ROOT_ONLY = {"root_device": "dm-0", "devices": [luks("dm-0", "nvme0n1", ROOT_VOL, True)]}
BOTH_DISKS = {
    "root_device": "dm-0",
    "devices": [
        luks("dm-0", "nvme0n1", ROOT_VOL, True),
        luks("dm-1", "nvme1n1", DATA_VOL, False),
    ],
}
#: Every claim an L4 needs from the guest: LUKS on both of eu-hr-db's volumes (nothing sealed
#: to a TPM), no provider agent, no cloud-init run.
NO_AGENTS = {"provider_agents": [], "cloud_init": {"ran": False}}
FULL_CLAIMS = {
    "disk_encryption": BOTH_DISKS,
    "kernel_cmdline": "root=/dev/mapper/root ro",
    "agents": NO_AGENTS,
}


@dataclass
class Lab:
    """Trusted and rogue chains, a key broker and an audit state in `root`."""

    root: Path
    trusted: DemoChain = field(default_factory=lambda: make_demo_chain("Milan"))
    rogue: DemoChain = field(default_factory=lambda: make_demo_chain("Milan"))
    broker: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP384R1())
    )

    def __post_init__(self) -> None:
        self.anchor = self.root / "anchor"
        self.anchor.mkdir(parents=True, exist_ok=True)
        self.trusted.to_pem_files(self.anchor, include_private_key=False)
        self.broker_pem = self.root / "broker.pem"
        self.broker_pem.write_bytes(
            self.broker.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        self.state = self.root / "state"
        self.state.mkdir(exist_ok=True)

    def fresh_state(self, where: Path) -> Path:
        """A copy of the audit state, so a scan's consumed nonces do not leak into another."""
        if where.exists():
            shutil.rmtree(where)
        shutil.copytree(self.state, where, ignore=shutil.ignore_patterns("*.lock"))
        return where

    def issue(self, vm_id: str = HR_DB, at: datetime = ISSUED_AT) -> str:
        return NonceStore(self.state / STORE_FILE).issue(vm_id, "aws", now=at)

    def evidence(
        self,
        vm_id: str = HR_DB,
        *,
        nonce: str | None = None,
        claims: dict[str, Any] | None = None,
        receipt: bool = False,
        chain: DemoChain | None = None,
        version: int = 2,
        bound_to: str | None = None,
        debug: bool = False,
    ) -> dict[str, Any]:
        """An evidence file for `vm_id`; `bound_to` binds the report to another VM identity."""
        nonce = nonce or self.issue(vm_id)
        doc: dict[str, Any] = {
            "format": FORMAT if version == 2 else FORMAT_V1,
            "collector_version": "test",
            "collected_at": "2026-11-21T09:05:00Z",
            "nonce": nonce,
            "vm": {"provider": "aws", "id": vm_id, "identity_source": "none"},
        }
        doc.update(copy.deepcopy(claims or {}))
        identity = identity_string("aws", bound_to or vm_id)
        if version == 2:
            doc["claims_sha256"] = claims_digest(doc).hex()
            report_data = binding_report_data(bytes.fromhex(nonce), identity, claims_digest(doc))
        else:
            report_data = binding_report_data(bytes.fromhex(nonce), identity)
        doc["report_data"] = report_data.hex()
        signer = chain or self.trusted
        report = sign_demo_report(
            signer,
            report_data=report_data,
            measurement=REFERENCE,
            policy=0x30000 | (1 << 19 if debug else 0),
        )
        doc["tee"] = {
            "provider": "sev_guest",
            "generation": 1,
            "outblob": base64.b64encode(report).decode(),
            "auxblob": base64.b64encode(signer.auxblob()).decode(),
        }
        if receipt:
            doc["key_release"] = self.receipt(vm_id, report_data.hex())
        doc["errors"] = []
        return doc

    def receipt(self, vm_id: str, report_data_hex: str) -> str:
        return sign_key_release(
            self.broker,
            {
                "iss": "kbs.test.example.eu",
                "sub": identity_string("aws", vm_id),
                "report_data": report_data_hex,
                "jurisdiction": "DE",
            },
        )

    def scan(
        self,
        files: dict[str, dict[str, Any] | bytes],
        where: Path,
        replay: Path | None = None,
        **options: Any,
    ) -> AuditRun:
        """Scan the AWS demo replay with these guest evidence files (written in this order)."""
        folder = where / "evidence"
        folder.mkdir(parents=True, exist_ok=True)
        for name, doc in files.items():
            data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
            (folder / name).write_bytes(data)
        kwargs: dict[str, Any] = {
            "rules": [REFERENCES],
            "demo_trust_anchor": self.anchor,
            "key_broker_keys": [self.broker_pem],
            "nonce_state": self.fresh_state(where / "state"),
        }
        kwargs["rules"] = [REFERENCES, *options.pop("rules", [])]
        kwargs.update(options)
        return scan("aws", replay=replay or DEMO_FLEET, guest_evidence=folder, **kwargs)


def vm_of(run: AuditRun, vm_id: str = HR_DB) -> VMResult:
    return next(v for v in run.vms if v.id == vm_id)


def gap_texts(vm: VMResult) -> list[str]:
    return [f"{g.code}: {g.message}" for g in vm.gaps if g.call == "guest-evidence"]


def quote_with_duplicated_pck_extension() -> bytes:
    """The real GCE TDX quote whose PCK certificate has its keyUsage extension renamed to
    subjectKeyIdentifier: two extensions with one OID, which cryptography refuses with
    `x509.DuplicateExtension` (not a ValueError). Same length, so the quote still parses."""
    import re

    quote = (Path(__file__).parent / "data/vectors/go-tdx-guest/cos-113-tdx-quote.dat").read_bytes()
    pem = re.search(rb"-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----", quote, re.S)
    assert pem is not None
    body = pem.group(1)
    der = base64.b64decode(b"".join(body.split()))
    key_usage, ski = bytes.fromhex("0603551d0f"), bytes.fromhex("0603551d0e")
    assert key_usage in der and ski in der
    forged = base64.b64encode(der.replace(key_usage, ski, 1))
    new_body = b"\n" + b"\n".join(forged[i : i + 64] for i in range(0, len(forged), 64)) + b"\n"
    assert len(new_body) == len(body), "same length keeps the quote's size fields right"
    return quote.replace(body, new_body, 1)
