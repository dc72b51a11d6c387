"""The pieces around SNP verification: AMD roots, TCB layouts and minimums, the certificate
table, the AMD KDS fetch (over loopback only) and expected launch measurements."""

from __future__ import annotations

import base64
import http.server
import shutil
import struct
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st

from auditor.verify import amd
from auditor.verify.amd import (
    AMD_PINS,
    AmdTrust,
    KdsError,
    build_cert_table,
    cert_info,
    fetch_vcek,
    kds_vcek_url,
    parse_cert_table,
    product_from_cpuid,
    product_from_name,
)
from auditor.verify.anchors import AnchorError, fingerprint
from auditor.verify.demo_anchor import make_demo_chain, sign_demo_report
from auditor.verify.errors import EvidenceFormatError
from auditor.verify.measurement import (
    MeasurementError,
    expected_snp_measurement,
    expected_snp_ovmf_hash,
)
from auditor.verify.snp import SnpOptions, TcbVersion, verify_snp
from auditor.verify.tcb_minimums import TcbTableError, load_tcb_table, shortfalls

VECTORS = Path(__file__).parent / "data" / "vectors"
GSG = VECTORS / "go-sev-guest"
MEASURE = VECTORS / "sev-snp-measure"

# --- trust roots -------------------------------------------------------------------------------


def test_pinned_roots_match_their_fingerprints_and_the_vector_chains() -> None:
    trust = AmdTrust.pinned()
    assert trust.name == "AMD"
    assert set(trust.products) == {"Milan", "Genoa", "Turin"}
    for product, roots in trust.products.items():
        assert fingerprint(roots.ark) == AMD_PINS[product]["ark"]
        assert roots.asvk is not None
        assert fingerprint(roots.asvk) == AMD_PINS[product]["asvk"]
    ask, ark = amd.load_certificates((GSG / "ask_ark_milan.pem").read_bytes())
    assert (ask, ark) == (trust.products["Milan"].ask, trust.products["Milan"].ark)


def test_a_swapped_anchor_file_fails_loading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(amd.ANCHOR_DIR / "amd", tmp_path / "amd")
    shutil.copy(tmp_path / "amd" / "genoa_ark.pem", tmp_path / "amd" / "milan_ark.pem")
    monkeypatch.setattr(amd, "ANCHOR_DIR", tmp_path)
    with pytest.raises(AnchorError, match=r"milan_ark\.pem has fingerprint"):
        amd._pinned_trust.__wrapped__()


def test_from_pem_rejects_inconsistent_bundles() -> None:
    milan = (GSG / "ask_ark_milan.pem").read_bytes()
    genoa = (GSG / "ask_ark_genoa.pem").read_bytes()
    milan_ask, _ = amd.load_certificates(milan)
    _, genoa_ark = amd.load_certificates(genoa)
    pem = serialization.Encoding.PEM
    mixed = milan_ask.public_bytes(pem) + genoa_ark.public_bytes(pem)
    with pytest.raises(AnchorError, match="not signed by its ARK"):
        AmdTrust.from_pem("mixed", {"Milan": mixed})
    with pytest.raises(AnchorError, match="one ARK"):
        AmdTrust.from_pem("no root", {"Milan": milan_ask.public_bytes(pem)})
    trust = AmdTrust.from_pem("ok", {"Milan": milan})
    assert trust.products["Milan"].asvk is None


def test_product_names() -> None:
    assert product_from_name("Milan-B0") == "Milan"
    assert product_from_name("SEV-VLEK-Genoa") == "Genoa"
    assert product_from_name("Siena") == "Genoa"
    assert product_from_name("ARK-Turin") == "Turin"
    assert product_from_name("Rome") is None
    assert product_from_cpuid(0x19, 0x01) == "Milan"
    assert product_from_cpuid(0x19, 0x11) == "Genoa"
    assert product_from_cpuid(0x1A, 0x02) == "Turin"
    assert product_from_cpuid(0x17, 0x31) is None


