"""Demo vTPM material: a self-made vTPM CA, hand-made quotes and a small measured-boot log.

The demo fleet cannot carry a real cloud vTPM's quote bound to a demo nonce, so, like the demo
AMD chain (auditor/verify/demo_anchor.py), it makes its own: an attestation key, quotes
marshalled as a TPM would (TPMS_ATTEST, TPMT_SIGNATURE; TPM 2.0 Part 2, big-endian), an AK
certificate from a demo vTPM CA that names the instance the way Google's does, a crypto-agile
TCG event log whose replay gives the quoted PCRs, and the Azure paravisor's HCL report around a
demo SNP report. Only `ccaudit demo` trusts the demo vTPM CA, and every fact resting on it
carries `ak_demo_anchor`. Tests use the same builders beside a real TPM simulator.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from auditor.verify.anchors import TrustStore
from auditor.verify.gce_identity import IDENTITY_OID

DEMO_VTPM_TRUST_NAME = "demo vTPM CA, not Google or Microsoft"
VTPM_CA_FILE = "vtpm-ca.pem"

TPM_GENERATED_VALUE = 0xFF544347
TPM_ST_ATTEST_QUOTE = 0x8018
TPM_ALG_SHA256 = 0x000B
TPM_ALG_RSASSA = 0x0014

EV_SEPARATOR = 0x00000004
EV_IPL = 0x0000000D
EV_NO_ACTION = 0x00000003
EV_EFI_VARIABLE_DRIVER_CONFIG = 0x80000001
EV_EFI_BOOT_SERVICES_APPLICATION = 0x80000003
EFI_GLOBAL_VARIABLE = uuid.UUID("8be4df61-93ca-11d2-aa0d-00e098032b8c")


# -- the attestation key and its quotes ---------------------------------------------------------


def tpmt_public_rsa(key: rsa.RSAPublicKey) -> bytes:
    """TPMT_PUBLIC of an RSA restricted signing key (RSASSA-SHA256), as a TPM reports an AK."""
    numbers = key.public_numbers()
    modulus = numbers.n.to_bytes((key.key_size + 7) // 8, "big")
    exponent = 0 if numbers.e == 65537 else numbers.e
    return (
        struct.pack(">HHI", 0x0001, TPM_ALG_SHA256, 0x00050072)
        + struct.pack(">H", 0)
        + struct.pack(">HHHHI", 0x0010, TPM_ALG_RSASSA, TPM_ALG_SHA256, key.key_size, exponent)
        + struct.pack(">H", len(modulus))
        + modulus
    )


def _pcr_selection(indexes: list[int]) -> bytes:
    bitmap = bytearray(3)
    for i in indexes:
        bitmap[i // 8] |= 1 << (i % 8)
    return struct.pack(">IHB", 1, TPM_ALG_SHA256, 3) + bytes(bitmap)


def sign_quote(
    ak: rsa.RSAPrivateKey, qualifying_data: bytes, pcrs: dict[int, bytes]
) -> tuple[bytes, bytes]:
    """(TPMS_ATTEST, TPMT_SIGNATURE) of a SHA-256 quote over `pcrs`, signed RSASSA-SHA256."""
    indexes = sorted(pcrs)
    digest = hashlib.sha256(b"".join(pcrs[i] for i in indexes)).digest()
    name = (
        struct.pack(">H", TPM_ALG_SHA256)
        + hashlib.sha256(tpmt_public_rsa(ak.public_key())).digest()
    )
    attest = (
        struct.pack(">IH", TPM_GENERATED_VALUE, TPM_ST_ATTEST_QUOTE)
        + struct.pack(">H", len(name))
        + name
        + struct.pack(">H", len(qualifying_data))
        + qualifying_data
        + struct.pack(">QIIB", 1_000_000, 1, 0, 1)  # clockInfo
        + struct.pack(">Q", 0x2026_0011_0000_0000)  # firmwareVersion
        + _pcr_selection(indexes)
        + struct.pack(">H", len(digest))
        + digest
    )
    signature = ak.sign(attest, padding.PKCS1v15(), hashes.SHA256())
    return attest, struct.pack(">HHH", TPM_ALG_RSASSA, TPM_ALG_SHA256, len(signature)) + signature


# -- the demo vTPM CA and its AK certificates ---------------------------------------------------


def _der(tag: int, body: bytes) -> bytes:
    size = len(body)
    if size < 0x80:
        return bytes([tag, size]) + body
    raw = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(raw)]) + raw + body


def _der_int(value: int) -> bytes:
    return _der(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big", signed=True))


@dataclass(frozen=True)
class GceInstance:
    zone: str
    project_number: int
    project_id: str
    instance_id: int
    instance_name: str

    def extension(self) -> bytes:
        """The instance-identity extension value (1.3.6.1.4.1.11129.2.1.21), as Google writes it."""
        return _der(
            0x30,
            _der(0x0C, self.zone.encode())
            + _der_int(self.project_number)
            + _der(0x0C, self.project_id.encode())
            + _der_int(self.instance_id)
            + _der(0x0C, self.instance_name.encode()),
        )


def make_vtpm_ca(now: datetime | None = None) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    """A self-signed demo vTPM CA, valid ten years from `now`."""
    start = (now or datetime.now(UTC)) - timedelta(days=1)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, DEMO_VTPM_TRUST_NAME)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
        .sign(key, hashes.SHA256())
    )
    return cert, key


def issue_ak_certificate(
    ca: x509.Certificate,
    ca_key: rsa.RSAPrivateKey,
    ak: rsa.RSAPublicKey,
    instance: GceInstance | None = None,
) -> x509.Certificate:
    """An AK certificate from the demo CA; with `instance`, naming it as Google's does."""
    start = ca.not_valid_before_utc
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "demo vTPM AK")]))
        .issuer_name(ca.subject)
        .public_key(ak)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(ca.not_valid_after_utc)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    if instance is not None:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(IDENTITY_OID, instance.extension()), critical=False
        )
    return builder.sign(ca_key, hashes.SHA256())


