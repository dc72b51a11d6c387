"""Regenerate the demo fleet's guest evidence (run from the repository root).

    .venv/bin/python examples/demo-fleet/make_guest_evidence.py

Real attestation vectors cannot be bound to demo VMs (their REPORT_DATA is not our nonce), so to
show L3 and L4 end to end this script makes a *demo trust anchor*: a self-made ARK -> ASK -> VCEK
chain (auditor/verify/demo_anchor.py), and signs SEV-SNP reports bound to demo VMs with it. The
anchor is trusted only by `ccaudit demo`; every verdict resting on it says "demo trust anchor,
not AMD". It also writes the nonces it bound into the demo's audit state, a key-broker receipt
for the L4 VM, and evidence files that carry *real* AMD and Intel vectors, which verify as
genuine but are not bound to the VMs they are attached to.

Outputs (committed): demo-trust-anchor/*.pem (public chain only), demo-key-broker/broker.pem
(public key only), audit-state/nonces.json, guest-evidence/*.json, reference-measurements.yaml.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO))

from auditor.guest.format import (  # noqa: E402
    FORMAT,
    binding_report_data,
    claims_digest,
    identity_string,
    quote_qualifying_data,
)
from auditor.guest.nonces import STORE_FILE, NonceStore  # noqa: E402
from auditor.verify import demo_tpm  # noqa: E402
from auditor.verify.amd import build_cert_table  # noqa: E402
from auditor.verify.demo_anchor import make_demo_chain, sign_demo_report  # noqa: E402
from auditor.verify.key_release import sign_key_release  # noqa: E402
from auditor.verify.sev_launch import make_launch_info  # noqa: E402

VECTORS = REPO / "tests" / "data" / "vectors"
ISSUED_AT = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
COLLECTED_AT = "2026-11-21T09:05:00Z"
#: The demo's reference firmware: what the owner rebuilt and measured (illustrative digest).
REFERENCE_NAME = "aws-ovmf-2026.10-rebuilt"
REFERENCE = hashlib.sha384(b"cc-auditor demo: AWS OVMF 2026.10, rebuilt from github.com/aws/uefi")
#: The Azure paravisor (HCL) release the demo owner compared with Microsoft's published values.
PARAVISOR_NAME = "azure-paravisor-demo-2026.10"
PARAVISOR = hashlib.sha384(b"cc-auditor demo: Azure paravisor (OpenHCL) 2026.10 release")
#: The GCE firmware build the demo owner rebuilt from Google's published source.
GCE_FIRMWARE_NAME = "gce-ovmf-2026.10-rebuilt"
GCE_FIRMWARE = hashlib.sha384(b"cc-auditor demo: GCE OVMF 2026.10, rebuilt")
#: The KVM host's firmware: OVMF (AmdSev build) and the ledger kernel, measured by the owner.
KVM_FIRMWARE_NAME = "kvm-fra-ovmf-amdsev-2026.10"
KVM_FIRMWARE = hashlib.sha384(b"cc-auditor demo: OVMF.amdsev 2026.10 + ledger kernel 6.12")
#: The SEV-ES archive VM's launch: its launch digest and the session's TIK (demo secret).
ARCHIVE_DIGEST = hashlib.sha256(b"cc-auditor demo: OVMF_CODE_4M 2026.10 + 2 SEV-ES VMSAs")
ARCHIVE_TIK = hashlib.sha256(b"cc-auditor demo: archive-sev-es launch session TIK").digest()[:16]
ARCHIVE_POLICY = 0x000F  # NODBG | NOKS | ES | NOSEND
KVM_HOST = HERE / "libvirt" / "kvm-fra-1.example.eu"
BOOT_APPS = [
    hashlib.sha256(b"cc-auditor demo: shimx64.efi 15.8").digest(),
    hashlib.sha256(b"cc-auditor demo: grubx64.efi 2.12").digest(),
]


def _luks(name: str, uuid: str, disk: str, volume: str, holds_root: bool) -> dict[str, object]:
    """A LUKS2 device on an EBS volume, as the collector reports it (NVMe serial = volume id)."""
    serial = volume.replace("-", "")
    return {
        "name": name,
        "uuid": f"CRYPT-LUKS2-{uuid}-{'root' if holds_root else 'data'}",
        "type": "LUKS2",
        "holds_root": holds_root,
        "backing": [
            {
                "name": disk,
                "serial": serial,
                "links": [f"/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_{serial}"],
            }
        ],
        "tpm_tokens": 0,  # no key slot sealed to the (NitroTPM) vTPM: the key is the broker's
    }


#: The owner's image: no provider agent runs, cloud-init is not installed.
NO_AGENTS = {"provider_agents": [], "cloud_init": {"ran": False}}
#: The Azure and Google guest agents, as the stock images run them.
AZURE_AGENT = {"provider_agents": ["waagent"], "cloud_init": {"ran": True}}
GCE_AGENT = {"provider_agents": ["google_guest_agent"], "cloud_init": {"ran": False}}
#: eu-payments-api's image still runs the SSM Agent (the one thing between it and L4).
SSM_AGENT = {"provider_agents": ["amazon-ssm-agent"], "cloud_init": {"ran": False}}
#: ledger-db-snp (KVM): LUKS2 on both virtio disks, which the guest knows by their <serial>.
LEDGER_LUKS = {
    "devices": [
        {
            "name": name,
            "uuid": f"CRYPT-LUKS2-{uuid}-{role}",
            "type": "LUKS2",
            "holds_root": role == "root",
            "backing": [
                {"name": disk, "serial": serial, "links": [f"/dev/disk/by-id/virtio-{serial}"]}
            ],
            "tpm_tokens": 0,
        }
        for name, uuid, role, disk, serial in (
            ("dm-0", "3e9a1c5d7b2f4e6a8c0d1f3b5a7e9c2d", "root", "vda", "ledger-root"),
            ("dm-1", "9c7e5a3d1b8f4a6c2e0d7b5f3a1c9e8d", "data", "vdb", "ledger-data"),
        )
    ],
}
#: eu-payments-api: LUKS2 root on its only volume.
PAYMENTS_LUKS = {
    "root_device": "dm-0",
    "devices": [_luks("dm-0", "3a9d5c7e1b2f4a60", "nvme0n1", "vol-096929fe252a94609", True)],
}
#: eu-hr-db: LUKS2 root on the root volume and LUKS2 on the 500 GiB pgdata volume.
HR_DB_LUKS = {
    "root_device": "dm-0",
    "devices": [
        _luks("dm-0", "6f1c0c5e8b2d4f0e9a7d3c2b1a0f9e8d", "nvme0n1", "vol-08283332e32f3ee67", True),
        _luks(
            "dm-1", "0b7e2d6a41c94f3fa1e5d8c7b6a59483", "nvme1n1", "vol-0f9c66838520d768e", False
        ),
    ],
}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def evidence(
    provider: str,
    vm_id: str,
    nonce: str,
    tee: dict[str, object] | None,
    **extra: object,
) -> dict[str, object]:
    """An evidence file (format version 2): `extra` holds the claims and the key release."""
    doc: dict[str, object] = {
        "format": FORMAT,
        "collector_version": "0.2.0",
        "collected_at": COLLECTED_AT,
        "nonce": nonce,
        "vm": {"provider": provider, "id": vm_id, "identity_source": "none"},
    }
    doc.update(extra)
    doc["claims_sha256"] = claims_digest(doc).hex()
    doc["report_data"] = report_data_for(doc).hex()
    if tee is not None:
        doc["tee"] = tee
    doc.setdefault("errors", [])
    return doc


def report_data_for(doc: dict[str, object]) -> bytes:
    vm = doc["vm"]
    assert isinstance(vm, dict)
    identity = identity_string(str(vm["provider"]), str(vm["id"]))
    return binding_report_data(bytes.fromhex(str(doc["nonce"])), identity, claims_digest(doc))


def main() -> None:
    out = HERE / "guest-evidence"
    state_dir = HERE / "audit-state"
    anchor_dir = HERE / "demo-trust-anchor"
    broker_dir = HERE / "demo-key-broker"
    for folder in (state_dir, anchor_dir, broker_dir):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
    for old in out.glob("*.json"):
        old.unlink()
    store = NonceStore(state_dir / STORE_FILE)

    # The demo chip's TCB is above every Milan minimum in auditor/verify/tcb_minimums.yaml.
    chain = make_demo_chain("Milan")
    chain.to_pem_files(anchor_dir, include_private_key=False)
    vtpm_ca, vtpm_ca_key = demo_tpm.make_vtpm_ca(ISSUED_AT)
    (anchor_dir / demo_tpm.VTPM_CA_FILE).write_bytes(
        vtpm_ca.public_bytes(serialization.Encoding.PEM)
    )
    broker = ec.generate_private_key(ec.SECP384R1())
    (broker_dir / "broker.pem").write_bytes(
        broker.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )

    def bound_snp(
        provider: str, vm_id: str, measurement: bytes = REFERENCE.digest(), **claims: object
    ) -> dict[str, object]:
        """A version-2 file whose demo-signed report binds nonce, identity and claims."""
        nonce = store.issue(vm_id, provider, now=ISSUED_AT)
        doc = evidence(provider, vm_id, nonce, None, **claims)
        report = sign_demo_report(chain, report_data=report_data_for(doc), measurement=measurement)
        doc["tee"] = {
            "provider": "sev_guest",
            "generation": 1,
            "outblob": b64(report),
            "auxblob": b64(chain.auxblob()),
        }
        return doc

    def released(
        doc: dict[str, object], vm: str, broker_name: str, provider: str = "aws"
    ) -> dict[str, object]:
        """The owner's broker released the disk key against this report: its receipt."""
        doc["key_release"] = sign_key_release(
            broker,
            {
                "iss": broker_name,
                "sub": identity_string(provider, vm),
                "report_data": doc["report_data"],
                "jurisdiction": "DE",
                "iat": int(ISSUED_AT.timestamp()) + 300,
            },
        )
        return doc

    # L4 and "no": eu-hr-db, bound report, reference firmware, both volumes LUKS2 in the guest
    # with the key from the owner's broker (nothing sealed to the NitroTPM), no provider agent.
    vm = "i-0d83016e1898302ed"
    doc = bound_snp(
        "aws",
        vm,
        disk_encryption=HR_DB_LUKS,
        kernel_cmdline="BOOT_IMAGE=/vmlinuz-6.12 root=/dev/mapper/root ro console=ttyS0",
        agents=NO_AGENTS,
    )
    write(out / "eu-hr-db.json", released(doc, vm, "kbs.hr.example.eu"))

    # L3 for one named reason: eu-payments-api has everything eu-hr-db has, but its image still
    # runs the SSM Agent, which runs AWS Systems Manager commands as root in the guest.
    vm = "i-045a5d8d3c4039e06"
    doc = bound_snp(
        "aws",
        vm,
        disk_encryption=PAYMENTS_LUKS,
        kernel_cmdline="BOOT_IMAGE=/vmlinuz-6.12 root=/dev/mapper/root ro console=ttyS0",
        agents=SSM_AGENT,
    )
    write(out / "eu-payments-api.json", released(doc, vm, "kbs.payments.example.eu"))

    # A real AMD report (google/go-sev-guest, DEBUG=1), genuine but not bound to this VM.
    vm = "i-0ea342d0eabd8c42e"
    nonce = store.issue(vm, "aws", now=ISSUED_AT)
    real = (VECTORS / "go-sev-guest" / "attestation.bin").read_bytes()
    real_vcek = (VECTORS / "go-sev-guest" / "vcek.testcer").read_bytes()
    tee = {
        "provider": "sev_guest",
        "generation": 1,
        "outblob": b64(real),
        "auxblob": b64(build_cert_table({"vcek": real_vcek})),
    }
    write(out / "us-payments-api-dr.json", evidence("aws", vm, nonce, tee))

    # A real GCE TDX quote (google/go-tdx-guest) with its CCEL, not bound to this VM.
    vm = "4471180926653312089"
    nonce = store.issue(vm, "gcp", now=ISSUED_AT)
    tdx = VECTORS / "go-tdx-guest"
    quote = (tdx / "cos-113-tdx-quote.dat").read_bytes()
    tee = {"provider": "tdx_guest", "generation": 1, "outblob": b64(quote)}
    ccel = {
        "table": b64((tdx / "ccel_table.dat").read_bytes()),
        "data": b64((tdx / "ccel_data.dat").read_bytes()),
    }
    write(out / "claims-etl-tdx.json", evidence("gcp", vm, nonce, tee, ccel=ccel))

    def quoted(
        doc: dict[str, object], ak: rsa.RSAPrivateKey, events: list[demo_tpm.LoggedEvent]
    ) -> dict[str, object]:
        """A quote by `ak` over the PCRs `events` give, bound like the collector binds it."""
        vm = doc["vm"]
        assert isinstance(vm, dict)
        identity = identity_string(str(vm["provider"]), str(vm["id"]))
        qualifying = quote_qualifying_data(
            bytes.fromhex(str(doc["nonce"])), identity, claims_digest(doc)
        )
        pcrs = demo_tpm.replayed_pcrs(events)
        attest, signature = demo_tpm.sign_quote(ak, qualifying, pcrs)
        return {
            "bank": "sha256",
            "qualifying_data": qualifying.hex(),
            "attest": b64(attest),
            "signature": b64(signature),
            "pcrs": {str(i): v.hex() for i, v in sorted(pcrs.items())},
        }

    cmdline = "BOOT_IMAGE=/vmlinuz-6.12 root=/dev/mapper/root ro console=ttyS0"
    events = demo_tpm.boot_events(cmdline, BOOT_APPS)
    boot_claims = {
        "tpm": {"event_log": b64(demo_tpm.event_log(events))},
        "kernel_cmdline": cmdline,
    }

    # L3 through the vTPM: research-nb-cvm, an Azure SNP CVM. The paravisor's HCL report (its
    # SEV-SNP report binds the runtime claims naming the vTPM's AK), THIM's VCEK and a quote by
    # that AK bound to this audit; the paravisor is a release the owner trusts, so the vTPM is
    # decided by evidence. The Azure agent still runs, and the disks use platform keys.
    vm = "16207537-4b58-4181-a23b-76e19013e752"
    nonce = store.issue(vm, "azure", now=ISSUED_AT)
    ak = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    runtime = demo_tpm.runtime_claims(ak.public_key(), vm)
    hw = sign_demo_report(
        chain,
        report_data=hashlib.sha256(runtime).digest() + bytes(32),
        measurement=PARAVISOR.digest(),
    )
    doc = evidence("azure", vm, nonce, None, agents=AZURE_AGENT, **boot_claims)
    ak_cert = demo_tpm.issue_ak_certificate(vtpm_ca, vtpm_ca_key, ak.public_key())
    pem = serialization.Encoding.PEM
    doc["vtpm"] = {
        "device": "/dev/tpmrm0",
        "hcl_report": b64(demo_tpm.hcl_report(hw, runtime)),
        "thim": {
            "vcekCert": chain.vcek.public_bytes(pem).decode(),
            "certificateChain": chain.chain_pem().decode(),
            "tcbm": "DB00000000000004",
        },
        "ak": {
            "public": b64(demo_tpm.tpmt_public_rsa(ak.public_key())),
            "handle": "0x81000003",
            "source": "persistent",
            "certificate": b64(ak_cert.public_bytes(serialization.Encoding.DER)),
            "certificate_index": "0x01c101d0",
        },
        "quote": quoted(doc, ak, events),
    }
    doc["errors"] = [
        {
            "source": "configfs-tsm",
            "message": "no configfs-tsm report: the guest runs above the paravisor, whose HCL "
            "report in the vTPM holds the hardware report",
        }
    ]
    write(out / "research-nb-cvm.json", doc)

    # L3, vTPM verified but unbound: claims-db-snp on Google Cloud. A bound SEV-SNP report of
    # firmware the owner rebuilt, and the host's vTPM: its AK certified (demo vTPM CA, naming
    # the instance as Google's CA does), its quote verified, nothing tying it to the report.
    vm = "7214398350127764503"
    nonce = store.issue(vm, "gcp", now=ISSUED_AT)
    doc = evidence("gcp", vm, nonce, None, agents=GCE_AGENT, **boot_claims)
    report = sign_demo_report(
        chain, report_data=report_data_for(doc), measurement=GCE_FIRMWARE.digest()
    )
    doc["tee"] = {
        "provider": "sev_guest",
        "generation": 1,
        "outblob": b64(report),
        "auxblob": b64(chain.auxblob()),
    }
    ak = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    instance = demo_tpm.GceInstance(
        "europe-west4-a", 431907246615, "eu-claims-prod", int(vm), "claims-db-snp"
    )
    ak_cert = demo_tpm.issue_ak_certificate(vtpm_ca, vtpm_ca_key, ak.public_key(), instance)
    doc["vtpm"] = {
        "device": "/dev/tpmrm0",
        "ak": {
            "public": b64(demo_tpm.tpmt_public_rsa(ak.public_key())),
            "source": "gce-nv-template",
            "certificate": b64(ak_cert.public_bytes(serialization.Encoding.DER)),
            "certificate_index": "0x01c10000",
        },
        "quote": quoted(doc, ak, events),
    }
    write(out / "claims-db-snp.json", doc)

    # L4 on the owner's own KVM host: ledger-db-snp, SEV-SNP launched with measured direct boot
    # (OVMF with kernel hashes), both virtio disks LUKS2 in the guest with the key from the
    # owner's broker, no agent, no host channel.
    vm = "8f2b6c1e-3d4a-4f5b-9e8d-7c6b5a4f3e21"
    doc = bound_snp(
        "libvirt",
        vm,
        measurement=KVM_FIRMWARE.digest(),
        disk_encryption=LEDGER_LUKS,
        kernel_cmdline="root=/dev/mapper/root ro",
        agents=NO_AGENTS,
    )
    write(out / "ledger-db-snp.json", released(doc, vm, "kbs.ledger.example.eu", "libvirt"))

    # archive-sev-es, paused in its launch window: what the host's secure processor returned
    # (getLaunchSecurityInfo), keyed with the TIK of the owner's launch session.
    launch = make_launch_info(
        ARCHIVE_DIGEST.digest(),
        ARCHIVE_TIK,
        hashlib.sha256(b"cc-auditor demo: archive mnonce").digest()[:16],
        ARCHIVE_POLICY,
        (1, 55, 21),
    )
    write(KVM_HOST / "launch-security" / "archive-sev-es.json", launch)
    session = HERE / "demo-launch-session"
    session.mkdir(exist_ok=True)
    (session / "archive-sev-es.tik").write_bytes(ARCHIVE_TIK)
    (session / "archive-sev-es.digest").write_text(ARCHIVE_DIGEST.hexdigest() + "\n")

    (HERE / "reference-measurements.yaml").write_text(
        "# Rule pack with the launch measurements the demo owner trusts (ccaudit demo uses it).\n"
        "pack: demo-references\n"
        'version: "2026.11"\n'
        "description: Reference launch measurements of the demo fleet's rebuilt firmware.\n"
        "reference_measurements:\n"
        f"  - name: {REFERENCE_NAME}\n"
        "    technology: SEV_SNP\n"
        f"    measurement: {REFERENCE.hexdigest()}\n"
        "    source: rebuilt from github.com/aws/uefi and measured with sev-snp-measure\n"
        f"  - name: {PARAVISOR_NAME}\n"
        "    technology: SEV_SNP\n"
        f"    measurement: {PARAVISOR.hexdigest()}\n"
        "    source: compared with the paravisor measurements Microsoft publishes (demo value)\n"
        f"  - name: {GCE_FIRMWARE_NAME}\n"
        "    technology: SEV_SNP\n"
        f"    measurement: {GCE_FIRMWARE.hexdigest()}\n"
        "    source: rebuilt from Google's published OVMF source (demo value)\n"
        f"  - name: {KVM_FIRMWARE_NAME}\n"
        "    technology: SEV_SNP\n"
        f"    measurement: {KVM_FIRMWARE.hexdigest()}\n"
        "    source: the KVM host's OVMF and ledger kernel, measured with ccaudit measure snp "
        "(demo value)\n"
        "reference_boot:\n"
        "  - name: demo-ubuntu-24.04-signed\n"
        "    secure_boot: true\n"
        "    applications:\n"
        + "".join(f"      - {app.hex()}\n" for app in BOOT_APPS)
        + f"    kernel_cmdline: {json.dumps(cmdline)}\n"
        "    source: the demo owner's approved image (shim, GRUB, kernel command line)\n",
        encoding="utf-8",
    )
    print(f"wrote {len(list(out.glob('*.json')))} evidence files into {out}")


def write(path: Path, doc: dict[str, object]) -> None:
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