def test_asvk_carries_no_vcek_extensions() -> None:
    asvk = amd.load_certificates((GSG / "ask_ark_milan_vlek.pem").read_bytes())[0]
    # The ASVK is not a VLEK: it carries no AMD extensions at all.
    info = cert_info(asvk)
    assert info.spl == {} and info.hwid is None and info.csp_id is None


# --- TCB layouts -------------------------------------------------------------------------------


def test_tcb_layouts_differ_between_milan_and_turin() -> None:
    milan = TcbVersion.build("Milan", bootloader=3, tee=1, snp=8, microcode=0x73)
    assert milan.raw.to_bytes(8, "little") == bytes([3, 1, 0, 0, 0, 0, 8, 0x73])
    assert milan.as_dict() == {"bootloader": 3, "tee": 1, "snp": 8, "microcode": 0x73}
    turin = TcbVersion.build("Turin", bootloader=3, tee=1, snp=8, microcode=0x73, fmc=2)
    assert turin.raw.to_bytes(8, "little") == bytes([2, 3, 1, 8, 0, 0, 0, 0x73])
    assert turin.as_dict()["fmc"] == 2
    same_bytes = TcbVersion.decode(turin.raw, "Milan")
    assert (same_bytes.bootloader, same_bytes.snp) == (2, 0)
    with pytest.raises(ValueError, match="no FMC"):
        TcbVersion.build("Genoa", bootloader=1, tee=0, snp=1, microcode=1, fmc=1)


# --- TCB minimum table -------------------------------------------------------------------------


def test_shipped_table_cites_a_bulletin_in_every_row() -> None:
    table = load_tcb_table()
    assert table.schema_version == 1
    assert set(table.products) == {"Milan", "Genoa", "Turin"}
    rows = [row for rows in table.products.values() for row in rows]
    assert rows
    for row in rows:
        assert row.bulletin.startswith("AMD-SB-") and row.cve.startswith("CVE-")
        assert row.source and row.confidence in ("confirmed", "unconfirmed")
    entrysign = next(r for r in table.products["Milan"] if r.cve == "CVE-2024-56161" and r.min)
    assert entrysign.min == {"microcode": 0xDB}


def test_shortfalls_compare_reported_tcb_and_committed_firmware() -> None:
    table = load_tcb_table()
    good = TcbVersion.build("Milan", bootloader=4, tee=0, snp=27, microcode=0xDC)
    assert shortfalls(table, "Milan", good, (1, 55, 22)) == []
    low = TcbVersion.build("Milan", bootloader=4, tee=0, snp=27, microcode=0xDA)
    found = shortfalls(table, "Milan", low, (1, 55, 21))
    assert {(s.bulletin, s.component) for s in found} == {
        ("AMD-SB-3019", "microcode"),
        ("AMD-SB-3015", "firmware"),
    }


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tcb.yaml"
    path.write_text(text)
    return path


ROW = """schema_version: 1
table_version: 2027-01-01
products:
  Milan:
    - bulletin: AMD-SB-9999
      cve: CVE-2027-0001
      title: test
      min: {snp: 30}
      source: test
      confidence: confirmed
"""


