"""vTPM evidence end to end: the collector's TPM client against a real TPM 2.0 (swtpm), each
cloud's vTPM layout provisioned as that cloud does, then the verifier on what was collected.

Azure SNP CVM: an AK persisted at 0x81000003 and an HCL report in NV 0x01400001 whose demo-signed
SEV-SNP report binds runtime claims naming that AK; THIM serves the VCEK. Azure TDX CVM: the HCL
holds a TD report and the metadata service turns it into a quote. Google Cloud: the AK is made
from the template in NV 0x01C10001 and certified in NV 0x01C10000 beside a configfs-tsm report.
Each TPM's PCRs are extended with the events of a measured-boot log the guest also reads.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from auditor.guest import collector, tpm2, vtpm
from auditor.guest.format import identity_string, parse_evidence_file
from auditor.verify import demo_tpm
from auditor.verify.demo_anchor import make_demo_chain, sign_demo_report
from auditor.verify.evidence import EvidenceOptions, GuestEvidenceResult, verify_guest_evidence
from auditor.verify.tpm import parse_tpmt_public, verify_tpm_quote
from tests.metadata_fake import AZURE_VM_ID, GCP_INSTANCE
from tests.swtpm import Swtpm, require_swtpm
from tests.test_guest_collector import TDX_QUOTE, FakeKernelTsm, make_tree

AT = datetime(2026, 11, 22, tzinfo=UTC)
NONCE = bytes(range(32))
CMDLINE = "BOOT_IMAGE=/vmlinuz-6.12 root=/dev/mapper/root ro console=ttyS0"
APPS = [hashlib.sha256(b"shimx64.efi").digest(), hashlib.sha256(b"grubx64.efi").digest()]
PARAVISOR = hashlib.sha384(b"demo paravisor").digest()
NV_ATTRIBUTES = "ownerread|ownerwrite|authread|authwrite"
EVENT_LOG = "sys/kernel/security/tpm0/binary_bios_measurements"


@pytest.fixture(autouse=True)
def _fake_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(collector, "ConfigfsTsm", FakeKernelTsm)


def _boot(tpm: Swtpm) -> bytes:
    """Extend the TPM as firmware would for the demo boot; the log the guest reads."""
    events = demo_tpm.boot_events(CMDLINE, APPS)
    for event in events:
        tpm.extend(event.pcr, event.digest)
    return demo_tpm.event_log(events)


def _public(pem: bytes) -> rsa.RSAPublicKey:
    key = serialization.load_pem_public_key(pem)
    assert isinstance(key, rsa.RSAPublicKey)
    return key


class AzureCvm:
    """An swtpm provisioned like an Azure SNP CVM's paravisor vTPM."""

    def __init__(self, tmp: Path, report_type: str = "snp") -> None:
        self.tpm = Swtpm(tmp / "swtpm")
        self.ak = _public(self.tpm.persistent_ak())
        self.runtime = demo_tpm.runtime_claims(self.ak, AZURE_VM_ID)
        self.chain = make_demo_chain("Milan")
        binding = hashlib.sha256(self.runtime).digest() + bytes(32)
        if report_type == "snp":
            hw = sign_demo_report(self.chain, report_data=binding, measurement=PARAVISOR)
        else:
            hw = bytes(128) + binding + bytes(1024 - 192)  # a TD report: REPORTDATA at 128
        self.hcl = demo_tpm.hcl_report(hw, self.runtime, report_type)
        self.tpm.nv_write(vtpm.AZURE_HCL_REPORT_INDEX, self.hcl, NV_ATTRIBUTES)
        self.log = _boot(self.tpm)

    def thim(self) -> dict[str, str]:
        pem = serialization.Encoding.PEM
        return {
            "vcekCert": self.chain.vcek.public_bytes(pem).decode(),
            "certificateChain": self.chain.chain_pem().decode(),
            "tcbm": "DB00000000000004",
        }


