"""SEV-SNP report verification against real public vectors, their mutations and a demo chain."""

from __future__ import annotations

import hashlib
import struct
import warnings
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditor.verify.amd import AmdTrust, load_certificate, load_certificates
from auditor.verify.blobs import decode_blob
from auditor.verify.demo_anchor import (
    DEMO_TRUST_NAME,
    DemoChain,
    demo_chip_id,
    make_demo_chain,
    sign_demo_report,
)
from auditor.verify.errors import EvidenceFormatError
from auditor.verify.snp import (
    FIELDS,
    SIGNED_SIZE,
    SnpOptions,
    TcbVersion,
    azure_runtime_binding,
    parse_report,
    verify_snp,
)
from tests.shared_vectors import shared_vectors

VECTORS = Path(__file__).parent / "data" / "vectors"
GSG = VECTORS / "go-sev-guest"
VIRTEE = VECTORS / "virtee-sev"
CRYPTO_CHECKS = ("signature", "chain", "tcb_binding", "chip_id", "signing_key", "product")


def _read(path: Path) -> bytes:
    return path.read_bytes()


@pytest.fixture(scope="module")
def gsg_report() -> bytes:
    return _read(GSG / "attestation.bin")


@pytest.fixture(scope="module")
def gsg_vcek() -> x509.Certificate:
    return load_certificate(_read(GSG / "vcek.testcer"))


@pytest.fixture(scope="module")
def virtee_report() -> bytes:
    data, encoding = decode_blob(_read(VIRTEE / "report_milan.hex"), expect_min=0x4A0)
    assert encoding == "hex"
    return data


@pytest.fixture(scope="module")
def virtee_vcek() -> x509.Certificate:
    return load_certificate(_read(VIRTEE / "vcek_milan.der"))


@pytest.fixture(scope="module")
def milan_demo() -> DemoChain:
    return make_demo_chain("Milan")


def _failed(result: object) -> dict[str, str]:
    checks = result.checks  # type: ignore[attr-defined]
    return {c.name: c.reason for c in checks if not c.ok}


# --- real vectors ------------------------------------------------------------------------------


def test_go_sev_guest_report_is_authentic_but_debug_vetoes(gsg_report: bytes) -> None:
    result = verify_snp(gsg_report, _read(GSG / "vcek.testcer"), _read(GSG / "ask_ark_milan.pem"))
    for name in CRYPTO_CHECKS:
        assert result.check(name) is True, name
    assert result.authentic is True
    assert result.ok is False
    assert result.check("policy_debug") is False
    assert "DEBUG=1: the host can decrypt guest memory" in _failed(result)["policy_debug"]
    facts = result.facts
    assert facts["policy"]["debug"] is True
    assert facts["policy"]["raw"] == "0xb0000"
    assert facts["signer"] == "vcek"
    assert facts["product"] == "Milan"
    assert facts["reported_tcb"] == {"bootloader": 2, "tee": 0, "snp": 5, "microcode": 0x44}
    assert facts["firmware"] == {"current": "1.49.3", "committed": "1.49.3"}
    assert facts["report_data"].startswith("0102030405")
    assert facts["trust_anchor"] == "AMD"
    assert facts["root_sha256"] == (
        "69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd"
    )


def test_old_milan_firmware_is_below_tcb_minimums_naming_bulletins(gsg_report: bytes) -> None:
    result = verify_snp(gsg_report, _read(GSG / "vcek.testcer"))
    assert result.check("tcb_minimum") is False
    reason = _failed(result)["tcb_minimum"]
    assert "AMD-SB-3019" in reason and "CVE-2024-56161" in reason
    below = result.facts["tcb_minimum"]["below"]
    assert {
        k: next(b for b in below if b["bulletin"] == "AMD-SB-3019")[k]
        for k in ("component", "reported", "minimum")
    } == {"component": "microcode", "reported": 0x44, "minimum": 0xDB}
    assert any(b["component"] == "firmware" and b["reported"] == "1.49.3" for b in below)
    assert result.authentic is True  # old but genuine


def test_virtee_milan_report_passes_every_crypto_check(
    virtee_report: bytes, virtee_vcek: x509.Certificate
) -> None:
    result = verify_snp(virtee_report, virtee_vcek, _read(VIRTEE / "cert_chain_milan"))
    for name in (*CRYPTO_CHECKS, "policy_debug", "policy_migrate_ma", "vmpl"):
        assert result.check(name) is True, name
    assert result.authentic
    assert result.facts["policy"]["smt"] is True
    assert result.facts["reported_tcb"] == {"bootloader": 3, "tee": 0, "snp": 8, "microcode": 115}
    assert result.facts["vmpl"] == 0