def test_user_table_overrides_the_shipped_one(tmp_path: Path) -> None:
    table = load_tcb_table(_write(tmp_path, ROW))
    assert table.table_version == "2027-01-01"
    chain = make_demo_chain("Milan")
    report = sign_demo_report(chain, report_data=bytes(64), measurement=bytes(48))
    result = verify_snp(
        report, chain.vcek, options=SnpOptions(trust=chain.trust(), tcb_minimums=table)
    )
    assert result.check("tcb_minimum") is False
    assert "AMD-SB-9999" in next(c.reason for c in result.checks if c.name == "tcb_minimum")
    assert result.facts["tcb_minimum"]["table_version"] == "2027-01-01"
    shipped = verify_snp(report, chain.vcek, options=SnpOptions(trust=chain.trust()))
    assert shipped.check("tcb_minimum") is True


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("snp: 30", "smp: 30"), r"products.Milan\[0\].min: unknown component 'smp'"),
        (("snp: 30", "snp: 300"), r"min.snp: 300 is not an SPL"),
        (("snp: 30", "fmc: 1"), "unknown component 'fmc' for Milan"),
        (("AMD-SB-9999", "SB-9999"), r"bulletin: 'SB-9999' does not match"),
        (("  Milan:", "  Rome:"), "products.Rome: unknown product"),
        (("schema_version: 1", "schema_version: 2"), "schema_version: 2, expected 1"),
        (("confidence: confirmed", "confidence: maybe"), "'maybe' is not one of"),
        (("      min: {snp: 30}\n", '      min_firmware: "1.55"\n'), "not 'major.minor.build'"),
        (("      min: {snp: 30}\n", ""), "needs 'min' or 'min_firmware'"),
        (("      source: test\n", ""), "missing field 'source'"),
        (("      title: test\n", "      title: test\n      note: x\n"), "unknown field"),
        (("products:", "products: [\n"), "not valid YAML"),
    ],
)
def test_bad_tables_name_file_and_field(
    tmp_path: Path, edit: tuple[str, str], message: str
) -> None:
    path = _write(tmp_path, ROW.replace(*edit))
    with pytest.raises(TcbTableError, match=message) as err:
        load_tcb_table(path)
    assert str(path) in str(err.value)


def test_missing_table_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TcbTableError, match="cannot read"):
        load_tcb_table(tmp_path / "absent.yaml")


def test_product_without_minimums_passes_with_that_reason() -> None:
    chain = make_demo_chain("Turin")
    report = sign_demo_report(chain, report_data=bytes(64), measurement=bytes(48))
    result = verify_snp(report, chain.vcek, options=SnpOptions(trust=chain.trust()))
    reason = next(c.reason for c in result.checks if c.name == "tcb_minimum")
    assert result.check("tcb_minimum") is True and "no minimums recorded for Turin" in reason


# --- certificate table -------------------------------------------------------------------------


def test_cert_table_round_trip_and_unknown_guids() -> None:
    other = str(uuid.UUID("12345678-1234-5678-1234-567812345678"))
    blob = build_cert_table({"vcek": b"V" * 5, "ark": b"A" * 3, other: b"x"})
    assert parse_cert_table(blob) == {"vcek": b"V" * 5, "ark": b"A" * 3, other: b"x"}
    assert parse_cert_table(bytes(24)) == {}


def test_cert_table_reads_guids_in_efi_byte_order_too() -> None:
    guid = uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd")
    blob = guid.bytes_le + struct.pack("<II", 48, 2) + bytes(24) + b"ok"
    assert parse_cert_table(blob) == {"vcek": b"ok"}


_GUID = uuid.UUID("0b8f9f4e-2a8f-4d7e-9c55-6b1f0e3a7c21").bytes


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"", "runs past the end"),
        (_GUID + struct.pack("<II", 0, 0), "runs past the end"),
        (_GUID + struct.pack("<II", 48, 4), "outside"),
        (_GUID + struct.pack("<II", 48, 100) + bytes(24) + b"abcd", "outside"),
        (_GUID + struct.pack("<II", 0, 4) + bytes(24) + b"abcd", "outside"),
    ],
)
def test_malformed_cert_tables(blob: bytes, message: str) -> None:
    with pytest.raises(EvidenceFormatError, match=message):
        parse_cert_table(blob)


def test_duplicate_cert_table_entries() -> None:
    guid = uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd").bytes
    entry = guid + struct.pack("<II", 72, 1)
    with pytest.raises(EvidenceFormatError, match="vcek appears twice"):
        parse_cert_table(entry + entry + bytes(24) + b"x")


@settings(max_examples=300)
@given(st.binary(max_size=400))
def test_parse_cert_table_raises_only_evidence_errors(blob: bytes) -> None:
    try:
        table = parse_cert_table(blob)
    except EvidenceFormatError:
        return
    assert all(isinstance(v, bytes) and v for v in table.values())


