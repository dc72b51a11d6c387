"""Azure confidential VM HCL reports: what ties the vTPM to the SEV-SNP or TDX hardware.

On an Azure CVM the paravisor (HCL) asks the hardware for a report at boot and stores it in vTPM
NV index 0x01400001. It puts SHA-256 of a JSON document (the runtime claims, holding the vTPM's
attestation key as the JWK "HCLAkPub") into the report's REPORT_DATA. Once the hardware report is
verified, that hash is the only link from AMD's or Intel's signature to the vTPM quotes: it is
what lets `vtpm` move beyond a claim.

Layout (little-endian), as Microsoft's azure-cvm-tooling `az-cvm-vtpm/src/hcl` reads it and as
the real Azure SNP and TDX vectors confirm:
  0x000  header: signature "HCLA", version, report_size, request_type, status, 3 reserved u32
  0x020  hardware report area, 1184 bytes: an SEV-SNP report (1184) or a TDX TDREPORT (1024)
  0x4C0  IGVM request data: data_size, version, report_type (2 SNP, 4 TDX),
         report_data_hash_type (1 SHA-256, 2 SHA-384, 3 SHA-512), variable_data_size
  0x4D4  variable data: the runtime-claims JSON
The SNP report is verified by the SNP verifier; a TDREPORT is MAC'd, not signed, and only a TDX
quote over it can be verified, so here it is parsed for its REPORTDATA only.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import struct
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from auditor.verify.checks import Check
from auditor.verify.errors import EvidenceFormatError

HCL_SIGNATURE = 0x414C4348  # "HCLA" read as a little-endian u32
HEADER_SIZE = 0x20
HW_REPORT_AREA = 1184
SNP_REPORT_SIZE = 0x4A0
TD_REPORT_SIZE = 1024
REQUEST_DATA_OFFSET = HEADER_SIZE + HW_REPORT_AREA
REQUEST_HEADER_SIZE = 20
VARIABLE_DATA_OFFSET = REQUEST_DATA_OFFSET + REQUEST_HEADER_SIZE
MAX_VARIABLE_DATA = 1024 * 1024

REPORT_TYPES = {2: "snp", 4: "tdx"}
HASH_TYPES = {1: "sha256", 2: "sha384", 3: "sha512"}

SNP_REPORT_DATA = slice(0x50, 0x90)
#: TDREPORT = REPORTMACSTRUCT (type, reserved, cpusvn, tee_tcb_info_hash, tee_info_hash,
#: reportdata at 128, ...) + TEE_TCB_INFO + TDINFO.
TD_REPORT_DATA = slice(128, 192)

HCL_AKPUB_KID = "HCLAkPub"


@dataclass(frozen=True)
class HclReport:
    version: int
    report_size: int
    request_type: int
    status: int
    report_type: str  # "snp" | "tdx"
    hash_type: str
    hw_report: bytes  # the SNP report (1184 bytes) or TDREPORT (1024 bytes)
    report_data: bytes  # REPORT_DATA of the hardware report (64 bytes)
    runtime_data: bytes  # the variable data: runtime-claims JSON

    def runtime_claims(self) -> dict[str, Any]:
        return _json(self.runtime_data)


def parse_hcl_report(data: bytes) -> HclReport:
    """Parse the HCL report stored in Azure's vTPM NV index 0x01400001."""
    if len(data) < VARIABLE_DATA_OFFSET:
        raise EvidenceFormatError(
            f"Azure HCL report: {len(data)} bytes, at least {VARIABLE_DATA_OFFSET} expected"
        )
    signature, version, report_size, request_type, status = struct.unpack_from("<5I", data, 0)
    if signature != HCL_SIGNATURE:
        raise EvidenceFormatError(
            f"Azure HCL report: signature 0x{signature:08x} is not 'HCLA' (0x{HCL_SIGNATURE:08x})"
        )
    _size, _req_version, report_type, hash_type, var_size = struct.unpack_from(
        "<5I", data, REQUEST_DATA_OFFSET
    )
    kind = REPORT_TYPES.get(report_type)
    if kind is None:
        raise EvidenceFormatError(
            f"Azure HCL report: unknown hardware report type {report_type} (2 SNP, 4 TDX)"
        )
    hash_name = HASH_TYPES.get(hash_type)
    if hash_name is None:
        raise EvidenceFormatError(f"Azure HCL report: unknown report-data hash type {hash_type}")
    if var_size > MAX_VARIABLE_DATA or VARIABLE_DATA_OFFSET + var_size > len(data):
        raise EvidenceFormatError(
            f"Azure HCL report: runtime data of {var_size} bytes runs past the "
            f"{len(data)}-byte report"
        )
    area = data[HEADER_SIZE:REQUEST_DATA_OFFSET]
    hw = area[:SNP_REPORT_SIZE] if kind == "snp" else area[:TD_REPORT_SIZE]
    report_data = hw[SNP_REPORT_DATA] if kind == "snp" else hw[TD_REPORT_DATA]
    return HclReport(
        version=version,
        report_size=report_size,
        request_type=request_type,
        status=status,
        report_type=kind,
        hash_type=hash_name,
        hw_report=hw,
        report_data=report_data,
        runtime_data=data[VARIABLE_DATA_OFFSET : VARIABLE_DATA_OFFSET + var_size],
    )