def test_parse_report_fields(gsg_report: bytes) -> None:
    report = parse_report(gsg_report)
    assert report.version == 2
    assert report.policy == 0xB0000
    assert report.debug
    assert report.vmpl == 0
    assert report.signature_algo == 1
    assert report.signing_key == "vcek"
    assert report.cpuid is None
    assert report.product is None  # a v2 report does not name its product
    assert report.current_fw == (1, 49, 3)
    assert report.report_data[:5] == bytes([1, 2, 3, 4, 5])
    assert len(report.chip_id) == 64 and len(report.measurement) == 48
    assert report.raw[:SIGNED_SIZE] == report.signed_part
    assert parse_report(gsg_report, product_hint="Milan").product == "Milan"
    with pytest.raises(ValueError, match="unknown AMD product"):
        parse_report(gsg_report, product_hint="Rome")


def test_turin_vcek_extensions_and_chain() -> None:
    vcek = load_certificate(_read(VIRTEE / "vcek_turin.der"))
    from auditor.verify.amd import cert_info

    info = cert_info(vcek)
    assert info.kind == "vcek"
    assert info.struct_version == 1
    assert info.product == "Turin"
    assert "fmc" in info.spl
    assert info.hwid is not None and len(info.hwid) == 8
    # The Turin chain from virtee is exactly the pinned one.
    pinned = AmdTrust.pinned().products["Turin"]
    ask, ark = load_certificates(_read(VIRTEE / "cert_chain_turin"))
    assert (ask, ark) == (pinned.ask, pinned.ark)

    # No public Turin report exists: build an unsigned v3 Turin report bound to this VCEK, so
    # chain, TCB binding (with FMC) and 8-byte chip id are checked against the real certificate.
    tcb = TcbVersion.build(
        "Turin",
        bootloader=info.spl["bootloader"],
        tee=info.spl["tee"],
        snp=info.spl["snp"],
        microcode=info.spl["microcode"],
        fmc=info.spl["fmc"],
    )
    body = bytearray(0x4A0)
    struct.pack_into("<IIQ", body, 0, 3, 0, 0x30000)
    struct.pack_into("<II", body, 0x30, 0, 1)
    struct.pack_into("<Q", body, 0x180, tcb.raw)
    body[0x188:0x18B] = bytes([0x1A, 0x02, 0x00])
    body[0x1A0:0x1A8] = info.hwid
    body[0x2A0] = 1
    body[0x2A0 + 72] = 1
    result = verify_snp(bytes(body), vcek)
    assert result.report is not None and result.report.product == "Turin"
    assert result.report.reported_tcb.fmc == info.spl["fmc"]
    assert result.check("chain") is True
    assert "ARK-Turin" in next(c.reason for c in result.checks if c.name == "chain")
    assert result.check("tcb_binding") is True
    assert result.check("chip_id") is True
    assert result.check("signature") is False
    assert result.authentic is False
    assert "fmc" in result.facts["reported_tcb"]


# --- mutations ---------------------------------------------------------------------------------


def test_every_flipped_byte_of_the_signed_part_fails(
    virtee_report: bytes, virtee_vcek: x509.Certificate
) -> None:
    chain = load_certificates(_read(VIRTEE / "cert_chain_milan"))
    assert verify_snp(virtee_report, virtee_vcek, chain).check("signature") is True
    survived: list[int] = []
    for offset in range(SIGNED_SIZE):
        mutated = bytearray(virtee_report)
        mutated[offset] ^= 0x01
        try:
            result = verify_snp(bytes(mutated), virtee_vcek, chain)
        except EvidenceFormatError:
            continue  # version, signature algorithm or signer field now unreadable: also a fail
        if result.check("signature") is not False or result.authentic:
            survived.append(offset)
    assert survived == []


@pytest.mark.parametrize("field", sorted(FIELDS))
def test_flipped_field_reports_signature_failure(
    field: str, virtee_report: bytes, virtee_vcek: x509.Certificate
) -> None:
    offset, size = FIELDS[field]
    mutated = bytearray(virtee_report)
    mutated[offset + size - 1] ^= 0x80
    if field in ("version", "signature_algo"):
        mutated[offset + size - 1] ^= 0x80  # keep it readable; flip the neighbouring byte
        mutated[offset + 1] ^= 0x01
    try:
        result = verify_snp(bytes(mutated), virtee_vcek)
    except EvidenceFormatError as err:
        assert field in ("version", "signature_algo", "signer_info"), err
        return
    assert result.check("signature") is False
    assert "does not verify" in _failed(result)["signature"]