@settings(max_examples=300)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([uuid.UUID(g).bytes for g in amd.CERT_TABLE_GUIDS] + [bytes(16)]),
            st.integers(0, 300),
            st.integers(0, 300),
        ),
        max_size=5,
    ),
    st.binary(max_size=200),
)
def test_parse_cert_table_on_structured_input(
    entries: list[tuple[bytes, int, int]], tail: bytes
) -> None:
    blob = b"".join(g + struct.pack("<II", o, n) for g, o, n in entries) + bytes(24) + tail
    try:
        table = parse_cert_table(blob)
    except EvidenceFormatError:
        return
    for value in table.values():
        assert value in blob


# --- AMD KDS over loopback ---------------------------------------------------------------------


class _Kds(http.server.BaseHTTPRequestHandler):
    body: bytes = b""
    status: int = 200
    paths: list[str] = []  # noqa: RUF012 - shared record of requests, reset per test

    def do_GET(self) -> None:
        type(self).paths.append(self.path)
        self.send_response(self.status)
        self.send_header("Content-Type", "application/pkix-cert")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def kds() -> Iterator[tuple[str, type[_Kds]]]:
    handler = type("Kds", (_Kds,), {"paths": [], "body": b"", "status": 200})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_vcek_is_fetched_from_kds_only_when_online_and_then_cached(
    kds: tuple[str, type[_Kds]], tmp_path: Path
) -> None:
    url, handler = kds
    chain = make_demo_chain("Milan")
    handler.body = chain.vcek.public_bytes(serialization.Encoding.DER)
    report = sign_demo_report(chain, report_data=bytes(64), measurement=bytes(48))
    cache = tmp_path / "cache"
    base = {"trust": chain.trust(), "cache_dir": cache, "kds_base_url": url}

    offline = verify_snp(report, options=SnpOptions(**base))  # type: ignore[arg-type]
    assert offline.check("signature") is False
    assert "offline" in next(c.reason for c in offline.checks if c.name == "signature")
    assert handler.paths == []

    online = verify_snp(report, options=SnpOptions(offline=False, **base))  # type: ignore[arg-type]
    assert online.ok, online.reason
    assert online.facts["certificate_source"] == "kds"
    assert online.facts["kds_url"] == url + handler.paths[0]
    assert base64.b64decode(online.facts["fetched_certificate"]) == handler.body
    assert len(handler.paths) == 1
    tcb = chain.tcb
    assert handler.paths[0] == (
        f"/vcek/v1/Milan/{chain.chip_id.hex()}?blSPL={tcb.bootloader}&teeSPL={tcb.tee}"
        f"&snpSPL={tcb.snp}&ucodeSPL={tcb.microcode}"
    )
    assert len(list(cache.glob("vcek-Milan-*.der"))) == 1

    cached = verify_snp(report, options=SnpOptions(**base))  # type: ignore[arg-type]
    assert cached.ok and cached.facts["certificate_source"] == "cache"
    assert len(handler.paths) == 1


def test_kds_errors_are_reported_not_raised(kds: tuple[str, type[_Kds]], tmp_path: Path) -> None:
    url, handler = kds
    handler.status = 404
    tcb = TcbVersion.build("Milan", bootloader=1, tee=0, snp=1, microcode=1)
    with pytest.raises(KdsError, match="failed"):
        fetch_vcek("Milan", b"\x01" * 64, tcb, tmp_path, base_url=url)
    handler.status, handler.body = 200, b"not a certificate"
    with pytest.raises(KdsError, match="not a DER or PEM"):
        fetch_vcek("Milan", b"\x01" * 64, tcb, tmp_path, base_url=url)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(KdsError, match="masked"):
        fetch_vcek("Milan", bytes(64), tcb, None, base_url=url)

    chain = make_demo_chain("Milan")
    report = sign_demo_report(chain, report_data=bytes(64), measurement=bytes(48))
    result = verify_snp(report, options=SnpOptions(offline=False, kds_base_url=url))
    assert result.check("signature") is False
    assert "AMD KDS" in next(c.reason for c in result.checks if c.name == "signature")


