"""GCE firmware launch endorsements: Google's signed statement of what its UEFI measures to.

GCE does not let the owner bring firmware, so `firmware` can only leave CAN_ACCESS when the
launch measurement in a verified SEV-SNP report (or the MRTD of a TDX quote) equals a value
Google signed for a released UEFI build. The endorsement (google/gce-tcb-verifier format,
`proto/endorsement.proto`, package cloud_vmm_proto) is a `VMLaunchEndorsement` whose
`serialized_uefi_golden` is a `VMGoldenMeasurement`, signed RSASSA-PSS SHA-256 by the key in
`golden.cert`, which must chain to Google's GCE-cc-tcb-root (the caller supplies that root:
no public copy was available to pin). The guest receives it in the SNP extended-report
certificate table; it can also be fetched from the gce_tcb_integrity bucket by measurement.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from auditor.verify.amd import parse_cert_table
from auditor.verify.anchors import TrustStore
from auditor.verify.checks import Check, CheckedResult
from auditor.verify.errors import CERT_ERRORS, EvidenceFormatError
from auditor.verify.protobuf import Message
from auditor.verify.tpm import load_der_certificate
from auditor.verify.x509chain import verify_chain

#: SNP extended-report certificate-table entry that carries the GCE UEFI endorsement
#: (gce-tcb-verifier sev/endorsement.go); `amd.parse_cert_table` names it "gce_endorsement".
GCE_ENDORSEMENT_GUID = uuid.UUID("9f4116cd-c503-4f5a-8f6f-fb68882f4ce2")
MEASUREMENT_SIZE = 48
#: gce-tcb-verifier requires provenance (cl_spec or commit) on endorsements signed after this.
PROVENANCE_REQUIRED_AFTER = datetime(2024, 8, 2, tzinfo=UTC)


@dataclass(frozen=True)
class SevSnpGolden:
    svn: int
    measurements: dict[int, bytes]  # launch vCPU (VMSA) count -> MEASUREMENT
    family_id: bytes
    image_id: bytes
    policy: int
    ca_bundle: bytes
    svsm_measurement: bytes


@dataclass(frozen=True)
class TdxMeasurement:
    ram_gib: int
    early_accept: bool
    mrtd: bytes


@dataclass(frozen=True)
class TdxGolden:
    svn: int
    measurements: list[TdxMeasurement]


@dataclass(frozen=True)
class Endorsement:
    serialized_golden: bytes  # the signed bytes, exactly as received
    signature: bytes
    timestamp: datetime | None
    cl_spec: int
    commit: bytes
    cert: bytes  # DER of the signing certificate
    digest: bytes  # SHA-384 of the UEFI binary
    ca_bundle: bytes  # PEM certificates, root first, last one signed `cert`
    sev_snp: SevSnpGolden | None
    tdx: TdxGolden | None


def _measurement(value: bytes, what: str) -> bytes:
    if len(value) != MEASUREMENT_SIZE:
        raise EvidenceFormatError(
            f"GCE endorsement: {what} is {len(value)} bytes, {MEASUREMENT_SIZE} expected"
        )
    return value


def _timestamp(msg: Message | None) -> datetime | None:
    """google.protobuf.Timestamp {int64 seconds = 1; int32 nanos = 2}."""
    if msg is None:
        return None
    seconds = msg.uint(1)
    if seconds >= 1 << 63:
        seconds -= 1 << 64
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError) as err:
        raise EvidenceFormatError(f"GCE endorsement: timestamp {seconds} out of range") from err


def _sev_snp(msg: Message | None) -> SevSnpGolden | None:
    if msg is None:
        return None
    measurements: dict[int, bytes] = {}
    for entry in msg.messages(2, "measurements entry"):
        vcpus = entry.uint(1)
        measurements[vcpus] = _measurement(entry.bytes_field(2), f"SNP measurement ({vcpus} vCPUs)")
    svsm = msg.bytes_field(7)
    return SevSnpGolden(
        svn=msg.uint(1),
        measurements=measurements,
        family_id=msg.bytes_field(3),
        image_id=msg.bytes_field(4),
        policy=msg.uint(5),
        ca_bundle=msg.bytes_field(6),
        svsm_measurement=_measurement(svsm, "SVSM measurement") if svsm else b"",
    )


def _tdx(msg: Message | None) -> TdxGolden | None:
    if msg is None:
        return None
    measurements = [
        TdxMeasurement(
            ram_gib=m.uint(1),
            early_accept=bool(m.uint(2)),
            mrtd=_measurement(m.bytes_field(3), "TDX MRTD"),
        )
        for m in msg.messages(2, "measurement")
    ]
    return TdxGolden(svn=msg.uint(1), measurements=measurements)


def parse_endorsement(data: bytes) -> Endorsement:
    """Decode a VMLaunchEndorsement and its golden measurement; EvidenceFormatError if malformed."""
    outer = Message.parse(data, "GCE endorsement")
    golden_raw = outer.bytes_field(1)
    if not golden_raw:
        raise EvidenceFormatError("GCE endorsement: no serialized_uefi_golden (field 1)")
    golden = Message.parse(golden_raw, "GCE golden measurement", depth=1)
    if not golden.bytes_field(4):
        raise EvidenceFormatError("GCE endorsement: the golden measurement has no signer cert")
    return Endorsement(
        serialized_golden=golden_raw,
        signature=outer.bytes_field(2),
        timestamp=_timestamp(golden.message(1, "timestamp")),
        cl_spec=golden.uint(2),
        commit=golden.bytes_field(3),
        cert=golden.bytes_field(4),
        digest=golden.bytes_field(5),
        ca_bundle=golden.bytes_field(6),
        sev_snp=_sev_snp(golden.message(7, "sev_snp")),
        tdx=_tdx(golden.message(8, "tdx")),
    )


@dataclass
class EndorsementResult(CheckedResult):
    facts: dict[str, Any] = field(default_factory=dict)
    endorsement: Endorsement | None = None

    @property
    def matched(self) -> bool:
        """A genuine endorsement whose measurement equals the one the hardware reported."""
        return self.ok and self.check("measurement") is True


def _check_measurement(
    e: Endorsement, measurement: bytes | None, vcpus: int | None, mrtd: bytes | None
) -> list[Check]:
    checks: list[Check] = []
    if measurement is not None:
        snp = e.sev_snp
        if snp is None or not (snp.measurements or snp.svsm_measurement):
            checks.append(Check("measurement", False, "the endorsement has no SEV-SNP values"))
        elif vcpus is not None:
            want = snp.measurements.get(vcpus)
            if want is None:
                checks.append(
                    Check(
                        "measurement",
                        False,
                        f"the endorsement lists no measurement for {vcpus} vCPUs "
                        f"(it has {sorted(snp.measurements)})",
                    )
                )
            else:
                same = want == measurement
                checks.append(
                    Check(
                        "measurement",
                        same,
                        f"MEASUREMENT equals the endorsed value for {vcpus} vCPUs"
                        if same
                        else f"MEASUREMENT {measurement.hex()[:16]}... is not the endorsed "
                        f"{want.hex()[:16]}... for {vcpus} vCPUs",
                    )
                )
        else:
            hits = [n for n, m in snp.measurements.items() if m == measurement]
            svsm = bool(snp.svsm_measurement) and snp.svsm_measurement == measurement
            checks.append(
                Check(
                    "measurement",
                    bool(hits) or svsm,
                    f"MEASUREMENT equals the endorsed value for {hits[0]} vCPUs"
                    if hits
                    else "MEASUREMENT equals the endorsed SVSM measurement"
                    if svsm
                    else f"MEASUREMENT {measurement.hex()[:16]}... matches none of the "
                    f"{len(snp.measurements)} endorsed values",
                )
            )
    if mrtd is not None:
        tdx = e.tdx
        if tdx is None or not tdx.measurements:
            checks.append(Check("measurement", False, "the endorsement has no TDX MRTD values"))
        else:
            hit = next((m for m in tdx.measurements if m.mrtd == mrtd), None)
            checks.append(
                Check(
                    "measurement",
                    hit is not None,
                    f"MRTD equals the endorsed value for {hit.ram_gib} GiB RAM"
                    f"{' (early accept)' if hit.early_accept else ''}"
                    if hit is not None
                    else f"MRTD {mrtd.hex()[:16]}... matches none of the "
                    f"{len(tdx.measurements)} endorsed values",
                )
            )
    return checks


def _load_bundle(pem: bytes) -> tuple[x509.Certificate, ...]:
    if not pem.strip():
        return ()
    try:
        certs = tuple(x509.load_pem_x509_certificates(pem))
        for cert in certs:
            cert.subject.rfc4514_string()
            cert.issuer.rfc4514_string()
            cert.public_key()
        return certs
    except CERT_ERRORS as err:
        raise EvidenceFormatError(f"GCE endorsement: ca_bundle is not PEM: {err}") from err


def verify_launch_endorsement(
    data: bytes,
    root: x509.Certificate,
    *,
    measurement: bytes | None = None,
    vcpus: int | None = None,
    mrtd: bytes | None = None,
    policy: int | None = None,
    at: datetime | None = None,
) -> EndorsementResult:
    """Verify an endorsement's chain to `root` and signature, then match the given measurement."""
    e = parse_endorsement(data)
    result = EndorsementResult(endorsement=e)
    facts = result.facts
    facts["digest"] = e.digest.hex()
    facts["timestamp"] = e.timestamp.isoformat() if e.timestamp else None
    facts["cl_spec"] = e.cl_spec
    facts["commit"] = e.commit.hex()
    if e.sev_snp is not None:
        facts["svn"] = e.sev_snp.svn
        facts["measurements"] = len(e.sev_snp.measurements)
        facts["policy"] = e.sev_snp.policy
    elif e.tdx is not None:
        facts["svn"] = e.tdx.svn
        facts["measurements"] = len(e.tdx.measurements)
    else:
        facts["measurements"] = 0
    tech = [t for t, v in (("SEV-SNP", e.sev_snp), ("TDX", e.tdx)) if v is not None]
    result.checks.append(
        Check(
            "parse",
            True,
            f"GCE launch endorsement for UEFI sha384 {e.digest.hex()[:16]}... "
            f"({', '.join(tech) or 'no technology'})",
        )
    )

    cert: x509.Certificate | None = None
    try:
        cert = load_der_certificate(e.cert, "signer certificate")
        bundle = _load_bundle(e.ca_bundle)
    except EvidenceFormatError as err:
        result.checks.append(Check("chain", False, f"signer certificate unusable: {err}"))
        result.checks.append(Check("signature", False, "no usable signer certificate"))
    else:
        facts["signer"] = cert.subject.rfc4514_string()
        store = TrustStore(name="the given GCE TCB root", roots=(root,), intermediates=bundle)
        chain = verify_chain(cert, store, at or datetime.now(UTC))
        result.checks.append(Check("chain", chain.ok, chain.reason))
        result.checks.append(_check_signature(cert, e))

    if e.timestamp is not None and e.timestamp > PROVENANCE_REQUIRED_AFTER:
        has = bool(e.cl_spec or e.commit)
        result.checks.append(
            Check(
                "provenance",
                has,
                "the endorsement names the source it was built from"
                if has
                else "signed after 2024-08-02 without provenance (cl_spec or commit)",
            )
        )

    result.checks.extend(_check_measurement(e, measurement, vcpus, mrtd))
    if policy is not None:
        snp_policy = e.sev_snp.policy if e.sev_snp is not None else None
        same = snp_policy == policy
        result.checks.append(
            Check(
                "policy",
                same,
                f"guest policy 0x{policy:x} equals the endorsed policy"
                if same
                else f"guest policy 0x{policy:x} differs from the endorsed "
                + (f"0x{snp_policy:x}" if snp_policy is not None else "(none)"),
            )
        )
    return result


def _check_signature(cert: x509.Certificate, e: Endorsement) -> Check:
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        return Check("signature", False, "the signer key is not RSA (RSASSA-PSS expected)")
    try:
        key.verify(
            e.signature,
            e.serialized_golden,
            padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH),
            hashes.SHA256(),
        )
    except InvalidSignature:
        return Check(
            "signature",
            False,
            "RSASSA-PSS SHA-256 signature over the golden measurement is invalid",
        )
    except (ValueError, UnsupportedAlgorithm) as err:
        return Check("signature", False, f"signature cannot be checked: {err}")
    return Check(
        "signature", True, "RSASSA-PSS SHA-256 signature by the signer certificate verifies"
    )


def endorsement_from_auxblob(auxblob: bytes) -> bytes | None:
    """The GCE launch endorsement in an SNP extended report's certificate table, if present."""
    return parse_cert_table(auxblob).get("gce_endorsement")