def verify_hcl_binding(report_data: bytes, runtime_data: bytes) -> Check:
    """REPORT_DATA[0:32] must be SHA-256 of the runtime data, or the vTPM is not bound."""
    if len(report_data) < 32:
        return Check(
            "hcl_binding", False, f"REPORT_DATA is {len(report_data)} bytes, 32 or more expected"
        )
    if not runtime_data:
        return Check("hcl_binding", False, "no runtime data to bind")
    digest = hashlib.sha256(runtime_data).digest()
    if report_data[:32] != digest:
        return Check(
            "hcl_binding",
            False,
            f"REPORT_DATA[0:32] {report_data[:32].hex()} is not SHA-256 of the runtime data "
            f"({digest.hex()})",
        )
    tail = report_data[32:]
    note = "" if not tail.strip(b"\x00") else " (REPORT_DATA[32:] is not zero)"
    return Check(
        "hcl_binding",
        True,
        f"REPORT_DATA binds the runtime data holding the vTPM keys (SHA-256 {digest.hex()[:16]}"
        f"...){note}",
    )


def _json(runtime_data: bytes) -> dict[str, Any]:
    try:
        claims = json.loads(runtime_data.rstrip(b"\x00").decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise EvidenceFormatError(f"Azure HCL runtime data is not JSON: {err}") from err
    if not isinstance(claims, dict):
        raise EvidenceFormatError("Azure HCL runtime data is not a JSON object")
    return claims


def hcl_ak_public(runtime_data: bytes) -> dict[str, Any] | None:
    """The vTPM attestation key (JWK with kid "HCLAkPub") named in the runtime claims."""
    keys = _json(runtime_data).get("keys")
    if not isinstance(keys, list):
        return None
    for key in keys:
        if isinstance(key, dict) and key.get("kid") == HCL_AKPUB_KID:
            return key
    return None


def _b64url_int(value: Any, what: str) -> int:
    if not isinstance(value, str) or not value or len(value) > 2048:
        raise EvidenceFormatError(f"HCLAkPub JWK: {what} missing or oversized")
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError) as err:
        raise EvidenceFormatError(f"HCLAkPub JWK: {what} is not base64url") from err
    return int.from_bytes(raw, "big")


def jwk_rsa_public_key(jwk: dict[str, Any]) -> rsa.RSAPublicKey:
    """The RSA key of a JWK such as HCLAkPub, to compare with the vTPM's TPMT_PUBLIC AK."""
    if jwk.get("kty") != "RSA":
        raise EvidenceFormatError(f"HCLAkPub JWK: key type {jwk.get('kty')!r} is not RSA")
    n = _b64url_int(jwk.get("n"), "modulus n")
    e = _b64url_int(jwk.get("e"), "exponent e")
    try:
        return rsa.RSAPublicNumbers(e, n).public_key()
    except ValueError as err:
        raise EvidenceFormatError(f"HCLAkPub JWK: unusable RSA key: {err}") from err
