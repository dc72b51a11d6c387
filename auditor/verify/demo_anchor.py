"""A self-made AMD-style chain (ARK -> ASK -> VCEK) to sign demo SEV-SNP reports.

Real reports cannot be bound to demo VMs (their REPORT_DATA is not our nonce), so the demo fleet
signs its own reports with this chain to show L3/L4 end to end. It is a *demo trust anchor, not
AMD*: its trust store carries that name, so every verdict that relies on it says so, and the
pinned AMD trust rejects everything it signs. Certificates mirror AMD's (RSA-PSS SHA-384, the
VCEK extensions 1.3.6.1.4.1.3704.1.*) so the real verifier checks them unchanged.

Determinism: a chain is written once with `DemoChain.to_pem_files` and committed; `DemoChain.load`
reads it back, and reports are signed with RFC 6979 deterministic ECDSA, so the same inputs give
the same report bytes.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from auditor.verify.amd import (
    OID_CSP_ID,
    OID_HWID,
    OID_PRODUCT_NAME,
    OID_STRUCT_VERSION,
    PRODUCTS,
    SPL_OIDS,
    AmdTrust,
    TcbVersion,
    build_cert_table,
    cert_info,
    load_certificate,
)
from auditor.verify.snp import FIELDS, REPORT_SIZE, SIGNATURE_COMPONENT, SIGNATURE_OFFSET

DEMO_TRUST_NAME = "demo trust anchor, not AMD"
DEMO_ORG = "cc-auditor demo trust anchor (not AMD)"
NOT_BEFORE = datetime(2024, 1, 1, tzinfo=UTC)
NOT_AFTER = datetime(2049, 12, 31, tzinfo=UTC)
_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)

#: TCBs at or above every shipped minimum, so demo reports pass "tcb_minimum".
DEFAULT_TCB: dict[str, TcbVersion] = {
    "Milan": TcbVersion.build("Milan", bootloader=4, tee=0, snp=27, microcode=0xDC),
    "Genoa": TcbVersion.build("Genoa", bootloader=9, tee=0, snp=0x1B, microcode=0x56),
    "Turin": TcbVersion.build("Turin", bootloader=1, tee=0, snp=3, microcode=0x4D, fmc=1),
}
DEFAULT_FIRMWARE = (1, 55, 38)
#: CPUID family, model, stepping a v3+ report of each product carries.
DEMO_CPUID: dict[str, tuple[int, int, int]] = {
    "Milan": (0x19, 0x01, 0x01),
    "Genoa": (0x19, 0x11, 0x01),
    "Turin": (0x1A, 0x02, 0x00),
}
_FILES = {
    "ark": "ark.pem",
    "ask": "ask.pem",
    "vcek": "vcek.pem",
    "vcek_key": "vcek_key.pem",
    "ask_key": "ask_key.pem",
}


def demo_chip_id(product: str, label: str = "demo chip") -> bytes:
    """A stable 64-byte CHIP_ID (Turin: 8 bytes, then zeros) derived from a label."""
    digest = hashlib.sha512(f"cc-auditor {label}".encode()).digest()
    return digest[:8] + bytes(56) if product == "Turin" else digest


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, DEMO_ORG),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Engineering"),
        ]
    )


def _der_int(value: int) -> bytes:
    body = value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big")
    return bytes([0x02, len(body)]) + body


def _der_ia5(text: str) -> bytes:
    body = text.encode("ascii")
    return bytes([0x16, len(body)]) + body


def _ca_cert(
    subject: str, issuer: str, public: rsa.RSAPublicKey, signer: rsa.RSAPrivateKey, serial: int
) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(public)
        .serial_number(serial)
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(signer, hashes.SHA384(), rsa_padding=_PSS)
    )


def issue_vcek(
    product: str,
    ask: x509.Certificate,
    ask_key: rsa.RSAPrivateKey,
    vcek_key: ec.EllipticCurvePrivateKey,
    chip_id: bytes,
    tcb: TcbVersion,
    *,
    kind: str = "vcek",
    csp_id: str = "CN=demo-csp.invalid",
) -> x509.Certificate:
    """A VCEK (or VLEK) with AMD's extensions: structVersion, productName, SPLs, hwID/cspID."""
    turin = product == "Turin"
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name("SEV-VCEK" if kind == "vcek" else "SEV-VLEK"))
        .issuer_name(ask.subject)
        .public_key(vcek_key.public_key())
        .serial_number(int.from_bytes(hashlib.sha256(chip_id + tcb.raw.to_bytes(8)).digest()[:8]))
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(NOT_AFTER)
    )

    def ext(oid: x509.ObjectIdentifier, value: bytes) -> None:
        nonlocal builder
        builder = builder.add_extension(x509.UnrecognizedExtension(oid, value), critical=False)

    ext(OID_STRUCT_VERSION, _der_int(1 if turin else 0))
    ext(OID_PRODUCT_NAME, _der_ia5(product if turin or kind == "vlek" else f"{product}-B0"))
    for name, value in tcb.as_dict().items():
        ext(SPL_OIDS[name], _der_int(value))
    if kind == "vcek":
        # KDS puts the chip id itself in the extension value: 64 bytes, or 8 on Turin.
        ext(OID_HWID, chip_id[:8] if turin else chip_id)
    else:
        ext(OID_CSP_ID, _der_ia5(csp_id))
    return builder.sign(ask_key, hashes.SHA384(), rsa_padding=_PSS)


