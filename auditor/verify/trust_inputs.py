"""Every trust anchor a run's verdicts can rest on, with fingerprint, origin and use.

A reader signing a report must see which roots and keys the L3/L4 verdicts depend on: the AMD
ARK/ASK/ASVK and Intel SGX roots pinned in the tool, Google's and Microsoft's vTPM CAs, and the
inputs the owner gave for this run (MAA signing keys, a GCE endorsement root, key-broker keys,
and in demo mode the demo trust anchor, which is not AMD). `run_trust_anchors` lists them all,
counting the VMs whose evidence each one verified, for result.json, the reports and
manifest.json.
"""

from __future__ import annotations

import base64
import hashlib
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from auditor.model import VM, TrustAnchor
from auditor.verify.anchors import AnchorError, azure_vtpm_store, fingerprint, gcp_vtpm_store

AMD_SOURCE = "AMD KDS (kdsintf.amd.com), pinned by SHA-256 in cc-auditor"
INTEL_SOURCE = "Intel SGX Root CA (certificates.trustedservices.intel.com), pinned in cc-auditor"
GOOGLE_SOURCE = "google/go-tpm-tools server/ca-certs, pinned in cc-auditor"
AZURE_SOURCE = "Microsoft PKI (microsoft.com/pkiops), pinned in cc-auditor"


def subject_name(cert: x509.Certificate) -> str:
    """The certificate's common name (the full subject when it has none)."""
    # Google's vTPM CA names exceed X.520's 64 characters; they are shown, not judged.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Attribute's length", category=UserWarning)
        names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(names[0].value) if names else cert.subject.rfc4514_string()


def key_sha256(key: Any) -> str:
    """SHA-256 of a public key's DER SubjectPublicKeyInfo."""
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def _hardware(doc: Mapping[str, Any]) -> Mapping[str, Any]:
    hw = doc.get("hardware")
    return hw if isinstance(hw, dict) and hw.get("authentic") is True else {}


def _vtpm(doc: Mapping[str, Any]) -> Mapping[str, Any]:
    """The vTPM facts of the VM's guest evidence (AK certificate, quote), when there are any."""
    hw = doc.get("hardware")
    facts = hw.get("vtpm") if isinstance(hw, dict) else None
    return facts if isinstance(facts, dict) else {}


def _amd(trust: Any, store: str, demo: bool, docs: list[Mapping[str, Any]]) -> list[TrustAnchor]:
    out: list[TrustAnchor] = []
    source = "the demo fleet's self-made chain (--demo-trust-anchor)" if demo else AMD_SOURCE
    for product, roots in sorted(trust.products.items()):
        ark = fingerprint(roots.ark)
        using = [_hardware(d) for d in docs if _hardware(d).get("root_sha256") == ark]
        certs = [("root", "ARK", roots.ark, len(using))]
        certs.append(
            ("intermediate", "ASK", roots.ask, sum(h.get("signer") != "vlek" for h in using))
        )
        if roots.asvk is not None:
            vlek = sum(h.get("signer") == "vlek" for h in using)
            certs.append(("intermediate", "ASVK", roots.asvk, vlek))
        for role, name, cert, used in certs:
            out.append(
                TrustAnchor(
                    store=f"{store} ({product})",
                    subject=f"{name} ({subject_name(cert)})",
                    role=role,
                    sha256=fingerprint(cert),
                    source=source,
                    pinned=not demo,
                    demo=demo,
                    used_by=used,
                )
            )
    return out


def _store(
    store: Any, source: str, used: Mapping[str, int], *, pinned: bool = True, demo: bool = False
) -> list[TrustAnchor]:
    roots = {fingerprint(c) for c in store.roots}
    return [
        TrustAnchor(
            store=store.name,
            subject=subject_name(cert),
            role="root" if fingerprint(cert) in roots else "intermediate",
            sha256=fingerprint(cert),
            source=source,
            pinned=pinned,
            demo=demo,
            used_by=used.get(fingerprint(cert), 0),
        )
        for cert in (*store.roots, *store.intermediates)
    ]


def _jwk_sha256(jwk: Mapping[str, Any]) -> str:
    x5c = jwk.get("x5c")
    if isinstance(x5c, list) and x5c and isinstance(x5c[0], str):
        try:
            return key_sha256(x509.load_der_x509_certificate(base64.b64decode(x5c[0])).public_key())
        except ValueError:
            pass
    from cryptography.hazmat.primitives.asymmetric import rsa

    def num(name: str) -> int:
        raw = str(jwk.get(name, ""))
        return int.from_bytes(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)), "big")

    try:
        return key_sha256(rsa.RSAPublicNumbers(num("e"), num("n")).public_key())
    except ValueError:
        return hashlib.sha256(repr(sorted(jwk.items())).encode()).hexdigest()


#: What run_trust_anchors reads of a VM document's `hardware` section, and of its `vtpm` part.
_HARDWARE_READ = (
    "authentic",
    "root_sha256",
    "signer",
    "technology",
    "trust_anchor",
    "endorsement_verified",
)
_VTPM_READ = ("ak_certified", "ak_root_sha256")