def test_swapped_vcek_fails_signature_chip_and_tcb(
    gsg_report: bytes, virtee_vcek: x509.Certificate
) -> None:
    result = verify_snp(gsg_report, virtee_vcek)
    failed = _failed(result)
    assert {"signature", "chip_id", "tcb_binding"} <= set(failed)
    assert result.check("chain") is True  # the VCEK itself is a genuine AMD certificate
    assert "another TCB" in failed["tcb_binding"]
    assert "chip" in failed["chip_id"]
    assert not result.authentic


def test_vcek_with_other_tcb_fails_binding(milan_demo: DemoChain) -> None:
    other = TcbVersion.build("Milan", bootloader=4, tee=0, snp=27, microcode=0xDD)
    report = sign_demo_report(
        milan_demo, report_data=bytes(64), measurement=bytes(48), reported_tcb=other
    )
    result = verify_snp(report, milan_demo.vcek, options=SnpOptions(trust=milan_demo.trust()))
    assert result.check("signature") is True  # the VCEK signed it
    assert result.check("tcb_binding") is False
    assert "microcode 220 in the VCEK vs 221 reported" in _failed(result)["tcb_binding"]
    assert not result.authentic


def test_reissued_vcek_with_other_tcb_extension_fails_binding(milan_demo: DemoChain) -> None:
    """Same chip and key, but the certificate claims another TCB than the report."""
    report = sign_demo_report(milan_demo, report_data=bytes(64), measurement=bytes(48))
    other_tcb = TcbVersion.build("Milan", bootloader=5, tee=0, snp=27, microcode=0xDC)
    reissued = milan_demo.with_vcek(milan_demo.chip_id, other_tcb, milan_demo.vcek_key)
    result = verify_snp(report, reissued.vcek, options=SnpOptions(trust=milan_demo.trust()))
    assert result.check("signature") is True and result.check("chain") is True
    assert result.check("tcb_binding") is False
    assert "bootloader 5 in the VCEK vs 4 reported" in _failed(result)["tcb_binding"]


def test_vcek_for_other_chip_fails_chip_id(milan_demo: DemoChain) -> None:
    report = sign_demo_report(
        milan_demo,
        report_data=bytes(64),
        measurement=bytes(48),
        chip_id=demo_chip_id("Milan", "another chip"),
    )
    result = verify_snp(report, milan_demo.vcek, options=SnpOptions(trust=milan_demo.trust()))
    assert result.check("signature") is True
    assert result.check("chip_id") is False
    assert not result.authentic


def test_chain_to_wrong_products_ark_names_both(gsg_report: bytes) -> None:
    vcek = _read(GSG / "vcek.testcer")
    result = verify_snp(gsg_report, vcek, _read(GSG / "ask_ark_genoa.pem"))
    assert result.check("chain") is False
    reason = _failed(result)["chain"]
    assert "Milan" in reason and "Genoa" in reason
    assert not result.authentic

    genoa_only = AmdTrust.from_pem("Genoa only", {"Genoa": _read(GSG / "ask_ark_genoa.pem")})
    result = verify_snp(gsg_report, vcek, options=SnpOptions(trust=genoa_only))
    reason = _failed(result)["chain"]
    assert "Milan" in reason and "Genoa" in reason and "Genoa only" in reason


def test_supplied_root_is_never_trusted(milan_demo: DemoChain, gsg_report: bytes) -> None:
    """A demo chain passed as `chain` does not make its ARK a root: AMD's pinned roots decide."""
    report = sign_demo_report(milan_demo, report_data=bytes(64), measurement=bytes(48))
    result = verify_snp(report, milan_demo.vcek, milan_demo.chain_pem())
    assert result.check("chain") is False
    assert "not signed by the ARK" in _failed(result)["chain"]