@dataclass
class DemoChain:
    """ARK, ASK and VCEK of the demo trust anchor, with the keys needed to sign reports."""

    product: str
    ark: x509.Certificate
    ask: x509.Certificate
    vcek: x509.Certificate
    vcek_key: ec.EllipticCurvePrivateKey | None = None  # None: loaded to verify, cannot sign
    ask_key: rsa.RSAPrivateKey | None = None

    @property
    def chip_id(self) -> bytes:
        hwid = cert_info(self.vcek).hwid or b""
        return hwid + bytes(64 - len(hwid))

    @property
    def tcb(self) -> TcbVersion:
        spl = cert_info(self.vcek).spl
        return TcbVersion.build(
            self.product,
            bootloader=spl["bootloader"],
            tee=spl["tee"],
            snp=spl["snp"],
            microcode=spl["microcode"],
            fmc=spl.get("fmc") if self.product == "Turin" else None,
        )

    def chain_pem(self) -> bytes:
        """ASK then ARK, as KDS serves `cert_chain`."""
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (self.ask, self.ark))

    def trust(self) -> AmdTrust:
        """The demo trust store, named "demo trust anchor, not AMD"."""
        return AmdTrust.from_pem(DEMO_TRUST_NAME, {self.product: self.chain_pem()})

    def auxblob(self) -> bytes:
        """An extended-report certificate table holding VCEK, ASK and ARK (DER)."""
        der = serialization.Encoding.DER
        return build_cert_table(
            {
                "vcek": self.vcek.public_bytes(der),
                "ask": self.ask.public_bytes(der),
                "ark": self.ark.public_bytes(der),
            }
        )

    def with_vcek(
        self, chip_id: bytes, tcb: TcbVersion, vcek_key: ec.EllipticCurvePrivateKey | None = None
    ) -> DemoChain:
        """The same ARK/ASK with another VCEK (another chip or TCB); needs the ASK key."""
        if self.ask_key is None:
            raise ValueError("this demo chain was loaded without its ASK key")
        key = vcek_key or ec.generate_private_key(ec.SECP384R1())
        vcek = issue_vcek(self.product, self.ask, self.ask_key, key, chip_id, tcb)
        return DemoChain(self.product, self.ark, self.ask, vcek, key, self.ask_key)

    def to_pem_files(self, directory: Path, *, include_private_key: bool = True) -> None:
        """Write the chain, and with `include_private_key` the VCEK and ASK keys.

        The certificates alone are the demo trust anchor a verifier loads; the keys (demo only,
        they protect nothing) are what signing more demo reports needs.
        """
        directory.mkdir(parents=True, exist_ok=True)
        pem = serialization.Encoding.PEM
        key_format = serialization.PrivateFormat.PKCS8
        plain = serialization.NoEncryption()
        (directory / _FILES["ark"]).write_bytes(self.ark.public_bytes(pem))
        (directory / _FILES["ask"]).write_bytes(self.ask.public_bytes(pem))
        (directory / _FILES["vcek"]).write_bytes(self.vcek.public_bytes(pem))
        if include_private_key and self.vcek_key is not None:
            (directory / _FILES["vcek_key"]).write_bytes(
                self.vcek_key.private_bytes(pem, key_format, plain)
            )
        if include_private_key and self.ask_key is not None:
            (directory / _FILES["ask_key"]).write_bytes(
                self.ask_key.private_bytes(pem, key_format, plain)
            )

    @classmethod
    def load(cls, directory: Path) -> DemoChain:
        """Read a chain written by `to_pem_files`; the private keys are optional."""

        def cert(name: str) -> x509.Certificate:
            return load_certificate((directory / _FILES[name]).read_bytes(), f"demo {name}")

        vcek_key: ec.EllipticCurvePrivateKey | None = None
        vcek_key_path = directory / _FILES["vcek_key"]
        if vcek_key_path.exists():
            loaded_ec = serialization.load_pem_private_key(vcek_key_path.read_bytes(), None)
            if not isinstance(loaded_ec, ec.EllipticCurvePrivateKey):
                raise ValueError(f"{vcek_key_path} is not an EC private key")
            vcek_key = loaded_ec
        ask_key: rsa.RSAPrivateKey | None = None
        ask_key_path = directory / _FILES["ask_key"]
        if ask_key_path.exists():
            loaded = serialization.load_pem_private_key(ask_key_path.read_bytes(), None)
            if not isinstance(loaded, rsa.RSAPrivateKey):
                raise ValueError(f"{ask_key_path} is not an RSA private key")
            ask_key = loaded
        vcek = cert("vcek")
        product = cert_info(vcek).product
        if product is None:
            raise ValueError(f"{directory / _FILES['vcek']} names no AMD product")
        return cls(product, cert("ark"), cert("ask"), vcek, vcek_key, ask_key)