def test_turin_kds_url_uses_eight_byte_chip_id_and_fmc() -> None:
    tcb = TcbVersion.build("Turin", bootloader=1, tee=2, snp=3, microcode=4, fmc=5)
    chip = bytes(range(1, 9)) + bytes(56)
    assert kds_vcek_url("Turin", chip, tcb) == (
        "https://kdsintf.amd.com/vcek/v1/Turin/0102030405060708"
        "?fmcSPL=5&blSPL=1&teeSPL=2&snpSPL=3&ucodeSPL=4"
    )


# --- expected launch measurements (sev-snp-measure) ------------------------------------------


def _expected() -> list[str]:
    lines = (MEASURE / "expected_measurements.txt").read_text().splitlines()
    return [ln for ln in lines if len(ln) == 96 and all(c in "0123456789abcdef" for c in ln)]


@pytest.fixture
def empty_files(tmp_path: Path) -> tuple[Path, Path]:
    kernel, initrd = tmp_path / "vmlinuz", tmp_path / "initrd"
    kernel.write_bytes(b"")
    initrd.write_bytes(b"")
    return kernel, initrd


def test_expected_measurements_match_upstream(empty_files: tuple[Path, Path]) -> None:
    qemu, ec2, gce, ovmf_only = _expected()[:4]
    ovmf = MEASURE / "ovmf_AmdSev_suffix.bin"
    kernel, initrd = empty_files
    got_qemu = expected_snp_measurement(
        ovmf, 1, "EPYC-v4", "qemu", kernel, initrd, "console=ttyS0 loglevel=7", 0x21
    )
    assert got_qemu == qemu
    assert expected_snp_measurement(ovmf, 1, "EPYC-v4", "ec2", kernel, initrd, None, 0x21) == ec2
    assert expected_snp_measurement(ovmf, 4, vmm_type="gce", kernel=kernel, initrd=initrd) == gce
    assert expected_snp_ovmf_hash(ovmf) == ovmf_only
    # Any change of input changes the digest.
    assert expected_snp_measurement(ovmf, 2, "EPYC-v4", "qemu", kernel, initrd) != qemu


def test_measurement_inputs_are_checked(tmp_path: Path) -> None:
    ovmf = MEASURE / "ovmf_AmdSev_suffix.bin"
    with pytest.raises(MeasurementError, match="unknown VMM type"):
        expected_snp_measurement(ovmf, 1, vmm_type="xen")
    with pytest.raises(MeasurementError, match="unknown vCPU type"):
        expected_snp_measurement(ovmf, 1, vcpu_type="Pentium")
    with pytest.raises(MeasurementError, match="vcpus"):
        expected_snp_measurement(ovmf, 0)
    with pytest.raises(MeasurementError, match="not a readable file"):
        expected_snp_measurement(tmp_path / "absent.fd", 1)
    with pytest.raises(MeasurementError, match="only measured with a kernel"):
        expected_snp_measurement(ovmf, 1, append="quiet")
    garbage = tmp_path / "garbage.fd"
    garbage.write_bytes(b"\0" * 4096)
    with pytest.raises(MeasurementError, match="could not measure"):
        expected_snp_measurement(garbage, 1)


def test_damaged_cache_file_is_a_missing_certificate_not_unusable_evidence(
    tmp_path: Path,
) -> None:
    chain = make_demo_chain("Milan")
    report = sign_demo_report(chain, report_data=bytes(64), measurement=bytes(48))
    amd.vcek_cache_path("Milan", chain.chip_id, chain.tcb, tmp_path).write_bytes(b"garbage")
    result = verify_snp(report, options=SnpOptions(trust=chain.trust(), cache_dir=tmp_path))
    assert result.check("signature") is False
    assert "VCEK from cache" in next(c.reason for c in result.checks if c.name == "signature")