def test_truncated_and_unknown_versions_are_unusable(gsg_report: bytes) -> None:
    with pytest.raises(EvidenceFormatError, match="truncated: 1183 bytes"):
        parse_report(gsg_report[:-1])
    with pytest.raises(EvidenceFormatError, match="truncated"):
        verify_snp(gsg_report[:0x2A0], _read(GSG / "vcek.testcer"))
    for version in (0, 1, 6, 0xFFFFFFFF):
        data = struct.pack("<I", version) + gsg_report[4:]
        with pytest.raises(EvidenceFormatError, match=f"version {version} is not supported"):
            parse_report(data)
    bad_algo = bytearray(gsg_report)
    bad_algo[0x34] = 2
    with pytest.raises(EvidenceFormatError, match="signature algorithm 2"):
        parse_report(bytes(bad_algo))
    reserved_key = bytearray(gsg_report)
    reserved_key[0x48] = 3 << 2
    with pytest.raises(EvidenceFormatError, match="reserved signing key 3"):
        parse_report(bytes(reserved_key))
    # Azure appends runtime-claims header bytes: trailing data is not an error.
    assert parse_report(gsg_report + b"\0" * 20).version == 2


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2 * 0x4A0))
def test_parse_report_raises_only_evidence_errors(data: bytes) -> None:
    try:
        report = parse_report(data)
    except EvidenceFormatError:
        return
    assert report.version in range(2, 6)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    header=st.tuples(st.integers(0, 7), st.integers(0, 2**64 - 1), st.integers(0, 255)),
    tail=st.binary(min_size=0x4A0 - 16, max_size=0x4A0 + 64),
)
def test_parse_report_on_plausible_headers(header: tuple[int, int, int], tail: bytes) -> None:
    version, policy, signer = header
    data = struct.pack("<IIQ", version, 0, policy) + tail
    data = data[:0x34] + struct.pack("<I", 1) + data[0x38:0x48] + bytes([signer]) + data[0x49:]
    try:
        report = parse_report(data)
    except EvidenceFormatError:
        assert version not in range(2, 6) or (signer >> 2) & 7 not in (0, 1, 7)
        return
    assert report.policy == policy
    if report.version >= 3 and report.product is not None:
        assert report.product_source == "cpuid"


# --- options -----------------------------------------------------------------------------------


def test_report_data_and_measurement_expectations(virtee_report: bytes) -> None:
    vcek = _read(VIRTEE / "vcek_milan.der")
    parsed = parse_report(virtee_report)
    good = verify_snp(
        virtee_report,
        vcek,
        options=SnpOptions(
            expected_report_data=parsed.report_data,
            reference_measurements=[("other", "00" * 48), ("golden", parsed.measurement.hex())],
        ),
    )
    assert good.check("report_data") is True
    assert good.check("measurement") is True
    assert good.facts["measurement_match"] == "golden"
    assert "golden" in next(c.reason for c in good.checks if c.name == "measurement")

    bad = verify_snp(
        virtee_report,
        vcek,
        options=SnpOptions(
            expected_report_data=bytes(64), reference_measurements=[("other", "ab" * 48)]
        ),
    )
    assert bad.check("report_data") is False
    assert bad.check("measurement") is False
    assert bad.facts["measurement_match"] is None
    assert bad.authentic  # binding and measurement are not authenticity
    plain = verify_snp(virtee_report, vcek)
    assert plain.check("report_data") is None and plain.check("measurement") is None
    with pytest.raises(ValueError, match="48"):
        verify_snp(virtee_report, vcek, options=SnpOptions(reference_measurements=[("x", "ab")]))


def test_certificate_validity_only_when_a_time_is_given(gsg_report: bytes) -> None:
    vcek = _read(GSG / "vcek.testcer")
    assert verify_snp(gsg_report, vcek).check("cert_validity") is None
    in_time = verify_snp(gsg_report, vcek, options=SnpOptions(at=datetime(2026, 12, 1, tzinfo=UTC)))
    assert in_time.check("cert_validity") is True
    late = verify_snp(gsg_report, vcek, options=SnpOptions(at=datetime(2030, 1, 1, tzinfo=UTC)))
    assert late.check("cert_validity") is False
    assert "SEV-VCEK" in _failed(late)["cert_validity"]
    assert late.authentic is False


def test_missing_certificate_is_not_a_pass(gsg_report: bytes) -> None:
    result = verify_snp(gsg_report)
    assert result.check("signature") is False
    assert "no VCEK or VLEK" in _failed(result)["signature"]
    assert result.authentic is False
    assert result.check("policy_debug") is False  # policy is still read and reported


def test_no_warning_escapes_when_loading_zero_serial_vceks() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cert = load_certificate(_read(GSG / "vcek.testcer"))
        assert cert.subject.rfc4514_string().startswith("CN=SEV-VCEK")


# --- demo trust anchor ---------------------------------------------------------------------