def make_demo_chain(
    product: str = "Milan",
    *,
    chip_id: bytes | None = None,
    tcb: TcbVersion | None = None,
    rsa_bits: int = 2048,
) -> DemoChain:
    """A fresh demo ARK -> ASK -> VCEK for `product` (RSA-PSS SHA-384, VCEK on P-384)."""
    if product not in PRODUCTS:
        raise ValueError(f"unknown AMD product {product!r}; expected one of {PRODUCTS}")
    chip_id = chip_id if chip_id is not None else demo_chip_id(product)
    if len(chip_id) != 64:
        raise ValueError("chip_id must be 64 bytes")
    tcb = tcb or DEFAULT_TCB[product]
    ark_key = rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
    ask_key = rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
    ark = _ca_cert(f"ARK-{product}", f"ARK-{product}", ark_key.public_key(), ark_key, 1)
    ask = _ca_cert(f"SEV-{product}", f"ARK-{product}", ask_key.public_key(), ark_key, 2)
    vcek_key = ec.generate_private_key(ec.SECP384R1())
    vcek = issue_vcek(product, ask, ask_key, vcek_key, chip_id, tcb)
    return DemoChain(product, ark, ask, vcek, vcek_key, ask_key)


def _encoded(tcb: TcbVersion, product: str) -> TcbVersion:
    """Re-encode from the components with the product's layout (callers may leave raw 0)."""
    return TcbVersion.build(
        product,
        bootloader=tcb.bootloader,
        tee=tcb.tee,
        snp=tcb.snp,
        microcode=tcb.microcode,
        fmc=(tcb.fmc or 0) if product == "Turin" else None,
    )


def _fw_bytes(version: tuple[int, int, int]) -> bytes:
    major, minor, build = version
    return bytes([build, minor, major])