def anchor_facts(vm: VM) -> dict[str, Any] | None:
    """What `trust_anchors_of` reads of a VM's document, alone (None: nothing). A run that does
    not keep its VMs (auditor.runs.spool) keeps this of each, to count the VMs each anchor
    verified."""
    doc = vm.document
    facts: dict[str, Any] = {}
    hw = doc.get("hardware")
    if isinstance(hw, dict):
        kept = {k: hw[k] for k in _HARDWARE_READ if k in hw}
        vtpm = hw.get("vtpm")
        if isinstance(vtpm, dict) and (part := {k: vtpm[k] for k in _VTPM_READ if k in vtpm}):
            kept["vtpm"] = part
        if kept.get("authentic") is True or "vtpm" in kept:
            facts["hardware"] = kept
    ek = (doc.get("tpm") or {}).get("ek")
    if isinstance(ek, dict) and ek.get("root_sha256") and ek.get("chain_verified"):
        facts["tpm"] = {"ek": {"root_sha256": ek["root_sha256"], "chain_verified": True}}
    if ((doc.get("attestation") or {}).get("token") or {}).get("verified"):
        facts["attestation"] = {"token": {"verified": True}}
    if ((doc.get("guest") or {}).get("key_release") or {}).get("verified") is True:
        facts["guest"] = {"key_release": {"verified": True}}
    return facts or None


def run_trust_anchors(vms: Iterable[VM], options: Any) -> list[TrustAnchor]:
    """Every anchor the run's verifiers trusted (pinned or given), with the VMs each verified.

    `options` is the run's `auditor.verify.stage.VerifyOptions` (None: pinned anchors only).
    """
    return trust_anchors_of([vm.document for vm in vms], options)


def trust_anchors_of(docs: Iterable[Mapping[str, Any]], options: Any) -> list[TrustAnchor]:
    """`run_trust_anchors` from the VMs' documents, or only their `anchor_facts`."""
    from auditor.verify.amd import AmdTrust
    from auditor.verify.intel import INTEL_ROOT_NAME, intel_root_store

    vm_list = list(docs)
    anchors: list[TrustAnchor] = _amd(AmdTrust.pinned(), "AMD SEV-SNP roots", False, vm_list)
    intel_used = sum(
        1
        for vm in vm_list
        if _hardware(vm).get("technology") == "TDX"
        and _hardware(vm).get("trust_anchor") == INTEL_ROOT_NAME
    )
    intel = intel_root_store()
    anchors += _store(intel, INTEL_SOURCE, {fingerprint(intel.roots[0]): intel_used})
    vtpm_roots: dict[str, int] = {}  # EK certificates (control plane) and AK certificates (guest)
    for vm in vm_list:
        ek = (vm.get("tpm") or {}).get("ek") or {}
        if isinstance(ek, dict) and ek.get("root_sha256") and ek.get("chain_verified"):
            vtpm_roots[str(ek["root_sha256"])] = vtpm_roots.get(str(ek["root_sha256"]), 0) + 1
        ak = _vtpm(vm)
        if ak.get("ak_certified") is True and ak.get("ak_root_sha256"):
            root = str(ak["ak_root_sha256"])
            vtpm_roots[root] = vtpm_roots.get(root, 0) + 1
    try:
        anchors += _store(gcp_vtpm_store(), GOOGLE_SOURCE, vtpm_roots)
        anchors += _store(azure_vtpm_store(), AZURE_SOURCE, vtpm_roots)
    except AnchorError:  # a broken install is reported where the anchors are loaded
        pass
    if options is None:
        return anchors
    evidence = options.evidence
    if evidence.demo_trust is not None:
        anchors += _amd(evidence.demo_trust, "demo trust anchor, not AMD", True, vm_list)
    if evidence.demo_vtpm_trust is not None:
        anchors += _store(
            evidence.demo_vtpm_trust,
            "the demo fleet's self-made vTPM CA (--demo-trust-anchor)",
            vtpm_roots,
            pinned=False,
            demo=True,
        )
    if options.maa_jwks:
        tokens = sum(
            1
            for vm in vm_list
            if ((vm.get("attestation") or {}).get("token") or {}).get("verified")
        )
        issuers = ", ".join(options.maa_issuers) or "no issuer pinned"
        for jwk in options.maa_jwks.get("keys", []):
            anchors.append(
                TrustAnchor(
                    store=f"MAA signing keys ({issuers})",
                    subject=f"kid {jwk.get('kid')}",
                    role="signing key",
                    sha256=_jwk_sha256(jwk),
                    source="--maa-jwks (kept in the run as evidence/collateral/maa-jwks.json)",
                    pinned=False,
                    used_by=tokens,
                )
            )
    if evidence.endorsement_root is not None:
        endorsed = sum(1 for vm in vm_list if _hardware(vm).get("endorsement_verified") is True)
        anchors += [
            TrustAnchor(
                store="GCE firmware endorsement root",
                subject=subject_name(evidence.endorsement_root),
                role="root",
                sha256=fingerprint(evidence.endorsement_root),
                source="--endorsement-root",
                pinned=False,
                used_by=endorsed,
            )
        ]
    released = sum(
        1
        for vm in vm_list
        if ((vm.get("guest") or {}).get("key_release") or {}).get("verified") is True
    )
    for key in evidence.key_broker_keys:
        anchors.append(
            TrustAnchor(
                store="owner key broker",
                subject="key-broker public key",
                role="broker key",
                sha256=key_sha256(key),
                source="--key-broker-key",
                pinned=False,
                used_by=released,
            )
        )
    return anchors