@pytest.mark.parametrize("product", ["Milan", "Genoa", "Turin"])
def test_demo_report_verifies_with_demo_trust_only(product: str) -> None:
    chain = make_demo_chain(product)
    report_data = hashlib.sha512(b"nonce").digest()
    measurement = hashlib.sha384(b"firmware").digest()
    report = sign_demo_report(chain, report_data=report_data, measurement=measurement)
    demo = verify_snp(
        report,
        chain.vcek,
        options=SnpOptions(
            trust=chain.trust(),
            expected_report_data=report_data,
            reference_measurements=[("demo-fw", measurement.hex())],
        ),
    )
    assert demo.ok, demo.reason
    assert demo.authentic
    assert demo.facts["trust_anchor"] == DEMO_TRUST_NAME == "demo trust anchor, not AMD"
    assert demo.facts["product"] == product
    assert ("fmc" in demo.facts["reported_tcb"]) == (product == "Turin")

    amd = verify_snp(report, chain.vcek)
    assert amd.check("chain") is False
    assert amd.authentic is False
    assert amd.facts["trust_anchor"] == "AMD"


def test_demo_chain_round_trips_and_signs_deterministically(
    milan_demo: DemoChain, tmp_path: Path
) -> None:
    first = sign_demo_report(milan_demo, report_data=bytes(64), measurement=bytes(48))
    assert first == sign_demo_report(milan_demo, report_data=bytes(64), measurement=bytes(48))
    milan_demo.to_pem_files(tmp_path / "full")
    again = DemoChain.load(tmp_path / "full")
    assert sign_demo_report(again, report_data=bytes(64), measurement=bytes(48)) == first

    milan_demo.to_pem_files(tmp_path / "public", include_private_key=False)
    assert not list((tmp_path / "public").glob("*key*"))
    public = DemoChain.load(tmp_path / "public")
    assert verify_snp(first, public.vcek, options=SnpOptions(trust=public.trust())).ok
    with pytest.raises(ValueError, match="cannot sign"):
        sign_demo_report(public, report_data=bytes(64), measurement=bytes(48))


def test_demo_evidence_through_the_certificate_table(milan_demo: DemoChain) -> None:
    report = sign_demo_report(milan_demo, report_data=bytes(64), measurement=bytes(48))
    result = verify_snp(
        report, auxblob=milan_demo.auxblob(), options=SnpOptions(trust=milan_demo.trust())
    )
    assert result.ok, result.reason
    assert result.facts["certificate_source"] == "auxblob"


def test_signer_info_must_match_certificate_type(milan_demo: DemoChain) -> None:
    report = sign_demo_report(
        milan_demo, report_data=bytes(64), measurement=bytes(48), signing_key="vlek"
    )
    result = verify_snp(report, milan_demo.vcek, options=SnpOptions(trust=milan_demo.trust()))
    assert result.check("signing_key") is False
    assert "VLEK" in _failed(result)["signing_key"]
    assert not result.authentic


def test_policy_flags_and_platform_facts(milan_demo: DemoChain) -> None:
    report = sign_demo_report(
        milan_demo,
        report_data=bytes(64),
        measurement=bytes(48),
        policy=0x30000 | (1 << 18) | (1 << 20) | 0x0102,
        vmpl=2,
        platform_info=0b100001,
    )
    result = verify_snp(report, milan_demo.vcek, options=SnpOptions(trust=milan_demo.trust()))
    assert result.check("policy_migrate_ma") is False
    assert result.check("policy_debug") is True
    assert result.check("vmpl") is True
    assert "VMPL2" in next(c.reason for c in result.checks if c.name == "vmpl")
    policy = result.facts["policy"]
    assert policy["migrate_ma"] and policy["single_socket"] and policy["smt"]
    assert (policy["abi_major"], policy["abi_minor"]) == (1, 2)
    platform = result.facts["platform_info"]
    assert platform["smt_enabled"] and platform["alias_check_complete"]
    assert not platform["tsme_enabled"]
    assert result.authentic and not result.ok


# --- cloud vectors kept in ../shared (AGPL-era data: read, never copied) ---------------------