@pytest.fixture(scope="module")
def azure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzureCvm]:
    require_swtpm()
    cvm = AzureCvm(tmp_path_factory.mktemp("azure"))
    yield cvm
    cvm.tpm.stop()


def _collect(tmp_path: Path, tpm: Swtpm, log: bytes, fake: Any, provider: str, tree: str = "snp"):  # type: ignore[no-untyped-def]
    root = make_tree(tmp_path, tree)
    (root.root / EVENT_LOG).parent.mkdir(parents=True, exist_ok=True)
    (root.root / EVENT_LOG).write_bytes(log)
    if provider == "azure":  # the guest above the paravisor has no configfs-tsm report
        for name in ("outblob", "auxblob", "provider"):
            (root.kernel / name).unlink(missing_ok=True)
    options = root.options(provider=provider, vm_id=None, metadata_url=[fake.url], tpm=tpm.address)
    stderr = io.StringIO()
    code = collector.run(options, stderr)
    return code, parse_evidence_file(root.out.read_bytes()), stderr.getvalue()


def _verify(doc: dict[str, Any], provider: str, vm_id: str, **options: Any) -> GuestEvidenceResult:
    opts = EvidenceOptions(at=AT, nonce_check=lambda nonce: (True, "fresh"), **options)
    return verify_guest_evidence(doc, opts, expected_vm=(provider, vm_id))


def _failed(result: GuestEvidenceResult) -> dict[str, str]:
    return {c.name: c.reason for c in result.checks if not c.ok}


# -- the TPM client against the simulator -------------------------------------------------------


def test_client_reads_nv_public_and_pcrs_as_tpm2_tools_wrote_them(azure: AzureCvm) -> None:
    tpm = tpm2.Tpm(tpm2.open_transport(azure.tpm.address))
    try:
        assert tpm.nv_buffer_max() == 1024  # swtpm's TPM_PT_NV_BUFFER_MAX
        hcl = tpm.nv_read(vtpm.AZURE_HCL_REPORT_INDEX)
        assert len(hcl) > 1024 and hcl == azure.hcl  # read in chunks, every byte
        public = parse_tpmt_public(tpm.read_public(vtpm.PERSISTENT_AK_HANDLE))
        assert public.spki_der() == azure.ak.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        pcrs = tpm.pcr_read("sha256", list(range(24)))
        assert sorted(pcrs) == list(range(24))  # more than the 8 one PCR_Read returns
        assert pcrs == {**pcrs, **demo_tpm.replayed_pcrs(demo_tpm.boot_events(CMDLINE, APPS), 9)}
    finally:
        tpm.close()


def test_client_errors_are_response_codes_in_words(azure: AzureCvm) -> None:
    tpm = tpm2.Tpm(tpm2.open_transport(azure.tpm.address))
    try:
        with pytest.raises(tpm2.TpmError, match=r"NV_ReadPublic 0x01c10000: TPM_RC_HANDLE") as e:
            tpm.nv_read(0x01C10000)
        assert e.value.rc == 0x18B and "nothing there" in str(e.value)
        with pytest.raises(tpm2.TpmError, match=r"Quote by 0x81000009: TPM_RC_HANDLE"):
            tpm.quote(0x81000009, b"", "sha256", [0])
    finally:
        tpm.close()
    with pytest.raises(tpm2.TpmError, match="not present"):
        tpm2.open_transport(str(Path("/nonexistent/tpmrm0")))


@pytest.mark.parametrize(
    ("rc", "words"),
    [
        (0x18B, "TPM_RC_HANDLE (handle 1)"),
        (0x9A2, "TPM_RC_BAD_AUTH (session 1)"),
        (0x2D5, "TPM_RC_SIZE (parameter 2)"),
        (0x14A, "TPM_RC_NV_UNINITIALIZED"),
        (0x149, "TPM_RC_NV_AUTHORIZATION"),
        (0x922, "TPM_RC_RETRY"),
        (0x100, "TPM_RC_INITIALIZE"),
        (0xB0001, "kernel's resource manager"),
    ],
)
def test_response_codes_are_decoded(rc: int, words: str) -> None:
    assert words in tpm2.describe_rc(rc)