def vtpm_trust(ca: x509.Certificate) -> TrustStore:
    return TrustStore(name=DEMO_VTPM_TRUST_NAME, roots=(ca,))


def load_vtpm_trust(directory: Path) -> TrustStore | None:
    """The demo vTPM CA kept beside the demo AMD chain (`vtpm-ca.pem`), if there is one."""
    path = directory / VTPM_CA_FILE
    if not path.exists():
        return None
    return vtpm_trust(x509.load_pem_x509_certificate(path.read_bytes()))


# -- a measured-boot event log -------------------------------------------------------------------


@dataclass(frozen=True)
class LoggedEvent:
    pcr: int
    event_type: int
    digest: bytes  # SHA-256, what the firmware extended
    data: bytes


def _efi_variable(name: str, value: bytes) -> bytes:
    encoded = name.encode("utf-16-le")
    return (
        EFI_GLOBAL_VARIABLE.bytes_le + struct.pack("<QQ", len(name), len(value)) + encoded + value
    )


def boot_events(
    kernel_cmdline: str, applications: list[bytes], secure_boot: bool = True
) -> list[LoggedEvent]:
    """Secure Boot (PCR 7), boot applications (PCR 4), separators, GRUB's cmdline (PCR 8)."""
    events: list[LoggedEvent] = []
    variable = _efi_variable("SecureBoot", b"\x01" if secure_boot else b"\x00")
    events.append(
        LoggedEvent(7, EV_EFI_VARIABLE_DRIVER_CONFIG, hashlib.sha256(variable).digest(), variable)
    )
    separator = bytes(4)
    for pcr in range(8):
        events.append(LoggedEvent(pcr, EV_SEPARATOR, hashlib.sha256(separator).digest(), separator))
    for image in applications:
        events.append(LoggedEvent(4, EV_EFI_BOOT_SERVICES_APPLICATION, image, b"\x00" * 32))
    text = b"kernel_cmdline: " + kernel_cmdline.encode()
    events.append(LoggedEvent(8, EV_IPL, hashlib.sha256(text).digest(), text))
    return events


def event_log(events: list[LoggedEvent]) -> bytes:
    """A crypto-agile TCG event log (SHA-256 bank) of `events`."""
    spec = b"Spec ID Event03\x00" + struct.pack("<IBBBBI", 0, 0, 2, 0, 2, 1)
    spec += struct.pack("<HH", TPM_ALG_SHA256, 32) + b"\x00"
    out = struct.pack("<II", 0, EV_NO_ACTION) + bytes(20) + struct.pack("<I", len(spec)) + spec
    for e in events:
        out += struct.pack("<IIIH", e.pcr, e.event_type, 1, TPM_ALG_SHA256) + e.digest
        out += struct.pack("<I", len(e.data)) + e.data
    return out


def replayed_pcrs(events: list[LoggedEvent], count: int = 24) -> dict[int, bytes]:
    """PCRs 0..count-1 after `events`, from zero (what a fresh TPM would quote)."""
    pcrs = {i: bytes(32) for i in range(count)}
    for e in events:
        pcrs[e.pcr] = hashlib.sha256(pcrs[e.pcr] + e.digest).digest()
    return pcrs


# -- an Azure HCL report ---------------------------------------------------------------------------


def _b64url_int(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def runtime_claims(ak: rsa.RSAPublicKey, vm_unique_id: str, secure_boot: bool = True) -> bytes:
    """The paravisor's runtime claims: the vTPM AK as JWK `HCLAkPub` and the VM configuration."""
    numbers = ak.public_numbers()
    claims = {
        "keys": [
            {
                "kid": "HCLAkPub",
                "key_ops": ["sign"],
                "kty": "RSA",
                "e": _b64url_int(numbers.e),
                "n": _b64url_int(numbers.n),
            }
        ],
        "vm-configuration": {
            "console-enabled": False,
            "secure-boot": secure_boot,
            "tpm-enabled": True,
            "vmUniqueId": vm_unique_id.upper(),
        },
    }
    return json.dumps(claims, separators=(",", ":")).encode()


def hcl_report(hw_report: bytes, runtime: bytes, report_type: str = "snp") -> bytes:
    """What the paravisor stores in NV 0x01400001: header, hardware report, request, claims."""
    kind = {"snp": 2, "tdx": 4}[report_type]
    header = struct.pack("<5I", 0x414C4348, 2, len(hw_report), 2, 0) + bytes(12)
    request = struct.pack("<5I", 20 + len(runtime), 1, kind, 1, len(runtime))
    return header + hw_report.ljust(1184, b"\x00") + request + runtime