def test_azure_report_and_runtime_data_binding() -> None:
    report_p, vcek_p, vcek_der_p, chain_p, runtime_p = shared_vectors(
        "constellation/azure_attestation.bin",
        "constellation/azure_vcek.pem",
        "constellation/azure_vcek.cert",
        "constellation/azure_certchain.pem",
        "constellation/azure_runtimedata.bin",
    )
    data = report_p.read_bytes()
    assert len(data) > 0x4A0  # Azure appends bytes after the report
    for vcek in (vcek_p, vcek_der_p):
        result = verify_snp(data, vcek.read_bytes(), chain_p.read_bytes())
        assert result.authentic, result.reason
        assert result.check("policy_debug") is True
    report = parse_report(data)
    runtime = runtime_p.read_bytes()
    assert azure_runtime_binding(report, runtime).ok
    tampered = azure_runtime_binding(report, runtime + b" ")
    assert tampered.name == "runtime_data_binding" and not tampered.ok


@pytest.mark.parametrize(
    ("report", "vlek", "chain", "csp"),
    [
        (
            "constellation/aws_report.txt",
            "constellation/aws_vlek.pem",
            "constellation/aws_certchain.pem",
            "cc-eu-west-1",
        ),
        (
            "constellation/aws_report_07eed0e.txt",
            "constellation/aws_vlek_07eed0e.pem",
            "constellation/azure_vlekcertchain.pem",
            "cc-us-east-2",
        ),
        (
            "flashbots-cvm-reverse-proxy/aws_snp_report.txt",
            "flashbots-cvm-reverse-proxy/aws_snp_vlek.pem",
            "flashbots-cvm-reverse-proxy/aws_snp_certchain.pem",
            "cc-eu-west-1",
        ),
    ],
)
def test_aws_vlek_reports(report: str, vlek: str, chain: str, csp: str) -> None:
    report_p, vlek_p, chain_p = shared_vectors(report, vlek, chain)
    data, _ = decode_blob(report_p.read_bytes(), expect_min=0x4A0)
    result = verify_snp(data, vlek_p.read_bytes(), chain_p.read_bytes())
    assert result.authentic, result.reason
    assert result.check("csp_id") is True and result.check("chip_id") is None
    assert result.facts["signer"] == "vlek"
    assert csp in (result.facts["csp_id"] or "")
    assert "SEV-VLEK-Milan" in next(c.reason for c in result.checks if c.name == "chain")


def test_aws_2025_report_reported_tcb_below_entrysign_while_committed_is_not() -> None:
    report_p, vlek_p = shared_vectors("constellation/aws_report.txt", "constellation/aws_vlek.pem")
    data, _ = decode_blob(report_p.read_bytes(), expect_min=0x4A0)
    result = verify_snp(data, vlek_p.read_bytes())
    assert result.report is not None and result.report.product_source == "cpuid"
    assert result.facts["reported_tcb"]["microcode"] == 0xD9
    assert result.facts["committed_tcb"]["microcode"] == 0xDB
    assert result.check("tcb_minimum") is False
    assert "AMD-SB-3019" in _failed(result)["tcb_minimum"]
    late = verify_snp(
        data, vlek_p.read_bytes(), options=SnpOptions(at=datetime(2026, 12, 1, tzinfo=UTC))
    )
    assert late.check("cert_validity") is False  # VLEKs live one year


@pytest.fixture(scope="module")
def issuer() -> DemoChain:
    return make_demo_chain("Milan")


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    spl=st.binary(max_size=8),
    hwid=st.binary(max_size=80),
    name=st.binary(max_size=20),
)
def test_amd_extension_parser_raises_only_evidence_errors(
    issuer: DemoChain, spl: bytes, hwid: bytes, name: bytes
) -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    from auditor.verify.amd import OID_HWID, OID_PRODUCT_NAME, OID_SNP_SPL, cert_info

    assert issuer.ask_key is not None and issuer.vcek_key is not None
    builder = (
        x509.CertificateBuilder()
        .subject_name(issuer.vcek.subject)
        .issuer_name(issuer.ask.subject)
        .public_key(issuer.vcek_key.public_key())
        .serial_number(7)
        .not_valid_before(issuer.vcek.not_valid_before_utc)
        .not_valid_after(issuer.vcek.not_valid_after_utc)
    )
    for oid, value in ((OID_SNP_SPL, spl), (OID_HWID, hwid), (OID_PRODUCT_NAME, name)):
        builder = builder.add_extension(x509.UnrecognizedExtension(oid, value), critical=False)
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
    cert = builder.sign(issuer.ask_key, hashes.SHA384(), rsa_padding=pss)
    try:
        info = cert_info(cert)
    except EvidenceFormatError:
        return
    assert info.hwid is None or len(info.hwid) in (8, 64)
    assert all(v >= 0 for v in info.spl.values())