def test_a_quote_from_the_simulator_verifies_and_binds_its_qualifying_data(azure: AzureCvm) -> None:
    tpm = tpm2.Tpm(tpm2.open_transport(azure.tpm.address))
    try:
        quote = tpm.quote(vtpm.PERSISTENT_AK_HANDLE, b"\x07" * 32, "sha256", list(range(24)))
        pcrs = tpm.pcr_read("sha256", list(range(24)))
        public = tpm.read_public(vtpm.PERSISTENT_AK_HANDLE)
    finally:
        tpm.close()
    ok = verify_tpm_quote(public, quote.attest, quote.signature, pcrs, "sha256", b"\x07" * 32)
    assert ok.ok, ok.reason
    other = verify_tpm_quote(public, quote.attest, quote.signature, pcrs, "sha256", b"\x08" * 32)
    assert other.check("nonce") is False and other.check("quote_signature") is True


# -- Azure SNP CVM: collected, then verified ------------------------------------------------------


@pytest.fixture
def azure_doc(azure: AzureCvm, tmp_path: Path, metadata_server: Any) -> dict[str, Any]:
    fake = metadata_server("azure")
    fake.thim = azure.thim()
    code, doc, out = _collect(tmp_path, azure.tpm, azure.log, fake, "azure")
    assert code == collector.EXIT_OK, out
    assert "vTPM (tcp:127.0.0.1:" in out and "Azure HCL report, THIM certificates" in out
    return doc


def test_azure_snp_cvm_collects_the_hcl_report_thim_and_a_bound_quote(
    azure: AzureCvm, azure_doc: dict[str, Any]
) -> None:
    section = azure_doc["vtpm"]
    assert base64.b64decode(section["hcl_report"]) == azure.hcl
    assert section["thim"]["vcekCert"].startswith("-----BEGIN CERTIFICATE-----")
    assert section["ak"]["source"] == "persistent" and section["ak"]["handle"] == "0x81000003"
    assert "tee" not in azure_doc  # the guest above the paravisor has no configfs-tsm report
    assert section["quote"]["bank"] == "sha256" and len(section["quote"]["pcrs"]) == 24
    # no AK certificate was provisioned: named in errors, never silently absent
    assert any(e["source"] == "azure ak certificate" for e in azure_doc["errors"])


def test_azure_snp_cvm_verifies_through_the_hcl_path(
    azure: AzureCvm, azure_doc: dict[str, Any]
) -> None:
    result = _verify(azure_doc, "azure", AZURE_VM_ID, demo_trust=azure.chain.trust())
    hw = result.hardware
    assert hw["verified"] is True, _failed(result)
    assert (hw["path"], hw["technology"], hw["demo_anchor"]) == ("azure-hcl", "SEV_SNP", True)
    assert hw["measurement"] == PARAVISOR.hex()
    assert "paravisor" in hw["measurement_of"]
    facts = hw["vtpm"]
    assert facts["bound_to_report"] is True and facts["inside_tee"] is True
    assert facts["implemented_by"] == "paravisor" and facts["quote_verified"] is True
    assert facts["event_log_replayed"] is True
    assert facts["boot"]["secure_boot"] is True and facts["boot"]["kernel_cmdline"] == CMDLINE
    assert [a["sha256"] for a in facts["boot"]["applications"]] == [a.hex() for a in APPS]
    names = {c.name for c in result.checks if c.ok}
    assert {"vtpm.hcl_vm", "vtpm.hcl_ak", "vtpm.qualifying_data", "snp.report_data"} <= names
    # The AK certificate is missing here: recorded, not a pass, and not what binds this AK.
    assert result.check("vtpm.ak_certificate") is False