def sign_demo_report(
    chain: DemoChain,
    *,
    report_data: bytes,
    measurement: bytes,
    policy: int = 0x30000,
    vmpl: int = 0,
    version: int = 3,
    chip_id: bytes | None = None,
    reported_tcb: TcbVersion | None = None,
    platform_info: int = 1,
    host_data: bytes = bytes(32),
    family_id: bytes = bytes(16),
    image_id: bytes = bytes(16),
    guest_svn: int = 0,
    current_tcb: TcbVersion | None = None,
    committed_tcb: TcbVersion | None = None,
    launch_tcb: TcbVersion | None = None,
    current_fw: tuple[int, int, int] = DEFAULT_FIRMWARE,
    committed_fw: tuple[int, int, int] | None = None,
    signing_key: str = "vcek",
    cpuid: tuple[int, int, int] | None = None,
) -> bytes:
    """A 0x4A0-byte report signed by the chain's VCEK that `verify_snp` accepts with its trust.

    `chip_id` and `reported_tcb` default to the VCEK's; pass others to make mismatching
    evidence. Signing is deterministic (RFC 6979): the same inputs give the same bytes.
    """
    if len(report_data) != 64 or len(measurement) != 48 or len(host_data) != 32:
        raise ValueError("report_data, measurement and host_data must be 64, 48 and 32 bytes")
    if len(family_id) != 16 or len(image_id) != 16:
        raise ValueError("family_id and image_id must be 16 bytes")
    if version not in range(2, 6):
        raise ValueError("version must be 2 to 5")
    if chain.vcek_key is None:
        raise ValueError("this demo chain was loaded without its VCEK key: it cannot sign")
    chip_id = chip_id if chip_id is not None else chain.chip_id
    if len(chip_id) != 64:
        raise ValueError("chip_id must be 64 bytes")
    reported = _encoded(reported_tcb or chain.tcb, chain.product)
    key_code = {"vcek": 0, "vlek": 1, "none": 7}[signing_key]
    body = bytearray(REPORT_SIZE)

    def put(name: str, value: bytes) -> None:
        offset, size = FIELDS[name]
        if len(value) != size:
            raise ValueError(f"{name} must be {size} bytes")
        body[offset : offset + size] = value

    struct.pack_into("<IIQ", body, 0x000, version, guest_svn, policy)
    put("family_id", family_id)
    put("image_id", image_id)
    struct.pack_into("<II", body, 0x030, vmpl, 1)
    struct.pack_into("<Q", body, 0x038, _encoded(current_tcb or reported, chain.product).raw)
    struct.pack_into("<Q", body, 0x040, platform_info)
    struct.pack_into("<I", body, 0x048, key_code << 2)
    put("report_data", report_data)
    put("measurement", measurement)
    put("host_data", host_data)
    put("report_id", hashlib.sha256(b"demo report " + chip_id + report_data).digest())
    put("report_id_ma", b"\xff" * 32)
    struct.pack_into("<Q", body, 0x180, reported.raw)
    if version >= 3:
        put("cpuid", bytes(cpuid or DEMO_CPUID[chain.product]))
    put("chip_id", chip_id)
    struct.pack_into("<Q", body, 0x1E0, _encoded(committed_tcb or reported, chain.product).raw)
    put("current_fw", _fw_bytes(current_fw))
    put("committed_fw", _fw_bytes(committed_fw or current_fw))
    struct.pack_into("<Q", body, 0x1F0, _encoded(launch_tcb or reported, chain.product).raw)
    signed = bytes(body[:SIGNATURE_OFFSET])
    try:
        algorithm = ec.ECDSA(hashes.SHA384(), deterministic_signing=True)
    except TypeError:  # cryptography < 44: randomised signatures, still valid
        algorithm = ec.ECDSA(hashes.SHA384())
    r, s = decode_dss_signature(chain.vcek_key.sign(signed, algorithm))
    body[SIGNATURE_OFFSET : SIGNATURE_OFFSET + SIGNATURE_COMPONENT] = r.to_bytes(
        SIGNATURE_COMPONENT, "little"
    )
    end = SIGNATURE_OFFSET + 2 * SIGNATURE_COMPONENT
    body[SIGNATURE_OFFSET + SIGNATURE_COMPONENT : end] = s.to_bytes(SIGNATURE_COMPONENT, "little")
    return bytes(body)