def _mutated(doc: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    copy = json.loads(json.dumps(doc))
    node = copy
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return copy


def _resign(azure: AzureCvm, runtime: bytes) -> str:
    """An HCL report whose (demo-signed) hardware report binds other runtime claims."""
    binding = hashlib.sha256(runtime).digest() + bytes(32)
    hw = sign_demo_report(azure.chain, report_data=binding, measurement=PARAVISOR)
    return base64.b64encode(demo_tpm.hcl_report(hw, runtime)).decode()


def test_each_mutation_of_the_azure_evidence_fails_for_its_own_reason(
    azure: AzureCvm, azure_doc: dict[str, Any]
) -> None:
    trust = azure.chain.trust()
    other_ak = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    pcr = azure_doc["vtpm"]["quote"]["pcrs"]["4"]
    cases = {
        # the runtime claims name another AK (and the hardware report binds those claims)
        "vtpm.hcl_ak": _mutated(
            azure_doc,
            ("vtpm", "hcl_report"),
            _resign(azure, demo_tpm.runtime_claims(other_ak, AZURE_VM_ID)),
        ),
        # ... or another VM
        "vtpm.hcl_vm": _mutated(
            azure_doc,
            ("vtpm", "hcl_report"),
            _resign(
                azure, demo_tpm.runtime_claims(azure.ak, "0f3a5c2e-0000-0000-0000-000000000000")
            ),
        ),
        # runtime claims changed after the report was made
        "snp.report_data": _mutated(
            azure_doc,
            ("vtpm", "hcl_report"),
            base64.b64encode(
                azure.hcl.replace(b'"secure-boot":true', b'"secure-boot":fals')
            ).decode(),
        ),
        # a PCR value edited next to the quote
        "vtpm.pcr_digest": _mutated(
            azure_doc, ("vtpm", "quote", "pcrs", "4"), ("00" if pcr[:2] != "00" else "11") + pcr[2:]
        ),
        # a replayed quote: another audit's nonce
        "vtpm.qualifying_data": _mutated(azure_doc, ("nonce",), "ab" * 32),
        # a claim added after the quote was made
        "vtpm.qualifying_data ": _mutated(azure_doc, ("kernel_cmdline",), "init=/bin/sh"),
    }
    for expect, doc in cases.items():
        result = _verify(doc, "azure", AZURE_VM_ID, demo_trust=trust)
        failed = _failed(result)
        assert expect.strip() in failed, (expect, failed)
        assert result.hardware["verified"] is False, expect
        assert result.hardware.get("vtpm", {}).get("bound_to_report") is False, expect
    quote = azure_doc["vtpm"]["quote"]
    sig = bytearray(base64.b64decode(quote["signature"]))
    sig[-1] ^= 1
    flipped = _mutated(azure_doc, ("vtpm", "quote", "signature"), base64.b64encode(sig).decode())
    result = _verify(flipped, "azure", AZURE_VM_ID, demo_trust=trust)
    assert "vtpm.quote_signature" in _failed(result) and result.hardware["verified"] is False
    # without the demo anchor the same evidence is not authentic: AMD's roots did not sign it
    plain = _verify(azure_doc, "azure", AZURE_VM_ID)
    assert plain.hardware["authentic"] is False and plain.hardware["verified"] is False


def test_attached_to_another_vm_the_azure_evidence_does_not_count(
    azure: AzureCvm, azure_doc: dict[str, Any]
) -> None:
    other = "11111111-2222-3333-4444-555555555555"
    result = _verify(azure_doc, "azure", other, demo_trust=azure.chain.trust())
    failed = _failed(result)
    assert {"identity", "vtpm.hcl_vm", "vtpm.qualifying_data"} <= set(failed)
    assert result.hardware["verified"] is False


# -- Azure TDX CVM: the metadata service quotes the HCL's TD report ------------------------------


def test_azure_tdx_cvm_asks_for_a_td_quote_and_checks_what_it_binds(
    tmp_path: Path, metadata_server: Any
) -> None:
    require_swtpm()
    cvm = AzureCvm(tmp_path / "tdx", report_type="tdx")
    try:
        fake = metadata_server("azure")
        fake.td_quote = TDX_QUOTE.read_bytes()  # a real quote, over another TD report
        code, doc, _ = _collect(tmp_path, cvm.tpm, cvm.log, fake, "azure")
    finally:
        cvm.tpm.stop()
    assert code == collector.EXIT_OK
    assert base64.b64decode(doc["vtpm"]["td_quote"]) == TDX_QUOTE.read_bytes()
    [posted] = fake.posted
    report = json.loads(posted)["report"]
    assert base64.urlsafe_b64decode(report + "=" * (-len(report) % 4)) == cvm.hcl[0x20:0x420]
    result = _verify(doc, "azure", AZURE_VM_ID)
    assert result.hardware["path"] == "azure-hcl" and result.hardware["technology"] == "TDX"
    failed = _failed(result)
    assert "tdx.report_data" in failed  # the quote is for another TD report, not this HCL's
    assert result.check("vtpm.hcl_ak") is True and result.check("vtpm.qualifying_data") is True
    assert result.hardware["vtpm"]["bound_to_report"] is False
    assert result.hardware["verified"] is False


# -- Google Cloud: a certified AK from the NV template, beside a configfs-tsm report -------------


class GceVm:
    def __init__(self, tmp: Path) -> None:
        self.tpm = Swtpm(tmp / "swtpm")
        self.tpm.nv_write(
            vtpm.GCE_AK_TEMPLATE_INDEX_RSA, vtpm.DEFAULT_AK_TEMPLATE_RSA, NV_ATTRIBUTES
        )
        # The AK is a primary key: the same template gives the same key every time, so Google
        # certifies it once (here: the demo vTPM CA certifies the key this TPM derives).
        tpm = tpm2.Tpm(tpm2.open_transport(self.tpm.address))
        try:
            handle, public = tpm.create_primary(tpm2.TPM_RH_OWNER, vtpm.DEFAULT_AK_TEMPLATE_RSA)
            tpm.flush(handle)
        finally:
            tpm.close()
        ak = parse_tpmt_public(public).key
        assert isinstance(ak, rsa.RSAPublicKey)
        self.ca, ca_key = demo_tpm.make_vtpm_ca(AT)
        instance = demo_tpm.GceInstance(
            "europe-west4-a", 123456789012, "eu-claims-prod", int(GCP_INSTANCE), "claims-db"
        )
        cert = demo_tpm.issue_ak_certificate(self.ca, ca_key, ak, instance)
        der = cert.public_bytes(serialization.Encoding.DER)
        self.tpm.nv_write(vtpm.GCE_AK_CERT_INDEX_RSA, der, NV_ATTRIBUTES)
        self.log = _boot(self.tpm)


@pytest.fixture(scope="module")
def gce(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GceVm]:
    require_swtpm()
    vm = GceVm(tmp_path_factory.mktemp("gce"))
    yield vm
    vm.tpm.stop()


@pytest.mark.parametrize("tree", ["snp", "tdx"])
def test_gcp_vm_quote_verifies_with_a_certified_ak_but_stays_unbound(
    gce: GceVm, tmp_path: Path, metadata_server: Any, tree: str
) -> None:
    fake = metadata_server("gcp")
    code, doc, out = _collect(tmp_path, gce.tpm, gce.log, fake, "gcp", tree)
    assert code == collector.EXIT_OK and "AK gce-nv-template" in out
    assert doc["vtpm"]["ak"]["certificate_index"] == "0x01c10000"
    result = _verify(doc, "gcp", GCP_INSTANCE, demo_vtpm_trust=demo_tpm.vtpm_trust(gce.ca))
    facts = result.hardware["vtpm"]
    assert facts["quote_verified"] is True and facts["ak_certified"] is True
    assert facts["ak_demo_anchor"] is True
    assert facts["bound_to_report"] is False and facts["inside_tee"] is False
    assert facts["implemented_by"] == "host"
    assert result.check("vtpm.ak_instance") is True and result.check("vtpm.binding") is True
    assert (
        "nothing binds it to the hardware report"
        in {c.name: c.reason for c in result.checks}["vtpm.binding"]
    )
    # The TEE report beside it is a real vector over another REPORT_DATA: genuine, not bound.
    assert result.hardware["technology"] == ("SEV_SNP" if tree == "snp" else "TDX")
    assert result.hardware["verified"] is False
    # Without the demo vTPM CA, Google's pinned roots do not certify this AK.
    plain = _verify(doc, "gcp", GCP_INSTANCE)
    assert plain.hardware["vtpm"]["ak_certified"] is False
    assert plain.hardware["vtpm"]["quote_verified"] is True  # the quote itself is fine
    # Attached to another instance, the certificate names the wrong one.
    other = _verify(doc, "gcp", "42", demo_vtpm_trust=demo_tpm.vtpm_trust(gce.ca))
    assert "vtpm.ak_instance" in _failed(other)


def test_without_a_tpm_the_collector_says_why(tmp_path: Path) -> None:
    tree = make_tree(tmp_path, "snp")
    options = tree.options(tpm="tcp:127.0.0.1:9")
    code = collector.run(options, io.StringIO())
    doc = parse_evidence_file(tree.out.read_bytes())
    assert code == collector.EXIT_OK  # the configfs-tsm report is there
    assert "vtpm" not in doc
    [error] = [e for e in doc["errors"] if e["source"] == "vtpm"]
    assert "TPM simulator at tcp:127.0.0.1:9" in error["message"]
    none = collector.run(tree.options(tpm=None), io.StringIO())
    assert none == collector.EXIT_OK
    assert not [
        e for e in parse_evidence_file(tree.out.read_bytes())["errors"] if "vtpm" in e["source"]
    ]


def test_qualifying_data_binds_nonce_identity_and_claims(azure_doc: dict[str, Any]) -> None:
    from auditor.guest.format import claims_digest, quote_qualifying_data

    identity = identity_string("azure", AZURE_VM_ID)
    expected = quote_qualifying_data(NONCE, identity, claims_digest(azure_doc))
    assert azure_doc["vtpm"]["quote"]["qualifying_data"] == expected.hex()


def test_a_tee_report_beside_an_hcl_report_never_makes_the_vtpm_bound(
    azure: AzureCvm, azure_doc: dict[str, Any]
) -> None:
    """A guest that adds a bound configfs-style SNP report next to the paravisor's HCL report
    gets the TEE path, where the vTPM is judged as the host's: never inside the TEE."""
    from auditor.guest.format import expected_report_data

    doc = json.loads(json.dumps(azure_doc))
    binding = expected_report_data(doc, identity_string("azure", AZURE_VM_ID))
    report = sign_demo_report(azure.chain, report_data=binding, measurement=PARAVISOR)
    doc["tee"] = {
        "provider": "sev_guest",
        "generation": 1,
        "outblob": base64.b64encode(report).decode(),
        "auxblob": base64.b64encode(azure.chain.auxblob()).decode(),
    }
    result = _verify(doc, "azure", AZURE_VM_ID, demo_trust=azure.chain.trust())
    assert result.hardware["verified"] is True and "path" not in result.hardware
    facts = result.hardware["vtpm"]
    assert facts["bound_to_report"] is False and facts["inside_tee"] is False
    assert facts["implemented_by"] == "host"


def test_aws_nitrotpm_quote_by_a_created_ak_is_the_guests_word(
    gce: GceVm, tmp_path: Path, metadata_server: Any
) -> None:
    """No persistent AK and no certificate (NitroTPM): the collector makes an AK from the
    default template, the quote verifies, and nothing certifies the key."""
    from tests.metadata_fake import AWS_INSTANCE

    fake = metadata_server("aws")
    code, doc, out = _collect(tmp_path, gce.tpm, gce.log, fake, "aws")
    assert code == collector.EXIT_OK and "AK default-template" in out
    assert "certificate" not in doc["vtpm"]["ak"]
    result = _verify(doc, "aws", AWS_INSTANCE)
    facts = result.hardware["vtpm"]
    assert facts["quote_verified"] is True and facts["ak_certified"] is None
    assert facts["bound_to_report"] is False and facts["event_log_replayed"] is True
    assert "NitroTPM has none" in _failed(result)["vtpm.ak_certificate"]


def test_the_real_azure_vector_goes_through_the_collected_path(
    azure_doc: dict[str, Any],
) -> None:
    """Constellation's Azure SNP report and runtime claims, in the place a collected HCL report
    takes: AMD's real chain verifies it and REPORT_DATA binds the claims; the quote beside it is
    our simulator's, whose AK is not that VM's HCLAkPub, so the evidence is not bound."""
    from tests.shared_vectors import shared_vectors

    report, runtime, vcek, chain = shared_vectors(
        "constellation/azure_attestation.bin",
        "constellation/azure_runtimedata.bin",
        "constellation/azure_vcek.pem",
        "constellation/azure_certchain.pem",
    )
    doc = json.loads(json.dumps(azure_doc))
    hcl = demo_tpm.hcl_report(report.read_bytes()[:0x4A0], runtime.read_bytes())
    doc["vtpm"]["hcl_report"] = base64.b64encode(hcl).decode()
    doc["vtpm"]["thim"] = {"vcekCert": vcek.read_text(), "certificateChain": chain.read_text()}
    vm_id = "b6c98c3b-4ec7-4da6-bd2f-7d98d20d7b75"  # the vmUniqueId in those claims
    opts = EvidenceOptions(
        at=datetime(2024, 1, 1, tzinfo=UTC), nonce_check=lambda nonce: (True, "fresh")
    )
    result = verify_guest_evidence(doc, opts, expected_vm=("azure", vm_id))
    hw = result.hardware
    assert hw["path"] == "azure-hcl" and hw["authentic"] is True and hw["demo_anchor"] is False
    assert hw["hcl_report_bound"] is True  # REPORT_DATA = SHA-256(runtime claims)
    assert result.check("snp.chain") is True and result.check("snp.report_data") is True
    assert result.check("vtpm.hcl_vm") is True
    failed = _failed(result)
    assert "the AK that signed the quote is not HCLAkPub" in failed["vtpm.hcl_ak"]
    assert hw["bound"] is False and hw["verified"] is False


def test_both_command_lines_take_tpm_and_no_tpm(
    gce: GceVm, tmp_path: Path, metadata_server: Any
) -> None:
    from typer.testing import CliRunner

    from auditor.cli import app
    from auditor.guest import __main__ as guest_main

    fake = metadata_server("gcp")
    tree = make_tree(tmp_path, "snp")
    common = [*tree.argv(), "--provider", "gcp", "--metadata-url", fake.url]
    assert guest_main.main(["collect", *common, "--tpm", gce.tpm.address]) == collector.EXIT_OK
    assert "quote" in parse_evidence_file(tree.out.read_bytes())["vtpm"]
    result = CliRunner().invoke(app, ["guest", "collect", *common, "--no-tpm"])
    assert result.exit_code == collector.EXIT_OK, result.output
    assert "vtpm" not in parse_evidence_file(tree.out.read_bytes())
    result = CliRunner().invoke(app, ["guest", "collect", *common, "--tpm", gce.tpm.address])
    assert result.exit_code == collector.EXIT_OK, result.output
    assert "AK gce-nv-template" in result.output
